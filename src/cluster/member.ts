// The member (replica) side of the replication protocol: fencing by epoch (persisted in the pool's
// settings, so a restart keeps it), the incarnation check, (epoch, seq) dedupe of data requests, and
// every request of messages.ts applied idempotently (a retried or duplicated request is harmless).
import { CairnError, VolumeNotFound, type DataKey, type Engine, type SnapshotInfo } from '../engine/index.js';
import type { MemberStatus, ReplReply, ReplRequest } from './messages.js';
import { CHECKPOINT_PREFIX, sortedCheckpoints } from './checkpoints.js';
import { RangeLock } from './range-lock.js';

const FENCE_SETTING_PREFIX = 'cluster/epoch/';
/** Applied seqs remembered above the floor per volume: beyond this the oldest are forgotten. */
const DEDUPE_SEQS_MAX = 65536;

export function fenceSettingKey(vol: string): string { return `${FENCE_SETTING_PREFIX}${encodeURIComponent(vol)}`; }

/**
 * MemberStatus with the member's user snapshots, so a rebuild can bring them over too (an additive
 * extension of the contract's MemberStatus: a reader of MemberStatus ignores the rest).
 */
export interface MemberStatusDetail extends MemberStatus {
  /** User (not checkpoint) snapshots of the volume, oldest first. */
  snapshots: string[];
  /** Every snapshot of the volume (user and checkpoint) → its id in this pool (ids grow with creation). */
  snapshotIds: Record<string, number>;
}

interface Dedupe {
  epoch: number;
  /** Every seq ≤ floor was applied. */
  floor: number;
  /** Seqs above the floor: the promise of their application, APPLIED once it succeeded (the floor only moves over those). */
  seen: Map<number, Promise<ReplReply>>;
}

/** What `seen` holds for a seq applied already: a duplicate of it is answered at once. */
const APPLIED: Promise<ReplReply> = Promise.resolve({ ok: true });

export interface MemberContext {
  engine: Engine;
  incarnation(): string;
  log(event: string, fields: Record<string, unknown>): void;
  /** A data key for this node's copy of an encrypted volume (ClusterNode.newDataKey). */
  newDataKey(vol: string): Promise<DataKey>;
}

export class Member {
  private readonly fences = new Map<string, number>();
  private readonly dedupes = new Map<string, Dedupe>();
  /**
   * The incarnation in which each volume was last brought in step with a primary here (created,
   * cloned, rebuilt, or written as this incarnation). A stream request that carries no incarnation
   * (snapshot, resize, revert, delete-snapshot) is refused for a copy from an older incarnation: a
   * restarted member may have lost writes, and a checkpoint it took would look common and is not.
   */
  private readonly inStep = new Map<string, string>();
  /**
   * Per volume: a catalog request (revert, resize, resync-begin...) runs alone, after the data requests
   * admitted before it, so a late duplicate of one can never land between data requests that followed
   * it: it waits, then meets the newer epoch those carried (the primary bumps the epoch after each).
   */
  private readonly locks = new Map<string, RangeLock>();
  /** Setting writes in call order, so a lower epoch never overwrites a higher one. */
  private persistChain: Promise<void> = Promise.resolve();

  constructor(private readonly ctx: MemberContext) {}

  /** The fence epoch of `vol` (0: never seen). */
  fence(vol: string): number {
    let fence = this.fences.get(vol);
    if (fence === undefined) {
      const stored = this.ctx.engine.getSetting(fenceSettingKey(vol));
      fence = stored === null ? 0 : Number(stored.toString('utf8'));
      this.fences.set(vol, fence);
    }
    return fence;
  }

  /** Raises the fence of `vol` to `epoch` (no-op when it is not higher); durable when it resolves. */
  raiseFence(vol: string, epoch: number): Promise<void> {
    if (epoch <= this.fence(vol)) return this.persistChain;
    this.fences.set(vol, epoch);
    const write = this.persistChain.then(() => this.ctx.engine.putSettings([{ key: fenceSettingKey(vol), value: Buffer.from(String(this.fences.get(vol))) }]));
    this.persistChain = write.catch((err: unknown) => {
      // The next raise retries the write; the in-memory fence already refuses older epochs.
      this.ctx.log('cluster.fence_persist_failed', { vol, error: String(err) });
    });
    return write;
  }

  /** Forgets a deleted volume's fence and dedupe state. */
  async forget(vol: string): Promise<void> {
    this.fences.delete(vol);
    this.dedupes.delete(vol);
    if (this.ctx.engine.getSetting(fenceSettingKey(vol)) !== null) {
      await this.persistChain;
      await this.ctx.engine.putSettings([{ key: fenceSettingKey(vol), value: null }]);
    }
  }

