// Catalog operations of replicated volumes, run on the volume's primary (forwarded there by an
// `admin` request when called elsewhere): create (placement), snapshots and checkpoints in the
// stream (barrier, local, members), delete-snapshot, resize, revert, clone, delete, and flush.
import {
  InvalidArgument, IoError, NameTaken, VolumeNotFound, CairnError,
  type SnapshotCreateOptions, type SnapshotInfo, type VolumeCreateOptions, type VolumeInfo,
} from '../engine/index.js';
import type { ReplReply } from './messages.js';
import { REPLICAS_MAX, defaultMinInSync, volumeKey, type VolumeRecord } from './records.js';
import { placeReplicas, type PlacementCandidate } from './placement.js';
import { CHECKPOINTS_KEPT, isHiddenSnapshot, nextCheckpointName, sortedCheckpoints } from './checkpoints.js';
import { NotPrimary, remoteError } from './not-primary.js';
import type { VolumePrimary } from './primary.js';
import type { ClusterNode } from './node.js';
import { cmp } from './node.js';

/** A flush to a member refused for a stale epoch is resent in the current epoch at most this often. */
const FLUSH_RETRIES_MAX = 4;

/**
 * A VolumeInfo without the cluster's hidden snapshots. `snapshots` and `snapshotCount` stay lazy
 * (enumerable getters, so an admin reply still carries them): a volume may have 100 000 snapshots.
 */
export function visibleInfo(info: VolumeInfo): VolumeInfo {
  const { snapshots: _names, snapshotCount: count, ...rest } = Object.getOwnPropertyDescriptors(info);
  void _names;
  const out = Object.defineProperties({}, rest) as VolumeInfo;
  let names: string[] | null = null;
  const visible = (): string[] => { names ??= info.snapshots.filter((s) => !isHiddenSnapshot(s)); return names; };
  const countAll = info.snapshotCount;
  void count;
  Object.defineProperty(out, 'snapshots', { enumerable: true, get: visible });
  Object.defineProperty(out, 'snapshotCount', { enumerable: true, get: () => countAll === 0 ? 0 : visible().length });
  return out;
}

function volOf(fullName: string): string {
  const at = fullName.indexOf('@');
  return at < 0 ? fullName : fullName.slice(0, at);
}

export class Catalog {
  /** Volumes being deleted here (their record outlives the local copy for a moment: no repair then). */
  readonly deleting = new Set<string>();

  constructor(private readonly node: ClusterNode) {}

  /** Forwards an admin call to `target` and returns its result (or throws its error). */
  async forward(target: string, op: string, args: unknown[]): Promise<unknown> {
    const reply = await this.node.request(target, { t: 'admin', op, args }, this.node.replicaTimeoutMs + this.node.degradedWaitMs);
    if (reply.ok) return reply.result;
    throw remoteError(reply.code, reply.message);
  }

  /** Runs `op` here when this node is `vol`'s primary, else on its primary. */
  async routed<T>(vol: string, op: string, args: unknown[], here: () => Promise<T>): Promise<T> {
    if (this.node.servesAsPrimary(vol)) return here();
    const rec = this.node.record(vol);
    if (rec === null) throw new VolumeNotFound(vol);
    if (this.node.primaryOf(vol) === null) throw new NotPrimary(vol, null);
    return await this.forward(rec.primary, op, args) as T;
  }

  async serveAdmin(from: string, op: string, args: unknown[]): Promise<ReplReply> {
    try {
      // The caller read the record from its own cache; ours may not have caught up yet (a create
      // forwarded here right after its transaction): read it from the control plane first.
      const vol = adminVolume(op, args);
      const rec = vol === null ? null : this.node.record(vol);
      if (vol !== null && (rec === null || rec.primary !== this.node.self)) await this.node.refreshRecord(vol);
      return { ok: true, result: await this.admin(op, args) };
    } catch (err) {
      const code = err instanceof CairnError ? err.code : 'internal_error';
      this.node.log('cluster.admin_failed', { from, op, error: String(err) });
      return { ok: false, code, message: err instanceof Error ? err.message : String(err) };
    }
  }

