// What the dashboard samples while it is open: the pool's capacity (every few seconds) and the I/O
// totals of GET /v1/stats (every second), kept as bounded histories so a view shows the recent past
// as soon as it opens. Rates and latency percentiles are differences between two samples.
import { useEffect, useState } from 'preact/hooks';
import { get, type IoStats, type Pool, type VolumeIo } from './api';

/** Points kept per history (10 minutes of I/O at one a second). */
export const historyPointsMax = 600;
export const poolSampleMs = 2000;
export const ioSampleMs = 1000;

export interface PoolPoint { t: number; allocated: number; free: number; size: number; metadata: number | null }
export interface IoRates { readIops: number; writeIops: number; readBps: number; writeBps: number; p50Ms: number | null; p99Ms: number | null }
export interface IoPoint { t: number; pool: IoRates; volumes: Map<string, IoRates> }

type Listener = () => void;
class History<T> {
  readonly points: T[] = [];
  private readonly listeners = new Set<Listener>();
  push(p: T): void {
    this.points.push(p);
    if (this.points.length > historyPointsMax) this.points.splice(0, this.points.length - historyPointsMax);
    for (const fn of this.listeners) fn();
  }
  subscribe(fn: Listener): () => void { this.listeners.add(fn); return () => { this.listeners.delete(fn); }; }
  clear(): void { this.points.length = 0; }
}

export const poolHistory = new History<PoolPoint>();
export const ioHistory = new History<IoPoint>();
let lastPool: Pool | null = null;
let lastIo: IoStats | null = null;
export const latest = { pool: (): Pool | null => lastPool };

/** The latency below which `q` of the requests in these bucket differences fell (the bucket's upper bound). */
function quantileMs(bounds: number[], deltas: number[], q: number): number | null {
  const total = deltas[deltas.length - 1] ?? 0;
  if (total <= 0) return null;
  for (let i = 0; i < bounds.length; i += 1) if ((deltas[i] ?? 0) >= q * total) return bounds[i]! * 1000;
  return bounds[bounds.length - 1]! * 1000;
}

function ratesBetween(a: VolumeIo | undefined, b: VolumeIo, seconds: number, bounds: number[]): IoRates {
  const d = (f: (v: VolumeIo) => number) => Math.max(0, f(b) - (a === undefined ? 0 : f(a))) / seconds;
  const lat = b.latencyCounts.map((c, i) => Math.max(0, c - (a?.latencyCounts[i] ?? 0)));
  return {
    readIops: d((v) => v.readOps), writeIops: d((v) => v.writeOps), readBps: d((v) => v.readBytes), writeBps: d((v) => v.writeBytes),
    p50Ms: quantileMs(bounds, lat, 0.5), p99Ms: quantileMs(bounds, lat, 0.99),
  };
}

function sum(vols: VolumeIo[], buckets: number): VolumeIo {
  const total: VolumeIo = { name: '', readOps: 0, writeOps: 0, readBytes: 0, writeBytes: 0, latencyCounts: new Array<number>(buckets).fill(0) };
  for (const v of vols) {
    total.readOps += v.readOps; total.writeOps += v.writeOps; total.readBytes += v.readBytes; total.writeBytes += v.writeBytes;
    v.latencyCounts.forEach((c, i) => { total.latencyCounts[i] = (total.latencyCounts[i] ?? 0) + c; });
  }
  return total;
}

async function sampleIo(): Promise<void> {
  const now = await get<IoStats>('/v1/stats');
  const prev = lastIo;
  lastIo = now;
  if (prev === null) return;
  const seconds = Math.max(0.001, (now.timeMs - prev.timeMs) / 1000);
  const before = new Map(prev.volumes.map((v) => [v.name, v]));
  const volumes = new Map<string, IoRates>();
  for (const v of now.volumes) volumes.set(v.name, ratesBetween(before.get(v.name), v, seconds, now.bucketsSeconds));
  const buckets = now.bucketsSeconds.length + 1;
  const pool = ratesBetween(sum(prev.volumes, buckets), sum(now.volumes, buckets), seconds, now.bucketsSeconds);
  ioHistory.push({ t: now.timeMs / 1000, pool, volumes });
}

async function samplePool(): Promise<void> {
  const p = await get<Pool>('/v1/pool');
  lastPool = p;
  poolHistory.push({ t: Date.now() / 1000, allocated: p.allocatedBytes, free: p.freeBytes, size: p.size, metadata: p.metadataBytes });
}

/** Starts both samplers while signed in; a failed sample is skipped (the view shows its own errors). */
export function useSamplers(on: boolean): void {
  useEffect(() => {
    if (!on) return undefined;
    poolHistory.clear(); ioHistory.clear(); lastIo = null;
    // A failed sample (daemon restarting, network blip) leaves a gap; the next one goes on.
    const tickPool = () => { samplePool().catch(() => undefined); };
    const tickIo = () => { sampleIo().catch(() => undefined); };
    tickPool(); tickIo();
    const a = setInterval(tickPool, poolSampleMs);
    const b = setInterval(tickIo, ioSampleMs);
    return () => { clearInterval(a); clearInterval(b); };
  }, [on]);
}

/** Re-renders the caller whenever `history` gains a point. */
export function useHistory<T>(history: History<T>): T[] {
  const [, setN] = useState(0);
  useEffect(() => history.subscribe(() => setN((n) => n + 1)), [history]);
  return history.points;
}
