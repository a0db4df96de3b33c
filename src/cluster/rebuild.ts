// Rebuild, replacement and drain (design "Rebuild"), driven by the volume's primary, one member at a
// time per volume while I/O goes on: the member reverts to the newest checkpoint both hold (or starts
// empty), pre-copy rounds send the diff of temporary snapshots, and a last round under the barrier
// sends the diff up to a new checkpoint, after which the member is in sync again (epoch+1).
import { IoError, type ByteRange } from '../engine/index.js';
import type { MemberStatusDetail } from './member.js';
import type { MemberRecord, VolumeRecord } from './records.js';
import { isHiddenSnapshot, nextCheckpointName, tempSnapshotName, isTempSnapshot } from './checkpoints.js';
import { placeReplicas } from './placement.js';
import { NotPrimary } from './not-primary.js';
import type { ClusterNode } from './node.js';
import { cmp } from './node.js';

/** Bytes of one resync-data request. */
export const RESYNC_CHUNK_BYTES_MAX = 1024 * 1024;
/** resync-data requests in flight per rebuild. */
const RESYNC_INFLIGHT_MAX = 4;
/** Pre-copy rounds go on while a round's diff was larger than this... */
const PRECOPY_DIFF_BYTES_MAX = 8 * 1024 * 1024;
/** ...and at most this many rounds. */
const PRECOPY_ROUNDS_MAX = 5;
/** After a failed rebuild, the volume waits this long before the next attempt. */
const REBUILD_RETRY_MS = 1000;

/** Where a rebuild's copy stands: what the member's live volume reads as, its size, its user snapshots. */
interface CopyState { prev: string | null; sizeBytes: number; held: Set<string> }

interface Running { member: string; sentBytes: number; totalBytes: number }

export class Rebuilder {
  private readonly running = new Map<string, Running>();
  private readonly retryAtMs = new Map<string, number>();
  /** `vol|node` → when this primary first saw the member's node down. */
  private readonly downSinceMs = new Map<string, number>();
  private tempNext = 0;

  constructor(private readonly node: ClusterNode) {}

  progress(vol: string, member: string): number | null {
    const r = this.running.get(vol);
    if (r === undefined || r.member !== member) return 0;
    return r.totalBytes === 0 ? 0 : Math.min(1, r.sentBytes / r.totalBytes);
  }

  /** Starts what `vol` needs next (rebuild, replacement, removal of a replaced member, handover), if anything. */
  consider(vol: string): void {
    const n = this.node;
    if (this.running.has(vol) || (this.retryAtMs.get(vol) ?? 0) > n.clock.nowMs()) return;
    const rec = n.record(vol);
    if (rec === null) return;
    const job = this.nextJob(rec);
    if (job === null) return;
    this.running.set(vol, { member: job.member, sentBytes: 0, totalBytes: 0 });
    n.track(job.run().catch((err: unknown) => {
      // The member stays as it is (rebuilding/down); the next pass after the retry delay tries again.
      this.retryAtMs.set(vol, n.clock.nowMs() + REBUILD_RETRY_MS);
      n.log('cluster.repair_failed', { vol, member: job.member, error: String(err) });
    }).finally(() => {
      this.running.delete(vol);
      n.kick();
    }));
  }

