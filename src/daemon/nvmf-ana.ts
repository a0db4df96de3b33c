// NVMe/TCP on a cluster node (issue 22): the path states the target reports (src/nvmf/ana.ts) from
// the cluster's records — Optimized where this node is the volume's primary (or the volume has no
// record: a local one), Inaccessible elsewhere — this node's share of the subsystem's CNTLIDs, and
// namespace identities every node derives alike from the records (a replicated volume is one
// namespace on all its nodes: Linux groups paths by subsystem + NSID and checks NGUID/UUID match).
import { createHash } from 'node:crypto';
import type { AnaProvider } from '../nvmf/ana.js';
import type { NamespaceIdentities } from '../nvmf/namespaces.js';
import type { ClusterHandle } from '../cluster/handle.js';

/** CNTLIDs are split into this many ranges; a node takes the one its name hashes to. */
export const CNTLID_RANGES = 63;
/** CNTLIDs per range: 63 × 1040 = 65520 ≤ 0xFFEF. */
export const CNTLID_RANGE_SIZE = 1040;

export function anaProvider(cluster: ClusterHandle): AnaProvider {
  return {
    stateOf: (volume) => {
      if (cluster.volume(volume) === null) return 'optimized';
      return cluster.primaryOf(volume)?.local === true ? 'optimized' : 'inaccessible';
    },
    onChange: (listener) => cluster.onChange(() => listener()),
  };
}

/**
 * This node's CNTLID range: Linux refuses a controller whose CNTLID another controller of the same
 * subsystem already has, and every node serves the same subsystem NQN. Two node names may hash to one
 * range (1 in 63 for a pair): the daemon logs the range so an operator can see it.
 */
export function cntlidRangeOf(node: string): { first: number; last: number } {
  const slot = createHash('sha256').update(node).digest().readUInt32BE(0) % CNTLID_RANGES;
  const first = 1 + slot * CNTLID_RANGE_SIZE;
  return { first, last: first + CNTLID_RANGE_SIZE - 1 };
}

/** Cluster NSIDs live in the upper half of the NSID space; a pool's own (id + 1) stay far below it. */
export const CLUSTER_NSID_BASE = 0x8000_0000;
/** The largest NSID (FFFFFFFFh is the broadcast value). */
const NSID_LAST = 0xffff_fffe;

function digest(label: string, text: string): Buffer { return createHash('sha256').update(label).update('\0').update(text).digest(); }

function nsidCandidate(name: string): number {
  return CLUSTER_NSID_BASE + (digest('cairn cluster nsid', name).readUInt32BE(0) % (NSID_LAST - CLUSTER_NSID_BASE + 1));
}

/**
 * Namespace identities from the cluster's records: a volume's NSID is a hash of its name in the upper
 * half of the NSID space, collisions settled by probing in record creation order (every node holds the
 * same records, so every node settles them alike, and a new volume never moves an older one); its
 * snapshots hash their full names the same way. NGUID and UUID hash the name and the record's creation
 * time (a volume made again under an old name is another namespace).
 */
export function clusterNamespaceIdentities(cluster: ClusterHandle): NamespaceIdentities {
  let table: Map<string, number> | null = null;
  cluster.onChange(() => { table = null; });
  const nsids = (): Map<string, number> => {
    if (table !== null) return table;
    const used = new Set<number>();
    const out = new Map<string, number>();
    const records = cluster.volumes().slice().sort((a, b) => a.createdMs - b.createdMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const r of records) {
      let nsid = nsidCandidate(r.name);
      while (used.has(nsid)) nsid = nsid >= NSID_LAST ? CLUSTER_NSID_BASE : nsid + 1;
      used.add(nsid);
      out.set(r.name, nsid);
    }
    table = out;
    return out;
  };
  return {
    of: (engineName) => {
      const volume = engineName.split('@')[0]!;
      const record = cluster.volume(volume);
      if (record === null) return null;
      const table = nsids();
      let nsid = table.get(engineName) ?? nsidCandidate(engineName);
      if (engineName !== volume) {
        // A snapshot: probed past the volumes' NSIDs (rarely needed; a node's snapshots are few).
        const taken = new Set(table.values());
        while (taken.has(nsid)) nsid = nsid >= NSID_LAST ? CLUSTER_NSID_BASE : nsid + 1;
      }
      const seed = `${engineName}\0${record.createdMs}`;
      const nguid = digest('cairn cluster nguid', seed).subarray(0, 16);
      if (nguid.every((b) => b === 0)) nguid[15] = 1;
      const uuid = Buffer.from(digest('cairn cluster uuid', seed).subarray(0, 16));
      uuid[6] = (uuid[6]! & 0x0f) | 0x80;
      uuid[8] = (uuid[8]! & 0x3f) | 0x80;
      return { nsid, nguid: Buffer.from(nguid), uuid };
    },
  };
}
