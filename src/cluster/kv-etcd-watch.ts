// One prefix watch on etcd as a gRPC stream of its own. It remembers the revision after the last
// event it delivered and, when the stream fails (etcd restarted, member lost its leader, network),
// opens a new one from that revision, so the caller sees every change once and in order.
// (etcd3's shared WatchManager resumes from a response header's revision, which can skip events a
// lagging watcher had not been sent yet; and it cannot ask etcd to cancel on a leaderless member.)
import type * as grpc from '@grpc/grpc-js';
import type etcd3 from 'etcd3';
import type { KvWatchEvent } from './kv.js';

type Etcd3Client = InstanceType<typeof etcd3.Etcd3>;
export type WatchLog = (event: string, fields: Record<string, unknown>) => void;

/** Wait before reopening a failed watch stream: doubles from MIN up to MAX. */
const WATCH_RETRY_MS_MIN = 100;
const WATCH_RETRY_MS_MAX = 2000;
/**
 * The stream asks for progress this often; a member silent for WATCH_SILENCE_MS_MAX is given up
 * (a frozen or cut-off member keeps the TCP connection open and says nothing).
 */
export const WATCH_PROGRESS_INTERVAL_MS = 500;
export const WATCH_SILENCE_MS_MAX = 2000;

interface RawEvent { type: string; kv: { key: Buffer; value: Buffer; mod_revision: string } }
interface RawWatchResponse {
  header: { revision: string };
  created: boolean;
  canceled: boolean;
  cancel_reason: string;
  compact_revision: string;
  events: RawEvent[];
}
interface WatchStream {
  on(event: 'data', fn: (res: RawWatchResponse) => void): WatchStream;
  on(event: 'error', fn: (error: Error) => void): WatchStream;
  on(event: 'end', fn: () => void): WatchStream;
  write(req: unknown): boolean;
  cancel(): void;
}
interface PoolHost { readonly host: string }
interface Pool {
  readonly hosts: PoolHost[];
  withConnection<T>(service: 'Watch', fn: (args: { resource: PoolHost; client: grpc.Client; metadata: grpc.Metadata }) => T,
    hosts: Generator<PoolHost, void, unknown>): Promise<T>;
  markFailed(resource: PoolHost, error: Error): void;
}

/** Every member once from `start` on, then around again (the pool skips members its breaker holds). */
function* rotation(hosts: PoolHost[], start: number): Generator<PoolHost, void, unknown> {
  for (let i = 0; ; i++) yield hosts[(start + i) % hosts.length]!;
}

export class EtcdWatch {
  /** The first revision not yet delivered (0 until the first stream is created: "from now"). */
  private nextRevision = 0;
  private stream: WatchStream | null = null;
  private stopped = false;
  private retryMs = WATCH_RETRY_MS_MIN;
  private retryTimer: NodeJS.Timeout | null = null;
  private livenessTimer: NodeJS.Timeout | null = null;
  private lastHeardMs = 0;
  /** The member the next stream tries first: after a failure, the one after the member that failed. */
  private hostIndex: number;
  private host: PoolHost | null = null;
  private readonly startedPromise: Promise<void>;
  private resolveStarted!: () => void;

  constructor(
    private readonly client: Etcd3Client,
    private readonly prefix: Buffer,
    private readonly onEvent: (event: KvWatchEvent) => void,
    private readonly log: WatchLog,
  ) {
    this.startedPromise = new Promise((resolve) => { this.resolveStarted = resolve; });
    this.hostIndex = Math.floor(Math.random() * this.pool.hosts.length);
    void this.open();
  }

