// Volumes as a cluster node's API sees them: held here (the engine's record) or only on other nodes
// (shown from the cluster record: size and creation time, no local figures).
import type { VolumeInfo } from '../engine/index.js';
import type { VolumeRecord } from '../cluster/records.js';
import type { ApiContext } from './context.js';

/** The id of a volume shown from its cluster record alone (engine ids start at 1: 0 is never a volume's). */
export const REMOTE_VOLUME_ID = 0;

/**
 * A volume this node may hold no replica of (placed on other nodes): the engine's record when it is
 * here, else what the cluster record says (size and creation time; no local figures).
 */
export function createdVolume(ctx: ApiContext, name: string): VolumeInfo {
  try { return ctx.engine.getVolume(name); } catch (err) {
    const record = ctx.cluster?.volume(ctx.engineName(name)) ?? null;
    // Not here but in the cluster: its replicas live on other nodes. Anything else is the error.
    if ((err as { code?: string }).code !== 'volume_not_found' || record === null) throw err;
    return recordVolume(name, record);
  }
}

export function recordVolume(name: string, record: VolumeRecord): VolumeInfo {
  return {
    kind: 'volume', id: REMOTE_VOLUME_ID, name, sizeBytes: record.sizeBytes, mappedBytes: 0, createdMs: record.createdMs, origin: null,
    snapshotCount: 0, snapshots: [], flattenProgress: null,
    // Each node's copy has a key slot of its own pool: none here (0), whether its copies are encrypted is the record's.
    encryption: record.encrypted === true ? { keyId: 0, locked: false } : null,
  };
}
