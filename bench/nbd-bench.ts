// NBD benchmark: fio's nbd engine against Cairn's NBD server, qemu-nbd (raw and qcow2) and nbdkit's
// file plugin on the same machine: an unmeasured warm-up of each, workloads interleaved across servers
// (each row in rounds that alternate the servers, so a stretch of host noise falls on all of them);
// then, server by server, 4 KiB random writes right before and right after a snapshot (qemu: a qcow2
// overlay; nbdkit: none). Then, Cairn alone, 4 KiB random writes with and without a snapshot taken
// every second (and every half second) while they run: IOPS and p99 completion latency, and the ratios
// of the two. Prints a table with ratios against qemu-nbd (raw) and nbdkit, and the
// after/before ratio of each server. A second table gives each server's own CPU time per operation
// (all its threads, from /proc): on a machine whose cores are all busy, throughput follows it. A third
// shows, for Cairn, where that CPU goes (event loop or other threads), how much device I/O ran inline,
// and how much of the time the loop busy-polled idly (printCairnDiagnostics).
// Run: node --import tsx bench/nbd-bench.ts [--runtime-s=10] [--rounds=2] [--size-mib=1024] [--cpu-prof] [--sparse]
//   [--servers=cairn,cairn-nopoll,...] [--rows=randread,QD1] [--periodic-snapshots-only]
// The Cairn server runs in a child process (this file with --serve) so it can be profiled alone; it is
// `cairn serve`'s own start (startDaemon), so every row goes through the daemon's whole data path.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Preallocation } from '../src/engine/index.js';
import { freePort, runCapture } from './proc.js';

export interface NbdBenchOptions {
  /** Measured seconds per server and row, split over `rounds`. */
  runtimeSeconds?: number;
  /**
   * Rounds per row: each runs every server for runtimeSeconds / rounds, in turn, and a row reports the
   * mean. On a shared host noise comes in stretches of seconds; with one long run per server a stretch
   * lands on one server only (with one 10 s run per server, Cairn/qemu-nbd on 1 MiB writes moved
   * between 0.87 and 1.12 across three runs of the same code).
   */
  rounds?: number;
  sizeBytes?: number;
  /** Write a V8 CPU profile of the Cairn server into this directory. */
  cpuProfileDir?: string;
  /** Subset of servers to run (default all). */
  servers?: ServerName[];
  /**
   * Lay every server's file down in full before the warm-up (default true): Cairn's pool with
   * `preallocate: 'full'`, the raw files with qemu-img's preallocation=full (qcow2 grows as it does).
   * Sparse, Cairn's first 1 MiB write pass after the warm-up is its first write into most of its pool
   * (it writes to new blocks, over 4x the volume), while qemu-nbd and nbdkit overwrite pages the
   * warm-up already wrote; on this kind of VM a page the kernel newly allocates for the page cache
   * costs several times the copy into it (docs/performance.md, "Pool files and first writes").
   */
  preallocate?: boolean;
  /** Only Cairn's periodic-snapshot rows (after the warm-up): for working on snapshots. */
  periodicSnapshotsOnly?: boolean;
  /** Only the rows whose name contains one of these (default all; the warm-up always runs). */
  rows?: string[];
  log?: (line: string) => void;
}

/** `cairn-nopoll`: Cairn with busy polling off, run only when asked for (--servers), to show what polling costs and gains. */
type ServerName = 'cairn' | 'cairn-nopoll' | 'qemu-raw' | 'qemu-qcow2' | 'nbdkit';
const allServers: ServerName[] = ['cairn', 'qemu-raw', 'qemu-qcow2', 'nbdkit'];

