// Test harness of the CSI suite: starts the plugin as its own process (so a test can kill it),
// a real `cairn serve` daemon, and gRPC clients built from the same csi.proto over the real
// unix socket. Everything started here is stopped by the returned close functions.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { findRepoRoot, loadCsi } from '../src/csi/proto.js';

export const repoRoot = findRepoRoot(import.meta.url);
const runningFromTs = fileURLToPath(import.meta.url).endsWith('.ts');

/** The node argv that runs a repo module: src/*.ts under tsx, dist/src/*.js when compiled. */
export function nodeArgsFor(srcRelativeTs: string): string[] {
  if (runningFromTs) return ['--import', tsxLoader(), join(repoRoot, srcRelativeTs)];
  return [join(repoRoot, 'dist', srcRelativeTs.replace(/\.ts$/, '.js'))];
}

/** tsx as an absolute URL, so children started in another cwd still find it. */
const tsxLoader = (): string => import.meta.resolve('tsx');

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export type Unary = (request: object, deadlineMs?: number) => Promise<Record<string, any>>;
export type ServiceClient = Record<string, Unary> & { close(): void };

function promisify(client: grpc.Client): ServiceClient {
  const out: Record<string, unknown> = { close: () => client.close() };
  const proto = Object.getPrototypeOf(client) as Record<string, unknown>;
  for (const name of Object.keys(proto)) {
    const method = (client as unknown as Record<string, Function>)[name];
    if (typeof method !== 'function' || name === 'constructor') continue;
    out[name] = (request: object, deadlineMs = 60_000) => new Promise((resolve, reject) => {
      method.call(client, request, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: unknown) =>
        (err ? reject(err) : resolve(res as Record<string, any>)));
    });
  }
  return out as ServiceClient;
}

export interface CsiClients { identity: ServiceClient; controller: ServiceClient; group: ServiceClient; node: ServiceClient; close(): void }

export function csiClients(socketPath: string): CsiClients {
  const csi = loadCsi();
  const address = `unix://${socketPath}`;
  const creds = grpc.credentials.createInsecure();
  const identity = promisify(new csi.Identity(address, creds));
  const controller = promisify(new csi.Controller(address, creds));
  const group = promisify(new csi.GroupController(address, creds));
  const node = promisify(new csi.Node(address, creds));
  return { identity, controller, group, node, close: () => { identity.close(); controller.close(); group.close(); node.close(); } };
}

/** Asserts a promise rejects with the given gRPC status code; returns the error. */
export async function expectCode(promise: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (e.code !== code) throw new Error(`expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    return e;
  }
  throw new Error(`expected ${grpc.status[code]}, but the call succeeded`);
}

export interface Plugin { socketPath: string; process: ChildProcess; logs(): string; kill(signal?: NodeJS.Signals): Promise<void> }

async function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  // An unref'd timer: a pending timeout must not keep the test process alive after the exit.
  await Promise.race([
    new Promise((resolve) => child.once('exit', resolve)),
    new Promise((resolve) => setTimeout(resolve, ms).unref()),
  ]);
}

/** Starts `main.ts --endpoint unix://... ` as a child process and waits for its socket. */
/** `nbd: null` starts the plugin without --nbd (it then asks the API for each volume's address). */
export async function startPlugin(opts: { dir: string; api: string; nbd?: string | null; mode?: string; nodeId?: string; stateDir?: string }): Promise<Plugin> {
  const socketPath = join(opts.dir, 'csi.sock');
  const nbd = opts.nbd === undefined ? '127.0.0.1:1' : opts.nbd;
  const args = [...nodeArgsFor('src/csi/main.ts'), '--endpoint', `unix://${socketPath}`, '--api', opts.api,
    '--node-id', opts.nodeId ?? 'node-1', '--mode', opts.mode ?? 'all',
    '--state-dir', opts.stateDir ?? join(opts.dir, 'state'), ...(nbd === null ? [] : ['--nbd', nbd])];
  // The daemon of these tests keeps its pool (and so its admin token file) in the same directory.
  const tokenFile = join(opts.dir, 'cairn.pool.admin-token');
  if (existsSync(tokenFile)) args.push('--token-file', tokenFile);
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { output += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { output += d; });
  const deadline = Date.now() + 120_000; // a hang bound, not a speed: a busy machine starts slowly
  while (!output.includes('csi plugin listening')) {
    if (child.exitCode !== null) throw new Error(`csi plugin exited ${child.exitCode}: ${output}`);
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`csi plugin did not start: ${output}`); }
    await sleep(50);
  }
  return {
    socketPath, process: child, logs: () => output,
    kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await waitExit(child, 10_000);
      if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await waitExit(child, 5000); }
    },
  };
}

export interface Daemon { apiUrl: string; nbdAddress: string; stop(): Promise<void>; logs(): string }

/**
 * Starts a real `cairn serve` on a fresh sparse pool, API and NBD on ephemeral loopback ports.
 * The bound addresses are read from the daemon's JSON "ready" log line.
 */
/** `extraArgs`: more `cairn serve` flags (e.g. NBD TLS). */
export async function startDaemon(dir: string, poolSize = '4G', extraArgs: string[] = []): Promise<Daemon> {
  const cli = runningFromTs ? join(repoRoot, 'src', 'cli', 'main.ts') : join(repoRoot, 'bin', 'cairn.js');
  const args = runningFromTs ? ['--import', tsxLoader(), cli] : [cli];
  if (!existsSync(cli)) throw new Error(`cairn CLI not found at ${cli}`);
  args.push('serve', '--pool', join(dir, 'cairn.pool'), '--pool-size', poolSize, '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0',
    '--log-format', 'json', ...extraArgs);
  const child = spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CAIRN_LOG_FORMAT: 'json' } });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { output += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { output += d; });
  const deadline = Date.now() + 120_000; // a hang bound, not a speed
  let apiUrl = '';
  let nbdAddress = '';
  while (apiUrl === '' || nbdAddress === '') {
    if (child.exitCode !== null) throw new Error(`cairn serve exited ${child.exitCode}: ${output}`);
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`cairn serve did not start: ${output}`); }
    for (const line of output.split('\n')) {
      if (!line.startsWith('{') || !line.includes('"ready"')) continue;
      const ready = JSON.parse(line) as { event?: string; api?: string; nbd?: string };
      if (ready.event !== 'ready') continue;
      apiUrl = ready.api ?? '';
      nbdAddress = (ready.nbd ?? '').replace(/^nbd:\/\//, '');
    }
    await sleep(50);
  }
  return {
    apiUrl, nbdAddress, logs: () => output,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await waitExit(child, 20_000);
      if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await waitExit(child, 5000); }
    },
  };
}

/** Loop devices whose backing file lies under `dir` (what this suite made). */
export function loopDevicesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of existsSync('/sys/block') ? readdirSafe('/sys/block') : []) {
    if (!name.startsWith('loop')) continue;
    try {
      const backing = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (backing.startsWith(dir)) out.push(`/dev/${name}`);
    } catch { /* not bound */ }
  }
  return out;
}

function readdirSafe(path: string): string[] {
  try { return readdirSync(path); } catch { return []; }
}

/** Mount points under `dir` (what this suite mounted). */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l !== '')
    .map((l) => l.split(' ')[4]!.replace(/\\040/g, ' ')).filter((m) => m.startsWith(dir));
}

/** Processes whose command line mentions `dir` (nbdfuse, plugins started by this suite). */
export function processesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(dir)) pids.push(Number(entry));
    } catch { /* gone */ }
  }
  return pids;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
