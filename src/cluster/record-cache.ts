// The node's view of /cairn/: node and volume records with the revision each was read at, kept by
// the watch (and by this node's own transactions), re-read with range() at start.
import type { KvEntry } from './kv.js';
import { NODE_PREFIX, VOLUME_PREFIX, type NodeRecord, type VolumeRecord } from './records.js';

export interface Cached<T> { value: T; modRevision: number }

export class RecordCache {
  readonly nodes = new Map<string, Cached<NodeRecord>>();
  readonly volumes = new Map<string, Cached<VolumeRecord>>();

  /** Applies a key's new value (null: deleted) seen at `modRevision`; returns what changed, or null when nothing did. */
  apply(key: string, value: string | null, modRevision: number): { kind: 'node' | 'volume'; name: string } | null {
    if (key.startsWith(NODE_PREFIX)) {
      const name = key.slice(NODE_PREFIX.length);
      return this.set(this.nodes, name, value === null ? null : JSON.parse(value) as NodeRecord, modRevision) ? { kind: 'node', name } : null;
    }
    if (key.startsWith(VOLUME_PREFIX)) {
      const name = decodeURIComponent(key.slice(VOLUME_PREFIX.length));
      return this.set(this.volumes, name, value === null ? null : JSON.parse(value) as VolumeRecord, modRevision) ? { kind: 'volume', name } : null;
    }
    return null;
  }

  /** Replaces everything by a range() read; returns the names that changed. */
  load(entries: KvEntry[]): Array<{ kind: 'node' | 'volume'; name: string }> {
    const changed: Array<{ kind: 'node' | 'volume'; name: string }> = [];
    const seen = new Set<string>();
    for (const e of entries) {
      seen.add(e.key);
      const c = this.apply(e.key, e.value, e.modRevision);
      if (c !== null) changed.push(c);
    }
    for (const name of [...this.nodes.keys()]) {
      if (!seen.has(`${NODE_PREFIX}${name}`)) { this.nodes.delete(name); changed.push({ kind: 'node', name }); }
    }
    for (const name of [...this.volumes.keys()]) {
      if (!seen.has(`${VOLUME_PREFIX}${encodeURIComponent(name)}`)) { this.volumes.delete(name); changed.push({ kind: 'volume', name }); }
    }
    return changed;
  }

  private set<T>(map: Map<string, Cached<T>>, name: string, value: T | null, modRevision: number): boolean {
    const old = map.get(name);
    // A watch event older than what this node already holds (its own txn result) changes nothing.
    if (old !== undefined && old.modRevision > modRevision && modRevision !== 0) return false;
    if (value === null) {
      if (old === undefined) return false;
      map.delete(name);
      return true;
    }
    map.set(name, { value, modRevision });
    return true;
  }
}
