// A storage node of the cluster (issue 22): registers under a lease, watches /cairn/, serves the
// replication protocol (member side), drives its primaries' data path, failover, rebuild, replacement
// and drain. Deterministic given its Kv, Transport and Clock (the simulator replays it from a seed).
import { IoError, InvalidArgument, VolumeNotFound, type DataKey, type Engine, type VolumeCreateOptions } from '../engine/index.js';
import type { Clock } from './clock.js';
import { KvUnavailable, type Kv, type KvCompare } from './kv.js';
import type { Transport } from './transport.js';
import type { ReplReply, ReplRequest } from './messages.js';
import {
  KEY_PREFIX, nodeKey, volumeKey, type MemberRecord, type NodeAddresses, type NodeRecord, type VolumeRecord,
} from './records.js';
import type { ClusterCounters, ClusterHandle, ClusterStatus, NodeView, ReplicaView } from './handle.js';
import { RecordCache } from './record-cache.js';
import { Member } from './member.js';
import { VolumePrimary, type PrimaryHost } from './primary.js';
import { NotPrimary } from './not-primary.js';
import { ReplicatedEngine } from './replicated-engine.js';
import { Catalog } from './catalog.js';
import { considerTakeover } from './failover.js';
import { Rebuilder } from './rebuild.js';

export interface ClusterNodeOptions {
  name: string;
  zone: string | null;
  addresses: NodeAddresses;
  /** This node's local pool (already decorated by the daemon: metrics/QoS). */
  engine: Engine;
  kv: Kv;
  transport: Transport;
  clock: Clock;
  leaseTtlSeconds?: number;
  replicaTimeoutMs?: number;
  degradedWaitMs?: number;
  /** 0: no timer (the simulator calls checkpointNow). */
  checkpointIntervalMs?: number;
  replaceAfterMs?: number;
  /** How long start() keeps retrying while etcd does not answer (0: fail at the first refusal). */
  joinWaitMs?: number;
  /** Ends that wait early (the daemon was told to stop while it started): start() throws StartAbandoned. */
  startAbort?: AbortSignal;
  defaultReplicas?: number;
  /** This node's data keys for encrypted copies (the daemon's key manager); absent: encrypted volumes are not replicated. */
  dataKeys?: ClusterDataKeys;
  log?: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * Encrypted copies: each node encrypts its copy of a volume under a data key of its own, wrapped by
 * its own KEK of the volume's tenant (KEK references name files and HSM slots of one machine), so the
 * replication stream and a rebuild carry plaintext blocks and each member encrypts what it stores.
 */
export interface ClusterDataKeys {
  /** A fresh data key for this node's copy of `vol`, wrapped by this node's KEK of the volume's tenant. */
  newDataKey(vol: string): Promise<DataKey>;
  /** Null when this node can hold an encrypted copy of `vol` now, else why it cannot. */
  refusal(vol: string): string | null;
}

const LEASE_TTL_SECONDS_DEFAULT = 2;
const REPLICA_TIMEOUT_MS_DEFAULT = 1500;
const DEGRADED_WAIT_MS_DEFAULT = 10_000;
const CHECKPOINT_INTERVAL_MS_DEFAULT = 10_000;
const REPLACE_AFTER_MS_DEFAULT = 60_000;
// A node started together with etcd (a boot, a systemd unit ordered only loosely, etcd restarting)
// waits this long for it before giving up; long enough for an etcd restart, short enough that a
// wrong endpoint is reported while someone still watches the start.
const JOIN_WAIT_MS_DEFAULT = 15_000;
const JOIN_RETRY_MS_FIRST = 250;
const JOIN_RETRY_MS_MAX = 2000;
/** The reconcile pass also runs on this period (a lost watch event or a failed step is retried). */
const RECONCILE_INTERVAL_MS = 1000;
/** Record transactions retried this many times when another writer changed the record meanwhile. */
const RECORD_TXN_ATTEMPTS_MAX = 8;

/** A start given up on request (a signal) while it waited for etcd: not a failure to report. */
export class StartAbandoned extends Error {
  override readonly name = 'StartAbandoned';
}

export async function startClusterNode(opts: ClusterNodeOptions): Promise<ClusterNode> {
  const node = new ClusterNode(opts);
  await node.start();
  return node;
}

export class ClusterNode implements ClusterHandle, PrimaryHost {
  readonly self: string;
  readonly clock: Clock;
  readonly local: Engine;
  readonly kv: Kv;
  readonly transport: Transport;
  readonly engine: ReplicatedEngine;
  readonly replicaTimeoutMs: number;
  readonly degradedWaitMs: number;
  readonly leaseTtlSeconds: number;
  readonly checkpointIntervalMs: number;
  readonly replaceAfterMs: number;
  readonly defaultReplicas: number;
  readonly cache = new RecordCache();
  readonly member: Member;
  readonly catalog: Catalog;
  readonly rebuilder: Rebuilder;
  private incarnationValue = '';
  private lease: string | null = null;
  /**
   * Until when the lease surely holds: TTL after the last keepalive (or grant) was sent that etcd
   * answered. Past it, others may have taken this node's volumes over, so it serves none as primary
   * (not even reads, which could be stale) until a keepalive succeeds again.
   */
  private leaseValidUntilMs = 0;
  /** A control-plane call failed: the watch may have missed events, so the next pass re-reads everything. */
  private reloadNeeded = false;
  private draining = false;
  private stopped = false;
  private loaded = false;
  private readonly primaries = new Map<string, VolumePrimary>();
  private readonly listeners = new Set<(volume: string | null) => void>();
  private readonly recordWaiters = new Map<string, Set<() => void>>();
  private readonly cancels: Array<() => void> = [];
  private readonly busy = new Set<Promise<unknown>>();
  private readonly takeovers = new Set<string>();
  private reconciling: Promise<void> | null = null;
  private reconcileAgain = false;
  private stopWatch: (() => void) | null = null;
  private readonly countersValue: ClusterCounters = { failovers: 0, membersDropped: 0, rebuildBytes: 0, rebuildsCompleted: 0, inflightReplicaWrites: 0 };
  private readonly logFn: (event: string, fields: Record<string, unknown>) => void;

