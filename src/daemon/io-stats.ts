// Per-volume, per-operation I/O counts, bytes and latency buckets, kept as plain numbers on the request
// path and turned into Prometheus series only when /metrics or GET /v1/stats asks. prom-client's
// Counter.inc and Histogram.observe validate and hash their label object on every call: three such
// calls per request cost ~1.0 µs of event-loop time (measured), a tenth of a 4 KiB read's whole
// server CPU at queue depth 32. A slot here is found with two map lookups and updated with additions.
import type { Metric, Registry } from 'prom-client';

/**
 * One (volume, op) pair's totals since start: `ops` and `bytes` of the requests that succeeded; the
 * latency of every request, failed ones too (`buckets[i]`: requests that took (bound[i-1], bound[i]]
 * seconds, the last past every bound; `timed` of them, `seconds` in all).
 */
export interface IoSlot {
  readonly volume: string;
  readonly op: string;
  ops: number;
  bytes: number;
  timed: number;
  seconds: number;
  readonly buckets: Float64Array;
}

interface SeriesValue { metricName?: string; labels: Record<string, string | number>; value: number }

export class IoStats {
  private readonly byVolume = new Map<string, Map<string, IoSlot>>();

  /** `boundsSeconds`: the latency histogram's upper bounds, ascending (the +Inf bucket is implied). */
  constructor(readonly boundsSeconds: readonly number[]) {
    if (!boundsSeconds.every((b, i) => b > 0 && (i === 0 || b > boundsSeconds[i - 1]!))) throw new RangeError('latency bounds ascend from above 0');
  }

  /** The slot of (volume, op), made on first use. Callers on the request path may keep it. */
  slot(volume: string, op: string): IoSlot {
    let ops = this.byVolume.get(volume);
    if (ops === undefined) this.byVolume.set(volume, ops = new Map());
    let s = ops.get(op);
    if (s === undefined) ops.set(op, s = { volume, op, ops: 0, bytes: 0, timed: 0, seconds: 0, buckets: new Float64Array(this.boundsSeconds.length + 1) });
    return s;
  }

  /** A request that took `seconds`, whatever its outcome. */
  observe(s: IoSlot, seconds: number): void {
    const bounds = this.boundsSeconds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    s.buckets[i] = s.buckets[i]! + 1;
    s.seconds += seconds;
    s.timed++;
  }

  /** A request of `bytes` that succeeded. */
  completed(s: IoSlot, bytes: number): void {
    s.ops++;
    s.bytes += bytes;
  }

  /** `s`'s latency buckets as Prometheus counts them: requests at most each bound, then all of them. */
  cumulative(s: IoSlot): number[] {
    let acc = 0;
    return Array.from(s.buckets, (n) => (acc += n));
  }

  slots(): IoSlot[] {
    const out: IoSlot[] = [];
    for (const ops of this.byVolume.values()) for (const s of ops.values()) out.push(s);
    return out;
  }

  /**
   * Registers the three metrics prom-client's own classes used to expose, under the same names, types
   * and label order: cairn_io_operations_total and cairn_io_bytes_total (counters; bytes only for
   * pairs that moved some) and cairn_io_latency_seconds (a histogram with cumulative buckets).
   */
  register(registry: Registry): void {
    const add = (name: string, help: string, type: 'counter' | 'histogram', values: () => SeriesValue[]): void => {
      // The Registry asks a metric for its name, help, type and values only (get()); prom-client's
      // types list its own classes, so this view goes in through `unknown`.
      const metric = { name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, aggregator: 'sum', values: values() }), reset: () => undefined };
      registry.registerMetric(metric as unknown as Metric);
    };
    add('cairn_io_operations_total', 'I/O requests by volume and operation', 'counter',
      () => this.slots().filter((s) => s.ops > 0).map((s) => ({ labels: { volume: s.volume, op: s.op }, value: s.ops })));
    add('cairn_io_bytes_total', 'Bytes read, written, trimmed or zeroed', 'counter',
      () => this.slots().filter((s) => s.bytes > 0).map((s) => ({ labels: { volume: s.volume, op: s.op }, value: s.bytes })));
    add('cairn_io_latency_seconds', 'I/O request latency', 'histogram', () => {
      const out: SeriesValue[] = [];
      const name = 'cairn_io_latency_seconds';
      for (const s of this.slots()) {
        this.cumulative(s).forEach((value, i) => {
          out.push({ metricName: `${name}_bucket`, labels: { le: this.boundsSeconds[i] ?? '+Inf', volume: s.volume, op: s.op }, value });
        });
        out.push({ metricName: `${name}_sum`, labels: { volume: s.volume, op: s.op }, value: s.seconds });
        out.push({ metricName: `${name}_count`, labels: { volume: s.volume, op: s.op }, value: s.timed });
      }
      return out;
    });
  }
}
