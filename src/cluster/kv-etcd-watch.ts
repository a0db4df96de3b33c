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
interface PoolHost { getServiceClient(name: 'Watch'): grpc.Client }
interface Pool {
  withConnection<T>(service: 'Watch', fn: (args: { resource: PoolHost; client: grpc.Client; metadata: grpc.Metadata }) => T): Promise<T>;
  markFailed(resource: PoolHost, error: Error): void;
}

export class EtcdWatch {
  /** The first revision not yet delivered (0 until the first stream is created: "from now"). */
  private nextRevision = 0;
  private stream: WatchStream | null = null;
  private stopped = false;
  private retryMs = WATCH_RETRY_MS_MIN;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly startedPromise: Promise<void>;
  private resolveStarted!: () => void;

  constructor(
    private readonly client: Etcd3Client,
    private readonly prefix: Buffer,
    private readonly onEvent: (event: KvWatchEvent) => void,
    private readonly log: WatchLog,
  ) {
    this.startedPromise = new Promise((resolve) => { this.resolveStarted = resolve; });
    void this.open();
  }

  /** Resolves once etcd confirmed the first watch (changes after that point are delivered). */
  started(): Promise<void> { return this.startedPromise; }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const stream = this.stream;
    this.stream = null;
    stream?.cancel();
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    // The pool is etcd3's (protected); used for one reason: the `hasleader` metadata, which makes a
    // member that lost its leader cancel the stream instead of staying silent (etcd clientv3's
    // WithRequireLeader), so we move to a member of the majority.
    const pool = (this.client as unknown as { pool: Pool }).pool;
    let stream: WatchStream;
    try {
      stream = await pool.withConnection('Watch', ({ resource, client, metadata }) => {
        const md = metadata.clone();
        md.set('hasleader', 'true');
        const s = (client as unknown as { watch(md: grpc.Metadata, o: grpc.CallOptions): WatchStream }).watch(md, {});
        // Tell etcd3's breaker about failures of this endpoint, not about our own cancels.
        s.on('error', (error) => { if (this.stream === s) pool.markFailed(resource, error); });
        return s;
      });
    } catch (error) {
      this.retry(error);
      return;
    }
    if (this.stopped) { stream.cancel(); return; }
    this.stream = stream;
    stream.on('data', (res) => this.onResponse(stream, res));
    stream.on('error', (error) => this.onStreamEnd(stream, error));
    stream.on('end', () => this.onStreamEnd(stream, new Error('watch stream ended')));
    const create: Record<string, unknown> = { key: this.prefix.length === 0 ? Buffer.from([0]) : this.prefix, range_end: prefixRangeEnd(this.prefix) };
    if (this.nextRevision > 0) create['start_revision'] = this.nextRevision;
    stream.write({ create_request: create });
  }

  private onResponse(stream: WatchStream, res: RawWatchResponse): void {
    if (stream !== this.stream) return;
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
    stream.cancel();
    this.retry(error);
  }

  private retry(error: unknown): void {
    if (this.stopped) return;
    this.log('etcd_watch_retry', { prefix: this.prefix.toString(), fromRevision: this.nextRevision, error: error instanceof Error ? error.message : String(error), retryMs: this.retryMs });
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
