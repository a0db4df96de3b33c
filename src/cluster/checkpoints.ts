// Checkpoint snapshots (design "Checkpoints"): internal snapshots `VOL@cairn-ckpt-E-N` every member
// takes at the same point of the replication stream, the base a rebuild diffs from. Hidden from users;
// `cairn-ckpt-tmp-N` are a rebuild's local pre-copy snapshots (hidden too, never replicated).

export const CHECKPOINT_PREFIX = 'cairn-ckpt-';
const TEMP_PREFIX = `${CHECKPOINT_PREFIX}tmp-`;
/** How many checkpoints a volume keeps (the newest): a member behind by one still finds a base. */
export const CHECKPOINTS_KEPT = 2;

export function isHiddenSnapshot(snapshotName: string): boolean { return snapshotName.startsWith(CHECKPOINT_PREFIX); }
export function isHiddenFullName(fullName: string): boolean {
  const at = fullName.indexOf('@');
  return at >= 0 && isHiddenSnapshot(fullName.slice(at + 1));
}

export function checkpointName(epoch: number, n: number): string { return `${CHECKPOINT_PREFIX}${epoch}-${n}`; }
export function tempSnapshotName(n: number): string { return `${TEMP_PREFIX}${n}`; }
export function isTempSnapshot(snapshotName: string): boolean { return snapshotName.startsWith(TEMP_PREFIX); }

/** (epoch, n) of a checkpoint name, or null for any other snapshot name. */
export function parseCheckpoint(snapshotName: string): { epoch: number; n: number } | null {
  const m = /^cairn-ckpt-(\d+)-(\d+)$/.exec(snapshotName);
  return m === null ? null : { epoch: Number(m[1]), n: Number(m[2]) };
}

/** The checkpoint names among `snapshotNames`, oldest first. */
export function sortedCheckpoints(snapshotNames: readonly string[]): string[] {
  const parsed = snapshotNames.flatMap((name) => { const p = parseCheckpoint(name); return p === null ? [] : [{ name, ...p }]; });
  parsed.sort((a, b) => a.epoch - b.epoch || a.n - b.n);
  return parsed.map((p) => p.name);
}

/** The name after the newest of `existing` for a checkpoint taken in `epoch`. */
export function nextCheckpointName(existing: readonly string[], epoch: number): string {
  let n = 0;
  for (const name of existing) {
    const p = parseCheckpoint(name);
    if (p !== null && p.epoch === epoch) n = Math.max(n, p.n);
  }
  return checkpointName(epoch, n + 1);
}