/** `fsyncEvery`: fio's --fsync, a FLUSH after every that many writes (what databases and journals do). */
export interface Workload { name: string; rw: string; bs: string; iodepth: number; unit: 'iops' | 'MB/s' | 'us'; fsyncEvery?: number }
const workloads: Workload[] = [
  { name: '1M seq write', rw: 'write', bs: '1M', iodepth: 8, unit: 'MB/s' },
  { name: '1M seq read', rw: 'read', bs: '1M', iodepth: 8, unit: 'MB/s' },
  { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32, unit: 'iops' },
  { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' },
  { name: '4k randwrite QD1 (lat)', rw: 'randwrite', bs: '4k', iodepth: 1, unit: 'us' },
  { name: '4k randwrite QD32 fsync=32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops', fsyncEvery: 32 },
  { name: '4k randwrite QD1 fsync=1', rw: 'randwrite', bs: '4k', iodepth: 1, unit: 'iops', fsyncEvery: 1 },
  // After the random-write rows every server's file has been overwritten at random: Cairn's blocks and
  // free space are scattered (redirect-on-write: a 1 MiB read is ~100 runs), the others overwrite in
  // place. Users' volumes look like this: a backup or a table scan reads them sequentially.
  { name: '1M seq read, aged volume', rw: 'read', bs: '1M', iodepth: 8, unit: 'MB/s' },
  { name: '1M seq write, aged volume', rw: 'write', bs: '1M', iodepth: 8, unit: 'MB/s' },
];
const warmups: Workload[] = [
  { name: 'warm-up 1M write', rw: 'write', bs: '1M', iodepth: 8, unit: 'MB/s' },
  { name: 'warm-up 4k randwrite', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' },
  { name: 'warm-up 4k randread', rw: 'randread', bs: '4k', iodepth: 32, unit: 'iops' },
];
const warmupSeconds = 3;
// Run per server as one sequence, right before and right after its snapshot: interleaved with the
// other servers, each side of the pair also measured their write-back (they write nothing to disk
// until a flush, so the kernel writes their dirty pages back whenever it gets to them).
const beforeSnapshotWorkload: Workload = { name: '4k randwrite QD32 before snapshot', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' };
const snapshotWorkload: Workload = { name: '4k randwrite QD32 after snapshot', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' };

interface Running {
  name: ServerName; uri: string; process: ChildProcess; snapshot(name?: string): Promise<void>; stop(): Promise<void>;
  /** Cairn: deletes the volume's snapshots whose names start with `prefix` and frees their trees. */
  deleteSnapshots?(prefix: string): Promise<void>;
  /** Cairn: starts, or stops into FILE.cpuprofile, a V8 CPU profile of the server (profiler.ts below). */
  profile?(command: 'start' | `stop ${string}`): void;
  /** Cairn only: its counters (device I/O inline or on the thread pool, busy polling) so far. */
  counters?(): Promise<CairnCounters>;
}

/**
 * Cairn's periodic-snapshot rows: the same 4 KiB random writes without snapshots and with one taken
 * every `periodMs` through the server's own snapshot path (a platform snapshotting every volume every
 * few minutes takes several a second pool-wide). Rounds alternate the variants, as the other rows do.
 */
const periodicWorkload: Workload = { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' };
const periodicVariants: { name: string; periodMs: number | null }[] = [
  { name: '4k randwrite QD32, no snapshots', periodMs: null },
  { name: '4k randwrite QD32, 1 snapshot/s', periodMs: 1000 },
  { name: '4k randwrite QD32, 2 snapshots/s', periodMs: 500 },
];

/**
 * A periodic-snapshot row of Cairn's: IOPS, p99 completion latency, snapshots taken and their mean
 * time; and against the no-snapshot variant, the median over the rounds of each round's own ratios.
 */
export interface PeriodicSnapshotRow { name: string; iops: number; p99Ms: number; snapshots: number; snapshotMeanMs: number; iopsRatio: number; p99Ratio: number }

/** The Cairn child's counters: where device I/O ran (engine stats) and what the busy poller did. */
export interface CairnCounters {
  inlineReads: number; pooledReads: number; slowInlineReads: number;
  inlineWrites: number; pooledWrites: number; slowInlineWrites: number;
  kicks: number; turns: number; idleTurns: number; idleMs: number;
  /** Filled in by the bench: wall time over which the counters grew. */
  wallMs: number;
}

/** A row's figures per server: the workload's measure, and the server's CPU time per operation. */
export interface NbdBenchResults {
  values: Record<string, Record<string, number>>;
  /** µs of server CPU per I/O (4 KiB rows), ms per GiB (1 MiB rows). */
  cpu: Record<string, Record<string, number>>;
  /** Cairn's rows with snapshots taken while it writes (empty when Cairn is not among the servers). */
  periodicSnapshots: PeriodicSnapshotRow[];
  /** The same for the server's main thread alone (Cairn's event loop). */
  mainThreadCpu: Record<string, Record<string, number>>;
  /** Per row and Cairn server, its counters over its measured runs (summed over rounds, ramp included). */
  cairnCounters: Record<string, Record<string, CairnCounters>>;
}

export async function runNbdBench(opts: NbdBenchOptions = {}): Promise<NbdBenchResults> {
  // A server child must never start a bench of its own (that would spawn servers without end).
  if (process.env[childEnv] === '1') throw new Error('runNbdBench called inside a bench server child');
  const runtimeSeconds = opts.runtimeSeconds ?? 10;
  const rounds = Math.max(1, Math.floor(opts.rounds ?? 2));
  const roundSeconds = Math.max(2, Math.round(runtimeSeconds / rounds));
  const sizeBytes = opts.sizeBytes ?? 1024 * 1024 * 1024;
  const log = opts.log ?? ((line: string) => console.log(line));
  const names = opts.servers ?? allServers;
  const preallocate = opts.preallocate ?? true;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cairn-nbd-bench-'));
  const servers: Running[] = [];
  const results: Record<string, Record<string, number>> = {};
  const cpuResults: Record<string, Record<string, number>> = {};
  const periodic: PeriodicSnapshotRow[] = [];
  const mainCpuResults: Record<string, Record<string, number>> = {};
  const counterResults: Record<string, Record<string, CairnCounters>> = {};
  const ticksPerSecond = await clockTicksPerSecond();
  try {
    for (const name of names) servers.push(await startServer(name, dir, sizeBytes, preallocate, opts.cpuProfileDir));
    log(preallocate ? 'files laid down in full first (Cairn pool: preallocate=full; raw files: preallocation=full; qcow2: as it grows)' : 'files sparse (--sparse)');
    // An unmeasured warm-up of every server, as benchmarks of long-running servers do: without it the
    // first row measured Cairn's JIT compiling its hot paths (--trace-opt: ~1.3 s of TurboFan work in
    // the first seconds) and every server's first pass over a never-written file.
    for (const server of servers) for (const workload of warmups) await fio(server.uri, workload, sizeBytes, warmupSeconds);
    log(`warm-up done (${warmups.length} x ${warmupSeconds} s per server, not measured); each row: ${rounds} round(s) of ${roundSeconds} s per server, servers alternating`);
    // One row: every server in turn, in rounds, and the mean of its rounds.
    const measureRow = async (workload: Workload): Promise<void> => {
      const samples = new Map<ServerName, number[]>(servers.map((server) => [server.name, []]));
      const cpuSamples = new Map<ServerName, number[]>(servers.map((server) => [server.name, []]));
      const mainCpuSamples = new Map<ServerName, number[]>(servers.map((server) => [server.name, []]));
      const counters: Record<string, CairnCounters> = {};
      for (let round = 1; round <= rounds; round++) {
        for (const server of servers) {
          // The page cache's dirty data goes to disk between measurements: qemu-nbd and nbdkit write
          // nothing until a flush and leave GiBs of it after a write row, and the kernel's write-back
          // of it must not fall on the next server's measurement.
          await runCapture('sync', []);
          const before = await server.counters?.();
          const { value, cpuPerOp, mainCpuPerOp } = await fio(server.uri, workload, sizeBytes, roundSeconds, { pid: server.process.pid, ticksPerSecond });
          const after = await server.counters?.();
          if (before && after) counters[server.name] = addCounters(counters[server.name] ?? null, before, after);
          samples.get(server.name)!.push(value);
          if (cpuPerOp !== null) cpuSamples.get(server.name)!.push(cpuPerOp);
          if (mainCpuPerOp !== null) mainCpuSamples.get(server.name)!.push(mainCpuPerOp);
          log(`${workload.name.padEnd(34)} ${server.name.padEnd(11)} ${format(value, workload.unit)}${rounds > 1 ? `  (round ${round}/${rounds})` : ''}`);
        }
      }
      // Rounds of equal length: the mean of their rates (or mean latencies) is the row's.
      results[workload.name] = meanOf(samples);
      cpuResults[workload.name] = meanOf(cpuSamples);
      mainCpuResults[workload.name] = meanOf(mainCpuSamples);
      counterResults[workload.name] = counters;
    };
    const wanted = (workload: Workload): boolean => opts.rows === undefined || opts.rows.some((r) => workload.name.includes(r));
    if (opts.periodicSnapshotsOnly !== true) {
      for (const workload of workloads) if (wanted(workload)) await measureRow(workload);
    }
    // The snapshot pair in rounds too (it was one run per server, and a stretch of host noise on one
    // server's run moved Cairn/qemu-raw on the row before the snapshot between 0.97 and 1.20 across
    // runs): every server's row before, then every server's snapshot, then every server's row after.
    if (opts.periodicSnapshotsOnly !== true && (wanted(beforeSnapshotWorkload) || wanted(snapshotWorkload))) {
      await measureRow(beforeSnapshotWorkload);
      for (const server of servers) await server.snapshot();
      await measureRow(snapshotWorkload);
    }
    const cairn = servers.find((server) => server.name === 'cairn');
    const periodicWanted = opts.periodicSnapshotsOnly === true || periodicVariants.some((v) => wanted({ ...periodicWorkload, name: v.name }));
    if (cairn && periodicWanted) periodic.push(...await measurePeriodicSnapshots(cairn, sizeBytes, rounds, roundSeconds, log, opts.cpuProfileDir));
  } finally {
    for (const server of servers) await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
  if (Object.keys(results).length > 0) {
    printTable(log, names, results);
    printCpuTable(log, names, cpuResults, os.cpus().length);
    printCairnDiagnostics(log, cpuResults, mainCpuResults, counterResults);
  }
  printPeriodicTable(log, periodic);
  return { values: results, cpu: cpuResults, mainThreadCpu: mainCpuResults, cairnCounters: counterResults, periodicSnapshots: periodic };

}

/**
 * Cairn's periodic-snapshot rows, in rounds alternating the variants, the order rotated every round
 * (which variant runs first after the sync changes). While fio runs, snapshots named bench@pN are
 * taken one after another, each started `periodMs` after the previous one started (or at once when it
 * took longer), so at most one is in flight; they are deleted after the run. A variant's ratios to the
 * no-snapshot variant are taken within each round (runs minutes apart on this host differ by more than
 * the effect measured), then the median over the rounds.
 */
async function measurePeriodicSnapshots(server: Running, sizeBytes: number, rounds: number, roundSeconds: number,
  log: (line: string) => void, cpuProfileDir?: string): Promise<PeriodicSnapshotRow[]> {
  const samples = new Map(periodicVariants.map((v) => [v.name, { iops: [] as number[], p99: [] as number[], snapMs: [] as number[] }]));
  let taken = 0;
  for (let round = 1; round <= rounds; round++) {
    for (const variant of inTurn(periodicVariants, round)) {
      await runCapture('sync', []);
      let running = true;
      const snapMs: number[] = [];
      const snapshots = (async (): Promise<void> => {
        if (variant.periodMs === null) return;
        // The first one after fio's ramp has begun: the measured part is all under snapshots.
        await sleep(rampSeconds * 500);
        while (running) {
          const started = performance.now();
          await server.snapshot(`bench@p${taken++}`);
          const ms = performance.now() - started;
          snapMs.push(ms);
          await sleep(Math.max(0, variant.periodMs - ms));
        }
      })();
      let result: Awaited<ReturnType<typeof fio>>;
      // With --cpu-prof, a profile of each run as well (named after the variant and round).
      if (cpuProfileDir !== undefined) server.profile?.('start');
      try {
        result = await fio(server.uri, periodicWorkload, sizeBytes, roundSeconds);
      } finally {
        running = false;
        await snapshots;
        if (cpuProfileDir !== undefined) server.profile?.(`stop ${path.join(cpuProfileDir, `periodic-${variant.periodMs ?? 0}ms-r${round}`)}`);
      }
      // Deleted and freed after each run, unmeasured (a platform rotates its snapshots): kept, a run's
      // overwrites stay pinned and the 4x pool fills within a few runs.
      if (snapMs.length > 0) await server.deleteSnapshots?.('p');
      const sample = samples.get(variant.name)!;
      sample.iops.push(result.value);
      sample.p99.push(result.p99Ms);
      sample.snapMs.push(...snapMs);
      log(`${variant.name.padEnd(34)} cairn       ${format(result.value, 'iops')}, p99 ${result.p99Ms.toFixed(2)} ms` +
        `${snapMs.length > 0 ? `, ${snapMs.length} snapshots of ${mean(snapMs).toFixed(0)} ms mean` : ''}${rounds > 1 ? `  (round ${round}/${rounds})` : ''}`);
    }
  }
  const none = samples.get(periodicVariants[0]!.name)!;
  return periodicVariants.map((v) => {
    const s = samples.get(v.name)!;
    return {
      name: v.name, iops: mean(s.iops), p99Ms: mean(s.p99), snapshots: s.snapMs.length, snapshotMeanMs: s.snapMs.length > 0 ? mean(s.snapMs) : 0,
      iopsRatio: pairedRatio(s.iops, none.iops), p99Ratio: pairedRatio(s.p99, none.p99),
    };
  });
}

function printPeriodicTable(log: (line: string) => void, rows: PeriodicSnapshotRow[]): void {
  if (rows.length === 0) return;
  log('');
  log('Cairn, snapshots taken while 4 KiB random writes run (target at 1/s: IOPS ratio >= 0.90, p99 ratio <= 2;');
  log('ratios to no snapshots: the median of each round\'s own)');
  log(`${'workload'.padEnd(34)} ${'IOPS'.padStart(12)} ${'p99'.padStart(10)} ${'IOPS/none'.padStart(10)} ${'p99/none'.padStart(9)} ${'snapshots'.padStart(10)} ${'mean'.padStart(9)}`);
  for (const r of rows) {
    log(`${r.name.padEnd(34)} ${format(r.iops, 'iops').padStart(12)} ${`${r.p99Ms.toFixed(2)} ms`.padStart(10)} ${r.iopsRatio.toFixed(2).padStart(10)} ` +
      `${r.p99Ratio.toFixed(2).padStart(9)} ${String(r.snapshots).padStart(10)} ${r.snapshots > 0 ? `${r.snapshotMeanMs.toFixed(0)} ms`.padStart(9) : '-'.padStart(9)}`);
  }
}

function mean(values: number[]): number { return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length); }
/**
 * The variants of a row in the order round `round` (from 1) runs them: rotated by one each round, so
 * the one measured first after the sync is not always the same.
 */
export function inTurn<T>(variants: readonly T[], round: number): T[] {
  const shift = (round - 1) % variants.length;
  return [...variants.slice(shift), ...variants.slice(0, shift)];
}

/**
 * a/b as the median over the rounds of each round's own a[i]/b[i]: the runs of one round share the
 * host's state of the moment, runs minutes apart on this host differ by more than most effects measured.
 */
export function pairedRatio(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`paired samples of ${a.length} and ${b.length} rounds`);
  return median(a.map((x, i) => x / b[i]!));
}

export function median(values: number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
function sleep(ms: number): Promise<void> { return new Promise((resolve) => setTimeout(resolve, ms)); }

function meanOf(samples: Map<ServerName, number[]>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, values] of samples) if (values.length > 0) out[name] = values.reduce((a, b) => a + b, 0) / values.length;
  return out;
}

function unitOf(row: string): Workload['unit'] {
  return [...workloads, beforeSnapshotWorkload, snapshotWorkload].find((w) => w.name === row)?.unit ?? 'iops';
}

function format(value: number, unit: Workload['unit']): string {
  return unit === 'us' ? `${value.toFixed(0)} us` : unit === 'MB/s' ? `${value.toFixed(0)} MB/s` : `${(value / 1000).toFixed(1)}k iops`;
}

/** One line of a results table: the row's name, a cell per server, the two ratio columns. */
function tableLine(first: string, cells: string[], ratios: [string, string]): string {
  return [first.padEnd(34), ...cells.map((cell) => cell.padStart(13)), ratios[0].padStart(15), ratios[1].padStart(13)].join(' ');
}

function printTable(log: (line: string) => void, names: ServerName[], results: Record<string, Record<string, number>>): void {
  log('');
  log(tableLine('workload', names, ['cairn/qemu-raw', 'cairn/nbdkit']));
  for (const [row, values] of Object.entries(results)) {
    const unit = unitOf(row);
    // For latency lower is better: report qemu/cairn so that > 1 always means Cairn is better.
    const ratio = (other: ServerName): string => {
      if (values.cairn === undefined || values[other] === undefined) return '-';
      return (unit === 'us' ? values[other] / values.cairn : values.cairn / values[other]).toFixed(2);
    };
    log(tableLine(row, names.map((n) => format(values[n] ?? 0, unit)), [ratio('qemu-raw'), ratio('nbdkit')]));
  }
  log('(ratios > 1: Cairn better; latency ratio = other/cairn)');
  const before = results['4k randwrite QD32 before snapshot'], after = results[snapshotWorkload.name];
  if (before && after) {
    log(`after/before snapshot, 4k randwrite QD32: ${names.map((n) => `${n} ${before[n] ? ((after[n] ?? 0) / before[n]).toFixed(2) : '-'}`).join(', ')}`);
  }
}

/** Server CPU per operation: µs per I/O or ms per GiB; the ratios are other/cairn (> 1: Cairn needs less). */
function printCpuTable(log: (line: string) => void, names: ServerName[], cpu: Record<string, Record<string, number>>, cores: number): void {
  log('');
  log(`server CPU per operation (user + system, every thread of the server process, while fio measured; ${cores} cores here)`);
  log(tableLine('workload', names, ['qemu-raw/cairn', 'nbdkit/cairn']));
  for (const [row, values] of Object.entries(cpu)) {
    const perGiB = row.startsWith('1M');
    const show = (v: number | undefined): string => (v === undefined ? '-' : perGiB ? `${v.toFixed(0)} ms/GiB` : `${v.toFixed(1)} us/io`);
    const ratio = (other: ServerName): string => (values.cairn && values[other] !== undefined ? (values[other] / values.cairn).toFixed(2) : '-');
    log(tableLine(row, names.map((n) => show(values[n])), [ratio('qemu-raw'), ratio('nbdkit')]));
  }
  log('(lower is better; ratios > 1: Cairn needs less CPU. Cairn busy-polls for a short window after each request, which counts here, most at QD1)');
}

/** `sum` plus what the counters grew by from `before` to `after`. */
function addCounters(sum: CairnCounters | null, before: CairnCounters, after: CairnCounters): CairnCounters {
  const out = { ...(sum ?? { inlineReads: 0, pooledReads: 0, slowInlineReads: 0, inlineWrites: 0, pooledWrites: 0, slowInlineWrites: 0, kicks: 0, turns: 0, idleTurns: 0, idleMs: 0, wallMs: 0 }) };
  for (const key of Object.keys(out) as (keyof CairnCounters)[]) out[key] += after[key] - before[key];
  return out;
}

/**
 * Where Cairn's CPU per operation goes, row by row: its event loop (the main thread) against its other
 * threads (libuv's pool, V8's helpers); the share of device reads and writes done inline on the loop
 * (the rest went through the thread pool, at ~10 µs of loop time each plus a thread's wake-up) and the
 * inline calls found slow, each of which sends that kind of I/O to the pool for 50 ms to 1 s
 * (device/inline-io.ts); and the share of wall time the busy poller kept the loop spinning with no
 * request arriving (pure polling: CPU that fio, on the same 2 cores, does not get).
 */
function printCairnDiagnostics(log: (line: string) => void, cpu: Record<string, Record<string, number>>, mainCpu: Record<string, Record<string, number>>,
  countersByRow: Record<string, Record<string, CairnCounters>>): void {
  if (Object.values(countersByRow).every((byServer) => Object.keys(byServer).length === 0)) return;
  log('');
  log('Cairn per row: CPU per op on its event loop / other threads; device I/O inline on the loop (rest: thread pool), inline calls found slow; share of wall time the loop busy-polled with nothing arriving');
  log(['workload'.padEnd(34), 'loop CPU'.padStart(13), 'other CPU'.padStart(13), 'reads inline'.padStart(13), 'writes inline'.padStart(14),
    'slow r/w'.padStart(10), 'idle polling'.padStart(13)].join(' '));
  for (const [row, byServer] of Object.entries(countersByRow)) for (const [name, c] of Object.entries(byServer)) {
    const perGiB = row.startsWith('1M');
    const show = (v: number | undefined): string => (v === undefined ? '-' : perGiB ? `${v.toFixed(0)} ms/GiB` : `${v.toFixed(1)} us/io`);
    const total = cpu[row]?.[name], main = mainCpu[row]?.[name];
    const share = (inline: number, pooled: number): string => (inline + pooled === 0 ? '-' : `${((100 * inline) / (inline + pooled)).toFixed(1)} %`);
    const polling = c.wallMs > 0 ? `${((100 * c.idleMs) / c.wallMs).toFixed(1)} %` : '-';
    log([(name === 'cairn' ? row : `${row} (${name})`).padEnd(34), show(main).padStart(13), show(total !== undefined && main !== undefined ? total - main : undefined).padStart(13),
      share(c.inlineReads, c.pooledReads).padStart(13), share(c.inlineWrites, c.pooledWrites).padStart(14),
      `${c.slowInlineReads}/${c.slowInlineWrites}`.padStart(10), polling.padStart(13)].join(' '));
  }
}

/** Seconds fio runs before it measures (--ramp_time). */
export const rampSeconds = 1;

/**
 * One fio run: the workload's measure and, given the server's pid, the server's CPU time per
 * operation over the measured part (from just after the ramp to fio's exit, at fio's measured rate).
 * Also used by encryption-bench.ts.
 */
export async function fio(uri: string, workload: Workload, sizeBytes: number, runtimeSeconds: number,
  server?: { pid: number | undefined; ticksPerSecond: number }): Promise<{ value: number; cpuPerOp: number | null; mainCpuPerOp: number | null; p99Ms: number }> {
  const args = ['--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${workload.rw}`, `--bs=${workload.bs}`,
    `--iodepth=${workload.iodepth}`, `--size=${sizeBytes}`, '--time_based', `--runtime=${runtimeSeconds}`,
    `--ramp_time=${rampSeconds}`, '--randrepeat=0', '--output-format=json'];
  if (workload.fsyncEvery !== undefined) args.push(`--fsync=${workload.fsyncEvery}`);
  const window = server?.pid !== undefined ? new CpuWindow(server.pid, server.ticksPerSecond, rampSeconds * 1000 + 200) : null;
  const out = await runCapture('fio', args);
  const used = window?.end() ?? null;
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: FioJob[] }).jobs[0]!;
  const side = workload.rw.includes('read') ? job.read : job.write;
  const value = workload.unit === 'us' ? side.clat_ns.mean / 1000 : workload.unit === 'MB/s' ? side.bw_bytes / 1e6 : side.iops;
  let cpuPerOp: number | null = null, mainCpuPerOp: number | null = null;
  if (used !== null && used.wallMs > 0) {
    const seconds = used.wallMs / 1000;
    // 1 MiB rows: ms per GiB moved; 4 KiB rows: µs per I/O.
    const perOp = (cpuMs: number): number => (workload.bs === '1M' ? cpuMs / (side.bw_bytes * seconds / 2 ** 30) : (cpuMs * 1000) / (side.iops * seconds));
    cpuPerOp = perOp(used.cpuMs);
    mainCpuPerOp = used.mainCpuMs === null ? null : perOp(used.mainCpuMs);
  }
  // fio's default percentile list holds 99.000000; a side with no I/O has none.
  const p99Ms = (side.clat_ns.percentile?.['99.000000'] ?? 0) / 1e6;
  return { value, cpuPerOp, mainCpuPerOp, p99Ms };
}

/** User + system clock ticks of a /proc/PID/stat line (every thread of the process). */
export function cpuTicksOfStat(stat: string): number {
  // Fields after the command name (which may hold spaces and parentheses): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(ticks)) throw new Error(`not a /proc/PID/stat line: ${stat.slice(0, 80)}`);
  return ticks;
}

/** A process's CPU time (user + system, all threads; or thread `tid` alone) in ms; null once it is gone. */
export function processCpuMs(pid: number, ticksPerSecond: number, tid?: number): number | null {
  let stat: string;
  try { stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8'); } catch { return null; }
  return (cpuTicksOfStat(stat) * 1000) / ticksPerSecond;
}

/** The kernel's clock ticks per second (the unit of /proc/PID/stat's CPU times). */
export async function clockTicksPerSecond(): Promise<number> {
  return Number((await runCapture('getconf', ['CLK_TCK'])).trim()) || 100;
}

/** CPU a process (and its main thread, the event loop of a Node server) uses from `delayMs` after construction until end(). */
export class CpuWindow {
  private start: { cpuMs: number; mainCpuMs: number | null; atMs: number } | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number, private readonly ticksPerSecond: number, delayMs: number) {
    this.timer = setTimeout(() => {
      const cpuMs = processCpuMs(pid, ticksPerSecond);
      if (cpuMs !== null) this.start = { cpuMs, mainCpuMs: processCpuMs(pid, ticksPerSecond, pid), atMs: performance.now() };
    }, delayMs);
  }

  end(): { cpuMs: number; mainCpuMs: number | null; wallMs: number } | null {
    clearTimeout(this.timer);
    const cpuMs = processCpuMs(this.pid, this.ticksPerSecond);
    const mainCpuMs = processCpuMs(this.pid, this.ticksPerSecond, this.pid);
    if (this.start === null || cpuMs === null) return null;
    const mainUsed = mainCpuMs === null || this.start.mainCpuMs === null ? null : mainCpuMs - this.start.mainCpuMs;
    return { cpuMs: cpuMs - this.start.cpuMs, mainCpuMs: mainUsed, wallMs: performance.now() - this.start.atMs };
  }
}

interface FioSide { iops: number; bw_bytes: number; clat_ns: { mean: number; percentile?: Record<string, number> } }
interface FioJob { read: FioSide; write: FioSide }



async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`server on port ${port} did not come up`);
}

