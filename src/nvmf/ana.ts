// Asymmetric Namespace Access (NVMe base spec 2.0 section 8.1, log page 0Ch figure 216): on a cluster
// node every replica's node exposes a replicated volume's namespace; the primary's path is Optimized,
// the others' Inaccessible, and the states change at failover so the host's native multipath moves
// (Linux drivers/nvme/host/multipath.c). Groups are one per state (ANA_GROUP_OPTIMIZED,
// ANA_GROUP_INACCESSIBLE): a namespace moves between groups when its state changes, so the log is
// small whatever the number of namespaces (Linux sizes it from NANAGRPID and MNAN).

/** A path's state for one namespace, as this node sees it. */
export type AnaState = 'optimized' | 'inaccessible';

/** What the target asks of the cluster (the daemon wires it; without one there is no ANA reporting). */
export interface AnaProvider {
  /** The state of this node's path to a volume, by its engine name ("T/VOL" or "VOL"). */
  stateOf(engineVolume: string): AnaState;
  /** Called after any state may have changed (a record or node change). */
  onChange(listener: () => void): () => void;
}

export const ANA_GROUP_OPTIMIZED = 1;
export const ANA_GROUP_INACCESSIBLE = 2;
/** ANAGRPMAX and NANAGRPID: the two groups above. */
export const ANA_GROUPS_MAX = 2;
/** ANATT: how long a host waits in the change state before it gives up on a path (seconds). */
export const ANA_TRANSITION_SECONDS = 10;
/** MNAN with ANA: Linux reads an ANA log of 16 + 32 × NANAGRPID + 4 × MNAN bytes (must fit in MDTS). */
export const ANA_NAMESPACES_MAX = 1024;

// ANA states in the log (figure 217).
export const ANA_STATE_OPTIMIZED = 0x01;
export const ANA_STATE_INACCESSIBLE = 0x03;

export const ANA_LOG_HEADER_BYTES = 16;
export const ANA_GROUP_DESCRIPTOR_BYTES = 32;

export function anaGroupOf(state: AnaState): number {
  return state === 'optimized' ? ANA_GROUP_OPTIMIZED : ANA_GROUP_INACCESSIBLE;
}

/**
 * The ANA log page (0Ch): header (change count, group count), then per group its id, NSID count,
 * change count, state and (unless `groupsOnly`, LSP bit 0 "RGO") its NSIDs ascending — Linux walks
 * them in order against its sorted namespace list (nvme_update_ana_state).
 */
export function anaLog(changeCount: bigint, namespaces: ReadonlyArray<{ nsid: number; state: AnaState }>, groupsOnly: boolean): Buffer {
  const groups = [
    { id: ANA_GROUP_OPTIMIZED, state: ANA_STATE_OPTIMIZED, nsids: [] as number[] },
    { id: ANA_GROUP_INACCESSIBLE, state: ANA_STATE_INACCESSIBLE, nsids: [] as number[] },
  ];
  for (const ns of namespaces) groups[ns.state === 'optimized' ? 0 : 1]!.nsids.push(ns.nsid);
  for (const g of groups) g.nsids.sort((a, b) => a - b);
  const nsidBytes = groupsOnly ? 0 : groups.reduce((n, g) => n + g.nsids.length * 4, 0);
  const log = Buffer.alloc(ANA_LOG_HEADER_BYTES + groups.length * ANA_GROUP_DESCRIPTOR_BYTES + nsidBytes);
  log.writeBigUInt64LE(changeCount & 0xffffffffffffffffn, 0);
  log.writeUInt16LE(groups.length, 8);
  let off = ANA_LOG_HEADER_BYTES;
  for (const g of groups) {
    log.writeUInt32LE(g.id, off);
    log.writeUInt32LE(groupsOnly ? 0 : g.nsids.length, off + 4);
    log.writeBigUInt64LE(changeCount & 0xffffffffffffffffn, off + 8);
    log[off + 16] = g.state;
    off += ANA_GROUP_DESCRIPTOR_BYTES;
    if (groupsOnly) continue;
    for (const nsid of g.nsids) { log.writeUInt32LE(nsid >>> 0, off); off += 4; }
  }
  return log;
}