  private nextJob(rec: VolumeRecord): { member: string; run: () => Promise<void> } | null {
    const n = this.node;
    const now = n.clock.nowMs();
    const draining = (node: string): boolean => n.nodeAlive(node)?.draining === true;
    for (const m of rec.members) {
      const key = `${rec.name}|${m.node}`;
      if (n.nodeAlive(m.node) === null) { if (!this.downSinceMs.has(key)) this.downSinceMs.set(key, now); }
      else this.downSinceMs.delete(key);
    }
    const members = [...rec.members].sort((a, b) => cmp(a.node, b.node));
    // 0. The primary has not got the volume: the create's materialize was lost (the record went in
    // first). No in-sync member can hold data it lacks (a write reaches every in-sync member or fails).
    if (!n.member.holds(rec.name) && !n.catalog.deleting.has(rec.name)) return { member: n.self, run: () => n.catalog.materialize(rec.name).then(() => undefined) };
    // A member that restarted (or lost its lease) is a new incarnation: what it held may have lost
    // acknowledged, unflushed writes, so it is not in sync any more, written to or not.
    const restarted = members.find((m) => m.node !== n.self && m.state === 'in-sync' && n.nodeAlive(m.node) !== null && !n.memberAlive(m));
    if (restarted !== undefined) return { member: restarted.node, run: () => n.dropMember(rec.name, restarted.node, 'a new incarnation') };
    // 1. A member whose node is up but which is not in sync: rebuild it.
    const stale = members.find((m) => m.state !== 'in-sync' && n.nodeAlive(m.node) !== null && !draining(m.node));
    if (stale !== undefined) return { member: stale.node, run: () => this.rebuild(rec.name, stale.node) };
    const healthy = members.filter((m) => m.state === 'in-sync' && !draining(m.node));
    // 2. Enough healthy members: remove the extra ones (replaced, or on a draining node) and, when a
    // replaced member came back and caught up, one too many (the one on the busiest node).
    const unwanted = members.find((m) => m.node !== n.self && (m.state !== 'in-sync' || draining(m.node)));
    if (unwanted !== undefined && healthy.length >= rec.replicas) return { member: unwanted.node, run: () => this.remove(rec.name, unwanted.node) };
    if (healthy.length > rec.replicas && unwanted === undefined) {
      const load = new Map(n.nodes().map((v) => [v.name, v.replicas]));
      const surplus = healthy.filter((m) => m.node !== n.self)
        .sort((a, b) => (load.get(b.node) ?? 0) - (load.get(a.node) ?? 0) || cmp(b.node, a.node))[0];
      if (surplus !== undefined) return { member: surplus.node, run: () => this.remove(rec.name, surplus.node) };
    }
    // 3. This primary is draining and another member can take the volume: hand it over.
    if (draining(n.self) && healthy.length >= rec.replicas) {
      const to = healthy.find((m) => m.node !== n.self && n.memberAlive(m));
      if (to !== undefined) return { member: to.node, run: () => this.handOver(rec.name, to.node) };
    }
    // 4. Too few healthy members and one gone for long (or draining): place a replacement.
    const gone = members.find((m) => m.state !== 'in-sync'
      ? now - (this.downSinceMs.get(`${rec.name}|${m.node}`) ?? now) >= n.replaceAfterMs || draining(m.node)
      : draining(m.node));
    if (gone !== undefined && healthy.length < rec.replicas && rec.members.length <= rec.replicas) {
      return { member: gone.node, run: () => this.replace(rec.name, gone.node) };
    }
    return null;
  }