  constructor(readonly opts: ClusterNodeOptions) {
    this.self = opts.name;
    this.clock = opts.clock;
    this.local = opts.engine;
    this.kv = opts.kv;
    this.transport = opts.transport;
    this.replicaTimeoutMs = opts.replicaTimeoutMs ?? REPLICA_TIMEOUT_MS_DEFAULT;
    this.degradedWaitMs = opts.degradedWaitMs ?? DEGRADED_WAIT_MS_DEFAULT;
    this.leaseTtlSeconds = opts.leaseTtlSeconds ?? LEASE_TTL_SECONDS_DEFAULT;
    this.checkpointIntervalMs = opts.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS_DEFAULT;
    this.replaceAfterMs = opts.replaceAfterMs ?? REPLACE_AFTER_MS_DEFAULT;
    this.defaultReplicas = opts.defaultReplicas ?? 1;
    this.logFn = opts.log ?? (() => undefined);
    this.member = new Member({ engine: this.local, incarnation: () => this.incarnationValue, log: (e, f) => this.log(e, f), newDataKey: (vol) => this.newDataKey(vol) });
    this.engine = new ReplicatedEngine(this.local, this);
    this.catalog = new Catalog(this);
    this.rebuilder = new Rebuilder(this);
  }

  log(event: string, fields: Record<string, unknown>): void { this.logFn(event, { node: this.self, ...fields }); }
  incarnation(): string { return this.incarnationValue; }

  async start(): Promise<void> {
    this.transport.serve((from, request) => this.serveRequest(from, request));
    const deadline = this.clock.nowMs() + (this.opts.joinWaitMs ?? JOIN_WAIT_MS_DEFAULT);
    await this.untilEtcdAnswers(deadline, () => this.register());
    this.stopWatch = await this.untilEtcdAnswers(deadline, () => this.kv.watch(KEY_PREFIX, (ev) => this.onKvChange(ev.key, ev.value, ev.modRevision)));
    await this.untilEtcdAnswers(deadline, () => this.reload());
    this.loaded = true;
    this.every(this.leaseTtlSeconds * 1000 / 3, () => this.keepAlive());
    this.every(RECONCILE_INTERVAL_MS, () => this.kick());
    if (this.checkpointIntervalMs > 0) this.every(this.checkpointIntervalMs, () => this.checkpointDue());
    this.kick();
  }

