// The primary side of one replicated volume (design "Data path on the primary"): a range lock so
// overlapping requests reach every member in one order, a seq per data request and member within the epoch,
// fan-out to the in-sync members, dropping a member that fails (epoch+1), and the min-in-sync wait.
import { assert, fail, IoError, type Engine } from '../engine/index.js';
import type { Clock } from './clock.js';
import type { ReplReply, ReplRequest } from './messages.js';
import type { MemberRecord, VolumeRecord } from './records.js';
import { RangeLock } from './range-lock.js';
import { NotPrimary } from './not-primary.js';

/** A stale_epoch answer is retried in the current epoch at most this many times before the member is dropped. */
const STALE_RETRIES_MAX = 4;

/** What a VolumePrimary needs from its node (implemented by ClusterNode). */
export interface PrimaryHost {
  readonly self: string;
  readonly clock: Clock;
  readonly local: Engine;
  readonly replicaTimeoutMs: number;
  readonly degradedWaitMs: number;
  record(vol: string): VolumeRecord | null;
  /** This node serves `vol` as primary now (record, incarnation, lease). */
  servesAsPrimary(vol: string): boolean;
  /** Re-reads the record from the control plane (after a refusal). */
  refreshRecord(vol: string): Promise<VolumeRecord | null>;
  /** Marks `node` down in `vol`'s record (epoch+1); NotPrimary when this node lost the volume meanwhile. */
  dropMember(vol: string, node: string, reason: string): Promise<void>;
  /** One request; a transport failure or timeout comes back as a non-ok reply. */
  request(node: string, request: ReplRequest, timeoutMs: number): Promise<ReplReply>;
  /** Resolves on the next change of `vol`'s record, or after `ms`. */
  waitRecordChange(vol: string, ms: number): Promise<void>;
  inflightChanged(delta: number): void;
  log(event: string, fields: Record<string, unknown>): void;
}

export type RequestBuilder = (epoch: number, member: MemberRecord, nextSeq: () => number) => ReplRequest;

export class VolumePrimary {
  readonly lock = new RangeLock();
  private seqEpoch = 0;
  /**
   * The last seq sent to each member in seqEpoch. Counted per member, so each member sees its seqs dense
   * from 1 (its dedupe floor advances over them) even when a request is resent to one member only (in a
   * newer epoch after a stale_epoch answer). One counter shared by the members left every member gaps
   * that held its floor: its dedupe set grew to the bound and, with the old trim, cost O(n) per write.
   */
  private readonly seqs = new Map<string, number>();
  /** Member nodes written since their last flush. */
  readonly unflushed = new Set<string>();
  /** Written since the last checkpoint (the checkpoint timer skips an idle volume). */
  writtenSinceCheckpoint = false;
  /**
   * Members that failed a request but could not be dropped (the control plane was away): they may
   * lack something this node applied, so nothing more goes out for the volume (no write, snapshot or
   * checkpoint that would make them look the same as here) until the drop is in the record.
   */
  private readonly dropsPending = new Set<string>();

  constructor(private readonly host: PrimaryHost, readonly vol: string) {}

  private nextSeq(node: string, epoch: number): number {
    // A record read here never goes back in epoch; if it did, seqs would start again at 1 and a member
    // would take a new write for a duplicate of an old one.
    if (epoch < this.seqEpoch) fail(`${this.vol}: epoch ${epoch} after ${this.seqEpoch}`);
    if (epoch !== this.seqEpoch) { this.seqEpoch = epoch; this.seqs.clear(); }
    const seq = (this.seqs.get(node) ?? 0) + 1;
    this.seqs.set(node, seq);
    return seq;
  }

  assertPrimary(): VolumeRecord {
    const rec = this.host.record(this.vol);
    if (rec === null || !this.host.servesAsPrimary(this.vol)) throw new NotPrimary(this.vol, rec?.primary ?? null);
    return rec;
  }

  inSyncCount(): number {
    const rec = this.host.record(this.vol);
    return rec === null ? 0 : rec.members.filter((m) => m.state === 'in-sync').length;
  }

  /**
   * Waits (up to degradedWaitMs from `startMs`) until at least minInSync members are in sync: a write
   * is never acknowledged below the minimum. EIO when the wait runs out.
   */
  async waitMinInSync(startMs: number): Promise<void> {
    for (;;) {
      const rec = this.assertPrimary();
      if (this.inSyncCount() >= rec.minInSync) return;
      const leftMs = startMs + this.host.degradedWaitMs - this.host.clock.nowMs();
      if (leftMs <= 0) {
        throw new IoError(`${this.vol}: ${this.inSyncCount()} in-sync replicas, fewer than its minimum ${rec.minInSync} (waited ${this.host.degradedWaitMs} ms for a rebuild)`);
      }
      await this.host.waitRecordChange(this.vol, leftMs);
    }
  }

