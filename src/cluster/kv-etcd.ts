// EtcdKv: the control plane's Kv over a real etcd cluster (npm `etcd3`, gRPC). Every call is bounded
// by `callTimeoutMs` and fails with KvUnavailable naming the cause; leases are plain gRPC calls (no
// automatic keepalive: the node agent owns that rhythm); a watch is one gRPC stream of our own that
// resumes from the revision after the last event it delivered, so a restart loses nothing.
import etcd3 from 'etcd3';
import type { CallOptions } from '@grpc/grpc-js';
import { circuitBreaker, ConsecutiveBreaker, handleWhen, retry } from 'cockatiel';
import type { Kv, KvCompare, KvEntry, KvOp, KvTxnResult, KvWatchEvent } from './kv.js';
import { KvUnavailable } from './kv.js';
import { EtcdWatch, prefixRangeEnd, type WatchLog } from './kv-etcd-watch.js';

const { Etcd3, isRecoverableError } = etcd3;
type Etcd3Client = InstanceType<typeof Etcd3>;

/** Default bound on one call (etcd's own leader election takes ~1 s; a lease TTL is 2 s). */
export const ETCD_CALL_TIMEOUT_MS_DEFAULT = 1500;
/**
 * A member that fails a call is skipped for ETCD_HOST_SKIP_MS (so the next attempt goes to another
 * one); a lone endpoint only after ETCD_LONE_HOST_FAILURES_MAX failures in a row (there is no other).
 */
const ETCD_HOST_SKIP_MS = 1000;
const ETCD_LONE_HOST_FAILURES_MAX = 3;
/** Our own timer backs gRPC's deadline by this much, so the member's failure is counted first. */
const ETCD_DEADLINE_GRACE_MS = 50;

export interface EtcdKvOptions {
  /** Client URLs of the etcd members, e.g. http://10.0.0.1:2379. */
  hosts: string[];
  callTimeoutMs?: number;
  log?: WatchLog;
}

export interface EtcdEndpointHealth {
  endpoint: string;
  /** The member answered its status and knows a leader. */
  healthy: boolean;
  version: string | null;
  dbSizeBytes: number | null;
  leader: string | null;
  error: string | null;
}

export interface EtcdHealth {
  /** A linearizable read went through (a quorum answers). */
  healthy: boolean;
  endpoints: EtcdEndpointHealth[];
  error: string | null;
}

/** gRPC channel options: reconnect quickly after a restart, notice a dead peer on a stream. */
function grpcOptions(): Record<string, number> {
  return {
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
    'grpc.min_reconnect_backoff_ms': 100,
    // etcd drops a client that pings more often than every 5 s (--grpc-keepalive-min-time); calls
    // have their own deadlines and a watch its progress checks, so this only tends idle connections.
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 2000,
    'grpc.use_local_subchannel_pool': 1,
  };
}

/** gRPC failed the call before sending it: safe to send it to another member, even a txn. */
function neverSent(error: Error): boolean {
  return isRecoverableError(error) && /No connection established/i.test(error.message);
}

function newClient(hosts: string[]): Etcd3Client {
  return new Etcd3({
    hosts,
    grpcOptions: grpcOptions(),
    faultHandling: {
      // etcd3's default breaker skips a host for 5 s after 3 failures, which would keep a restarted
      // single etcd unusable for 5 s.
      host: () => circuitBreaker(handleWhen(isRecoverableError), {
        halfOpenAfter: ETCD_HOST_SKIP_MS,
        breaker: new ConsecutiveBreaker(hosts.length > 1 ? 1 : ETCD_LONE_HOST_FAILURES_MAX),
      }),
      // Another member is tried only when gRPC never sent the call (no connection to that member):
      // etcd3's default retries any recoverable error, which could apply a txn twice.
      global: retry(handleWhen(neverSent), { maxAttempts: hosts.length }),
    },
  });
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface RawKeyValue { key: Buffer; value: Buffer; mod_revision: string; create_revision: string; lease: string }

function toEntry(kv: RawKeyValue): KvEntry {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    modRevision: Number(kv.mod_revision),
    createRevision: Number(kv.create_revision),
    lease: kv.lease === '0' || kv.lease === '' ? null : kv.lease,
  };
}

function toCompare(compare: KvCompare): Record<string, unknown> {
  const key = Buffer.from(compare.key, 'utf8');
  if (compare.target === 'mod') {
    return { key, target: 'Mod', result: 'Equal', mod_revision: compare.equals };
  }
  return { key, target: 'Value', result: 'Equal', value: Buffer.from(compare.equals, 'utf8') };
}

function toRequestOp(op: KvOp): Record<string, unknown> {
  const key = Buffer.from(op.key, 'utf8');
  if (op.op === 'delete') return { request_delete_range: { key } };
  return { request_put: { key, value: Buffer.from(op.value, 'utf8'), lease: op.lease ?? '0' } };
}

export class EtcdKv implements Kv {
  private readonly client: Etcd3Client;
  private readonly hosts: string[];
  private readonly callTimeoutMs: number;
  private readonly log: WatchLog;
  private readonly watches = new Set<EtcdWatch>();
  /** One client per endpoint for health(): the shared client picks members at random. */
  private healthClients: Etcd3Client[] | null = null;
  private closed = false;

  constructor(options: EtcdKvOptions) {
    if (options.hosts.length === 0) throw new Error('EtcdKv: no etcd endpoint given');
    this.hosts = options.hosts.slice();
    this.callTimeoutMs = options.callTimeoutMs ?? ETCD_CALL_TIMEOUT_MS_DEFAULT;
    this.log = options.log ?? (() => undefined);
    this.client = newClient(this.hosts);
  }