  private async rebuild(vol: string, memberNode: string): Promise<void> {
    const n = this.node;
    const statusReply = await n.request(memberNode, { t: 'status', vol }, n.replicaTimeoutMs);
    if (!statusReply.ok) throw new IoError(`status of ${vol} on ${memberNode}: ${statusReply.code}: ${statusReply.message}`);
    const status = statusReply.result as MemberStatusDetail;
    const plan = this.plan(vol, status);
    await this.setMember(vol, memberNode, (m) => m.state === 'rebuilding' && m.incarnation === status.incarnation ? null : { ...m, state: 'rebuilding', incarnation: status.incarnation });
    const { sizeBytes, encrypted } = n.primaryFor(vol).assertPrimary();
    const base = plan.base;
    await this.send(memberNode, vol, (epoch) => ({ t: 'resync-begin', vol, epoch, base, sizeBytes, encrypted: encrypted === true }));
    await n.bumpEpoch(vol);
    await this.dropTemps(vol);
    const state: CopyState = { prev: base === null ? null : `${vol}@${base}`, sizeBytes, held: new Set(plan.kept) };
    for (const name of plan.drop) await this.dropSnapshot(vol, memberNode, name, state);
    await this.replay(vol, memberNode, state);
    const temps: string[] = [];
    try {
      for (let round = 0; round < PRECOPY_ROUNDS_MAX; round++) {
        const tmp = `${vol}@${tempSnapshotName(++this.tempNext)}`;
        await n.local.createSnapshots([tmp]);
        temps.push(tmp);
        const bytes = await this.copyTo(vol, memberNode, tmp, state);
        if (bytes <= PRECOPY_DIFF_BYTES_MAX) break;
      }
      const vp = n.primaryFor(vol);
      const release = await vp.lock.barrier();
      try {
        const rec = vp.assertPrimary();
        // User snapshots taken or deleted during the pre-copy: the member follows before it joins.
        for (const name of [...state.held].filter((x) => n.local.findSnapshot(`${vol}@${x}`) === null)) await this.dropSnapshot(vol, memberNode, name, state);
        await this.replay(vol, memberNode, state);
        const checkpoint = nextCheckpointName(n.catalog.localCheckpoints(vol), rec.epoch);
        await n.local.createSnapshots([`${vol}@${checkpoint}`]);
        await this.copyTo(vol, memberNode, `${vol}@${checkpoint}`, state);
        await this.send(memberNode, vol, (epoch) => ({ t: 'resync-end', vol, epoch, checkpoint }));
        await this.setMember(vol, memberNode, (m) => m.state === 'rebuilding' && m.incarnation === status.incarnation ? { ...m, state: 'in-sync' } : 'abort');
      } finally {
        release();
      }
    } finally {
      for (const t of temps) await n.local.deleteSnapshot(t);
    }
    const r = this.running.get(vol);
    n.countRebuild(0, true);
    n.log('cluster.rebuilt', { vol, member: memberNode, base, bytes: r?.sentBytes ?? 0 });
  }

  /**
   * The base (newest common checkpoint) and the member's user snapshots: those older than the base
   * are kept when the primary has them too (dropped otherwise); the primary's newer ones are replayed.
   * A user snapshot of the primary older than the base that the member lacks means a full copy.
   */
  private plan(vol: string, status: MemberStatusDetail): { base: string | null; kept: string[]; drop: string[] } {
    const n = this.node;
    const mine = n.catalog.localCheckpoints(vol);
    const common = status.exists ? mine.filter((c) => status.checkpoints.includes(c)) : [];
    const base = common.length > 0 ? common[common.length - 1]! : null;
    if (base === null) return { base: null, kept: [], drop: [] };
    const primaryUser = this.userSnapshots(vol);
    const baseIdHere = n.local.getSnapshot(`${vol}@${base}`).id;
    const baseIdThere = status.snapshotIds[base] ?? 0;
    const keptThere = (status.snapshots ?? []).filter((s) => (status.snapshotIds[s] ?? 0) < baseIdThere);
    const olderHere = primaryUser.filter((s) => s.id < baseIdHere).map((s) => s.name);
    if (olderHere.some((s) => !keptThere.includes(s))) return { base: null, kept: [], drop: [] };
    const newerHere = new Set(primaryUser.filter((s) => s.id > baseIdHere).map((s) => s.name));
    // Same name on both sides but from different times (deleted and taken again): theirs goes.
    const drop = keptThere.filter((s) => !olderHere.includes(s) || newerHere.has(s));
    return { base, kept: keptThere, drop };
  }

  /** The volume's user snapshots here, oldest first. */
  private userSnapshots(vol: string): Array<{ name: string; id: number; sizeBytes: number }> {
    return this.node.member.snapshotsOf(vol).filter((s) => !isHiddenSnapshot(s.name)).sort((a, b) => a.id - b.id)
      .map((s) => ({ name: s.name, id: s.id, sizeBytes: s.sizeBytes }));
  }

  /** Sends the primary's user snapshots the member does not hold yet, oldest first, each after its data. */
  private async replay(vol: string, memberNode: string, state: CopyState): Promise<void> {
    for (const s of this.userSnapshots(vol)) {
      if (state.held.has(s.name)) continue;
      const fullName = `${vol}@${s.name}`;
      await this.copyTo(vol, memberNode, fullName, state);
      await this.send(memberNode, vol, (epoch) => ({ t: 'snapshot', epoch, fullNames: [fullName] }));
      state.held.add(s.name);
    }
  }