  private admin(op: string, a: unknown[]): Promise<unknown> {
    const s = (i: number): string => String(a[i]);
    switch (op) {
      case 'materialize': return this.materialize(s(0));
      case 'createSnapshots': return this.createSnapshots(a[0] as string[]);
      case 'deleteSnapshot': return this.deleteSnapshot(s(0));
      case 'resizeVolume': return this.resize(s(0), Number(a[1]), a[2] === true);
      case 'revertVolume': return this.revert(s(0), s(1));
      case 'cloneVolume': return this.clone(s(0), s(1));
      case 'deleteVolume': return this.delete(s(0));
      case 'flattenVolume': return this.flatten(s(0));
      case 'setDraining': return this.node.setDraining(a[0] === true);
      case 'encryptionRefusal': return Promise.resolve(this.node.encryptionRefusal(s(0)));
      default: return Promise.reject(new InvalidArgument(`unknown admin operation ${op}`));
    }
  }

  private async withBarriers<T>(vps: VolumePrimary[], fn: () => Promise<T>): Promise<T> {
    const releases: Array<() => void> = [];
    try {
      for (const vp of [...vps].sort((a, b) => cmp(a.vol, b.vol))) releases.push(await vp.lock.barrier());
      // Nothing that makes members look like this node (a snapshot, a checkpoint) while one may differ.
      for (const vp of vps) await vp.settleDrops();
      return await fn();
    } finally {
      for (const r of releases) r();
    }
  }

  // ---- create ----

  /** Which of `candidates` can hold an encrypted copy of `vol` now (asked in parallel), and why the others cannot. */
  async encryptionCapable<C extends { name: string }>(vol: string, candidates: C[]): Promise<{ able: C[]; refusals: string[] }> {
    const n = this.node;
    const answers = await Promise.all(candidates.map(async (c): Promise<string | null> => {
      try {
        return c.name === n.self ? n.encryptionRefusal(vol) : await this.forward(c.name, 'encryptionRefusal', [vol]) as string | null;
      } catch (err) {
        return `no answer: ${err instanceof Error ? err.message : String(err)}`;
      }
    }));
    // Asking took time: a node that went down meanwhile is no candidate any more (its record names no incarnation).
    const gone = (c: C): boolean => n.nodeAlive(c.name) === null;
    return {
      able: candidates.filter((c, i) => answers[i] === null && !gone(c)),
      refusals: candidates.flatMap((c, i) => answers[i] !== null ? [`${c.name}: ${answers[i]}`] : gone(c) ? [`${c.name}: went down`] : []),
    };
  }

