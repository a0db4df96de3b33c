// Which volume capabilities Cairn can serve. A Cairn volume is one NBD export attached on one
// node at a time (no shared-writer coordination), so writer modes are single-node only; any
// number of nodes may read (a read-only mount of an unchanging export is safe).
import { invalidArgument } from './errors.js';
import type { VolumeCapability } from './messages.js';

export const supportedFsTypes = ['ext4', 'xfs'] as const;
export type FsType = typeof supportedFsTypes[number];
export const fsTypeDefault: FsType = 'ext4';

const supportedModes = new Set([
  'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY',
  'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER',
]);

/** Throws INVALID_ARGUMENT when the capability is malformed (missing access type or mode). */
export function checkCapabilityShape(cap: VolumeCapability | null | undefined, what: string): VolumeCapability {
  if (!cap) throw invalidArgument(`${what}: volume_capability is required`);
  if (!cap.block && !cap.mount) throw invalidArgument(`${what}: volume_capability needs an access type (block or mount)`);
  if (!cap.access_mode || cap.access_mode.mode === 'UNKNOWN') {
    throw invalidArgument(`${what}: volume_capability needs an access mode`);
  }
  return cap;
}

/** Why Cairn cannot serve this capability, or null when it can. */
export function unsupportedReason(cap: VolumeCapability): string | null {
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  if (!supportedModes.has(mode)) return `access mode ${mode} is not supported (one writer node at a time)`;
  if (cap.mount) {
    const fs = cap.mount.fs_type;
    if (fs !== '' && !(supportedFsTypes as readonly string[]).includes(fs)) {
      return `fs_type ${fs} is not supported (use ${supportedFsTypes.join(' or ')})`;
    }
  }
  return null;
}

export function fsTypeOf(cap: VolumeCapability): FsType {
  const fs = cap.mount?.fs_type ?? '';
  return fs === '' ? fsTypeDefault : (fs as FsType);
}

export const isBlock = (cap: VolumeCapability): boolean => Boolean(cap.block) && !cap.mount;

/** Reader-only access modes: the node attaches and mounts without ever writing the volume. */
export const isReaderOnly = (cap: VolumeCapability): boolean =>
  cap.access_mode?.mode === 'SINGLE_NODE_READER_ONLY' || cap.access_mode?.mode === 'MULTI_NODE_READER_ONLY';

/** Access modes a node may publish at several target paths at once (CSI spec, NodePublishVolume). */
export const publishableAtManyTargets = (cap: VolumeCapability): boolean => {
  const mode = cap.access_mode?.mode ?? '';
  return mode === 'SINGLE_NODE_MULTI_WRITER' || mode.startsWith('MULTI_NODE_');
};
