// Metadata contexts an export offers, and NBD_OPT_LIST/SET_META_CONTEXT query matching.
// Contexts: `base:allocation` (proto.md) and, per earlier snapshot SNAP of the same volume,
// `qemu:dirty-bitmap:since:SNAP` (flag 1 = changed since SNAP), the name form qemu's backup tools read.
import type { Engine, SnapshotInfo, Target } from '../engine/index.js';
import { META_CONTEXTS_LISTED_MAX } from './constants.js';

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
 * Names of the contexts an export offers, as LIST (no query, or a namespace query) reports them. For
 * a volume: one per snapshot of it. For a snapshot VOL@S: the snapshots of VOL taken before S (a diff
 * needs an earlier point of the same lineage). Past META_CONTEXTS_LISTED_MAX of them, the one record
 * `qemu:dirty-bitmap:since:` stands for them all: proto.md lets a server, "instead of exhaustively
 * listing every matching context", send records that let a client who knows the namespace select any
 * context. Otherwise `nbdinfo --list` over a volume with N snapshots would receive N²/2 records.
 */
export function availableContextNames(engine: Engine, target: Target): string[] {
  const names = [BASE_ALLOCATION];
  const [volume, snapshot] = splitExportName(target.name);
  let page: SnapshotInfo[];
  try {
    page = engine.listSnapshotsPage({ volume, limit: META_CONTEXTS_LISTED_MAX + 1 }).snapshots;
  } catch {
    return names; // Volume gone: only allocation remains meaningful.
  }
  // Oldest first: for a snapshot export, those from the export itself on are not earlier.
  const earlier = snapshot === null ? page : page.filter((s) => s.id < target.id);
  if (earlier.length > META_CONTEXTS_LISTED_MAX) names.push(SINCE_PREFIX);
  else for (const s of earlier) names.push(`${SINCE_PREFIX}${s.name}`);
  return names;
}

/**
 * Whether the export offers the context `name`: one index lookup, whatever the snapshot count (so
 * SET, and LIST of exact names, cost the same with 100 000 snapshots as with one). Snapshot ids grow
 * with creation, so "taken before S" is "a smaller id than S".
 */
export function offersContext(engine: Engine, target: Target, name: string): boolean {
  if (name === BASE_ALLOCATION) return true;
  if (!name.startsWith(SINCE_PREFIX)) return false;
  const sinceName = name.slice(SINCE_PREFIX.length);
  if (sinceName === '' || sinceName.includes('@')) return false;
  const [volume, snapshot] = splitExportName(target.name);
  let since: SnapshotInfo | null;
  try {
    since = engine.findSnapshot(`${volume}@${sinceName}`);
  } catch {
    return false; // not a valid snapshot name: no such context
  }
  return since !== null && (snapshot === null || since.id < target.id);
}

/**
 * Contexts matched by the client's queries. No queries: LIST returns everything, SET selects nothing
 * (proto.md). A query is an exact name, or for LIST a namespace prefix ending in ':' ("base:",
 * "qemu:", "qemu:dirty-bitmap:"); anything else matches nothing (not an error). proto.md: the server
 * MUST ignore "base:" in SET, and an empty leaf name SHOULD NOT select anything there (qemu's server
 * treats "qemu:" and "qemu:dirty-bitmap:" the same way). Exact names are looked up one by one; only
 * a namespace query lists the export's contexts.
 */
export function matchQueries(engine: Engine, target: Target, queries: string[], forList: boolean): string[] {
  let available: string[] | null = null;
  const all = (): string[] => (available ??= availableContextNames(engine, target));
  if (queries.length === 0) return forList ? all().slice() : [];
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (name: string) => { if (!seen.has(name)) { seen.add(name); out.push(name); } };
  for (const query of queries) {
    if (query.endsWith(':')) {
      if (forList) for (const name of all()) if (name.startsWith(query)) add(name);
    } else if (offersContext(engine, target, query)) {
      add(query);
    }
  }
  return out;
}

export function contextFromName(id: number, name: string, volume: string): MetaContext {
  if (name === BASE_ALLOCATION) return { kind: 'allocation', id, name };
  return { kind: 'since', id, name, sinceFullName: `${volume}@${name.slice(SINCE_PREFIX.length)}` };
}