  async create(name: string, sizeBytes: number, replicasAsked: number | null, opts: VolumeCreateOptions | undefined): Promise<{ record: VolumeRecord; info: VolumeInfo }> {
    const n = this.node;
    const replicas = replicasAsked ?? n.defaultReplicas;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > REPLICAS_MAX) throw new InvalidArgument(`replicas must be 1..${REPLICAS_MAX}, not ${replicas}`);
    const encrypted = opts?.encryption !== undefined;
    n.checkReplicas(replicas, encrypted);
    if (n.record(name) !== null || n.local.listVolumes().some((v) => v.name === name)) throw new NameTaken(name);
    let chosen: string[] | null;
    if (encrypted && replicas === 1) {
      // The data key the caller made is this node's: the one copy stays here.
      chosen = [n.self];
    } else {
      let candidates: PlacementCandidate[] = n.nodes().filter((v) => v.alive && !v.draining).map((v) => ({ name: v.name, zone: v.zone, replicas: v.replicas }));
      if (encrypted) {
        const { able, refusals } = await this.encryptionCapable(name, candidates);
        if (able.length < replicas) {
          throw new InvalidArgument(`${replicas} replicas of an encrypted volume need ${replicas} alive nodes holding its tenant's key-encryption key; ${able.length} ${able.length === 1 ? 'does' : 'do'}${refusals.length > 0 ? ` (${refusals.join('; ')})` : ''}`);
        }
        candidates = able;
      }
      chosen = placeReplicas(candidates, replicas);
      if (chosen === null) throw new InvalidArgument(`${replicas} replicas need ${replicas} alive, non-draining nodes; ${candidates.length} are`);
      // The caller's data key serves when this node is primary; another primary makes its own.
      if (encrypted && chosen.includes(n.self)) chosen = [n.self, ...chosen.filter((c) => c !== n.self)];
    }
    // This node itself (an encrypted volume's one copy) may have lost its node record (its lease lapsed).
    const away = chosen.find((c) => n.nodeAlive(c) === null);
    if (away !== undefined) throw new IoError(`node ${away} is not registered in the cluster now (its lease lapsed?): try again`);
    const record: VolumeRecord = {
      name, sizeBytes, replicas, minInSync: defaultMinInSync(replicas), epoch: 1, primary: chosen[0]!,
      members: chosen.map((node) => ({ node, state: 'in-sync' as const, incarnation: n.nodeAlive(node)!.incarnation })),
      createdMs: n.clock.nowMs(), ...(encrypted ? { encrypted: true as const } : {}),
    };
    const key = volumeKey(name);
    const result = await n.kvCall(() => n.kv.txn([{ key, target: 'mod', equals: 0 }], [{ op: 'put', key, value: JSON.stringify(record) }]));
    if (!result.succeeded) throw new NameTaken(name, 'a volume of the cluster');
    if (n.cache.apply(key, JSON.stringify(record), result.revision) !== null) n.changed(name);
    const info = record.primary === n.self ? await this.materialize(name, opts) : await this.forward(record.primary, 'materialize', [name]) as VolumeInfo;
    return { record: n.record(name) ?? record, info };
  }

  /** On the primary: creates the volume here and on every member (a member that fails is dropped). */
  async materialize(name: string, opts?: VolumeCreateOptions): Promise<VolumeInfo> {
    const n = this.node;
    const vp = n.primaryFor(name);
    const rec = vp.assertPrimary();
    await n.member.raiseFence(name, rec.epoch);
    if (!n.member.holds(name)) {
      // An encrypted volume's copy here under a data key of this node's (the caller's, when it made one here).
      const createOpts = rec.encrypted === true && opts?.encryption === undefined ? { ...opts, encryption: await n.newDataKey(name) } : opts;
      try {
        await n.local.createVolume(name, rec.sizeBytes, createOpts);
      } catch (err) {
        // The create's own materialize and the primary's repair of a lost one can race: one wins.
        if (!(err instanceof NameTaken) || !n.member.holds(name)) throw err;
      }
    }
    await vp.toMembers((epoch) => ({ t: 'create', vol: name, epoch, sizeBytes: rec.sizeBytes, encrypted: rec.encrypted === true }), false);
    return visibleInfo(n.local.getVolume(name));
  }

  // ---- snapshots and checkpoints ----

  async createSnapshots(fullNames: string[], opts?: SnapshotCreateOptions): Promise<SnapshotInfo[]> {
    const n = this.node;
    const vols = [...new Set(fullNames.map(volOf))].filter((v) => n.record(v) !== null);
    const elsewhere = vols.filter((v) => !n.servesAsPrimary(v));
    if (elsewhere.length > 0 && elsewhere.length < vols.length) {
      throw new InvalidArgument(`a consistency-group snapshot needs its volumes on one primary: ${elsewhere.join(', ')} ${elsewhere.length === 1 ? 'has' : 'have'} another`);
    }
    const vps = vols.map((v) => n.primaryFor(v));
    return this.withBarriers(vps, async () => {
      const infos = await n.local.createSnapshots(fullNames, opts);
      for (const vp of vps) {
        const mine = fullNames.filter((f) => volOf(f) === vp.vol);
        await vp.toMembers((epoch) => ({ t: 'snapshot', epoch, fullNames: mine }), false);
      }
      return infos.map((i) => ({ ...i }));
    });
  }

  async deleteSnapshot(fullName: string): Promise<void> {
    const vp = this.node.primaryFor(volOf(fullName));
    await this.withBarriers([vp], async () => {
      await this.node.local.deleteSnapshot(fullName);
      await vp.toMembers((epoch) => ({ t: 'delete-snapshot', vol: vp.vol, epoch, fullName }), false);
    });
  }

  /** A checkpoint in the stream (barrier, here, members), keeping the newest CHECKPOINTS_KEPT. */
  async checkpoint(vol: string): Promise<void> {
    const n = this.node;
    const vp = n.primaryFor(vol);
    await this.withBarriers([vp], async () => {
      const rec = vp.assertPrimary();
      const existing = this.localCheckpoints(vol);
      const name = nextCheckpointName(existing, rec.epoch);
      const fullName = `${vol}@${name}`;
      await n.local.createSnapshots([fullName]);
      vp.writtenSinceCheckpoint = false;
      await vp.toMembers((epoch) => ({ t: 'snapshot', epoch, fullNames: [fullName] }), false);
      for (const old of [...existing, name].slice(0, -CHECKPOINTS_KEPT)) {
        const oldFull = `${vol}@${old}`;
        await n.local.deleteSnapshot(oldFull);
        await vp.toMembers((epoch) => ({ t: 'delete-snapshot', vol, epoch, fullName: oldFull }), false);
      }
    });
  }

  localCheckpoints(vol: string): string[] {
    return sortedCheckpoints(this.node.member.snapshotsOf(vol).map((s) => s.name));
  }

  // ---- volume changes ----

  async resize(name: string, sizeBytes: number, allowShrink: boolean): Promise<VolumeInfo> {
    const n = this.node;
    const vp = n.primaryFor(name);
    return this.withBarriers([vp], async () => {
      await n.local.resizeVolume(name, sizeBytes, { allowShrink });
      await vp.toMembers((epoch) => ({ t: 'resize', vol: name, epoch, sizeBytes }), false);
      // The size and a new epoch in one change (see bumpEpoch: a late duplicate of this resize is refused).
      await n.updateRecord(name, (rec) => {
        if (!n.servesAsPrimary(name)) throw new NotPrimary(name, rec.primary);
        return { ...rec, sizeBytes, epoch: rec.epoch + 1 };
      });
      return visibleInfo(n.local.getVolume(name));
    });
  }

  async revert(name: string, snapshot: string): Promise<VolumeInfo> {
    const n = this.node;
    const vp = n.primaryFor(name);
    return this.withBarriers([vp], async () => {
      await n.local.revertVolume(name, snapshot);
      vp.writtenSinceCheckpoint = true;
      await vp.toMembers((epoch) => ({ t: 'revert', vol: name, epoch, snapshot }), false);
      await n.bumpEpoch(name);
      return visibleInfo(n.local.getVolume(name));
    });
  }

  async flatten(name: string): Promise<VolumeInfo> {
    this.node.primaryFor(name);
    // Flatten changes what blocks are shared, never what the volume reads: members need not follow.
    return visibleInfo(await this.node.local.flattenVolume(name));
  }

  /** A clone gets its source's members: in-sync ones in sync, the others down (rebuilt later). */
  async clone(name: string, source: string): Promise<VolumeInfo> {
    const n = this.node;
    const srcVp = n.primaryFor(volOf(source));
    if (n.record(name) !== null) throw new NameTaken(name);
    const src = srcVp.assertPrimary();
    const info = await this.withBarriers(source.includes('@') ? [] : [srcVp], () => n.local.cloneVolume(name, source));
    const record: VolumeRecord = {
      name, sizeBytes: info.sizeBytes, replicas: src.replicas, minInSync: src.minInSync, epoch: 1, primary: n.self,
      members: src.members.map((m) => ({ ...m, state: m.state === 'in-sync' ? 'in-sync' as const : 'down' as const })),
      createdMs: n.clock.nowMs(), ...(src.encrypted === true ? { encrypted: true as const } : {}),
    };
    const key = volumeKey(name);
    const result = await n.kvCall(() => n.kv.txn([{ key, target: 'mod', equals: 0 }], [{ op: 'put', key, value: JSON.stringify(record) }]));
    if (!result.succeeded) {
      await n.local.deleteVolume(name);
      throw new NameTaken(name, 'a volume of the cluster');
    }
    if (n.cache.apply(key, JSON.stringify(record), result.revision) !== null) n.changed(name);
    await n.member.raiseFence(name, 1);
    const vp = n.primaryFor(name);
    await vp.toMembers((epoch) => ({ t: 'clone', vol: name, epoch, source }), false);
    return visibleInfo(n.local.getVolume(name));
  }

  /** Members first (one that is away deletes its copy when it comes back and finds no record), then the record. */
  async delete(name: string): Promise<void> {
    const n = this.node;
    const vp = n.primaryFor(name);
    this.deleting.add(name);
    await this.withBarriers([vp], async () => {
      const rec = vp.assertPrimary();
      for (const m of rec.members) {
        if (m.node === n.self) continue;
        const reply = await n.request(m.node, { t: 'delete', vol: name, epoch: rec.epoch }, n.replicaTimeoutMs);
        if (!reply.ok) n.log('cluster.member_delete_failed', { vol: name, member: m.node, code: reply.code });
      }
      await n.member.deleteCopy(name);
      await n.updateRecord(name, () => 'delete');
      n.forgetPrimary(name);
    }).finally(() => this.deleting.delete(name));
  }

  // ---- flush ----

  /** Local flush, then a flush to every member node written since its last one (a failing member is dropped). */
  async flush(): Promise<void> {
    const n = this.node;
    const targets = new Map<string, Set<string>>();
    const vps = n.servedPrimaries();
    for (const vp of vps) {
      for (const member of vp.unflushed) {
        let vols = targets.get(member);
        if (vols === undefined) { vols = new Set(); targets.set(member, vols); }
        vols.add(vp.vol);
      }
      vp.unflushed.clear();
    }
    const startMs = n.clock.nowMs();
    await n.local.flush();
    await Promise.all([...targets].sort((a, b) => cmp(a[0], b[0])).map(([member, vols]) => this.flushMember(member, [...vols].sort(cmp))));
    for (const vp of vps) if (n.servesAsPrimary(vp.vol)) await vp.waitMinInSync(startMs);
  }

  private async flushMember(member: string, vols: string[]): Promise<void> {
    const n = this.node;
    for (let attempt = 0; ; attempt++) {
      const still = vols.filter((v) => n.servesAsPrimary(v) && n.record(v)!.members.some((m) => m.node === member && m.state === 'in-sync'));
      if (still.length === 0) return;
      const sent = still.map((vol) => ({ vol, epoch: n.record(vol)!.epoch }));
      const reply = await n.request(member, { t: 'flush', vols: sent }, n.replicaTimeoutMs);
      if (reply.ok) return;
      if (reply.code === 'stale_epoch' && attempt < FLUSH_RETRIES_MAX) {
        let newer = false;
        for (const s of sent) newer = ((await n.refreshRecord(s.vol))?.epoch ?? 0) > s.epoch || newer;
        if (newer) continue;
      }
      for (const vol of still) {
        if (!n.servesAsPrimary(vol)) throw new NotPrimary(vol, n.record(vol)?.primary ?? null);
        await n.dropMember(vol, member, `flush: ${reply.code}: ${reply.message}`);
      }
      return;
    }
  }
}

/** The volume an admin operation is routed by (null: a node-wide one). */
function adminVolume(op: string, args: unknown[]): string | null {
  const volOf = (ref: unknown): string => String(ref).split('@')[0]!;
  switch (op) {
    case 'createSnapshots': return Array.isArray(args[0]) && args[0].length > 0 ? volOf(args[0][0]) : null;
    case 'cloneVolume': return volOf(args[1]);
    case 'setDraining': return null;
    case 'encryptionRefusal': return null; // asked before the volume exists
    default: return volOf(args[0]);
  }
}
