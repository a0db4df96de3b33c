// Encryption at rest against plain (issue 20), through the real daemon: one `cairn serve` (bin/cairn.js)
// whose default tenant gets a file KEK (`cairn tenant set default --kek file:...`), a plain and an
// encrypted volume of the same size, both written in full first (reads hit data, not holes); then fio's
// nbd engine on each in rounds of one run each, the order swapped every round (plain then encrypted,
// then encrypted then plain: whichever runs second after a sync is not always the same one). Prints
// each variant's median IOPS or MiB/s, the ratio encrypted/plain beside the target (0.90 for
// 4 KiB, 0.80 for 1 MiB) as the median of the rounds' own ratios (the two runs of a round share the
// host's state of the moment; this host's plain rounds alone swing by 20-30 %), and the daemon's CPU
// per operation, on its event loop and on its other threads.
// Run: node dist/bench/encryption-bench.js [--runtime-s=12] [--rounds=4] [--size-mib=512] [--cpu-prof]
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { clockTicksPerSecond, fio, inTurn, median, pairedRatio, type Workload } from './nbd-bench.js';
import { runCapture, serveReady } from './proc.js';

export interface EncryptionBenchOptions {
  /** Measured seconds per volume and row, split over `rounds` (each at least 2 s). */
  runtimeSeconds?: number;
  /** Rounds per row, each running both volumes (in turns of order); a row reports the medians of its rounds. */
  rounds?: number;
  /** Size of each of the two volumes. */
  sizeBytes?: number;
  /** Run the daemon with `node --cpu-prof` into this directory (one profile of the whole run). */
  cpuProfileDir?: string;
  log?: (line: string) => void;
}