  /** Resolves once etcd confirmed the first watch (changes after that point are delivered). */
  started(): Promise<void> { return this.startedPromise; }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = null;
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
  }

  /**
   * etcd3's connection pool (protected, reached for two reasons): the `hasleader` metadata, which
   * makes a member that lost its leader cancel the stream instead of staying silent (etcd clientv3's
   * WithRequireLeader), and the choice of member, so a reopened stream moves past the one that failed.
   */
  private get pool(): Pool { return (this.client as unknown as { pool: Pool }).pool; }

  private async open(): Promise<void> {
    if (this.stopped) return;
    const pool = this.pool;
    let stream: WatchStream;
    let host: PoolHost | null = null;
    try {
      stream = await pool.withConnection('Watch', ({ resource, client, metadata }) => {
        const md = metadata.clone();
        md.set('hasleader', 'true');
        const s = (client as unknown as { watch(md: grpc.Metadata, o: grpc.CallOptions): WatchStream }).watch(md, {});
        host = resource;
        // Tell etcd3's breaker about failures of this endpoint, not about our own cancels.
        s.on('error', (error) => { if (this.stream === s) pool.markFailed(resource, error); });
        return s;
      }, rotation(pool.hosts, this.hostIndex));
    } catch (error) {
      this.hostIndex = (this.hostIndex + 1) % pool.hosts.length;
      this.retry(error);
      return;
    }
    if (this.stopped) { stream.cancel(); return; }
    this.stream = stream;
    this.host = host;
    this.hostIndex = host === null ? this.hostIndex : pool.hosts.indexOf(host);
    this.lastHeardMs = Date.now();
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = setInterval(() => this.checkLiveness(stream), WATCH_PROGRESS_INTERVAL_MS);
    stream.on('data', (res) => this.onResponse(stream, res));
    stream.on('error', (error) => this.onStreamEnd(stream, error));
    stream.on('end', () => this.onStreamEnd(stream, new Error('watch stream ended')));
    const create: Record<string, unknown> = { key: this.prefix.length === 0 ? Buffer.from([0]) : this.prefix, range_end: prefixRangeEnd(this.prefix) };
    if (this.nextRevision > 0) create['start_revision'] = this.nextRevision;
    stream.write({ create_request: create });
  }

  /** Asks the member for progress; one that stayed silent too long is left for another. */
  private checkLiveness(stream: WatchStream): void {
    if (stream !== this.stream) return;
    const silentMs = Date.now() - this.lastHeardMs;
    if (silentMs > WATCH_SILENCE_MS_MAX) {
      this.onStreamEnd(stream, new Error(`etcd member ${this.host?.host ?? '?'} silent for ${silentMs} ms`));
      return;
    }
    // etcd (3.4+) answers a progress request at once when the watch is in sync; a watch catching up
    // sends events instead. Either counts as heard.
    stream.write({ progress_request: {} });
  }

  private onResponse(stream: WatchStream, res: RawWatchResponse): void {
    if (stream !== this.stream) return;
    this.lastHeardMs = Date.now();
    if (res.canceled) {
      // A compacted start revision cannot be replayed: resume at the oldest one etcd still has.
      const compact = Number(res.compact_revision);
      if (compact > 0) {
        this.log('etcd_watch_compacted', { prefix: this.prefix.toString(), lostFrom: this.nextRevision, resumeAt: compact });
        this.nextRevision = compact;
      }
      this.onStreamEnd(stream, new Error(`watch canceled: ${res.cancel_reason || 'no reason given'}`));
      return;
    }
    if (res.created) {
      // Only the first creation defines "now"; later ones replay from nextRevision.
      if (this.nextRevision === 0) this.nextRevision = Number(res.header.revision) + 1;
      this.retryMs = WATCH_RETRY_MS_MIN;
      this.log('etcd_watch_connected', { prefix: this.prefix.toString(), endpoint: this.host?.host ?? null, fromRevision: this.nextRevision });
      this.resolveStarted();
    }
    let last = 0;
    for (const ev of res.events) {
      const modRevision = Number(ev.kv.mod_revision);
      // A replay after a reconnect may repeat the revision we stopped in: skip what was delivered.
      if (modRevision < this.nextRevision) continue;
      last = modRevision;
      const isDelete = ev.type.toLowerCase() === 'delete';
      const event: KvWatchEvent = {
        type: isDelete ? 'delete' : 'put',
        key: ev.kv.key.toString('utf8'),
        value: isDelete ? null : ev.kv.value.toString('utf8'),
        modRevision,
      };
      try {
        this.onEvent(event);
      } catch (error) {
        // A failing handler must not tear down the stream (the next events would be lost to it too).
        this.log('etcd_watch_handler_failed', { key: event.key, error: error instanceof Error ? error.message : String(error) });
      }
    }
    // etcd never splits one revision's events across responses (no fragment requested).
    if (last > 0) this.nextRevision = last + 1;
  }

  private onStreamEnd(stream: WatchStream, error: Error): void {
    if (stream !== this.stream) return;
    // Before our cancel, so the 'error' the cancel raises is not counted against the endpoint.
    this.stream = null;
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = null;
    stream.cancel();
    // The next stream starts at the member after this one (a dead or frozen member is skipped).
    this.hostIndex = (this.hostIndex + 1) % this.pool.hosts.length;
    this.retry(error);
  }

  private retry(error: unknown): void {
    if (this.stopped) return;
    this.log('etcd_watch_retry', { prefix: this.prefix.toString(), endpoint: this.host?.host ?? null, fromRevision: this.nextRevision, error: error instanceof Error ? error.message : String(error), retryMs: this.retryMs });
    this.retryTimer = setTimeout(() => { this.retryTimer = null; void this.open(); }, this.retryMs);
    this.retryMs = Math.min(WATCH_RETRY_MS_MAX, this.retryMs * 2);
  }
}

/** The end of etcd's range of keys that start with `prefix` (etcd clientv3 GetPrefixRangeEnd). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // every key: etcd reads "\0" as "no end"
}