  /** Volumes this pool holds a fence for: the ones the cluster placed here. */
  fencedVolumes(): string[] {
    return this.ctx.engine.listSettings(FENCE_SETTING_PREFIX).map((s) => decodeURIComponent(s.key.slice(FENCE_SETTING_PREFIX.length)));
  }

  status(vol: string): MemberStatusDetail {
    const exists = this.holds(vol);
    const all = this.snapshotsOf(vol).sort((a, b) => a.id - b.id);
    const snapshotIds: Record<string, number> = {};
    for (const s of all) snapshotIds[s.name] = s.id;
    return {
      exists, epoch: this.fence(vol), incarnation: this.ctx.incarnation(),
      sizeBytes: exists ? this.ctx.engine.getVolume(vol).sizeBytes : 0, checkpoints: sortedCheckpoints(all.map((s) => s.name)),
      snapshots: all.filter((s) => !s.name.startsWith(CHECKPOINT_PREFIX)).map((s) => s.name), snapshotIds,
    };
  }

  async handle(request: ReplRequest): Promise<ReplReply> {
    const releases: Array<() => void> = [];
    try {
      for (const scope of lockScopes(request)) {
        let lock = this.locks.get(scope.vol);
        if (lock === undefined) { lock = new RangeLock(); this.locks.set(scope.vol, lock); }
        releases.push(await (scope.range === null ? lock.barrier() : lock.acquire(scope.range.offsetBytes, scope.range.lengthBytes)));
      }
      return await this.dispatch(request);
    } catch (err) {
      const code = err instanceof CairnError ? err.code : 'internal_error';
      return { ok: false, code, message: err instanceof Error ? err.message : String(err) };
    } finally {
      for (const r of releases) r();
    }
  }

  /** `vol` here is in step with the primary as this incarnation (also: this node serves it as primary). */
  stepped(vol: string): void { this.inStep.set(vol, this.ctx.incarnation()); }

  /** A refusal when `vol`'s copy was not brought in step in this incarnation, else null. */
  private notInStep(vol: string): ReplReply | null {
    if (this.inStep.get(vol) === this.ctx.incarnation()) return null;
    return { ok: false, code: 'stale_incarnation', incarnation: this.ctx.incarnation(), message: `${vol} here predates incarnation ${this.ctx.incarnation()}: it needs a rebuild` };
  }

  /** null when `epoch` may proceed (raising the fence first when newer), else the refusal. */
  private async admit(vol: string, epoch: number, incarnation?: string): Promise<ReplReply | null> {
    if (incarnation !== undefined && incarnation !== this.ctx.incarnation()) {
      return { ok: false, code: 'stale_incarnation', incarnation: this.ctx.incarnation(), message: `this node is incarnation ${this.ctx.incarnation()}, not ${incarnation}` };
    }
    const fence = this.fence(vol);
    if (epoch < fence) return { ok: false, code: 'stale_epoch', epoch: fence, message: `${vol}: epoch ${epoch} is older than ${fence}` };
    if (epoch > fence) await this.raiseFence(vol, epoch);
    return null;
  }

