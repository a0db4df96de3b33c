// Metadata contexts an export offers, and NBD_OPT_LIST/SET_META_CONTEXT query matching.
// Contexts: `base:allocation` (proto.md) and, per earlier snapshot SNAP of the same volume,
// `qemu:dirty-bitmap:since:SNAP` (flag 1 = changed since SNAP), the name form qemu's backup tools read.
import type { Engine, Target } from '../engine/index.js';

export const BASE_ALLOCATION = 'base:allocation';
export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
export const SINCE_PREFIX = `${DIRTY_BITMAP_PREFIX}since:`;

export type MetaContext =
  | { kind: 'allocation'; id: number; name: string }
  /** `sinceFullName` is "VOL@SNAP". */
  | { kind: 'since'; id: number; name: string; sinceFullName: string };

/** Splits "VOL@SNAP" into [VOL, SNAP]; [VOL, null] for a volume. */
export function splitExportName(name: string): [string, string | null] {
  const at = name.indexOf('@');
  return at < 0 ? [name, null] : [name.slice(0, at), name.slice(at + 1)];
}

/**
 * Names of the contexts an export offers. For a volume: every snapshot of it. For a snapshot
 * VOL@S: the snapshots of VOL taken before S (a diff needs an earlier point of the same lineage).
 */
export function availableContextNames(engine: Engine, target: Target): string[] {
  const names = [BASE_ALLOCATION];
  const [volume, snapshot] = splitExportName(target.name);
  let snapshotNames: string[];
  try {
    snapshotNames = engine.listSnapshots(volume).map((s) => s.name);
  } catch {
    return names; // Volume gone: only allocation remains meaningful.
  }
  const end = snapshot === null ? snapshotNames.length : snapshotNames.indexOf(snapshot);
  for (let i = 0; i < Math.max(end, 0); i++) names.push(`${SINCE_PREFIX}${snapshotNames[i]}`);
  return names;
}

/**
 * Contexts matched by the client's queries. No queries: LIST returns everything, SET selects nothing
 * (proto.md). A query is an exact name, or for LIST a namespace prefix ending in ':' ("base:",
 * "qemu:", "qemu:dirty-bitmap:"); anything else matches nothing (not an error). proto.md: the server
 * MUST ignore "base:" in SET, and an empty leaf name SHOULD NOT select anything there (qemu's server
 * treats "qemu:" and "qemu:dirty-bitmap:" the same way).
 */
export function matchQueries(available: string[], queries: string[], forList: boolean): string[] {
  if (queries.length === 0) return forList ? available.slice() : [];
  const out: string[] = [];
  for (const query of queries) {
    const prefix = query.endsWith(':');
    if (prefix && !forList) continue;
    for (const name of available) {
      const hit = prefix ? name.startsWith(query) : name === query;
      if (hit && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

export function contextFromName(id: number, name: string, volume: string): MetaContext {
  if (name === BASE_ALLOCATION) return { kind: 'allocation', id, name };
  return { kind: 'since', id, name, sinceFullName: `${volume}@${name.slice(SINCE_PREFIX.length)}` };
}