  /** Completes the drops a failed control plane left pending; throws while one still cannot be done. */
  async settleDrops(): Promise<void> {
    for (const node of [...this.dropsPending].sort()) {
      await this.host.dropMember(this.vol, node, 'a failed request earlier');
      this.dropsPending.delete(node);
    }
  }

  private async drop(node: string, reason: string): Promise<void> {
    this.dropsPending.add(node);
    await this.host.dropMember(this.vol, node, reason);
    this.dropsPending.delete(node);
  }

  /** A data request: ordered by the range lock, applied here, then on every in-sync member. */
  async data(offsetBytes: number, lengthBytes: number, applyLocal: () => Promise<void>, build: RequestBuilder): Promise<void> {
    const startMs = this.host.clock.nowMs();
    await this.waitMinInSync(startMs);
    const release = await this.lock.acquire(offsetBytes, lengthBytes);
    try {
      this.assertPrimary();
      await this.settleDrops();
      this.writtenSinceCheckpoint = true;
      // Here and on the members at once (the range lock keeps overlapping requests in one order
      // everywhere): a write costs the slower of the two, not their sum. The caller checked the range,
      // so what fails here is this pool (full, I/O error): the members that applied it then differ,
      // and are dropped to be rebuilt from the last checkpoint.
      const [local, remote] = await Promise.allSettled([applyLocal(), this.toMembers(build, true)]);
      if (local.status === 'rejected') {
        await this.dropMembersAfterLocalFailure(local.reason);
        throw local.reason;
      }
      if (remote.status === 'rejected') throw remote.reason;
    } finally {
      release();
    }
    await this.waitMinInSync(startMs);
  }

  /** The local half of a data request failed after the members may have applied it: they are dropped. */
  private async dropMembersAfterLocalFailure(reason: unknown): Promise<void> {
    const rec = this.host.record(this.vol);
    if (rec === null) return;
    // Pending first, all of them: a drop the control plane refuses now is retried before anything else goes out.
    for (const m of rec.members) if (m.node !== this.host.self && m.state === 'in-sync') this.dropsPending.add(m.node);
    await this.settleDrops().catch((err: unknown) => {
      this.host.log('cluster.drop_deferred', { vol: this.vol, why: `the primary's own write failed: ${reason instanceof Error ? reason.message : String(reason)}`, error: String(err) });
    });
  }

  /**
   * Sends to every in-sync member in parallel; a member that fails is dropped. Whatever stops a request
   * short of a member's ok (this node losing its lease or the volume, the control plane away during a
   * retry) leaves that member pending drop: this node may already hold what the member lacks, and
   * nothing more goes out for the volume until the drop is in the record.
   */
  async toMembers(build: RequestBuilder, data: boolean): Promise<void> {
    const known = this.host.record(this.vol);
    const targets = known === null ? [] : known.members.filter((m) => m.node !== this.host.self && m.state === 'in-sync').map((m) => m.node);
    let others: string[];
    try {
      this.assertPrimary();
      await this.settleDrops();
      const rec = this.assertPrimary();
      others = rec.members.filter((m) => m.node !== this.host.self && m.state === 'in-sync').map((m) => m.node);
    } catch (err) {
      for (const node of targets) this.dropsPending.add(node);
      throw err;
    }
    // Every request settles before the caller releases its range lock (an overlapping request must not overtake one).
    const results = await Promise.allSettled(others.map((node) => this.toMember(node, build, data)));
    const failed = results.findIndex((r) => r.status === 'rejected');
    if (failed < 0) return;
    results.forEach((r, i) => { if (r.status === 'rejected') this.dropsPending.add(others[i]!); });
    throw (results[failed] as PromiseRejectedResult).reason;
  }

  private async toMember(node: string, build: RequestBuilder, data: boolean): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const rec = this.assertPrimary();
      const member = rec.members.find((m) => m.node === node);
      // Dropped (or replaced) meanwhile: this request no longer has to reach it.
      if (member === undefined || member.state !== 'in-sync') return;
      if (data) this.unflushed.add(node);
      const request = build(rec.epoch, member, () => this.nextSeq(node, rec.epoch));
      if (data) this.host.inflightChanged(1);
      let reply: ReplReply;
      try {
        reply = await this.host.request(node, request, this.host.replicaTimeoutMs);
      } finally {
        if (data) this.host.inflightChanged(-1);
      }
      if (reply.ok) return;
      if (reply.code === 'stale_epoch' && attempt < STALE_RETRIES_MAX) {
        // The member saw a newer epoch (ours bumped by a drop or a rebuild meanwhile, or another node
        // took over): resend in the current epoch when this node is still primary and the member in sync.
        const fresh = await this.host.refreshRecord(this.vol);
        const knownEpoch = 'epoch' in reply ? reply.epoch : Number.MAX_SAFE_INTEGER;
        if (fresh !== null && this.host.servesAsPrimary(this.vol) && fresh.epoch > rec.epoch && fresh.epoch >= knownEpoch) continue;
        this.assertPrimary();
      }
      await this.drop(node, `${request.t}: ${reply.code}: ${reply.message}`);
      return;
    }
  }
}