  private async dispatch(r: ReplRequest): Promise<ReplReply> {
    const e = this.ctx.engine;
    switch (r.t) {
      case 'write': case 'trim': case 'zero': {
        const refused = await this.admit(r.vol, r.epoch, r.incarnation);
        if (refused !== null) return refused;
        this.stepped(r.vol);
        return this.once(r.vol, r.epoch, r.seq, () => this.applyData(r));
      }
      case 'flush': {
        for (const v of r.vols) {
          const refused = await this.admit(v.vol, v.epoch);
          if (refused !== null) return refused;
        }
        await e.flush();
        return { ok: true };
      }
      case 'snapshot': {
        const missing: string[] = [];
        for (const fullName of r.fullNames) {
          const vol = fullName.slice(0, fullName.indexOf('@'));
          const refused = (await this.admit(vol, r.epoch)) ?? this.notInStep(vol);
          if (refused !== null) return refused;
          if (e.findSnapshot(fullName) === null) missing.push(fullName);
        }
        if (missing.length > 0) await e.createSnapshots(missing);
        return { ok: true };
      }
      case 'delete-snapshot': {
        const refused = (await this.admit(r.vol, r.epoch)) ?? this.notInStep(r.vol);
        if (refused !== null) return refused;
        if (e.findSnapshot(r.fullName) !== null) await e.deleteSnapshot(r.fullName);
        return { ok: true };
      }
      case 'create': {
        const refused = await this.admit(r.vol, r.epoch);
        if (refused !== null) return refused;
        if (!this.exists(r.vol)) await this.createCopy(r.vol, r.sizeBytes, r.encrypted === true);
        this.stepped(r.vol);
        return { ok: true };
      }
      case 'clone': {
        const refused = await this.admit(r.vol, r.epoch);
        if (refused !== null) return refused;
        if (!this.exists(r.vol)) await e.cloneVolume(r.vol, r.source);
        this.stepped(r.vol);
        return { ok: true };
      }
      case 'delete': {
        const refused = await this.admit(r.vol, r.epoch);
        if (refused !== null) return refused;
        await this.deleteCopy(r.vol);
        return { ok: true };
      }
      case 'resize': {
        const refused = (await this.admit(r.vol, r.epoch)) ?? this.notInStep(r.vol);
        if (refused !== null) return refused;
        if (e.getVolume(r.vol).sizeBytes !== r.sizeBytes) await e.resizeVolume(r.vol, r.sizeBytes, { allowShrink: true });
        return { ok: true };
      }
      case 'revert': {
        const refused = (await this.admit(r.vol, r.epoch)) ?? this.notInStep(r.vol);
        if (refused !== null) return refused;
        await e.revertVolume(r.vol, r.snapshot);
        return { ok: true };
      }
      case 'status':
        return { ok: true, result: this.status(r.vol) };
      case 'resync-begin': {
        const refused = await this.admit(r.vol, r.epoch);
        if (refused !== null) return refused;
        await this.resyncBegin(r.vol, r.base, r.sizeBytes, r.encrypted === true);
        this.stepped(r.vol);
        return { ok: true };
      }
      case 'resync-data': {
        // Only the incarnation that took the resync-begin: a restart in between may have lost part of it.
        const refused = (await this.admit(r.vol, r.epoch)) ?? this.notInStep(r.vol);
        if (refused !== null) return refused;
        const id = e.resolve(r.vol).id;
        // A hole or zeroes on the primary stay a hole here: the bytes read the same either way.
        if (isAllZero(r.data)) await e.writeZeroes(id, r.offsetBytes, r.data.length);
        else await e.write(id, r.offsetBytes, r.data);
        return { ok: true };
      }
      case 'resync-end': {
        // Only the incarnation that took the resync-begin: a restart in between may have lost part of it.
        const refused = (await this.admit(r.vol, r.epoch)) ?? this.notInStep(r.vol);
        if (refused !== null) return refused;
        const fullName = `${r.vol}@${r.checkpoint}`;
        if (e.findSnapshot(fullName) === null) await e.createSnapshots([fullName]);
        await e.flush();
        return { ok: true };
      }
      case 'admin':
        return { ok: false, code: 'internal_error', message: 'admin requests are served by the node, not the member' };
    }
  }

  /** `vol`'s snapshots; none when the volume (and every snapshot of it) is gone. */
  snapshotsOf(vol: string): SnapshotInfo[] {
    try {
      return this.ctx.engine.listSnapshots(vol).filter((s) => s.volume === vol);
    } catch (err) {
      // A volume deleted with no snapshot left is unknown to listSnapshots: it has none.
      if (err instanceof VolumeNotFound) return [];
      throw err;
    }
  }

  private exists(vol: string): boolean { return this.holds(vol); }

  /** This pool holds the live volume `vol`. */
  holds(vol: string): boolean {
    try {
      this.ctx.engine.resolve(vol);
      return true;
    } catch (err) {
      // resolve is the O(1) existence check; only "not found" means absent.
      if (err instanceof VolumeNotFound) return false;
      throw err;
    }
  }

  /** Applies data request (epoch, seq) once: a duplicate waits for the first copy's result. */
  private once(vol: string, epoch: number, seq: number, apply: () => Promise<void>): Promise<ReplReply> {
    let d = this.dedupes.get(vol);
    if (d === undefined || d.epoch < epoch) {
      d = { epoch, floor: 0, seen: new Map() };
      this.dedupes.set(vol, d);
    }
    if (d.epoch > epoch || seq <= d.floor) return Promise.resolve({ ok: true });
    const earlier = d.seen.get(seq);
    if (earlier !== undefined) return earlier;
    const dedupe = d;
    const result = apply().then((): ReplReply => ({ ok: true }), (err: unknown): ReplReply => {
      // A failed application is not remembered: a retry of the same seq applies it again.
      dedupe.seen.delete(seq);
      const code = err instanceof CairnError ? err.code : 'internal_error';
      return { ok: false, code, message: err instanceof Error ? err.message : String(err) };
    });
    dedupe.seen.set(seq, result);
    void result.then((reply) => {
      // Not when the bound forgot it meanwhile (or a failure removed it).
      if (!reply.ok || dedupe.seen.get(seq) !== result) return;
      dedupe.seen.set(seq, APPLIED);
      this.compact(dedupe);
    });
    return result;
  }

