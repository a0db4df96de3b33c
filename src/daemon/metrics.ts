// Prometheus metrics (prom-client): per-volume I/O operations, bytes and latency, pool space, commit
// durations, checksum errors and QoS waits. The engine's log events feed commits and checksum errors; an
// instrumenting Engine decorator (instrumented-engine.ts) feeds the I/O metrics, kept in IoStats
// (io-stats.ts: plain numbers on the request path, series built at scrape time).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Engine, FlushCounts } from '../engine/index.js';
import type { QosWaitTotals } from '../qos/qos-control.js';
import type { ClusterHandle } from '../cluster/handle.js';
import { IoStats } from './io-stats.js';

/** Distinct volume labels before further volumes are counted under "other" (bounded cardinality). */
export const volumeLabelsMax = 10_000;

/** Upper bounds of the I/O latency histogram's buckets (the last, +Inf, is implied). */
export const latencyBucketsSeconds = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

/** One volume's I/O since start; latencyCounts[i]: requests at most latencyBucketsSeconds[i] (cumulative; the last: all). */
export interface VolumeIoTotals { name: string; readOps: number; writeOps: number; readBytes: number; writeBytes: number; latencyCounts: number[] }
export interface IoTotals { bucketsSeconds: number[]; volumes: VolumeIoTotals[] }

