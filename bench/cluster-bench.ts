// Storage nodes (issue 22), on one machine: a local etcd and three `cairn serve --cluster` processes on
// loopback, each with its own pool. Rows, all in one run so their ratios compare:
//  - 4 KiB random writes at QD32 (IOPS) and at QD1 (latency), on volumes of 1, 2 and 3 replicas, fio's
//    nbd engine on the primary's NBD port; ratio to 1 replica (target: 2 replicas ≥ 0.70);
//  - failover: SIGKILL the primary of a 2-replica volume while a client writes, time until a write and
//    flush through the surviving node succeed;
//  - rebuild: a member down while N MiB of random 4 KiB writes land, then back: the time and bytes its
//    rebuild moves (from the daemon's cairn_cluster_rebuild_bytes_total), against a full copy to a node
//    whose pool was wiped.
// The replicas share one machine's disk and CPU, so a replica costs more here than on separate machines.
// Run: node dist/bench/cluster-bench.js [--runtime-s=6] [--size-mib=256] [--changed-mib=64] [--secret] (--secret: a cluster secret, so the
// replication link runs in TLS-PSK)
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { clockTicksPerSecond, CpuWindow, fio, rampSeconds, type Workload } from './nbd-bench.js';
import { freePort, runCapture, serveReady } from './proc.js';

export interface ClusterBenchOptions {
  runtimeSeconds?: number;
  sizeBytes?: number;
  /** Written while a member is down, before it comes back and is rebuilt. */
  changedBytes?: number;
  /** Nodes share a cluster secret, so the replication link runs in TLS-PSK (what a production cluster runs). */
  secret?: boolean;
  log?: (line: string) => void;
}

interface Node {
  name: string;
  pool: string;
  ports: { api: number; nbd: number; repl: number };
  child: ChildProcess | null;
  exited: Promise<void>;
}

interface ReplicaView { node: string; state: string; primary: boolean; rebuildProgress: number | null }

const rows: Workload[] = [
  { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32, unit: 'iops' },
  { name: '4k randwrite QD1 latency', rw: 'randwrite', bs: '4k', iodepth: 1, unit: 'us' },
];