  /**
   * Runs one start step again while etcd is unavailable, backing off, until `deadline`; each step is
   * safe to repeat (a second registration gets a new lease and the first lease's key is rewritten,
   * so the stray lease expires holding nothing).
   */
  private async untilEtcdAnswers<T>(deadline: number, step: () => Promise<T>): Promise<T> {
    for (let waitMs = JOIN_RETRY_MS_FIRST; ; waitMs = Math.min(waitMs * 2, JOIN_RETRY_MS_MAX)) {
      try {
        return await step();
      } catch (err) {
        if (!(err instanceof KvUnavailable) || this.stopped || this.clock.nowMs() + waitMs > deadline) throw err;
        this.log('cluster.etcd_wait', { error: err.message, retryInMs: waitMs });
        await this.sleepUnlessAborted(waitMs);
        if (this.opts.startAbort?.aborted === true) throw new StartAbandoned(`stopped while waiting for etcd (${err.message})`);
      }
    }
  }

  /** The start's back-off sleep, cut short by `startAbort`: a stop is answered at once, not after up to 2 s. */
  private async sleepUnlessAborted(ms: number): Promise<void> {
    const abort = this.opts.startAbort;
    if (abort === undefined) { await this.clock.sleep(ms); return; }
    if (abort.aborted) return;
    let onAbort = (): void => undefined;
    const aborted = new Promise<void>((resolve) => { onAbort = resolve; abort.addEventListener('abort', onAbort, { once: true }); });
    try { await Promise.race([this.clock.sleep(ms), aborted]); } finally { abort.removeEventListener('abort', onAbort); }
  }

  private every(ms: number, fn: () => void): void {
    let cancel = (): void => undefined;
    const arm = (): void => {
      cancel = this.clock.setTimer(ms, () => { if (this.stopped) return; fn(); arm(); });
    };
    arm();
    this.cancels.push(() => cancel());
  }

  private newIncarnation(): string {
    let s = '';
    for (let i = 0; i < 4; i++) s += Math.floor(this.clock.random() * 0x10000).toString(16).padStart(4, '0');
    return s;
  }

  private nodeRecord(): NodeRecord {
    return { name: this.self, zone: this.opts.zone, incarnation: this.incarnationValue, addresses: this.opts.addresses, startedMs: this.clock.nowMs(), draining: this.draining };
  }

  /** A new incarnation under a new lease: after a start, and after the lease was lost. */
  private async register(): Promise<void> {
    this.incarnationValue = this.newIncarnation();
    const sentMs = this.clock.nowMs();
    this.lease = await this.kv.grantLease(this.leaseTtlSeconds);
    this.leaseValidUntilMs = sentMs + this.leaseTtlSeconds * 1000;
    const rec = this.nodeRecord();
    const result = await this.kv.txn([], [{ op: 'put', key: nodeKey(this.self), value: JSON.stringify(rec), lease: this.lease }]);
    this.cache.apply(nodeKey(this.self), JSON.stringify(rec), result.revision);
    this.log('cluster.registered', { incarnation: this.incarnationValue, lease: this.lease });
  }

  private keepAlive(): void {
    const lease = this.lease;
    if (lease === null) return;
    this.track((async () => {
      let alive: boolean;
      const sentMs = this.clock.nowMs();
      try {
        alive = await this.kv.keepAlive(lease);
        if (alive && this.lease === lease) this.leaseValidUntilMs = sentMs + this.leaseTtlSeconds * 1000;
      } catch (err) {
        this.reloadNeeded = true;
        // The control plane is unreachable: the next tick retries; if the lease expires meanwhile,
        // keepAlive answers false once it is back and the node re-registers then.
        if (!(err instanceof KvUnavailable)) this.log('cluster.keepalive_failed', { error: String(err) });
        return;
      }
      if (alive || this.stopped || this.lease !== lease) return;
      this.log('cluster.lease_lost', { lease });
      // Its key is gone, so others may have taken over its volumes: a new incarnation serves nothing
      // as primary until a takeover transaction says so.
      this.lease = null;
      try {
        await this.register();
      } catch (e) {
        // Still unreachable: keep trying on the next tick with no lease.
        this.log('cluster.register_failed', { error: String(e) });
        this.lease = lease;
        return;
      }
      this.kick();
    })());
  }

  private async reload(): Promise<void> {
    const entries = await this.kv.range(KEY_PREFIX);
    for (const c of this.cache.load(entries)) this.changed(c.kind === 'volume' ? c.name : null);
  }