function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => { child.once('exit', () => resolve()); child.kill(signal); });
}

/** A raw file of `sizeBytes`, sparse or written in full. */
async function rawFile(file: string, sizeBytes: number, preallocate: boolean): Promise<void> {
  await runCapture('qemu-img', ['create', '-q', '-f', 'raw', '-o', `preallocation=${preallocate ? 'full' : 'off'}`, file, String(sizeBytes)]);
}

async function startServer(name: ServerName, dir: string, sizeBytes: number, preallocate: boolean, cpuProfileDir?: string): Promise<Running> {
  const port = await freePort();
  const uri = `nbd://127.0.0.1:${port}/bench`;
  if (name === 'cairn' || name === 'cairn-nopoll') return startCairn(name, dir, port, sizeBytes, preallocate, name === 'cairn' ? cpuProfileDir : undefined);
  if (name === 'nbdkit') {
    const file = path.join(dir, 'nbdkit.raw');
    await rawFile(file, sizeBytes, preallocate);
    const child = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), '-e', 'bench', 'file', file], { stdio: 'ignore' });
    await waitForPort(port);
    // nbdkit's file plugin has no snapshots: the "after snapshot" row shows the same file again.
    return { name, uri, process: child, snapshot: async () => undefined, stop: () => stopProcess(child) };
  }
  const qcow2 = name === 'qemu-qcow2';
  const base = path.join(dir, `${name}.${qcow2 ? 'qcow2' : 'raw'}`);
  if (qcow2) await runCapture('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(sizeBytes)]);
  else await rawFile(base, sizeBytes, preallocate);
  const launch = (file: string, format: string): ChildProcess =>
    spawn('qemu-nbd', ['-t', '-b', '127.0.0.1', '-p', String(port), '-x', 'bench', '-f', format, file], { stdio: 'ignore' });
  let child = launch(base, qcow2 ? 'qcow2' : 'raw');
  await waitForPort(port);
  const running: Running = {
    name, uri, process: child,
    snapshot: async () => {
      // qemu's snapshot: a qcow2 overlay on the image, served instead of it (raw gets one too).
      const overlay = path.join(dir, `${name}-overlay.qcow2`);
      await stopProcess(child);
      await runCapture('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', qcow2 ? 'qcow2' : 'raw', overlay]);
      child = launch(overlay, 'qcow2');
      running.process = child;
      await waitForPort(port);
    },
    stop: () => stopProcess(child),
  };
  return running;
}

