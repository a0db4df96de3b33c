// The pool's capacity over time (GET /v1/pool/history, the dashboard's capacity chart): the daemon
// samples size, allocated, metadata and free bytes on a timer into a bounded ring, so the chart has a
// past when the page opens, not only what it sampled itself. Kept in memory: it starts again with the daemon.
import { Type, type Static } from '@sinclair/typebox';
import type { PoolStats } from '../engine/index.js';

/** One sample a minute, a day of them. */
export const CAPACITY_SAMPLE_MS_DEFAULT = 60_000;
export const CAPACITY_SAMPLES_MAX = 1440;

const Bytes = Type.Number({ minimum: 0 });
export const CapacitySample = Type.Object({
  timeMs: Type.Integer({ description: 'when the sample was taken (ms since the epoch)' }),
  size: Bytes, allocatedBytes: Bytes, freeBytes: Bytes,
  metadataBytes: Type.Union([Bytes, Type.Null()]),
});
export type CapacitySample = Static<typeof CapacitySample>;
export const CapacityHistoryView = Type.Object({
  intervalMs: Type.Integer({ description: 'time between samples' }),
  samples: Type.Array(CapacitySample, { description: 'oldest first; since the daemon started, at most a day' }),
});
export type CapacityHistoryView = Static<typeof CapacityHistoryView>;

export class CapacityHistory {
  private readonly ring: CapacitySample[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly stats: () => PoolStats, readonly intervalMs = CAPACITY_SAMPLE_MS_DEFAULT, private readonly samplesMax = CAPACITY_SAMPLES_MAX) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  sample(): void {
    let s: PoolStats;
    try {
      s = this.stats();
    } catch {
      return; // a pool closing under the timer: no sample, the chart shows a gap
    }
    this.ring.push({ timeMs: Date.now(), size: s.sizeBytes, allocatedBytes: s.allocatedBytes, freeBytes: s.freeBytes, metadataBytes: s.metadataBytes });
    if (this.ring.length > this.samplesMax) this.ring.splice(0, this.ring.length - this.samplesMax);
  }

  view(): CapacityHistoryView { return { intervalMs: this.intervalMs, samples: [...this.ring] }; }
}