/** A row and the target for its ratio encrypted/plain. */
interface Row { workload: Workload; target: number }
// Reads first, on the layout the precondition left (each volume written once, sequentially); the write
// rows after them scatter it (redirect-on-write), and the 1 MiB reads would then be 256 runs of 4 KiB.
const rows: Row[] = [
  { workload: { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32, unit: 'iops' }, target: 0.9 },
  { workload: { name: '1M read QD8', rw: 'read', bs: '1M', iodepth: 8, unit: 'MB/s' }, target: 0.8 },
  { workload: { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' }, target: 0.9 },
  { workload: { name: '1M write QD8', rw: 'write', bs: '1M', iodepth: 8, unit: 'MB/s' }, target: 0.8 },
];
const warmup: Workload = { name: 'warm-up 4k randread', rw: 'randread', bs: '4k', iodepth: 32, unit: 'iops' };
const warmupSeconds = 2;

type Variant = 'plain' | 'encrypted';
const variants: Variant[] = ['plain', 'encrypted'];
/** Volume names (default tenant: plain names, and NBD export names without a tenant prefix). */
const volumeOf: Record<Variant, string> = { plain: 'bench-plain', encrypted: 'bench-encrypted' };

/** One variant's medians in a row: the measure (IOPS or MB/s as fio gives it), and daemon CPU per op. */
export interface EncryptionSample { value: number; cpuPerOp: number | null; loopCpuPerOp: number | null }
export interface EncryptionRowResult {
  name: string; unit: Workload['unit']; target: number; plain: EncryptionSample; encrypted: EncryptionSample;
  /** Median over the rounds of encrypted/plain within the round. */
  ratio: number;
}

export async function runEncryptionBench(opts: EncryptionBenchOptions = {}): Promise<EncryptionRowResult[]> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const rounds = Math.max(1, Math.floor(opts.rounds ?? 4));
  const roundSeconds = Math.max(2, Math.round((opts.runtimeSeconds ?? 12) / rounds));
  const sizeBytes = opts.sizeBytes ?? 512 * 1024 * 1024;
  const ticksPerSecond = await clockTicksPerSecond();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cairn-enc-bench-'));
  let daemon: Daemon | null = null;
  const results: EncryptionRowResult[] = [];
  try {
    daemon = await startDaemon(dir, sizeBytes, opts.cpuProfileDir);
    await setUp(daemon, dir, sizeBytes);
    log(`one daemon, two volumes of ${sizeBytes / 2 ** 20} MiB (pool ${(4 * 2 * sizeBytes) / 2 ** 30} GiB, preallocated), each written in full with 1 MiB writes first`);
    for (const v of variants) await fio(daemon.uri(v), warmup, sizeBytes, warmupSeconds);
    log(`warm-up done (${warmupSeconds} s of 4k randread per volume, not measured); each row: ${rounds} round(s) of ${roundSeconds} s per volume, the order swapped every round`);
    for (const row of rows) results.push(await measureRow(daemon, row, sizeBytes, rounds, roundSeconds, ticksPerSecond, log));
  } finally {
    if (daemon !== null) await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  }
  printTables(log, results);
  return results;
}

/** A row: `rounds` times both variants, each after a `sync`, the order swapped every round; medians of the rounds. */
async function measureRow(daemon: Daemon, row: Row, sizeBytes: number, rounds: number, roundSeconds: number,
  ticksPerSecond: number, log: (line: string) => void): Promise<EncryptionRowResult> {
  const samples: Record<Variant, { value: number[]; cpu: number[]; loop: number[] }> = {
    plain: { value: [], cpu: [], loop: [] }, encrypted: { value: [], cpu: [], loop: [] },
  };
  for (let round = 1; round <= rounds; round++) {
    for (const v of inTurn(variants, round)) {
      // Dirty pages of the previous run go to disk now, not during the next variant's measurement.
      await runCapture('sync', []);
      const r = await fio(daemon.uri(v), row.workload, sizeBytes, roundSeconds, { pid: daemon.child.pid, ticksPerSecond });
      samples[v].value.push(r.value);
      if (r.cpuPerOp !== null) samples[v].cpu.push(r.cpuPerOp);
      if (r.mainCpuPerOp !== null) samples[v].loop.push(r.mainCpuPerOp);
      log(`${row.workload.name.padEnd(20)} ${v.padEnd(10)} ${format(r.value, row.workload.unit)}  (round ${round}/${rounds})`);
    }
  }
  const sample = (v: Variant): EncryptionSample => ({
    value: median(samples[v].value), cpuPerOp: medianOrNull(samples[v].cpu), loopCpuPerOp: medianOrNull(samples[v].loop),
  });
  return {
    name: row.workload.name, unit: row.workload.unit, target: row.target, plain: sample('plain'), encrypted: sample('encrypted'),
    ratio: pairedRatio(samples.encrypted.value, samples.plain.value),
  };
}

function printTables(log: (line: string) => void, results: EncryptionRowResult[]): void {
  log('');
  log('enc/plain: the median of each round\'s own ratio');
  log(`${'workload'.padEnd(20)} ${'plain'.padStart(14)} ${'encrypted'.padStart(14)} ${'enc/plain'.padStart(10)} ${'target'.padStart(7)} ${'met'.padStart(4)}`);
  for (const r of results) {
    log(`${r.name.padEnd(20)} ${format(r.plain.value, r.unit).padStart(14)} ${format(r.encrypted.value, r.unit).padStart(14)} `
      + `${r.ratio.toFixed(2).padStart(10)} ${r.target.toFixed(2).padStart(7)} ${(r.ratio >= r.target ? 'yes' : 'no').padStart(4)}`);
  }
  log('');
  log('daemon CPU per operation (medians; all threads, and its event loop alone): us per I/O (4k), ms per GiB (1M)');
  log(`${'workload'.padEnd(20)} ${'plain all'.padStart(10)} ${'plain loop'.padStart(11)} ${'enc all'.padStart(10)} ${'enc loop'.padStart(10)} ${'enc/plain'.padStart(10)}`);
  for (const r of results) {
    const show = (v: number | null): string => (v === null ? '-' : r.unit === 'MB/s' ? v.toFixed(0) : v.toFixed(1));
    const ratio = r.plain.cpuPerOp && r.encrypted.cpuPerOp ? (r.encrypted.cpuPerOp / r.plain.cpuPerOp).toFixed(2) : '-';
    log(`${r.name.padEnd(20)} ${show(r.plain.cpuPerOp).padStart(10)} ${show(r.plain.loopCpuPerOp).padStart(11)} `
      + `${show(r.encrypted.cpuPerOp).padStart(10)} ${show(r.encrypted.loopCpuPerOp).padStart(10)} ${ratio.padStart(10)}`);
  }
}

/** fio reports bandwidth in bytes per second; shown here in MiB/s. */
function format(value: number, unit: Workload['unit']): string {
  return unit === 'MB/s' ? `${((value * 1e6) / 2 ** 20).toFixed(0)} MiB/s` : `${(value / 1000).toFixed(1)}k iops`;
}

function medianOrNull(values: number[]): number | null { return values.length === 0 ? null : median(values); }

interface Daemon {
  child: ChildProcess;
  api: string;
  /** The NBD URI of a variant's volume. */
  uri(variant: Variant): string;
  /** Runs `cairn ARGS` against this daemon as its admin; rejects unless it exits 0. */
  cairn(args: string[]): Promise<string>;
  /** SIGTERM (the daemon closes its pool and, under --cpu-prof, writes its profile) and wait for the exit. */
  stop(): Promise<void>;
}

/** The repository root (where package.json is): this file runs from bench/ (tsx) or dist/bench/. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above the bench');
    dir = up;
  }
  return dir;
}

/** `cairn serve` on a new pool (4x the two volumes, written in full first) with ephemeral ports; waits for "ready". */
async function startDaemon(dir: string, sizeBytes: number, cpuProfileDir?: string): Promise<Daemon> {
  const cairnBin = path.join(repoRoot(), 'bin', 'cairn.js');
  const pool = path.join(dir, 'bench.pool');
  const nodeFlags: string[] = [];
  if (cpuProfileDir !== undefined) {
    await mkdir(cpuProfileDir, { recursive: true });
    nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`);
  }
  const child = spawn(process.execPath, [...nodeFlags, cairnBin, 'serve', '--pool', pool, '--pool-size', String(4 * 2 * sizeBytes),
    '--pool-preallocate', 'full', '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const { exited, ready } = await serveReady(child);
  const env = { ...process.env, CAIRN_TOKEN_FILE: `${pool}.admin-token` };
  return {
    child, api: ready.api,
    uri: (variant) => `${ready.nbd}/${volumeOf[variant]}`,
    cairn: (args) => runCapture(process.execPath, [cairnBin, '--api', ready.api, ...args], env),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The KEK (32 random bytes in a file), both volumes, and one sequential 1 MiB pass over each. */
async function setUp(daemon: Daemon, dir: string, sizeBytes: number): Promise<void> {
  const kek = path.join(dir, 'kek');
  await writeFile(kek, randomBytes(32), { mode: 0o600 });
  await daemon.cairn(['tenant', 'set', 'default', '--kek', `file:${kek}`]);
  await daemon.cairn(['volume', 'create', volumeOf.plain, '--size', String(sizeBytes)]);
  await daemon.cairn(['volume', 'create', volumeOf.encrypted, '--size', String(sizeBytes), '--encrypt']);
  for (const v of variants) {
    const view = JSON.parse(await daemon.cairn(['--json', 'volume', 'show', volumeOf[v]])) as { encrypted?: boolean };
    if (view.encrypted !== (v === 'encrypted')) throw new Error(`${volumeOf[v]} has encrypted=${String(view.encrypted)}`);
  }
  for (const v of variants) {
    await runCapture('fio', ['--name=precondition', '--ioengine=nbd', `--uri=${daemon.uri(v)}`, '--rw=write', '--bs=1M',
      '--iodepth=8', `--size=${sizeBytes}`, '--output-format=json']);
  }
  await runCapture('sync', []);
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  await runEncryptionBench({
    runtimeSeconds: Number(flag('runtime-s') ?? 12),
    rounds: Number(flag('rounds') ?? 4),
    sizeBytes: Number(flag('size-mib') ?? 512) * 1024 * 1024,
    ...(args.includes('--cpu-prof') ? { cpuProfileDir: path.resolve('encryption-bench-profiles') } : {}),
  });
}