  private onKvChange(key: string, value: string | null, modRevision: number): void {
    if (this.stopped) return;
    const c = this.cache.apply(key, value, modRevision);
    if (c === null) return;
    this.changed(c.kind === 'volume' ? c.name : null);
    this.kick();
  }

  changed(volume: string | null): void {
    if (volume !== null) {
      const waiters = this.recordWaiters.get(volume);
      if (waiters !== undefined) { this.recordWaiters.delete(volume); for (const w of waiters) w(); }
    } else {
      for (const [vol, waiters] of [...this.recordWaiters]) { this.recordWaiters.delete(vol); for (const w of waiters) w(); }
    }
    for (const l of [...this.listeners]) l(volume);
  }

  /** Runs the reconcile pass (serially; a request during a pass runs one more after it). */
  kick(): void {
    if (this.stopped || !this.loaded) return;
    if (this.reconciling !== null) { this.reconcileAgain = true; return; }
    this.reconciling = this.track(this.reconcile().catch((err: unknown) => {
      // A failed pass (control plane away) is retried by the periodic kick.
      this.log('cluster.reconcile_failed', { error: String(err) });
    }).finally(() => {
      this.reconciling = null;
      if (this.reconcileAgain) { this.reconcileAgain = false; this.kick(); }
    }));
  }

  private async reconcile(): Promise<void> {
    if (this.reloadNeeded) {
      this.reloadNeeded = false;
      try {
        await this.reload();
      } catch (err) {
        this.reloadNeeded = true;
        throw err;
      }
    }
    for (const [vol, { value: rec }] of [...this.cache.volumes]) {
      if (this.stopped) return;
      const mine = rec.members.find((m) => m.node === this.self);
      if (mine !== undefined && this.member.fence(vol) < rec.epoch) await this.member.raiseFence(vol, rec.epoch);
      if (mine !== undefined && !this.takeovers.has(vol) && !this.servesAsPrimary(vol)) {
        this.takeovers.add(vol);
        this.track(considerTakeover(this, vol).catch((err: unknown) => {
          // Lost the race or the control plane went away: the next pass looks again.
          this.log('cluster.takeover_failed', { vol, error: String(err) });
        }).finally(() => this.takeovers.delete(vol)));
      }
      if (this.servesAsPrimary(vol)) {
        // Its copy is the volume's: after a hand-over it stays in step as a member.
        this.member.stepped(vol);
        this.rebuilder.consider(vol);
      }
    }
    await this.cleanupOrphans();
  }

  /** Deletes local copies the cluster placed here whose record is gone or no longer lists this node. */
  private async cleanupOrphans(): Promise<void> {
    for (const vol of this.member.fencedVolumes()) {
      const cached = this.cache.volumes.get(vol);
      if (cached !== undefined && cached.value.members.some((m) => m.node === this.self)) continue;
      // The cache may lag a record created a moment ago: only the store itself decides.
      const entry = await this.kv.get(volumeKey(vol));
      if (entry !== null && (JSON.parse(entry.value) as VolumeRecord).members.some((m) => m.node === this.self)) continue;
      this.log('cluster.orphan_deleted', { vol });
      await this.member.deleteCopy(vol);
    }
  }

  track<T>(p: Promise<T>): Promise<T> {
    this.busy.add(p);
    void p.then(() => this.busy.delete(p), () => this.busy.delete(p));
    return p;
  }

  /** Resolves when no reconcile, takeover or rebuild is in progress. */
  async idle(): Promise<void> {
    while (this.busy.size > 0) await Promise.allSettled([...this.busy]);
  }

  // ---- the replication protocol, served ----

  private async serveRequest(from: string, request: ReplRequest): Promise<ReplReply> {
    if (this.stopped) return { ok: false, code: 'node_stopped', message: `node ${this.self} is stopped` };
    if (request.t === 'admin') return this.catalog.serveAdmin(from, request.op, request.args);
    return this.member.handle(request);
  }

  // ---- PrimaryHost ----

  record(vol: string): VolumeRecord | null { return this.cache.volumes.get(vol)?.value ?? null; }

