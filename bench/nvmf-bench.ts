// NVMe/TCP against NBD, driven by a real kernel (issue 21, "Benchmark"): one `cairn serve` with NBD and
// --nvmf, two volumes of the same size written in full the same way (host fio, 1 MiB writes over NBD);
// one guest boot (test/vm/README.md, TCG) runs a fixed fio job, 4 KiB random read then random write,
// on the NVMe/TCP namespace of one volume (`nvme connect --nr-io-queues=QUEUES`) and on the other volume
// through `nbd-client -C QUEUES`, in phases NVMe/TCP, NBD, NBD, NVMe/TCP (a drift over the run, such as
// the pool filling with redirected writes, falls on both; test/vm/guest/nvmf-bench.sh). A protocol's
// figure in a row sums its phases' windows. Around each fio run the
// guest asks the host to open and close a window; over it the host takes the daemon's CPU time (user +
// system, every thread, from /proc) and the I/Os the daemon completed on that volume (the daemon's own
// cairn_io_operations_total, read from /metrics). Prints per row the guest's IOPS (a TCG guest: slow,
// shown for scale only), daemon CPU µs per I/O over each protocol, and their ratio. Nothing is asserted.
// The window also holds fio's start in the guest (over 9p, a second or more under TCG) with no I/O;
// the daemon's idle CPU rate is measured first and printed, so its share of a window can be judged.
// Run: node dist/bench/nvmf-bench.js [--runtime-s=10] [--queues=2] [--jobs=2] [--iodepth=8] [--size-mib=256] [--nbd-busy-poll-us=N] [--order=nvmf,nbd,nbd,nvmf] [--cpu-prof]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import os from 'node:os';
import path from 'node:path';
import { clockTicksPerSecond, processCpuMs } from './nbd-bench.js';
import { freePort, runCapture, serveReady } from './proc.js';
import { root } from '../test/cli-helpers.js';
import { bootGuest, vmUnavailable } from '../test/vm/qemu.js';

export interface NvmfBenchOptions {
  /** fio's runtime per protocol and row, in the guest. */
  runtimeSeconds?: number;
  /** NVMe/TCP I/O queues and NBD connections (the guest has 2 vCPUs: the kernel makes at most 2 queues). */
  queues?: number;
  /** fio jobs and the queue depth of each. */
  jobs?: number;
  iodepth?: number;
  /** The protocols' phases in the one boot, in turn. */
  order?: Protocol[];
  /** Each of the two volumes. */
  sizeBytes?: number;
  /**
   * The NBD server's busy-poll window (CAIRN_NBD_BUSY_POLL_US; default the server's, 200 µs): it spins
   * the event loop after each request, CPU that NVMe/TCP (which does not poll) does not spend.
   */
  nbdBusyPollMicros?: number;
  /** Run the daemon with `node --cpu-prof` into this directory (one profile of the whole run). */
  cpuProfileDir?: string;
  log?: (line: string) => void;
}

const rows = ['randread', 'randwrite'] as const;
const protocols = ['nvmf', 'nbd'] as const;
type Protocol = typeof protocols[number];
const volumeOf: Record<Protocol, string> = { nvmf: 'bench-nvmf', nbd: 'bench-nbd' };
const NQN = 'nqn.2026-12.io.cairn:default';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:6a0c7e1e-2f7d-4c39-9a7b-1c2a6f0e9b21';
const HOSTID = '6a0c7e1e-2f7d-4c39-9a7b-1c2a6f0e9b21';
/** A hang bound for the one boot (boot, 9p, 4 fio runs under TCG), not a speed. */
const BOOT_TIMEOUT_MS = 900_000;
/** How long the idle daemon's CPU is sampled before the guest boots. */
const IDLE_SAMPLE_MS = 3000;

/** One window: daemon CPU (all threads and its event loop), I/Os it completed on the volume, wall time. */
export interface NvmfWindow { cpuMs: number; loopCpuMs: number; ios: number; wallMs: number; guestIops: number | null }
export interface NvmfBenchResults { idleCpuMsPerS: number; windows: Record<string, NvmfWindow> }