function repoRoot(): string { return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..'); }
const cairnBin = (): string => path.join(repoRoot(), 'bin', 'cairn.js');
/** Unmeasured random writes before each volume's rows. */
const warmupSeconds = 2;
/** The daemon's checkpoint interval (10 s) and some slack. */
const checkpointWaitMs = 12_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Cluster {
  readonly nodes: Node[] = [];
  private etcd: ChildProcess | null = null;
  etcdUrl = '';
  constructor(private readonly dir: string, private readonly secretFile: string | null = null) {}

  async startEtcd(): Promise<void> {
    const client = await freePort(), peer = await freePort();
    this.etcdUrl = `http://127.0.0.1:${client}`;
    this.etcd = spawn('etcd', ['--name', 'bench', '--data-dir', path.join(this.dir, 'etcd'), '--listen-client-urls', this.etcdUrl,
      '--advertise-client-urls', this.etcdUrl, '--listen-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--initial-cluster', `bench=http://127.0.0.1:${peer}`],
    { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      try { if ((await fetch(`${this.etcdUrl}/health`)).ok) return; } catch { /* not listening yet */ }
      await sleep(100);
    }
    throw new Error('etcd did not become healthy');
  }

  async addNode(name: string, sizeBytes: number): Promise<Node> {
    const node: Node = { name, pool: path.join(this.dir, `${name}.pool`), ports: { api: await freePort(), nbd: await freePort(), repl: await freePort() }, child: null, exited: Promise.resolve() };
    this.nodes.push(node);
    await this.start(node, sizeBytes);
    return node;
  }

  async start(node: Node, sizeBytes: number): Promise<void> {
    const child = spawn(process.execPath, [cairnBin(), 'serve', '--pool', node.pool, '--pool-size', String(8 * sizeBytes),
      '--api', `127.0.0.1:${node.ports.api}`, '--nbd', `127.0.0.1:${node.ports.nbd}`, '--log-format', 'json',
      '--cluster', this.etcdUrl, '--node', node.name, '--advertise', '127.0.0.1', '--repl-port', String(node.ports.repl),
      ...(this.secretFile === null ? [] : ['--cluster-secret-file', this.secretFile])],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    const { exited } = await serveReady(child);
    node.child = child;
    node.exited = exited;
  }

  async kill(node: Node): Promise<void> {
    node.child?.kill('SIGKILL');
    await node.exited;
    node.child = null;
  }

  cli(node: Node, args: string[]): Promise<string> {
    return runCapture(process.execPath, [cairnBin(), '--api', `http://127.0.0.1:${node.ports.api}`, ...args],
      { ...process.env, CAIRN_TOKEN_FILE: `${node.pool}.admin-token` });
  }

  async replicas(via: Node, volume: string): Promise<ReplicaView[]> {
    const view = JSON.parse(await this.cli(via, ['--json', 'volume', 'show', volume])) as { replicas?: ReplicaView[] };
    if (view.replicas === undefined) throw new Error(`volume ${volume} shows no replicas: is the daemon clustered?`);
    return view.replicas;
  }

  async primaryOf(via: Node, volume: string): Promise<Node> {
    const primary = (await this.replicas(via, volume)).find((r) => r.primary);
    const node = this.nodes.find((n) => n.name === primary?.node);
    if (node === undefined) throw new Error(`volume ${volume} has no primary`);
    return node;
  }

  /** Waits until every replica of `volume` is in sync (as `via` reports it); the time it took. */
  async waitInSync(via: Node, volume: string, timeoutMs: number): Promise<number> {
    const start = performance.now();
    while (performance.now() - start < timeoutMs) {
      try {
        const reps = await this.replicas(via, volume);
        if (reps.every((r) => r.state === 'in-sync')) return performance.now() - start;
      } catch { /* the node may be between primaries: ask again */ }
      await sleep(100);
    }
    throw new Error(`${volume}: replicas not in sync after ${timeoutMs} ms`);
  }

  async metric(node: Node, name: string): Promise<number> {
    const token = (await readFile(`${node.pool}.admin-token`, 'utf8')).trim();
    const text = await (await fetch(`http://127.0.0.1:${node.ports.api}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) {
      if (node.child !== null) { node.child.kill('SIGTERM'); await node.exited; }
    }
    this.etcd?.kill('SIGTERM');
  }
}

const nbdUri = (node: Node, volume: string): string => `nbd://127.0.0.1:${node.ports.nbd}/${volume}`;

/** One write and flush through libnbd (python3-libnbd), from a fresh connection: true when both succeed. */
async function writeOnce(node: Node, volume: string, errors?: string[]): Promise<boolean> {
  const script = 'import nbd,sys\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nh.pwrite(b"x"*4096,0)\nh.flush()\n';
  try {
    await runCapture('/usr/bin/python3', ['-c', script, nbdUri(node, volume)]);
    return true;
  } catch (err) {
    errors?.push(err instanceof Error ? err.message : String(err));
    return false;
  }
}

export async function runClusterBench(opts: ClusterBenchOptions = {}): Promise<void> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const runtime = opts.runtimeSeconds ?? 6;
  const sizeBytes = opts.sizeBytes ?? 256 * 2 ** 20;
  const changedBytes = opts.changedBytes ?? 64 * 2 ** 20;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cairn-cluster-bench-'));
  let secretFile: string | null = null;
  if (opts.secret === true) {
    secretFile = path.join(dir, 'cluster.secret');
    await writeFile(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  }
  const cluster = new Cluster(dir, secretFile);
  try {
    await cluster.startEtcd();
    for (const name of ['n1', 'n2', 'n3']) await cluster.addNode(name, sizeBytes);
    const [n1] = cluster.nodes as [Node];
    log(`etcd at ${cluster.etcdUrl}; 3 nodes on loopback sharing this machine's disk and CPU; volumes of ${sizeBytes / 2 ** 20} MiB; replication link ${secretFile === null ? 'plain TCP (no cluster secret)' : 'TLS-PSK (a cluster secret)'}`);

    // Write rows: 1, 2 and 3 replicas, one after the other, each on its primary.
    const figures = new Map<string, number[]>();
    const ticksPerSecond = await clockTicksPerSecond();
    /** Per replica count: CPU µs per write of the QD32 row on the primary and on its members (summed). */
    const cpu = new Map<number, { primary: number; members: number }>();
    for (const replicas of [1, 2, 3]) {
      const vol = `r${replicas}`;
      await cluster.cli(n1, ['volume', 'create', vol, '--size', String(sizeBytes), '--replicas', String(replicas)]);
      const primary = await cluster.primaryOf(n1, vol);
      // Laid down in full and warmed up first: a fresh volume's first writes grow its tree, and the first
      // fio run against a fresh daemon pays its warm-up; neither is what a replica costs.
      await runCapture('fio', ['--name=fill', '--ioengine=nbd', `--uri=${nbdUri(primary, vol)}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`]);
      await fio(nbdUri(primary, vol), rows[0]!, sizeBytes, warmupSeconds);
      const values: number[] = [];
      for (const row of rows) {
        // Every node's CPU over the measured part of the run (after fio's ramp), so a write's cost on the
        // members shows beside the primary's: on one machine the two come from the same cores.
        const windows = row.unit !== 'iops' ? [] : cluster.nodes.map((n) => ({ n, w: n.child?.pid === undefined ? null : new CpuWindow(n.child.pid, ticksPerSecond, rampSeconds * 1000 + 200) }));
        const r = await fio(nbdUri(primary, vol), row, sizeBytes, runtime);
        values.push(r.value);
        if (windows.length > 0) {
          const used = windows.map(({ n, w }) => ({ n, u: w?.end() ?? null }));
          const perWrite = (u: { cpuMs: number; wallMs: number } | null): number => (u === null ? 0 : (u.cpuMs * 1000) / (r.value * (u.wallMs / 1000)));
          cpu.set(replicas, {
            primary: perWrite(used.find((x) => x.n === primary)?.u ?? null),
            members: used.filter((x) => x.n !== primary).reduce((sum, x) => sum + perWrite(x.u), 0),
          });
        }
      }
      figures.set(vol, values);
    }
    log(`${'row'.padEnd(28)}${'1 replica'.padStart(12)}${'2 replicas'.padStart(12)}${'3 replicas'.padStart(12)}${'2/1'.padStart(8)}${'3/1'.padStart(8)}`);
    rows.forEach((row, i) => {
      const [a, b, c] = [1, 2, 3].map((r) => figures.get(`r${r}`)![i]!) as [number, number, number];
      const unit = row.unit === 'us' ? ' µs' : '';
      // Latency: lower is better, so the ratio is inverted to read like throughput (≥ 1 is as good as 1 replica).
      const ratio = (x: number): string => (row.unit === 'us' ? a / x : x / a).toFixed(2);
      log(`${row.name.padEnd(28)}${(a.toFixed(0) + unit).padStart(12)}${(b.toFixed(0) + unit).padStart(12)}${(c.toFixed(0) + unit).padStart(12)}${ratio(b).padStart(8)}${ratio(c).padStart(8)}`);
    });
    const cpuCell = (r: number, f: (c: { primary: number; members: number }) => number): string => `${f(cpu.get(r) ?? { primary: 0, members: 0 }).toFixed(0)} µs`.padStart(12);
    log(`${'CPU/write QD32, primary'.padEnd(28)}${[1, 2, 3].map((r) => cpuCell(r, (c) => c.primary)).join('')}`);
    log(`${'CPU/write QD32, members'.padEnd(28)}${[1, 2, 3].map((r) => cpuCell(r, (c) => c.members)).join('')}`);
    log('(ratios: IOPS over 1 replica\'s; for latency 1 replica\'s over this one\'s. Target: 2 replicas ≥ 0.70 of 1 replica\'s IOPS)');
    log('(CPU/write: user + system time of the node processes over the QD32 row, per write; with 2 cores for fio and every node, 1 / the sum bounds IOPS)');

    // Rebuild after a member was down for `changedBytes` of writes, against a full copy.
    const vol = 'rb';
    await cluster.cli(n1, ['volume', 'create', vol, '--size', String(sizeBytes), '--replicas', '2']);
    const primary = await cluster.primaryOf(n1, vol);
    await runCapture('fio', ['--name=fill', '--ioengine=nbd', `--uri=${nbdUri(primary, vol)}`, '--rw=write', '--bs=1M', '--iodepth=8', `--size=${sizeBytes}`]);
    await cluster.waitInSync(primary, vol, 60_000);
    // The rebuild starts from the newest checkpoint both sides hold: let the primary take one after the fill.
    await sleep(checkpointWaitMs);
    const memberName = (await cluster.replicas(primary, vol)).find((r) => !r.primary)?.node;
    const member = cluster.nodes.find((n) => n.name === memberName);
    if (member === undefined) throw new Error(`${vol}: no member besides the primary`);
    await cluster.kill(member);
    await runCapture('fio', ['--name=churn', '--ioengine=nbd', `--uri=${nbdUri(primary, vol)}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      `--size=${sizeBytes}`, `--io_size=${changedBytes}`, '--randrepeat=0']);
    const before = await cluster.metric(primary, 'cairn_cluster_rebuild_bytes_total');
    await cluster.start(member, sizeBytes);
    const diffMs = await cluster.waitInSync(primary, vol, 300_000);
    const diffBytes = (await cluster.metric(primary, 'cairn_cluster_rebuild_bytes_total')) - before;
    // Full copy: the same member with its pool wiped (a replacement disk).
    await cluster.kill(member);
    await rm(member.pool, { force: true });
    await rm(`${member.pool}.admin-token`, { force: true });
    const before2 = await cluster.metric(primary, 'cairn_cluster_rebuild_bytes_total');
    await cluster.start(member, sizeBytes);
    const fullMs = await cluster.waitInSync(primary, vol, 300_000);
    const fullBytes = (await cluster.metric(primary, 'cairn_cluster_rebuild_bytes_total')) - before2;
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;
    log(`rebuild after ${mib(changedBytes)} of random 4 KiB writes while down: ${mib(diffBytes)} moved in ${(diffMs / 1000).toFixed(2)} s`);
    log(`full copy (member's pool wiped): ${mib(fullBytes)} moved in ${(fullMs / 1000).toFixed(2)} s; diff/full bytes ${(diffBytes / Math.max(1, fullBytes)).toFixed(2)}`);

    // Failover: kill the primary of a 2-replica volume; time until a write + flush succeeds through the survivor.
    const fo = 'fo';
    await cluster.cli(n1, ['volume', 'create', fo, '--size', String(sizeBytes), '--replicas', '2']);
    await cluster.waitInSync(n1, fo, 60_000);
    const foPrimary = await cluster.primaryOf(n1, fo);
    const survivor = cluster.nodes.find((n) => n !== foPrimary && n.child !== null)!;
    const errors: string[] = [];
    if (!(await writeOnce(survivor, fo, errors))) throw new Error(`a write through the non-primary node failed before the failover: ${errors.join('; ')}`);
    const killed = performance.now();
    await cluster.kill(foPrimary);
    while (!(await writeOnce(survivor, fo))) {
      if (performance.now() - killed > 60_000) throw new Error('no successful write 60 s after the kill');
      await sleep(20);
    }
    log(`failover: kill -9 of the primary to the first write + flush that succeeded through another node: ${((performance.now() - killed) / 1000).toFixed(2)} s (target 5 s)`);
    await cluster.start(foPrimary, sizeBytes);
  } finally {
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  if (!existsSync('/usr/bin/etcd')) throw new Error('the cluster bench needs etcd (Debian: etcd-server)');
  const args = process.argv.slice(2);
  const flag = (name: string): number | undefined => {
    const v = args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
    return v === undefined ? undefined : Number(v);
  };
  const mib = (n: number | undefined): number | undefined => (n === undefined ? undefined : n * 2 ** 20);
  const runtimeSeconds = flag('runtime-s'), sizeBytes = mib(flag('size-mib')), changedBytes = mib(flag('changed-mib'));
  await runClusterBench({
    ...(runtimeSeconds !== undefined ? { runtimeSeconds } : {}), ...(sizeBytes !== undefined ? { sizeBytes } : {}),
    ...(changedBytes !== undefined ? { changedBytes } : {}), ...(args.includes('--secret') ? { secret: true } : {}),
  });
}
