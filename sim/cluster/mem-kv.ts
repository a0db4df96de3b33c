// The control plane in memory with etcd's semantics (src/cluster/kv.ts): one global revision bumped
// once per changing transaction, modRevision/createRevision per key, compares (mod == 0: absent),
// leases timed on the simulator's clock whose expiry deletes their keys (delete events), prefix
// watches delivered asynchronously in revision order. `client(node)` is one node's connection: it
// can be cut from the control plane (`setAvailable(false)`: calls fail with KvUnavailable, watch
// events wait, as etcd's client re-watches from its last revision after reconnecting).
import type { Clock } from '../../src/cluster/clock.js';
import {
  KvUnavailable, type Kv, type KvCompare, type KvEntry, type KvOp, type KvTxnResult, type KvWatchEvent,
} from '../../src/cluster/kv.js';

interface StoredKey {
  value: string;
  modRevision: number;
  createRevision: number;
  lease: string | null;
}

interface Lease {
  id: string;
  ttlSeconds: number;
  expiresMs: number;
  keys: Set<string>;
  cancelTimer: () => void;
}

interface Watcher {
  prefix: string;
  onEvent: (event: KvWatchEvent) => void;
  client: MemKvClient;
  queue: KvWatchEvent[];
  scheduled: boolean;
  stopped: boolean;
}

/** Thrown for what etcd refuses as a bad request (a put with an unknown lease, a key twice in one txn). */
export class KvRequestError extends Error {
  constructor(message: string) { super(message); this.name = 'KvRequestError'; }
}

export interface MemKvStats {
  revision: number;
  txns: number;
  leasesExpired: number;
}

/** The store, shared by every client. Itself a Kv (an always-connected client named "admin"). */
export class MemKv implements Kv {
  readonly clock: Clock;
  private revisionNow = 1;
  private readonly keys = new Map<string, StoredKey>();
  private readonly leases = new Map<string, Lease>();
  private leaseNext = 0x1000;
  private readonly watchers: Watcher[] = [];
  private readonly clients = new Map<string, MemKvClient>();
  private readonly admin: MemKvClient;
  readonly stats: MemKvStats = { revision: 1, txns: 0, leasesExpired: 0 };

  constructor(clock: Clock) {
    this.clock = clock;
    this.admin = new MemKvClient(this, 'admin');
  }

  /** One node's connection (the same object for the same name until closed). */
  client(node: string): MemKvClient {
    let c = this.clients.get(node);
    if (c === undefined || c.closed) {
      c = new MemKvClient(this, node);
      // A node's reachability belongs to the node, not to one connection object.
      const old = this.clients.get(node);
      if (old !== undefined) c.setAvailable(old.available);
      this.clients.set(node, c);
    }
    return c;
  }

  /** Cuts (false) or restores (true) `node`'s reach to the control plane. */
  setAvailable(node: string, available: boolean): void { this.client(node).setAvailable(available); }

  get revision(): number { return this.revisionNow; }

  /** Every key (for invariant checks; no availability check). */
  snapshot(): Map<string, KvEntry> {
    const out = new Map<string, KvEntry>();
    for (const key of [...this.keys.keys()].sort()) out.set(key, this.entry(key)!);
    return out;
  }

  /** Leases alive now (ids). */
  leaseIds(): string[] { return [...this.leases.keys()]; }

  get(key: string): Promise<KvEntry | null> { return this.admin.get(key); }
  range(prefix: string): Promise<KvEntry[]> { return this.admin.range(prefix); }
  txn(compares: KvCompare[], success: KvOp[], failure?: KvOp[]): Promise<KvTxnResult> { return this.admin.txn(compares, success, failure); }
  grantLease(ttlSeconds: number): Promise<string> { return this.admin.grantLease(ttlSeconds); }
  keepAlive(lease: string): Promise<boolean> { return this.admin.keepAlive(lease); }
  revokeLease(lease: string): Promise<void> { return this.admin.revokeLease(lease); }
  watch(prefix: string, onEvent: (event: KvWatchEvent) => void): Promise<() => void> { return this.admin.watch(prefix, onEvent); }
  async close(): Promise<void> { /* the store outlives its clients; each client closes itself */ }