export async function runNvmfBench(opts: NvmfBenchOptions = {}): Promise<NvmfBenchResults | null> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const why = vmUnavailable();
  if (why !== null) { log(`skipped: ${why}`); return null; }
  const runtimeSeconds = opts.runtimeSeconds ?? 10;
  const queues = opts.queues ?? 2;
  const jobs = opts.jobs ?? 2;
  const iodepth = opts.iodepth ?? 8;
  const sizeBytes = opts.sizeBytes ?? 256 * 2 ** 20;
  const order = opts.order ?? ['nvmf', 'nbd', 'nbd', 'nvmf'];
  const ticksPerSecond = await clockTicksPerSecond();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cairn-nvmf-bench-'));
  const cleanups: (() => unknown)[] = [];
  let daemon: Daemon | null = null;
  try {
    daemon = await startDaemon(dir, sizeBytes, opts.cpuProfileDir, opts.nbdBusyPollMicros);
    const d = daemon;
    const ids: Record<Protocol, number> = { nvmf: 0, nbd: 0 };
    for (const p of protocols) {
      await d.cairn(['volume', 'create', volumeOf[p], '--size', String(sizeBytes)]);
      ids[p] = (JSON.parse(await d.cairn(['--json', 'volume', 'show', volumeOf[p]])) as { id: number }).id;
      await runCapture('fio', ['--name=precondition', '--ioengine=nbd', `--uri=${d.nbdUri}/${volumeOf[p]}`, '--rw=write', '--bs=1M',
        '--iodepth=8', `--size=${sizeBytes}`, '--output-format=json']);
    }
    await runCapture('sync', []);
    const pid = d.child.pid!;
    const idleStart = processCpuMs(pid, ticksPerSecond)!;
    await new Promise((resolve) => setTimeout(resolve, IDLE_SAMPLE_MS));
    const idleCpuMsPerS = ((processCpuMs(pid, ticksPerSecond)! - idleStart) * 1000) / IDLE_SAMPLE_MS;
    log(`one daemon, two volumes of ${sizeBytes / 2 ** 20} MiB written in full (1 MiB writes, host fio over NBD); idle daemon: ${idleCpuMsPerS.toFixed(1)} ms CPU/s`);
    log(`NBD busy polling: ${opts.nbdBusyPollMicros === undefined ? 'the server\'s default' : `${opts.nbdBusyPollMicros} us`} after each request`);
    log(`guest (TCG, 2 vCPUs): fio libaio direct 4k, ${jobs} jobs x iodepth ${iodepth}, ${runtimeSeconds} s per row; NVMe/TCP ${queues} I/O queues, NBD ${queues} connections; phases ${order.join(', ')}`);

    const windows: Record<string, NvmfWindow> = {};
    const open = new Map<string, { cpuMs: number; loopCpuMs: number; ios: number; atMs: number; monoUs: bigint }>();
    // The bootGuest harness takes a test context for its diagnostics and cleanups; the bench gives it these two.
    const context = { diagnostic: (m: string) => log(`  ${m}`), after: (fn: () => unknown) => { cleanups.push(fn); } } as unknown as TestContext;
    const run = await bootGuest(context, {
      script: 'nvmf-bench',
      env: {
        NVMF_PORT: d.nvmfPort, SUBNQN: NQN, HOSTNQN, HOSTID, NSID: ids.nvmf + 1, NBD_PORT: new URL(d.nbdUri).port,
        NBD_EXPORT: volumeOf.nbd, QUEUES: queues, JOBS: jobs, IODEPTH: iodepth, RUNTIME_S: runtimeSeconds, ROWS: rows.join(' '), ORDER: order.join(' '),
      },
      timeoutMs: BOOT_TIMEOUT_MS,
      shareHostRoot: true,
      onResult: (r) => { if (!r.pass) log(`  guest ${r.name} FAIL ${r.detail}`); },
      onAsk: async ([what, proto, rw, phase]) => {
        const p = proto as Protocol;
        if (!protocols.includes(p) || rw === undefined) return `unknown ${proto}`;
        const key = `${p} ${rw}`;
        const phaseKey = `${key} ${phase ?? ''}`;
        const sample = async () => ({
          cpuMs: processCpuMs(pid, ticksPerSecond) ?? Number.NaN, loopCpuMs: processCpuMs(pid, ticksPerSecond, pid) ?? Number.NaN,
          ios: await d.ioOps(volumeOf[p]), atMs: performance.now(), monoUs: process.hrtime.bigint() / 1000n,
        });
        if (what === 'window-start') { open.set(phaseKey, await sample()); return 'ok'; }
        const start = open.get(phaseKey);
        if (what !== 'window-stop' || start === undefined) return `unknown ${what}`;
        const end = await sample();
        const w = { cpuMs: end.cpuMs - start.cpuMs, loopCpuMs: end.loopCpuMs - start.loopCpuMs, ios: end.ios - start.ios, wallMs: end.atMs - start.atMs };
        // Under --cpu-prof the window in CLOCK_MONOTONIC µs, the clock of the profile's timestamps: a profile can be cut by window.
        const mono = opts.cpuProfileDir === undefined ? '' : ` (monotonic ${start.monoUs}-${end.monoUs} us)`;
        log(`  ${phaseKey.padEnd(17)} ${w.ios} I/Os, daemon ${w.cpuMs.toFixed(0)} ms CPU over ${(w.wallMs / 1000).toFixed(1)} s: ${((w.cpuMs * 1000) / w.ios).toFixed(1)} us/IO${mono}`);
        const sum = windows[key] ?? { cpuMs: 0, loopCpuMs: 0, ios: 0, wallMs: 0, guestIops: null };
        windows[key] = { cpuMs: sum.cpuMs + w.cpuMs, loopCpuMs: sum.loopCpuMs + w.loopCpuMs, ios: sum.ios + w.ios, wallMs: sum.wallMs + w.wallMs, guestIops: null };
        return 'ok';
      },
    });
    // The guest's IOPS of a protocol and row: the mean over its phases.
    for (const [k, w] of Object.entries(windows)) {
      const prefix = `${k.replace(' ', '-')}-iops-`;
      const vs = [...run.values].filter(([name]) => name.startsWith(prefix)).map(([, v]) => Number(v));
      w.guestIops = vs.length === 0 ? null : vs.reduce((a, b) => a + b, 0) / vs.length;
    }
    if (run.done === null || run.results.some((r) => !r.pass)) {
      log(`guest run incomplete (done=${String(run.done)}); serial log kept: ${run.logPath}`);
      log(run.log.split('\n').slice(-30).join('\n'));
    } else {
      // The boot's folder (per-boot initrd, serial log) is of no further use once the run is complete.
      cleanups.push(() => rm(path.dirname(run.logPath), { recursive: true, force: true }));
    }
    printTable(log, windows, idleCpuMsPerS);
    return { idleCpuMsPerS, windows };
  } finally {
    for (const fn of cleanups.reverse()) await fn();
    if (daemon !== null) await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function printTable(log: (line: string) => void, windows: Record<string, NvmfWindow>, idleCpuMsPerS: number): void {
  const perIo = (w: NvmfWindow | undefined, cpu: (w: NvmfWindow) => number): number | null => (w === undefined || w.ios === 0 ? null : (cpu(w) * 1000) / w.ios);
  const show = (v: number | null, digits = 1): string => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(digits));
  log('');
  log('daemon CPU per I/O (user + system, all threads, over each fio window; I/Os from the daemon\'s cairn_io_operations_total)');
  log(`${'row'.padEnd(10)} ${'nvmf IOPS'.padStart(10)} ${'nbd IOPS'.padStart(10)} ${'nvmf us/IO'.padStart(11)} ${'nbd us/IO'.padStart(10)} `
    + `${'nvmf/nbd'.padStart(9)} ${'nvmf loop'.padStart(10)} ${'nbd loop'.padStart(9)} ${'idle share'.padStart(11)}`);
  for (const rw of rows) {
    const n = windows[`nvmf ${rw}`];
    const b = windows[`nbd ${rw}`];
    const nAll = perIo(n, (w) => w.cpuMs);
    const bAll = perIo(b, (w) => w.cpuMs);
    // The idle daemon's CPU over the windows, as a share of what they used: how much of a figure is not I/O.
    const idleShare = [n, b].map((w) => (w === undefined || w.cpuMs <= 0 ? '-' : `${((100 * idleCpuMsPerS * w.wallMs) / 1000 / w.cpuMs).toFixed(0)}%`)).join('/');
    log(`${rw.padEnd(10)} ${show(n?.guestIops ?? null, 0).padStart(10)} ${show(b?.guestIops ?? null, 0).padStart(10)} ${show(nAll).padStart(11)} `
      + `${show(bAll).padStart(10)} ${show(nAll !== null && bAll !== null ? nAll / bAll : null, 2).padStart(9)} `
      + `${show(perIo(n, (w) => w.loopCpuMs)).padStart(10)} ${show(perIo(b, (w) => w.loopCpuMs)).padStart(9)} ${idleShare.padStart(11)}`);
  }
}

