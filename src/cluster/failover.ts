// Takeover (design "Failover"): when a volume's primary is gone (its node key absent, or showing
// another incarnation than the record's), the alive in-sync members try, one after another by
// rank, a transaction that makes them primary in the next epoch. A restarted primary that was the
// only in-sync member takes its volume back itself.
import type { KvCompare } from './kv.js';
import { nodeKey, volumeKey, type NodeRecord, type VolumeRecord } from './records.js';
import type { ClusterNode } from './node.js';
import { cmp } from './node.js';

/** Each alive in-sync member waits this long per rank, so the first by name usually wins alone. */
export const TAKEOVER_RANK_DELAY_MS = 300;

type Plan = { rank: number } | null;

/** Whether `node` should try to take `rec` over now, and after which rank delay. */
function plan(node: ClusterNode, rec: VolumeRecord, primaryNode: NodeRecord | null): Plan {
  const me = rec.members.find((m) => m.node === node.self);
  if (me === undefined || me.state !== 'in-sync') return null;
  const primary = rec.members.find((m) => m.node === rec.primary);
  const alive = (name: string, incarnation: string): boolean => {
    if (name === rec.primary) return primaryNode !== null && primaryNode.incarnation === incarnation;
    return node.nodeAlive(name)?.incarnation === incarnation;
  };
  if (rec.primary === node.self) {
    // A restart of the primary (or its lease lost): it takes over only when no other in-sync member
    // could (those take over when they see this node's new incarnation).
    if (me.incarnation === node.incarnation()) return null;
    const other = rec.members.some((m) => m.node !== node.self && m.state === 'in-sync' && alive(m.node, m.incarnation));
    return other ? null : { rank: 0 };
  }
  if (me.incarnation !== node.incarnation()) return null;
  if (primary !== undefined && alive(primary.node, primary.incarnation)) return null;
  const candidates = rec.members.filter((m) => m.node !== rec.primary && m.state === 'in-sync' && (m.node === node.self || alive(m.node, m.incarnation)))
    .map((m) => m.node).sort(cmp);
  return { rank: candidates.indexOf(node.self) };
}

export async function considerTakeover(node: ClusterNode, vol: string): Promise<void> {
  const cached = node.record(vol);
  if (cached === null) return;
  const first = plan(node, cached, node.nodeAlive(cached.primary));
  if (first === null) return;
  if (first.rank > 0) await node.clock.sleep(first.rank * TAKEOVER_RANK_DELAY_MS);
  // Re-read both keys: the transaction compares exactly what this decision was made on.
  const recEntry = await node.kvCall(() => node.kv.get(volumeKey(vol)));
  if (recEntry === null) return;
  const rec = JSON.parse(recEntry.value) as VolumeRecord;
  const primaryEntry = await node.kvCall(() => node.kv.get(nodeKey(rec.primary)));
  const primaryNode = primaryEntry === null ? null : JSON.parse(primaryEntry.value) as NodeRecord;
  if (plan(node, rec, primaryNode) === null) return;
  const epoch = rec.epoch + 1;
  // Fence first: once the record names this node, no request of an older epoch may land here.
  await node.member.raiseFence(vol, epoch);
  const next: VolumeRecord = {
    ...rec, epoch, primary: node.self,
    members: rec.members.map((m) => m.node === node.self
      ? { ...m, state: 'in-sync' as const, incarnation: node.incarnation() }
      : { ...m, state: node.nodeAlive(m.node) !== null && m.node !== rec.primary ? 'rebuilding' as const : m.node === rec.primary && primaryNode !== null ? 'rebuilding' as const : 'down' as const }),
  };
  const compares: KvCompare[] = [
    { key: volumeKey(vol), target: 'mod', equals: recEntry.modRevision },
    { key: nodeKey(rec.primary), target: 'mod', equals: primaryEntry?.modRevision ?? 0 },
  ];
  const result = await node.kvCall(() => node.kv.txn(compares, [{ op: 'put', key: volumeKey(vol), value: JSON.stringify(next) }]));
  if (!result.succeeded) {
    node.log('cluster.takeover_lost', { vol, epoch });
    await node.refreshRecord(vol);
    return;
  }
  if (node.cache.apply(volumeKey(vol), JSON.stringify(next), result.revision) !== null) node.changed(vol);
  node.forgetPrimary(vol);
  node.countFailover();
  node.log('cluster.takeover', { vol, epoch, from: rec.primary });
  node.kick();
}