const childEnv = 'CAIRN_NBD_BENCH_CHILD';

/**
 * Node flags for the server child: only module loaders (--import/--loader, e.g. tsx) are kept; an
 * inherited -e/-p script would run again in the child instead of this file's --serve mode.
 */
function childExecArgv(): string[] {
  const kept: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if ((arg === '--import' || arg === '--loader' || arg === '--experimental-loader') && i + 1 < argv.length) kept.push(arg, argv[++i]!);
    else if (/^--(import|loader|experimental-loader)=/.test(arg)) kept.push(arg);
  }
  return kept;
}

async function startCairn(name: 'cairn' | 'cairn-nopoll', dir: string, port: number, sizeBytes: number, preallocate: boolean, cpuProfileDir?: string): Promise<Running> {
  const self = fileURLToPath(import.meta.url);
  const execArgv = childExecArgv();
  if (cpuProfileDir) {
    await mkdir(cpuProfileDir, { recursive: true });
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`);
  }
  const busyPoll = name === 'cairn-nopoll' ? { CAIRN_BENCH_BUSY_POLL_US: '0' } : {};
  const child = spawn(process.execPath, [...execArgv, self, '--serve', path.join(dir, `${name}.pool`), String(port), String(sizeBytes), preallocate ? 'full' : 'off'],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { UV_THREADPOOL_SIZE: '16', ...process.env, ...busyPoll, [childEnv]: '1' } }); // as bin/cairn.js sets it
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const replies: string[] = [];
  let waiter: ((line: string) => void) | null = null;
  lines.on('line', (line) => { if (waiter) { const w = waiter; waiter = null; w(line); } else replies.push(line); });
  const next = (): Promise<string> => new Promise((resolve) => { const l = replies.shift(); if (l !== undefined) resolve(l); else waiter = resolve; });
  if ((await next()) !== 'ready') throw new Error('cairn server did not start');
  return {
    name, uri: `nbd://127.0.0.1:${port}/bench`, process: child,
    snapshot: async (snapshotName = 'bench@snap') => {
      child.stdin?.write(`snapshot ${snapshotName}\n`);
      const reply = await next();
      if (reply !== 'ok') throw new Error(`snapshot ${snapshotName} failed: ${reply}`);
    },
    profile: (command) => { child.stdin?.write(`profile-${command}\n`); },
    deleteSnapshots: async (prefix) => {
      child.stdin?.write(`delete-snapshots ${prefix}\n`);
      const reply = await next();
      if (reply !== 'ok') throw new Error(`deleting snapshots failed: ${reply}`);
    },
    counters: async () => { child.stdin?.write('counters\n'); return JSON.parse(await next()) as CairnCounters; },
    // SIGINT lets the child close the pool and write its CPU profile.
    stop: () => stopProcess(child, 'SIGINT'),
  };
}

