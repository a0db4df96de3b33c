// NVMe/TCP on a cluster node (issue 22): the path states the target reports (src/nvmf/ana.ts) from
// the cluster's records — Optimized where this node is the volume's primary (or the volume has no
// record: a local one), Inaccessible elsewhere — and this node's share of the subsystem's CNTLIDs.
import { createHash } from 'node:crypto';
import type { AnaProvider } from '../nvmf/ana.js';
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