  /**
   * Runs one etcd call under a deadline; any failure becomes KvUnavailable with its cause. A call
   * that is safe to repeat (a read, a keepalive, a revoke) with several members gets two attempts of
   * half the bound each, so one frozen member (connection open, no answer) does not fail it.
   */
  private async call<T>(what: string, fn: (options: CallOptions) => Promise<T>, repeatable = false): Promise<T> {
    if (this.closed) throw new KvUnavailable(`etcd ${what}: the client is closed`);
    const attempts = repeatable && this.hosts.length > 1 ? 2 : 1;
    const attemptMs = Math.floor(this.callTimeoutMs / attempts);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.attempt(what, fn, attemptMs);
      } catch (error) {
        if (attempt >= attempts || this.closed) throw error;
      }
    }
  }

  private async attempt<T>(what: string, fn: (options: CallOptions) => Promise<T>, timeoutMs: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new KvUnavailable(`etcd ${what}: no answer within ${timeoutMs} ms`)), timeoutMs + ETCD_DEADLINE_GRACE_MS);
    });
    try {
      return await Promise.race([fn({ deadline: Date.now() + timeoutMs }), timeout]);
    } catch (error) {
      if (error instanceof KvUnavailable) throw error;
      throw new KvUnavailable(`etcd ${what}: ${errorText(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async get(key: string): Promise<KvEntry | null> {
    const res = await this.call('get', (o) => this.client.kv.range({ key: Buffer.from(key, 'utf8') }, o), true);
    const kv = res.kvs[0];
    return kv ? toEntry(kv) : null;
  }

  async range(prefix: string): Promise<KvEntry[]> {
    const key = Buffer.from(prefix, 'utf8');
    const req = { key: key.length === 0 ? Buffer.from([0]) : key, range_end: prefixRangeEnd(key), sort_order: 'Ascend' as const, sort_target: 'Key' as const };
    const res = await this.call('range', (o) => this.client.kv.range(req, o), true);
    return res.kvs.map(toEntry);
  }

  async txn(compares: KvCompare[], success: KvOp[], failure: KvOp[] = []): Promise<KvTxnResult> {
    const req = { compare: compares.map(toCompare), success: success.map(toRequestOp), failure: failure.map(toRequestOp) };
    const res = await this.call('txn', (o) => this.client.kv.txn(req, o));
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  async grantLease(ttlSeconds: number): Promise<string> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new RangeError(`lease TTL ${ttlSeconds} s: want an integer ≥ 1`);
    const res = await this.call('lease grant', (o) => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, o));
    if (res.error) throw new KvUnavailable(`etcd lease grant: ${res.error}`);
    return res.ID;
  }

  async keepAlive(lease: string): Promise<boolean> {
    const res = await this.call('lease keepalive', async (o) => {
      // The stream carries the attempt's deadline: gRPC cancels it if no answer comes in time.
      const stream = await this.client.leaseClient.leaseKeepAlive(o);
      try {
        const answer = await new Promise<{ TTL: string }>((resolve, reject) => {
          stream.on('data', resolve);
          stream.on('error', reject);
          stream.on('end', () => reject(new Error('keepalive stream ended without an answer')));
          stream.write({ ID: lease });
        });
        // A half-close ends the stream cleanly (a cancel would count against the member in etcd3's breaker).
        stream.end();
        return answer;
      } catch (error) {
        stream.cancel();
        throw error;
      }
    }, true);
    // etcd answers TTL 0 (or less) for a lease it does not know: expired or revoked.
    return Number(res.TTL) > 0;
  }

  async revokeLease(lease: string): Promise<void> {
    try {
      await this.call('lease revoke', (o) => this.client.leaseClient.leaseRevoke({ ID: lease }, o), true);
    } catch (error) {
      // Revoking a lease that already expired has the effect asked for: its keys are gone.
      if (/lease not found/i.test(errorText(error))) return;
      throw error;
    }
  }

  async watch(prefix: string, onEvent: (event: KvWatchEvent) => void): Promise<() => void> {
    if (this.closed) throw new KvUnavailable('etcd watch: the client is closed');
    const watch = new EtcdWatch(this.client, Buffer.from(prefix, 'utf8'), onEvent, this.log);
    this.watches.add(watch);
    const stop = (): void => { this.watches.delete(watch); watch.stop(); };
    try {
      await this.call('watch', () => watch.started());
    } catch (error) {
      stop();
      throw error;
    }
    return stop;
  }

  /** Status of every endpoint (answered, knows a leader) and whether a quorum read goes through. */
  async health(): Promise<EtcdHealth> {
    this.healthClients ??= this.hosts.map((h) => newClient([h]));
    const clients = this.healthClients;
    const endpoints = await Promise.all(this.hosts.map(async (endpoint, i): Promise<EtcdEndpointHealth> => {
      try {
        const s = await this.call('status', (o) => clients[i]!.maintenance.status(o));
        const leader = s.leader === '0' ? null : s.leader;
        return { endpoint, healthy: leader !== null, version: s.version, dbSizeBytes: Number(s.dbSize), leader, error: leader === null ? 'no leader' : null };
      } catch (error) {
        return { endpoint, healthy: false, version: null, dbSizeBytes: null, leader: null, error: errorText(error) };
      }
    }));
    try {
      await this.get('/cairn/health');
      return { healthy: true, endpoints, error: null };
    } catch (error) {
      return { healthy: false, endpoints, error: errorText(error) };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.watches) w.stop();
    this.watches.clear();
    for (const c of this.healthClients ?? []) c.close();
    this.client.close();
  }
}
