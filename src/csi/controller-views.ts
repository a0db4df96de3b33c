// Pure pieces of the Controller service: capacity ranges and sizes, and the CSI shapes of Cairn
// volumes and snapshots (ids as a session's token sees them turned into pool-wide CSI ids).
import type { ApiSnapshot, ApiVolume } from './api-client.js';
import { blockSizeBytes, volumeSizeBytesDefault } from './constants.js';
import { invalidArgument, outOfRange } from './errors.js';
import type { CapacityRange, Snapshot, Volume, VolumeContentSource } from './messages.js';
import { groupSnapshotPrefix } from './names.js';
import { idFromApi, tenantOfApiName, type Session } from './sessions.js';
import { qualify } from '../tenancy/names.js';

const roundUp = (bytes: number): number => Math.ceil(bytes / blockSizeBytes) * blockSizeBytes;
const roundDown = (bytes: number): number => Math.floor(bytes / blockSizeBytes) * blockSizeBytes;

export interface Bounds { requiredBytes: number; limitBytes: number }

/** CSI spec, CapacityRange: 0 means unset; negative values are invalid. */
export function boundsOf(range: CapacityRange | null | undefined): Bounds {
  const requiredBytes = range?.required_bytes ?? 0;
  const limitBytes = range?.limit_bytes ?? 0;
  if (requiredBytes < 0 || limitBytes < 0) throw invalidArgument('capacity_range must not be negative');
  if (limitBytes !== 0 && limitBytes < requiredBytes) {
    throw outOfRange(`capacity_range limit_bytes ${limitBytes} is below required_bytes ${requiredBytes}`);
  }
  return { requiredBytes, limitBytes };
}

/**
 * The size to create: required rounded up to 4 KiB, at least `minimumBytes` (a clone's source
 * size), within the limit (OUT_OF_RANGE if not). Without a range: the source size, or 1 GiB.
 */
export function sizeFor(bounds: Bounds, minimumBytes: number): number {
  let sizeBytes = bounds.requiredBytes > 0 ? roundUp(bounds.requiredBytes) : 0;
  if (sizeBytes === 0 && minimumBytes === 0) {
    sizeBytes = bounds.limitBytes > 0 ? Math.min(volumeSizeBytesDefault, roundDown(bounds.limitBytes)) : volumeSizeBytesDefault;
  }
  sizeBytes = Math.max(sizeBytes, minimumBytes);
  if (sizeBytes === 0 || (bounds.limitBytes !== 0 && sizeBytes > bounds.limitBytes)) {
    throw outOfRange(`no size in 4 KiB units of at least ${Math.max(bounds.requiredBytes, minimumBytes)} bytes`
      + ` fits limit_bytes ${bounds.limitBytes}`);
  }
  return sizeBytes;
}

export const fits = (sizeBytes: number, b: Bounds): boolean =>
  sizeBytes >= b.requiredBytes && (b.limitBytes === 0 || sizeBytes <= b.limitBytes);

/** The CSI id of what a volume was cloned from ("VOL@SNAP" or "VOL"), or null. */
export const originIdOf = (session: Session, vol: ApiVolume): string | null =>
  vol.origin === null ? null
    : idFromApi(session, vol.origin.snapshot === null ? vol.origin.volume : `${vol.origin.volume}@${vol.origin.snapshot}`);

/** The content source a Cairn volume carries, from its origin. */
function contentSourceOf(session: Session, vol: ApiVolume): VolumeContentSource | null {
  const origin = originIdOf(session, vol);
  if (origin === null) return null;
  if (vol.origin!.snapshot !== null) return { snapshot: { snapshot_id: origin }, type: 'snapshot' };
  return { volume: { volume_id: origin }, type: 'volume' };
}

/** Volume context key (what NodeStageVolume is given): "true" or "false"; informational, the daemon decides. */
export const encryptedContextKey = 'encrypted';

export function toCsiVolume(session: Session, vol: ApiVolume): Volume {
  return {
    capacity_bytes: vol.sizeBytes, volume_id: idFromApi(session, vol.name),
    volume_context: { [encryptedContextKey]: String(vol.encrypted) }, content_source: contentSourceOf(session, vol),
  };
}

/**
 * Why a volume of a class that does (or does not) ask for encryption cannot be made from this
 * source, or null when it can. A clone or restore shares the source's blocks, and so its data key or
 * its plain form (the engine's clone contract): the class must say what the source is.
 */
export function sourceEncryptionProblem(sourceId: string, kind: 'snapshot' | 'volume', sourceEncrypted: boolean, classEncrypted: boolean): string | null {
  if (sourceEncrypted === classEncrypted) return null;
  if (sourceEncrypted) {
    return `source ${kind} ${sourceId} is encrypted, and a volume made from it shares its blocks and data key, so it would be `
      + 'encrypted too; this StorageClass does not ask for encryption: restore or clone it with a class that has encrypted: "true"';
  }
  return `source ${kind} ${sourceId} is not encrypted, and a volume made from it shares its plain blocks, so it cannot be `
    + 'encrypted; use a StorageClass without encrypted: "true", or create an empty encrypted volume and copy the data into it';
}

export function toCsiSnapshot(session: Session, snap: ApiSnapshot): Snapshot {
  // A member of a group snapshot (src/csi/group-controller.ts) names its group.
  const group = snap.name.startsWith(groupSnapshotPrefix) ? qualify(tenantOfApiName(session, snap.volume), snap.name) : '';
  return {
    size_bytes: snap.sizeBytes,
    snapshot_id: idFromApi(session, snap.fullName),
    source_volume_id: idFromApi(session, snap.volume),
    creation_time: timestampOf(snap.createdMs),
    ready_to_use: true, // a Cairn snapshot is complete when its create call returns
    group_snapshot_id: group,
  };
}

export const timestampOf = (ms: number): { seconds: number; nanos: number } =>
  ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 });