interface Daemon {
  child: ChildProcess;
  nbdUri: string;
  nvmfPort: number;
  cairn(args: string[]): Promise<string>;
  /** The daemon's completed reads and writes on a volume so far (cairn_io_operations_total). */
  ioOps(volume: string): Promise<number>;
  stop(): Promise<void>;
}

async function startDaemon(dir: string, sizeBytes: number, cpuProfileDir?: string, nbdBusyPollMicros?: number): Promise<Daemon> {
  const cairnBin = path.join(root, 'bin', 'cairn.js');
  const pool = path.join(dir, 'bench.pool');
  const nodeFlags: string[] = [];
  if (cpuProfileDir !== undefined) {
    await mkdir(cpuProfileDir, { recursive: true });
    nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`);
  }
  const nvmfPort = await freePort();
  const child = spawn(process.execPath, [...nodeFlags, cairnBin, 'serve', '--pool', pool, '--pool-size', String(4 * 2 * sizeBytes),
    '--pool-preallocate', 'full', '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--nvmf', `127.0.0.1:${nvmfPort}`,
    '--nvmf-discovery', 'off', '--log-format', 'json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...(nbdBusyPollMicros === undefined ? {} : { CAIRN_NBD_BUSY_POLL_US: String(nbdBusyPollMicros) }) },
  });
  const { exited, ready } = await serveReady(child);
  const tokenFile = `${pool}.admin-token`;
  const token = (await readFile(tokenFile, 'utf8')).trim();
  const env = { ...process.env, CAIRN_TOKEN_FILE: tokenFile };
  return {
    child, nbdUri: ready.nbd, nvmfPort,
    cairn: (args) => runCapture(process.execPath, [cairnBin, '--api', ready.api, ...args], env),
    ioOps: async (volume) => {
      const res = await fetch(`${ready.api}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      if (!res.ok) throw new Error(`/metrics: HTTP ${res.status}`);
      let total = 0;
      for (const line of (await res.text()).split('\n')) {
        if (!line.startsWith('cairn_io_operations_total{') || !line.includes(`volume="${volume}"`)) continue;
        if (!/op="(read|write)"/.test(line)) continue;
        total += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return total;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const num = (name: string): number | undefined => (flag(name) === undefined ? undefined : Number(flag(name)));
  await runNvmfBench({
    ...(num('runtime-s') === undefined ? {} : { runtimeSeconds: num('runtime-s')! }),
    ...(num('queues') === undefined ? {} : { queues: num('queues')! }),
    ...(num('jobs') === undefined ? {} : { jobs: num('jobs')! }),
    ...(num('iodepth') === undefined ? {} : { iodepth: num('iodepth')! }),
    ...(flag('order') === undefined ? {} : { order: flag('order')!.split(',') as Protocol[] }),
    ...(num('nbd-busy-poll-us') === undefined ? {} : { nbdBusyPollMicros: num('nbd-busy-poll-us')! }),
    ...(num('size-mib') === undefined ? {} : { sizeBytes: num('size-mib')! * 2 ** 20 }),
    ...(args.includes('--cpu-prof') ? { cpuProfileDir: path.resolve('nvmf-bench-profiles') } : {}),
  });
}