export class Metrics {
  readonly registry = new Registry();
  /** Requests, bytes and latency per volume and operation. */
  readonly io = new IoStats(latencyBucketsSeconds);
  readonly ioErrors: Counter<'volume' | 'op' | 'code'>;
  readonly commitSeconds: Histogram;
  readonly checksumErrors: Counter;
  readonly authFailures: Counter<'reason'>;
  private readonly labels = new Set<string>();
  private engine: Engine | null = null;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'cairn_process_' });
    this.io.register(this.registry);
    this.ioErrors = new Counter({ name: 'cairn_io_errors_total', help: 'Failed I/O requests by error code', labelNames: ['volume', 'op', 'code'], registers });
    this.commitSeconds = new Histogram({
      name: 'cairn_commit_duration_seconds', help: 'Duration of engine commits', registers,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    });
    this.authFailures = new Counter({ name: 'cairn_api_auth_failures_total', help: 'API requests refused for a missing, malformed or invalid token', labelNames: ['reason'], registers });
    this.checksumErrors = new Counter({ name: 'cairn_checksum_errors_total', help: 'Checksum mismatches detected on read', registers });
    const self = this;
    const pool = (name: string, help: string, pick: (e: Engine) => number) => new Gauge({
      name, help, registers, collect() { if (self.engine !== null) this.set(pick(self.engine)); },
    });
    pool('cairn_pool_size_bytes', 'Pool size', (e) => e.stats().sizeBytes);
    pool('cairn_pool_allocated_bytes', 'Pool bytes allocated', (e) => e.stats().allocatedBytes);
    pool('cairn_pool_free_bytes', 'Pool bytes free', (e) => e.stats().freeBytes);
    pool('cairn_pool_volumes', 'Volumes in the pool', (e) => e.stats().volumes);
    pool('cairn_pool_snapshots', 'Snapshots in the pool', (e) => e.stats().snapshots);
    pool('cairn_pool_generation', 'Last durable commit generation', (e) => e.stats().generation);
    // Flush counters, read at scrape time from the engine (they count from the pool's open).
    const flushes = (name: string, help: string, pick: (f: FlushCounts) => number) => new Counter({
      name, help, registers,
      collect() { const f = self.engine?.stats().flushes; if (f) { this.reset(); this.inc(pick(f)); } },
    });
    flushes('cairn_flush_log_rounds_total', 'Intent log rounds written (each one sync or one durable write)', (f) => f.logRounds);
    flushes('cairn_flush_eager_rounds_total', 'Intent log rounds a lone write started before its flush came', (f) => f.eagerRounds);
    flushes('cairn_flush_commits_total', 'Flushes that committed instead of writing the intent log', (f) => f.committed);
    flushes('cairn_flush_inline_blocks_total', 'Data blocks of lone small writes carried inline by intent log rounds', (f) => f.inlineBlocks);
    pool('cairn_held_write_blocks', 'Data blocks of lone small writes held in memory until the next commit', (e) => e.stats().flushes?.heldBlocks ?? 0);
  }

  attach(engine: Engine): void { this.engine = engine; }

  /** NVMe/TCP gauges, read at scrape time: controllers (host associations) and connections (queues). */
  attachNvmf(state: () => { controllers: number; connections: number }): void {
    const registers = [this.registry];
    new Gauge({ name: 'cairn_nvmf_controllers', help: 'NVMe/TCP controllers alive', registers, collect() { this.set(state().controllers); } });
    new Gauge({ name: 'cairn_nvmf_connections', help: 'NVMe/TCP connections (one per queue, and those not yet connected)', registers,
      collect() { this.set(state().connections); } });
  }

  /**
   * The cluster (issue 22), read at scrape time from the node's counters: failovers it drove, members
   * it dropped, rebuild bytes it sent, replica writes in flight (replication lag) and degraded volumes
   * (fewer in-sync members than replicas, as the records say).
   */
  attachCluster(cluster: ClusterHandle): void {
    const registers = [this.registry];
    const total = (name: string, help: string, pick: (c: ReturnType<ClusterHandle['counters']>) => number) => new Counter({
      name, help, registers,
      collect() { this.reset(); this.inc(pick(cluster.counters())); },
    });
    total('cairn_cluster_failovers_total', 'Takeovers this node made as a volume\'s new primary', (c) => c.failovers);
    total('cairn_cluster_members_dropped_total', 'Replicas this node (as primary) dropped from the in-sync set', (c) => c.membersDropped);
    total('cairn_cluster_rebuild_bytes_total', 'Bytes this node sent to rebuild replicas', (c) => c.rebuildBytes);
    new Gauge({ name: 'cairn_cluster_replica_writes_inflight', help: 'Writes sent to replicas and not yet answered (replication lag)', registers,
      collect() { this.set(cluster.counters().inflightReplicaWrites); } });
    new Gauge({ name: 'cairn_cluster_degraded_volumes', help: 'Volumes with fewer in-sync replicas than wanted', registers,
      collect() { this.set(degradedVolumes(cluster)); } });
  }

  /** QoS: time requests waited for their limits or their turn, and how many waited, per volume and tenant. */
  attachQos(totals: () => { volumes: QosWaitTotals[]; tenants: QosWaitTotals[] }): void {
    const registers = [this.registry];
    const label = (name: string) => this.label(name);
    const counter = (name: string, help: string, by: 'volume' | 'tenant', pick: (t: QosWaitTotals) => number) => new Counter({
      name, help, labelNames: [by], registers,
      collect() {
        this.reset();
        const all = totals();
        for (const t of by === 'volume' ? all.volumes : all.tenants) this.inc({ [by]: by === 'volume' ? label(t.name) : t.name }, pick(t));
      },
    });
    counter('cairn_qos_volume_wait_seconds_total', 'Time I/O requests of a volume waited for QoS limits or fair sharing', 'volume', (t) => t.waitSeconds);
    counter('cairn_qos_volume_delayed_requests_total', 'I/O requests of a volume that QoS delayed', 'volume', (t) => t.delayedRequests);
    counter('cairn_qos_tenant_wait_seconds_total', 'Time I/O requests of a tenant waited for QoS limits or fair sharing', 'tenant', (t) => t.waitSeconds);
    counter('cairn_qos_tenant_delayed_requests_total', 'I/O requests of a tenant that QoS delayed', 'tenant', (t) => t.delayedRequests);
  }

  /** A bounded label for a volume name. */
  label(name: string): string {
    if (this.labels.has(name)) return name;
    if (this.labels.size >= volumeLabelsMax) return 'other';
    this.labels.add(name);
    return name;
  }

  /** Engine log events: ('commit', {durationMs}) and ('checksum_error', {...}). */
  onEngineEvent(event: string, fields: Record<string, unknown>): void {
    if (event === 'commit' && typeof fields.durationMs === 'number') this.commitSeconds.observe(fields.durationMs / 1000);
    if (event === 'checksum_error') this.checksumErrors.inc();
  }

  /**
   * Per-volume I/O totals since start (data operations: read, write, trim, write-zeroes) with the
   * cumulative latency histogram, for GET /v1/stats: a client takes differences between two samples.
   */
  ioTotals(): IoTotals {
    const byVolume = new Map<string, VolumeIoTotals>();
    const entry = (volume: string): VolumeIoTotals => {
      let e = byVolume.get(volume);
      if (e === undefined) {
        e = { name: volume, readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0, latencyCounts: latencyBucketsSeconds.map(() => 0).concat(0) };
        byVolume.set(volume, e);
      }
      return e;
    };
    const dataOp = (op: string) => op === 'read' || op === 'write' || op === 'trim' || op === 'write_zeroes';
    for (const slot of this.io.slots()) {
      if (slot.volume === 'pool' || !dataOp(slot.op)) continue;
      const e = entry(slot.volume);
      if (slot.op === 'read') { e.readOps += slot.ops; e.readBytes += slot.bytes; } else { e.writeOps += slot.ops; e.writeBytes += slot.bytes; }
      this.io.cumulative(slot).forEach((n, i) => { e.latencyCounts[i]! += n; });
    }
    return { bucketsSeconds: latencyBucketsSeconds, volumes: [...byVolume.values()] };
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** Volumes whose record holds fewer in-sync members than it wants replicas. */
export function degradedVolumes(cluster: ClusterHandle): number {
  let count = 0;
  for (const v of cluster.volumes()) if (cluster.replicas(v.name).filter((m) => m.state === 'in-sync').length < v.replicas) count += 1;
  return count;
}