  private async dropSnapshot(vol: string, memberNode: string, name: string, state: CopyState): Promise<void> {
    const fullName = `${vol}@${name}`;
    await this.send(memberNode, vol, (epoch) => ({ t: 'delete-snapshot', vol, epoch, fullName }));
    state.held.delete(name);
  }

  /** Makes the member's live volume read as `to` (the diff from what it reads now), at `to`'s size. */
  private async copyTo(vol: string, memberNode: string, to: string, state: CopyState): Promise<number> {
    const toSizeBytes = this.node.local.resolve(to).sizeBytes;
    if (toSizeBytes !== state.sizeBytes) {
      await this.send(memberNode, vol, (epoch) => ({ t: 'resize', vol, epoch, sizeBytes: toSizeBytes }));
      state.sizeBytes = toSizeBytes;
    }
    const bytes = await this.copyDiff(vol, memberNode, state.prev, to);
    state.prev = to;
    return bytes;
  }

  /** Local temporary snapshots an interrupted rebuild left behind. */
  private async dropTemps(vol: string): Promise<void> {
    for (const s of this.node.member.snapshotsOf(vol).filter((x) => isTempSnapshot(x.name))) {
      await this.node.local.deleteSnapshot(s.fullName);
    }
  }

  /** Sends the ranges changed from `from` (null: everything mapped) to `to` as resync-data; returns their bytes. */
  private async copyDiff(vol: string, memberNode: string, from: string | null, to: string): Promise<number> {
    const n = this.node;
    const target = n.local.resolve(to);
    let ranges: ByteRange[];
    if (from === null) {
      ranges = (await n.local.extents(target.id, 0, target.sizeBytes)).filter((e) => !e.hole);
    } else {
      ranges = await n.local.diff(from, to);
    }
    const chunks: ByteRange[] = [];
    for (const r of ranges) {
      // A diff spans the larger of the two sizes: past `to`'s end there is nothing to send.
      const endBytes = Math.min(r.offsetBytes + r.lengthBytes, target.sizeBytes);
      for (let off = r.offsetBytes; off < endBytes; off += RESYNC_CHUNK_BYTES_MAX) {
        chunks.push({ offsetBytes: off, lengthBytes: Math.min(RESYNC_CHUNK_BYTES_MAX, endBytes - off) });
      }
    }
    const total = chunks.reduce((s, c) => s + c.lengthBytes, 0);
    const running = this.running.get(vol);
    if (running !== undefined) running.totalBytes += total;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < chunks.length) {
        const c = chunks[next++]!;
        const data = await n.local.read(target.id, c.offsetBytes, c.lengthBytes);
        await this.send(memberNode, vol, (epoch) => ({ t: 'resync-data', vol, epoch, offsetBytes: c.offsetBytes, data }));
        n.countRebuild(c.lengthBytes, false);
        if (running !== undefined) running.sentBytes += c.lengthBytes;
      }
    };
    await Promise.all(Array.from({ length: Math.min(RESYNC_INFLIGHT_MAX, chunks.length) }, worker));
    return total;
  }

  /** One request in the current epoch of this primary; any refusal ends the rebuild (retried later). */
  private async send(memberNode: string, vol: string, build: (epoch: number) => Parameters<ClusterNode['request']>[1]): Promise<void> {
    const n = this.node;
    const rec = n.primaryFor(vol).assertPrimary();
    const reply = await n.request(memberNode, build(rec.epoch), n.replicaTimeoutMs);
    if (!reply.ok) throw new IoError(`rebuild of ${vol} on ${memberNode}: ${reply.code}: ${reply.message}`);
  }

  /** Changes one member by a record transaction (epoch+1) while this node is the primary. */
  private async setMember(vol: string, memberNode: string, change: (m: MemberRecord) => MemberRecord | null | 'abort'): Promise<void> {
    const n = this.node;
    let aborted = false;
    await n.updateRecord(vol, (rec) => {
      if (rec.primary !== n.self || !n.servesAsPrimary(vol)) throw new NotPrimary(vol, rec.primary);
      const m = rec.members.find((x) => x.node === memberNode);
      const next = m === undefined ? 'abort' : change(m);
      if (next === 'abort') { aborted = true; return null; }
      if (next === null) return null;
      return { ...rec, epoch: rec.epoch + 1, members: rec.members.map((x) => x.node === memberNode ? next : x) };
    });
    if (aborted) throw new IoError(`${vol}: member ${memberNode} changed during its rebuild`);
  }

  /** Adds a member on another node (zone-aware) to stand for `old`; it is rebuilt next, then `old` removed. */
  private async replace(vol: string, old: string): Promise<void> {
    const n = this.node;
    const rec = n.primaryFor(vol).assertPrimary();
    const exclude = new Set(rec.members.map((m) => m.node));
    const usedZones = new Set(rec.members.filter((m) => m.node !== old).flatMap((m) => { const z = n.nodeAlive(m.node)?.zone; return z ? [z] : []; }));
    let candidates = n.nodes().filter((v) => v.alive && !v.draining).map((v) => ({ name: v.name, zone: v.zone, replicas: v.replicas }));
    // An encrypted volume's copy only on a node holding its tenant's KEK.
    if (rec.encrypted === true) candidates = (await n.catalog.encryptionCapable(vol, candidates.filter((c) => !exclude.has(c.name)))).able;
    const chosen = placeReplicas(candidates, 1, exclude, usedZones);
    if (chosen === null) throw new IoError(`${vol}: no node to replace ${old} on`);
    const to = chosen[0]!;
    const incarnation = n.nodeAlive(to)!.incarnation;
    await n.updateRecord(vol, (r) => {
      if (r.primary !== n.self) throw new NotPrimary(vol, r.primary);
      if (r.members.some((m) => m.node === to)) return null;
      return { ...r, epoch: r.epoch + 1, members: [...r.members, { node: to, state: 'rebuilding', incarnation }] };
    });
    n.log('cluster.replacement_placed', { vol, old, to });
  }

  /**
   * A record change this node makes as the volume's primary, under the volume's barrier (nothing in
   * flight); `change` returns null when there is nothing to do. NotPrimary when another node is primary.
   */
  private async changeAsPrimary(vol: string, change: (r: VolumeRecord) => VolumeRecord | null): Promise<void> {
    const n = this.node;
    const release = await n.primaryFor(vol).lock.barrier();
    try {
      await n.updateRecord(vol, (r) => {
        if (r.primary !== n.self) throw new NotPrimary(vol, r.primary);
        return change(r);
      });
    } finally {
      release();
    }
  }

  /** Removes a member no longer needed (replaced or draining) and tells its node to delete the copy. */
  private async remove(vol: string, memberNode: string): Promise<void> {
    const n = this.node;
    await this.changeAsPrimary(vol, (r) => (!r.members.some((m) => m.node === memberNode) ? null
      : { ...r, epoch: r.epoch + 1, members: r.members.filter((m) => m.node !== memberNode) }));
    const reply = await n.request(memberNode, { t: 'delete', vol, epoch: n.record(vol)?.epoch ?? 0 }, n.replicaTimeoutMs);
    // A node that does not answer deletes its copy when it finds itself out of the record (orphan cleanup).
    if (!reply.ok) n.log('cluster.member_delete_failed', { vol, member: memberNode, code: reply.code });
    n.log('cluster.member_removed', { vol, member: memberNode });
  }

  /** A draining primary makes an in-sync member primary (under the barrier: nothing is in flight). */
  private async handOver(vol: string, to: string): Promise<void> {
    const n = this.node;
    await this.changeAsPrimary(vol, (r) => (!r.members.some((m) => m.node === to && m.state === 'in-sync') ? null
      : { ...r, epoch: r.epoch + 1, primary: to }));
    n.forgetPrimary(vol);
    n.log('cluster.handed_over', { vol, to });
  }
}