  servesAsPrimary(vol: string): boolean {
    if (this.stopped || this.lease === null || this.clock.nowMs() >= this.leaseValidUntilMs) return false;
    const rec = this.record(vol);
    if (rec === null || rec.primary !== this.self) return false;
    const me = rec.members.find((m) => m.node === this.self);
    return me !== undefined && me.state === 'in-sync' && me.incarnation === this.incarnationValue;
  }

  /** The volume's primary state on this node; NotPrimary when this node does not serve it. */
  primaryFor(vol: string): VolumePrimary {
    if (!this.servesAsPrimary(vol)) throw new NotPrimary(vol, this.record(vol)?.primary ?? null);
    let vp = this.primaries.get(vol);
    if (vp === undefined) { vp = new VolumePrimary(this, vol); this.primaries.set(vol, vp); }
    return vp;
  }

  /** Primary states of the volumes this node serves now. */
  servedPrimaries(): VolumePrimary[] {
    return [...this.primaries.values()].filter((vp) => this.servesAsPrimary(vp.vol));
  }

  forgetPrimary(vol: string): void { this.primaries.delete(vol); }

  async refreshRecord(vol: string): Promise<VolumeRecord | null> {
    const entry = await this.kvCall(() => this.kv.get(volumeKey(vol)));
    if (entry === null) { if (this.cache.apply(volumeKey(vol), null, 0) !== null) this.changed(vol); }
    else if (this.cache.apply(entry.key, entry.value, entry.modRevision) !== null) this.changed(vol);
    return this.record(vol);
  }

  /**
   * Changes `vol`'s record by a transaction on the revision read (retried on a concurrent change):
   * `mutate` returns the new record, 'delete', or null when no change is needed any more.
   */
  async updateRecord(vol: string, mutate: (rec: VolumeRecord) => VolumeRecord | 'delete' | null, extra: KvCompare[] = []): Promise<VolumeRecord | null> {
    for (let attempt = 0; attempt < RECORD_TXN_ATTEMPTS_MAX; attempt++) {
      const cached = this.cache.volumes.get(vol) ?? (await this.refreshRecord(vol), this.cache.volumes.get(vol));
      if (cached === undefined) return null;
      const next = mutate(cached.value);
      if (next === null) return cached.value;
      const key = volumeKey(vol);
      const result = await this.kvCall(() => this.kv.txn([{ key, target: 'mod', equals: cached.modRevision }, ...extra],
        [next === 'delete' ? { op: 'delete', key } : { op: 'put', key, value: JSON.stringify(next) }]));
      if (result.succeeded) {
        if (this.cache.apply(key, next === 'delete' ? null : JSON.stringify(next), result.revision) !== null) this.changed(vol);
        return next === 'delete' ? null : next;
      }
      await this.refreshRecord(vol);
    }
    throw new IoError(`${vol}: its record kept changing under ${RECORD_TXN_ATTEMPTS_MAX} transactions`);
  }