  // The operations, synchronous on the store; MemKvClient checks reachability and makes them async.

  entry(key: string): KvEntry | null {
    const k = this.keys.get(key);
    return k === undefined ? null : { key, value: k.value, modRevision: k.modRevision, createRevision: k.createRevision, lease: k.lease };
  }

  rangeNow(prefix: string): KvEntry[] {
    return [...this.keys.keys()].filter((k) => k.startsWith(prefix)).sort().map((k) => this.entry(k)!);
  }

  txnNow(compares: KvCompare[], success: KvOp[], failure: KvOp[]): KvTxnResult {
    this.stats.txns++;
    const holds = compares.every((c) => this.compareHolds(c));
    const ops = holds ? success : failure;
    this.validate(ops);
    const events: KvWatchEvent[] = [];
    const revision = this.revisionNow + 1;
    for (const op of ops) {
      if (op.op === 'put') events.push(this.putNow(op.key, op.value, op.lease ?? null, revision));
      else if (this.deleteNow(op.key)) events.push({ type: 'delete', key: op.key, value: null, modRevision: revision });
    }
    // etcd: a transaction that changes nothing (no put, no delete of an existing key) keeps the revision.
    if (events.length > 0) {
      this.revisionNow = revision;
      this.stats.revision = revision;
      this.publish(events);
    }
    return { succeeded: holds, revision: this.revisionNow };
  }

  grantNow(ttlSeconds: number): string {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new KvRequestError(`bad lease TTL ${ttlSeconds}`);
    const id = (this.leaseNext++).toString(16);
    const lease: Lease = { id, ttlSeconds, expiresMs: this.clock.nowMs() + ttlSeconds * 1000, keys: new Set(), cancelTimer: () => undefined };
    this.leases.set(id, lease);
    this.armExpiry(lease);
    return id;
  }

  keepAliveNow(id: string): boolean {
    const lease = this.leases.get(id);
    if (lease === undefined) return false;
    lease.expiresMs = this.clock.nowMs() + lease.ttlSeconds * 1000;
    return true;
  }

  /**
   * etcd's leader change: the new leader renews every lease to its full TTL plus an election timeout
   * (lessor Promote), so a node cut from the control plane past its own estimate of the lease can find
   * the lease still alive when it reconnects: same lease, same incarnation, after a gap.
   */
  leaderChange(extendMs: number): void {
    for (const lease of this.leases.values()) lease.expiresMs = Math.max(lease.expiresMs, this.clock.nowMs() + extendMs + lease.ttlSeconds * 1000);
  }

  revokeNow(id: string): void {
    const lease = this.leases.get(id);
    if (lease === undefined) return;
    lease.cancelTimer();
    this.leases.delete(id);
    // etcd revokes a lease as one transaction: every attached key deleted at one revision.
    const keys = [...lease.keys].sort();
    if (keys.length === 0) return;
    const revision = this.revisionNow + 1;
    const events: KvWatchEvent[] = [];
    for (const key of keys) if (this.deleteNow(key)) events.push({ type: 'delete', key, value: null, modRevision: revision });
    if (events.length > 0) {
      this.revisionNow = revision;
      this.stats.revision = revision;
      this.publish(events);
    }
  }

  addWatcher(w: Watcher): void { this.watchers.push(w); }

  removeWatcher(w: Watcher): void {
    w.stopped = true;
    const i = this.watchers.indexOf(w);
    if (i >= 0) this.watchers.splice(i, 1);
  }

  /** Delivers the events a watcher holds (its client reachable again, or a turn after a change). */
  deliver(w: Watcher): void {
    if (w.scheduled || w.stopped || w.queue.length === 0 || !w.client.available) return;
    w.scheduled = true;
    // Never inside the transaction that caused the event: a microtask later, as a network hop.
    queueMicrotask(() => {
      w.scheduled = false;
      while (!w.stopped && w.client.available && w.queue.length > 0) w.onEvent(w.queue.shift()!);
    });
  }

  watchersOf(client: MemKvClient): Watcher[] { return this.watchers.filter((w) => w.client === client); }