/** Starts and stops V8 CPU profiles of this process through the inspector. */
const profiler = {
  session: null as import('node:inspector').Session | null,
  async start(): Promise<void> {
    const { Session } = await import('node:inspector');
    const session = new Session();
    session.connect();
    const post = (method: string): Promise<void> => new Promise((resolve, reject) => session.post(method, (err) => (err ? reject(err) : resolve())));
    await post('Profiler.enable');
    await post('Profiler.start');
    this.session = session;
  },
  async stop(file: string): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.session = null;
    const { writeFile } = await import('node:fs/promises');
    const profile = await new Promise<unknown>((resolve, reject) =>
      session.post('Profiler.stop', (err, result) => (err ? reject(err) : resolve(result.profile))));
    await writeFile(file, JSON.stringify(profile));
    session.disconnect();
  },
};

/**
 * Child mode: serve one volume "bench" from a new pool; on stdin "snapshot VOLUME@NAME" takes that snapshot,
 * "delete-snapshots PREFIX" deletes bench's snapshots named PREFIX... and frees them.
 */
async function serve(poolPath: string, port: number, sizeBytes: number, preallocate: Preallocation): Promise<void> {
  const { startDaemon } = await import('../src/daemon/serve.js');
  const { defaultConfig } = await import('../src/daemon/config.js');
  const { pino } = await import('pino');
  // What users run: `cairn serve`'s whole data path (metrics, QoS, tenant scoping in front of the
  // engine), with its API on a port of its own. Thin-pool headroom of 4x the volume: after the snapshot
  // row the old data stays pinned while every overwrite allocates anew (qemu's qcow2 overlay grows its
  // file the same way, without a bound). Logs go to stderr (stdout answers the bench's commands);
  // CAIRN_BENCH_EVENTS=1 logs the engine's events too (commits with their durations).
  const logger = pino({ level: process.env.CAIRN_BENCH_EVENTS === '1' ? 'debug' : 'warn' }, pino.destination({ dest: 2, sync: true }));
  const busy = process.env.CAIRN_BENCH_BUSY_POLL_US;
  const daemon = await startDaemon({
    ...defaultConfig, poolPath, poolSizeBytes: sizeBytes * 4, poolPreallocate: preallocate, logLevel: 'warn', logFormat: 'json',
    api: { host: '127.0.0.1', port: 0 }, nbd: { host: '127.0.0.1', port },
    ...(busy !== undefined ? { nbdBusyPollMicros: Number(busy) } : {}),
  }, logger);
  const engine = daemon.engine;
  await engine.createVolume('bench', sizeBytes);
  const stop = async (): Promise<void> => {
    console.error(`cairn pool stats at exit: ${JSON.stringify(engine.stats())}`);
    await daemon.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'counters') {
      const io = engine.stats().deviceIo;
      const none = { inlineReads: 0, pooledReads: 0, slowInlineReads: 0, inlineWrites: 0, pooledWrites: 0, slowInlineWrites: 0 };
      const poll = daemon.nbdPollStats() ?? { kicks: 0, turns: 0, idleTurns: 0, idleMs: 0 };
      const counters: CairnCounters = { ...(io ?? none), ...poll, wallMs: performance.now() };
      console.log(JSON.stringify(counters));
    } else if (line.startsWith('snapshot ')) void engine.createSnapshots([line.slice('snapshot '.length)]).then(() => console.log('ok'), (e: Error) => console.log(`error ${e.message}`));
    else if (line.startsWith('delete-snapshots ')) {
      const prefix = line.slice('delete-snapshots '.length);
      void (async () => {
        for (const s of engine.listSnapshots('bench')) if (s.name.startsWith(prefix)) await engine.deleteSnapshot(s.fullName);
        // Freed in the background, a step per commit: waited for, so it does not fall on the next run.
        while (engine.stats().pendingDeleteNodes > 0) await new Promise((resolve) => setTimeout(resolve, 20));
        await engine.checkpoint();
      })().then(() => console.log('ok'), (e: Error) => console.log(`error ${e.message}`));
    }
    // "profile-start" / "profile-stop NAME": a V8 CPU profile of just that stretch, into NAME.cpuprofile.
    else if (line === 'profile-start') void profiler.start();
    else if (line.startsWith('profile-stop ')) void profiler.stop(`${line.slice('profile-stop '.length)}.cpuprofile`);
  });
  console.log('ready');
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  if (args[0] === '--serve' && process.env[childEnv] === '1') {
    await serve(args[1]!, Number(args[2]), Number(args[3]), args[4] === 'full' ? 'full' : 'off');
  } else if (process.env[childEnv] !== '1') {
    const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
    const serversFlag = flag('servers');
    await runNbdBench({
      runtimeSeconds: Number(flag('runtime-s') ?? 10),
      rounds: Number(flag('rounds') ?? 2),
      sizeBytes: Number(flag('size-mib') ?? 1024) * 1024 * 1024,
      cpuProfileDir: args.includes('--cpu-prof') ? path.resolve('nbd-bench-profiles') : undefined,
      servers: serversFlag ? (serversFlag.split(',') as ServerName[]) : undefined,
      preallocate: !args.includes('--sparse'),
      periodicSnapshotsOnly: args.includes('--periodic-snapshots-only'),
      ...(flag('rows') ? { rows: flag('rows')!.split(',') } : {}),
    });
  }
}