  private compact(d: Dedupe): void {
    // Seqs are handed out densely from 1, so the floor advances over the applied prefix; a gap left by
    // a lost request would hold it, hence the bound on what is kept above it.
    while (d.seen.get(d.floor + 1) === APPLIED) {
      d.seen.delete(d.floor + 1);
      d.floor++;
    }
    if (d.seen.size <= DEDUPE_SEQS_MAX) return;
    // Over the bound, the oldest quarter goes at once: one sort per DEDUPE_SEQS_MAX / 4 writes, where
    // finding the oldest on every write cost O(n) each time a gap held the floor.
    const seqs = [...d.seen.keys()].sort((a, b) => a - b);
    const cut = seqs[seqs.length - Math.floor((DEDUPE_SEQS_MAX * 3) / 4) - 1]!;
    for (const seq of seqs) {
      if (seq > cut) break;
      d.seen.delete(seq);
    }
    d.floor = Math.max(d.floor, cut);
    this.compact(d);
  }

  private async applyData(r: Extract<ReplRequest, { t: 'write' | 'trim' | 'zero' }>): Promise<void> {
    const e = this.ctx.engine;
    const id = e.resolve(r.vol).id;
    if (r.t === 'write') await e.write(id, r.offsetBytes, r.data, { fua: r.fua });
    else if (r.t === 'trim') await e.trim(id, r.offsetBytes, r.lengthBytes, { fua: r.fua });
    else await e.writeZeroes(id, r.offsetBytes, r.lengthBytes, { fua: r.fua, noHole: r.noHole });
  }

  /** Deletes this node's copy of `vol` with its snapshots (a replaced member or a deleted volume). */
  async deleteCopy(vol: string): Promise<void> {
    const e = this.ctx.engine;
    if (this.exists(vol)) await e.deleteVolume(vol);
    for (const s of this.snapshotsOf(vol).filter((x) => x.name.startsWith(CHECKPOINT_PREFIX))) await e.deleteSnapshot(s.fullName);
    await this.forget(vol);
  }

  /** A new, empty copy of `vol`; an encrypted volume's copy under a data key of this node's. */
  private async createCopy(vol: string, sizeBytes: number, encrypted: boolean): Promise<void> {
    await this.ctx.engine.createVolume(vol, sizeBytes, encrypted ? { encryption: await this.ctx.newDataKey(vol) } : undefined);
  }

  private async resyncBegin(vol: string, base: string | null, sizeBytes: number, encrypted: boolean): Promise<void> {
    const e = this.ctx.engine;
    this.dedupes.delete(vol);
    if (base === null) {
      // Nothing in common: start from an empty volume (snapshots of the old copy are stale too).
      if (this.exists(vol)) await e.deleteVolume(vol);
      for (const s of this.snapshotsOf(vol)) await e.deleteSnapshot(s.fullName);
      await this.createCopy(vol, sizeBytes, encrypted);
      return;
    }
    await e.revertVolume(vol, base);
    if (e.getVolume(vol).sizeBytes !== sizeBytes) await e.resizeVolume(vol, sizeBytes, { allowShrink: true });
    // Other checkpoints go, and the user snapshots taken after the base here: the rebuild replays the
    // primary's own ones (this copy's may hold writes the primary never acknowledged).
    const baseId = e.getSnapshot(`${vol}@${base}`).id;
    for (const s of this.snapshotsOf(vol).filter((x) => x.name.startsWith(CHECKPOINT_PREFIX) ? x.name !== base : x.id > baseId)) {
      await e.deleteSnapshot(s.fullName);
    }
  }
}

/** What a request locks: a range of one volume for data, the whole volume (range null) for the rest. */
function lockScopes(r: ReplRequest): Array<{ vol: string; range: { offsetBytes: number; lengthBytes: number } | null }> {
  switch (r.t) {
    case 'write': case 'resync-data': return [{ vol: r.vol, range: { offsetBytes: r.offsetBytes, lengthBytes: r.data.length } }];
    case 'trim': case 'zero': return [{ vol: r.vol, range: { offsetBytes: r.offsetBytes, lengthBytes: r.lengthBytes } }];
    case 'snapshot': return [...new Set(r.fullNames.map((f) => f.slice(0, f.indexOf('@'))))].sort().map((vol) => ({ vol, range: null }));
    case 'flush': case 'status': case 'admin': return [];
    default: return [{ vol: r.vol, range: null }];
  }
}

function isAllZero(data: Buffer): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}