  private compareHolds(c: KvCompare): boolean {
    const k = this.keys.get(c.key);
    if (c.target === 'mod') return (k?.modRevision ?? 0) === c.equals;
    return k !== undefined && k.value === c.equals;
  }

  private validate(ops: KvOp[]): void {
    const seen = new Set<string>();
    for (const op of ops) {
      if (seen.has(op.key)) throw new KvRequestError(`etcdserver: duplicate key given in txn request (${op.key})`);
      seen.add(op.key);
      if (op.op === 'put' && op.lease !== undefined && !this.leases.has(op.lease)) {
        throw new KvRequestError(`etcdserver: requested lease not found (${op.lease})`);
      }
    }
  }

  private putNow(key: string, value: string, lease: string | null, revision: number): KvWatchEvent {
    const old = this.keys.get(key);
    if (old?.lease != null) this.leases.get(old.lease)?.keys.delete(key);
    // etcd: a put without a lease detaches the key from the lease it had.
    this.keys.set(key, { value, modRevision: revision, createRevision: old?.createRevision ?? revision, lease });
    if (lease !== null) this.leases.get(lease)!.keys.add(key);
    return { type: 'put', key, value, modRevision: revision };
  }

  private deleteNow(key: string): boolean {
    const old = this.keys.get(key);
    if (old === undefined) return false;
    if (old.lease !== null) this.leases.get(old.lease)?.keys.delete(key);
    this.keys.delete(key);
    return true;
  }

  private publish(events: KvWatchEvent[]): void {
    for (const w of this.watchers) {
      const mine = events.filter((e) => e.key.startsWith(w.prefix));
      if (mine.length === 0) continue;
      w.queue.push(...mine);
      this.deliver(w);
    }
  }

  private armExpiry(lease: Lease): void {
    const waitMs = Math.max(0, lease.expiresMs - this.clock.nowMs());
    lease.cancelTimer = this.clock.setTimer(waitMs, () => {
      if (!this.leases.has(lease.id)) return;
      if (this.clock.nowMs() < lease.expiresMs) { this.armExpiry(lease); return; }
      this.stats.leasesExpired++;
      this.revokeNow(lease.id);
    });
  }
}

/** One node's connection to the MemKv store. */
export class MemKvClient implements Kv {
  readonly node: string;
  available = true;
  closed = false;
  private readonly store: MemKv;

  constructor(store: MemKv, node: string) {
    this.store = store;
    this.node = node;
  }

  setAvailable(available: boolean): void {
    this.available = available;
    if (available) for (const w of this.store.watchersOf(this)) this.store.deliver(w);
  }

  async get(key: string): Promise<KvEntry | null> {
    await this.hop();
    return this.store.entry(key);
  }

  async range(prefix: string): Promise<KvEntry[]> {
    await this.hop();
    return this.store.rangeNow(prefix);
  }

  async txn(compares: KvCompare[], success: KvOp[], failure: KvOp[] = []): Promise<KvTxnResult> {
    await this.hop();
    return this.store.txnNow(compares, success, failure);
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    await this.hop();
    return this.store.grantNow(ttlSeconds);
  }

  async keepAlive(lease: string): Promise<boolean> {
    await this.hop();
    return this.store.keepAliveNow(lease);
  }

  async revokeLease(lease: string): Promise<void> {
    await this.hop();
    this.store.revokeNow(lease);
  }

  async watch(prefix: string, onEvent: (event: KvWatchEvent) => void): Promise<() => void> {
    await this.hop();
    const w: Watcher = { prefix, onEvent, client: this, queue: [], scheduled: false, stopped: false };
    this.store.addWatcher(w);
    return () => this.store.removeWatcher(w);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.store.watchersOf(this)) this.store.removeWatcher(w);
  }

  /** A call's trip: refused when closed or cut off; otherwise applied a microtask later. */
  private async hop(): Promise<void> {
    await Promise.resolve();
    if (this.closed) throw new KvUnavailable(`kv client of ${this.node} is closed`);
    if (!this.available) throw new KvUnavailable(`${this.node} cannot reach the control plane (simulated partition)`);
  }
}
