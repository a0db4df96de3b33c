// Starts real etcd servers for tests: one member or a cluster, on free loopback ports (or on
// addresses and a command wrapper the caller gives, e.g. `ip netns exec NS`), each member stoppable
// (SIGKILL / SIGSTOP) and restartable on its data dir. Every process and temp dir is removed by close().
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, rmSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ETCD_BIN = '/usr/bin/etcd';
const ETCD_READY_MS_MAX = 15_000;
const ETCD_POLL_MS = 50;

export function etcdAvailable(): boolean { return existsSync(ETCD_BIN); }

/** A free TCP port on `host` (bound then released: good enough for tests on one machine). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface EtcdMemberSpec {
  /** Address the member listens on and advertises (default 127.0.0.1). */
  host?: string;
  /** Default: a free port on `host` found in this process's namespace (give both when `wrap` runs elsewhere). */
  clientPort?: number;
  peerPort?: number;
  /** Prefix of the command line, e.g. ['ip', 'netns', 'exec', 'ns1']. */
  wrap?: string[];
}

export interface EtcdClusterOptions {
  /** One entry per member (default: one member on loopback). */
  members?: EtcdMemberSpec[];
  /** Parent of the data dirs (default: a new temp dir, removed by close()). */
  dir?: string;
  /** etcd's raft timing; smaller than its defaults so tests fail over quickly. */
  heartbeatMs?: number;
  electionMs?: number;
}

export class EtcdMember {
  process: ChildProcess | null = null;
  constructor(
    readonly name: string,
    readonly host: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    private readonly args: string[],
    private readonly wrap: string[],
    readonly logPath: string,
  ) {}

  get clientUrl(): string { return `http://${this.host}:${this.clientPort}`; }
  get peerUrl(): string { return `http://${this.host}:${this.peerPort}`; }
  get running(): boolean { return this.process !== null; }

  /** Spawns the member (on its existing data dir after a stop). */
  start(): void {
    if (this.process) return;
    const log = openSync(this.logPath, 'a');
    const [cmd, ...rest] = [...this.wrap, ETCD_BIN, ...this.args];
    const child = spawn(cmd!, rest, { stdio: ['ignore', log, log] });
    closeSync(log);
    this.process = child;
    child.once('exit', () => { if (this.process === child) this.process = null; });
  }

  /** Kills the member (SIGKILL by default) and waits until it is gone. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.process;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    else this.process = null;
    await exited;
    this.process = null;
  }

  pause(): void { this.process?.kill('SIGSTOP'); }
  resume(): void { this.process?.kill('SIGCONT'); }

  /** True once the member answers /health with a leader. */
  async healthy(): Promise<boolean> {
    try {
      const res = await fetch(`${this.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
      const body = await res.json() as { health?: string };
      return body.health === 'true';
    } catch {
      // Not listening yet, or no leader: the caller polls.
      return false;
    }
  }

  log(): string { try { return readFileSync(this.logPath, 'utf8'); } catch { return '(no log)'; } }
}

export class EtcdCluster {
  constructor(readonly members: EtcdMember[], private readonly ownedDir: string | null) {}

  get endpoints(): string[] { return this.members.map((m) => m.clientUrl); }

  /** Waits until every running member reports a leader. */
  async waitHealthy(timeoutMs = ETCD_READY_MS_MAX): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(this.members.filter((m) => m.running).map((m) => m.healthy()));
      if (states.every(Boolean)) return;
      if (Date.now() > deadline) {
        throw new Error(`etcd not healthy within ${timeoutMs} ms:\n${this.members.map((m) => `--- ${m.name}\n${m.log().slice(-2000)}`).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, ETCD_POLL_MS));
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => m.stop()));
    if (this.ownedDir) rmSync(this.ownedDir, { recursive: true, force: true });
  }
}

/** Starts the members and waits until the cluster has a leader. */
export async function startEtcd(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const specs = options.members ?? [{}];
  const ownedDir = options.dir ? null : mkdtempSync(join(tmpdir(), 'cairn-etcd-'));
  const dir = options.dir ?? ownedDir!;
  const resolved = await Promise.all(specs.map(async (s, i) => {
    const host = s.host ?? '127.0.0.1';
    return { name: `m${i}`, host, clientPort: s.clientPort ?? await freePort(host), peerPort: s.peerPort ?? await freePort(host), wrap: s.wrap ?? [] };
  }));
  const initialCluster = resolved.map((r) => `${r.name}=http://${r.host}:${r.peerPort}`).join(',');
  const token = `cairn-test-${process.pid}-${Date.now()}`;
  const members = resolved.map((r) => {
    const dataDir = join(dir, r.name);
    const args = [
      '--name', r.name, '--data-dir', dataDir,
      '--listen-client-urls', `http://${r.host}:${r.clientPort}`, '--advertise-client-urls', `http://${r.host}:${r.clientPort}`,
      '--listen-peer-urls', `http://${r.host}:${r.peerPort}`, '--initial-advertise-peer-urls', `http://${r.host}:${r.peerPort}`,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', token,
      '--heartbeat-interval', String(options.heartbeatMs ?? 50), '--election-timeout', String(options.electionMs ?? 500),
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'warn',
    ];
    return new EtcdMember(r.name, r.host, r.clientPort, r.peerPort, dataDir, args, r.wrap, join(dir, `${r.name}.log`));
  });
  const cluster = new EtcdCluster(members, ownedDir);
  try {
    for (const m of members) m.start();
    await cluster.waitHealthy();
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}