  /** Control-plane calls from the data path: an unreachable store fails the request with EIO. */
  async kvCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof KvUnavailable) {
        this.reloadNeeded = true;
        throw new IoError(`control plane unavailable: ${err.message}`);
      }
      throw err;
    }
  }

  async dropMember(vol: string, node: string, reason: string): Promise<void> {
    let dropped = false;
    await this.updateRecord(vol, (rec) => {
      if (rec.primary !== this.self || rec.members.find((m) => m.node === this.self)?.incarnation !== this.incarnationValue) throw new NotPrimary(vol, rec.primary);
      const m = rec.members.find((x) => x.node === node);
      if (m === undefined || m.state !== 'in-sync') return null;
      dropped = true;
      return { ...rec, epoch: rec.epoch + 1, members: rec.members.map((x) => x.node === node ? { ...x, state: 'down' as const } : x) };
    });
    if (!this.servesAsPrimary(vol)) throw new NotPrimary(vol, this.record(vol)?.primary ?? null);
    if (dropped) {
      this.countersValue.membersDropped++;
      this.log('cluster.member_dropped', { vol, member: node, reason, epoch: this.record(vol)?.epoch });
    }
  }

  /**
   * A new epoch with nothing else changed: after a request that must not be applied again late (a
   * revert, a resize, a resync-begin), so that a delayed duplicate meets a member fenced past it.
   */
  async bumpEpoch(vol: string): Promise<void> {
    await this.updateRecord(vol, (rec) => {
      if (rec.primary !== this.self || !this.servesAsPrimary(vol)) throw new NotPrimary(vol, rec.primary);
      return { ...rec, epoch: rec.epoch + 1 };
    });
  }

  async request(node: string, request: ReplRequest, timeoutMs: number): Promise<ReplReply> {
    try {
      return await this.transport.request(node, request, timeoutMs);
    } catch (err) {
      return { ok: false, code: 'transport_error', message: err instanceof Error ? err.message : String(err) };
    }
  }

  waitRecordChange(vol: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.recordWaiters.get(vol);
      if (waiters === undefined) { waiters = new Set(); this.recordWaiters.set(vol, waiters); }
      const set = waiters;
      let cancel = (): void => undefined;
      const done = (): void => { cancel(); set.delete(done); resolve(); };
      set.add(done);
      cancel = this.clock.setTimer(ms, done);
    });
  }

  inflightChanged(delta: number): void { this.countersValue.inflightReplicaWrites += delta; }
  countFailover(): void { this.countersValue.failovers++; }
  countRebuild(bytes: number, completed: boolean): void {
    this.countersValue.rebuildBytes += bytes;
    if (completed) this.countersValue.rebuildsCompleted++;
  }

  // ---- node records ----

  /** The node is registered now with the incarnation its record shows. */
  nodeAlive(name: string): NodeRecord | null { return this.cache.nodes.get(name)?.value ?? null; }

  /** The member's node is up with the incarnation the member's data belongs to. */
  memberAlive(m: MemberRecord): boolean { return this.nodeAlive(m.node)?.incarnation === m.incarnation; }

  addressOf(node: string): string | null { return this.nodeAlive(node)?.addresses.repl ?? null; }

  /** Sets this node's draining flag in its record (under its lease). */
  async setDraining(draining: boolean): Promise<void> {
    this.draining = draining;
    if (this.lease === null) throw new IoError('this node holds no lease (the control plane is unreachable)');
    const rec = this.nodeRecord();
    const result = await this.kvCall(() => this.kv.txn([], [{ op: 'put', key: nodeKey(this.self), value: JSON.stringify(rec), lease: this.lease! }]));
    if (this.cache.apply(nodeKey(this.self), JSON.stringify(rec), result.revision) !== null) this.changed(null);
    this.kick();
  }

  // ---- ClusterHandle ----

  createVolume(name: string, sizeBytes: number, replicas: number | null, opts?: VolumeCreateOptions): Promise<VolumeRecord> {
    return this.catalog.create(name, sizeBytes, replicas, opts).then((r) => r.record);
  }

  volume(name: string): VolumeRecord | null { return this.record(name); }
  volumes(): VolumeRecord[] { return [...this.cache.volumes.values()].map((c) => c.value).sort((a, b) => cmp(a.name, b.name)); }

  replicas(name: string): ReplicaView[] {
    const rec = this.record(name);
    if (rec === null) return [];
    return rec.members.map((m) => ({
      // A member whose node lost its lease (or restarted) is shown down before the record says so:
      // the primary drops it at its next write, or a takeover does.
      node: m.node, state: m.state === 'in-sync' && !this.memberAlive(m) ? 'down' as const : m.state, primary: m.node === rec.primary,
      rebuildProgress: m.state === 'rebuilding' && this.servesAsPrimary(name) ? this.rebuilder.progress(name, m.node) : null,
    }));
  }

  primaryOf(name: string): { node: NodeRecord; local: boolean } | null {
    const rec = this.record(name);
    if (rec === null) return null;
    const node = this.nodeAlive(rec.primary);
    const member = rec.members.find((m) => m.node === rec.primary);
    if (node === null || member === undefined || node.incarnation !== member.incarnation) return null;
    return { node, local: rec.primary === this.self && this.servesAsPrimary(name) };
  }

  nodes(): NodeView[] {
    const views = new Map<string, NodeView>();
    for (const [name, { value }] of this.cache.nodes) views.set(name, { ...value, alive: true, replicas: 0, primaries: 0 });
    for (const { value: rec } of this.cache.volumes.values()) {
      for (const m of rec.members) {
        let v = views.get(m.node);
        if (v === undefined) {
          v = { name: m.node, zone: null, incarnation: m.incarnation, addresses: { api: null, nbd: null, nvmf: null, repl: '' }, startedMs: 0, draining: false, alive: false, replicas: 0, primaries: 0 };
          views.set(m.node, v);
        }
        v.replicas++;
        if (rec.primary === m.node) v.primaries++;
      }
    }
    return [...views.values()].sort((a, b) => cmp(a.name, b.name));
  }

  async status(): Promise<ClusterStatus> {
    let healthy = true;
    let error: string | null = null;
    try {
      await this.kv.get(nodeKey(this.self));
    } catch (err) {
      healthy = false;
      error = err instanceof Error ? err.message : String(err);
    }
    const vols = this.volumes();
    return {
      controlPlane: { healthy, endpoints: [], error }, self: this.self, nodes: this.nodes(), volumes: vols.length,
      degraded: vols.flatMap((r) => {
        const inSync = r.members.filter((m) => m.state === 'in-sync' && this.memberAlive(m)).length;
        return inSync < r.replicas ? [{ name: r.name, inSync, replicas: r.replicas, primary: r.primary }] : [];
      }),
    };
  }

  async drain(node: string, timeoutMs: number): Promise<void> {
    if (node === this.self) await this.setDraining(true);
    else await this.catalog.forward(node, 'setDraining', [true]);
    const deadline = this.clock.nowMs() + timeoutMs;
    while (this.volumes().some((r) => r.members.some((m) => m.node === node))) {
      const left = deadline - this.clock.nowMs();
      if (left <= 0) throw new IoError(`node ${node} still holds replicas after ${timeoutMs} ms of draining`);
      await new Promise<void>((resolve) => {
        const off = this.onChange(() => { off(); cancel(); resolve(); });
        const cancel = this.clock.setTimer(Math.min(left, RECONCILE_INTERVAL_MS), () => { off(); resolve(); });
      });
    }
  }

  counters(): ClusterCounters { return { ...this.countersValue }; }

  async setVolumeQos(name: string, encoded: string | null): Promise<void> {
    const rec = await this.updateRecord(name, (r) => {
      if ((r.qos ?? null) === encoded) return null;
      const { qos: _old, ...rest } = r;
      return encoded === null ? rest : { ...rest, qos: encoded };
    });
    if (rec === null) throw new VolumeNotFound(name);
  }

  onChange(listener: (volume: string | null) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** Takes a checkpoint of `vol` now (this node must be its primary). */
  checkpointNow(vol: string): Promise<void> { return this.catalog.checkpoint(vol); }

  private checkpointDue(): void {
    for (const vp of this.servedPrimaries()) {
      if (!vp.writtenSinceCheckpoint) continue;
      this.track(this.catalog.checkpoint(vp.vol).catch((err: unknown) => {
        // The next interval tries again; a member that failed was dropped by the checkpoint itself.
        this.log('cluster.checkpoint_failed', { vol: vp.vol, error: String(err) });
      }));
    }
  }

  /** Crash-like: timers and serving stop, the lease is left to expire. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const c of this.cancels) c();
    this.stopWatch?.();
    this.changed(null);
  }

  /** Graceful: stops and revokes the lease, so the others see this node down at once. */
  async close(): Promise<void> {
    const lease = this.lease;
    await this.stop();
    if (lease !== null) {
      try {
        await this.kv.revokeLease(lease);
      } catch (err) {
        // The lease expires by itself within its TTL.
        this.log('cluster.revoke_failed', { error: String(err) });
      }
    }
  }

  /** Refuses what this node cannot do for `replicas`. */
  checkReplicas(replicas: number, encrypted: boolean): void {
    if (encrypted && replicas > 1 && this.opts.dataKeys === undefined) throw new InvalidArgument(`node ${this.self} has no key manager: its encrypted volumes cannot be replicated`);
  }

  /** A data key for this node's copy of `vol` (an encrypted volume's). */
  newDataKey(vol: string): Promise<DataKey> {
    if (this.opts.dataKeys === undefined) return Promise.reject(new InvalidArgument(`node ${this.self} has no key manager: it cannot hold a copy of encrypted volume ${vol}`));
    return this.opts.dataKeys.newDataKey(vol);
  }

  /** Null when this node can hold an encrypted copy of `vol` now, else why not (a placement check). */
  encryptionRefusal(vol: string): string | null {
    return this.opts.dataKeys === undefined ? 'no key manager' : this.opts.dataKeys.refusal(vol);
  }
}

export function cmp(a: string, b: string): number { return a < b ? -1 : a > b ? 1 : 0; }
