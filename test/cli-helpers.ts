// Helpers for the end-to-end CLI tests: find the repo root, insist on a fresh build of the CLI, start
// a real `cairn serve` child on a temp pool with ephemeral ports, and run the real `cairn` binary.
// Every process and temp dir is cleaned up through t.after, also when a test fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test file');
    dir = up;
  }
  return dir;
}

export const root = repoRoot();
/** The CLI under test; CAIRN_TEST_BIN names another build's (a branch's daemon, tried from this tree's tests). */
export const cairnBin = process.env.CAIRN_TEST_BIN ?? join(root, 'bin', 'cairn.js');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtimeMs(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** The tests run the compiled CLI (bin/cairn.js → dist/); a stale build would test old code. */
export function assertBuilt(): void {
  const main = join(root, 'dist', 'src', 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} is missing: run "npm run build" (npm test builds first)`);
  const built = statSync(main).mtimeMs;
  // Only the CLI's own layers: other layers are edited concurrently during development, and
  // `npm test` always builds everything first anyway.
  const sources = Math.max(...['cli', 'api', 'daemon', 'stream']
    .map((d) => join(root, 'src', d)).filter(existsSync).map(newestMtimeMs));
  if (sources > built) throw new Error(`dist/ is older than src/: run "npm run build" before these tests`);
}

export async function tempDir(t: TestContext, prefix = 'cairn-cli-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs any program to completion (with an input for stdin) and collects its output. */
export function run(cmd: string, args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** The bootstrap admin token file of each daemon startServe started, by API URL. */
const tokenFiles = new Map<string, string>();

/** The admin token of the daemon at `api` (started by startServe). */
export function adminToken(api: string): string {
  const file = tokenFiles.get(api);
  if (file === undefined) throw new Error(`no daemon started at ${api}`);
  return readFileSync(file, 'utf8').trim();
}

/** Headers that authenticate a raw fetch to the daemon at `api` as its admin. */
export function authHeaders(api: string): Record<string, string> {
  return { authorization: `Bearer ${adminToken(api)}` };
}

/**
 * Runs `cairn ARGS` against `api`, as the daemon's admin (the CLI reads the token file named by
 * CAIRN_TOKEN_FILE, as a user who started the daemon would) unless the caller's env says otherwise.
 */
export function cairn(api: string | null, args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const file = api === null ? undefined : tokenFiles.get(api);
  const env = file === undefined ? opts.env : { CAIRN_TOKEN_FILE: file, ...opts.env };
  return run(process.execPath, [cairnBin, ...(api === null ? [] : ['--api', api]), ...args], { ...opts, ...(env === undefined ? {} : { env }) });
}

/** `cairn --json ...`, expecting success; returns the parsed JSON. */
export async function cairnJson<T = unknown>(api: string, args: string[]): Promise<T> {
  const r = await cairn(api, ['--json', ...args]);
  if (r.code !== 0) throw new Error(`cairn ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export interface DaemonProcess {
  api: string;
  /** nbd://HOST:PORT */
  nbd: string;
  pool: string;
  child: ChildProcess;
  logs: string[];
  /** SIGTERM and wait; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A `cairn serve` process, its JSON log lines collected as they come (startServe waits for ready; tests of a start that must not, use this). */
export interface ServeProcess {
  child: ChildProcess;
  exited: Promise<number | null>;
  /** Every stdout line, in order. */
  logs: string[];
  /** The stdout lines that parsed as JSON, in order. */
  events: Array<Record<string, unknown> & { event?: string }>;
  stderr(): string;
  /** A probe for until(): the first log line of event `name`, or null; throws once the daemon has exited. */
  seen(name: string): () => Promise<(Record<string, unknown> & { event?: string }) | null>;
  /** Calls `listener` with each JSON log line from now on; returns what stops it. */
  onEvent(listener: (event: ServeProcess['events'][number]) => void): () => void;
}

/** Spawns `cairn serve ARGS` (killed when the test ends, if still running). */
export function spawnServe(t: TestContext, args: string[]): ServeProcess {
  const child = spawn(process.execPath, [cairnBin, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const logs: string[] = [];
  const events: ServeProcess['events'] = [];
  const listeners = new Set<(event: ServeProcess['events'][number]) => void>();
  let buffered = '';
  child.stdout!.on('data', (b: Buffer) => {
    buffered += b.toString();
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      logs.push(line);
      let event: ServeProcess['events'][number];
      try { event = JSON.parse(line) as ServeProcess['events'][number]; } catch { continue; /* not JSON */ }
      events.push(event);
      for (const listener of listeners) listener(event);
    }
  });
  return {
    child, exited, logs, events, stderr: () => stderr,
    seen: (name) => async () => {
      if (child.exitCode !== null) throw new Error(`cairn serve exited ${child.exitCode}: ${stderr}`);
      return events.find((e) => e.event === name) ?? null;
    },
    onEvent: (listener) => { listeners.add(listener); return () => listeners.delete(listener); },
  };
}

/** Starts `cairn serve` on `pool` with ephemeral API and NBD ports; waits for its "ready" line. */
export async function startServe(t: TestContext, pool: string, extra: string[] = []): Promise<DaemonProcess> {
  const serve = spawnServe(t, ['--pool', pool, '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--log-format', 'json', ...extra]);
  const { child, exited, logs } = serve;
  const ready = await new Promise<{ api: string; nbd: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cairn serve did not become ready: ${serve.stderr()}`)), 120_000); // a hang bound, not a speed: a busy machine starts slowly
    const stop = serve.onEvent((ev) => {
      if (ev.event === 'ready') { clearTimeout(timer); stop(); resolve({ api: ev.api as string, nbd: ev.nbd as string }); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`cairn serve exited ${code} before ready: ${serve.stderr()}`)); });
  });
  const stateAt = extra.indexOf('--state-dir');
  tokenFiles.set(ready.api, join(stateAt >= 0 ? extra[stateAt + 1]! : dirname(pool), `${basename(pool)}.admin-token`));
  return {
    ...ready, pool, child, logs,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

/**
 * startServe with arguments naming ports picked beforehand (freePort, or a cluster node's port 0, which
 * the daemon picks the same way before it listens): another process may take such a port first (tests
 * run side by side), and the daemon then exits with EADDRINUSE. Such a start is tried again with the
 * arguments made anew, so with newly picked ports, up to `attempts` times; any other failure is thrown.
 */
export async function startServePickingPorts(t: TestContext, pool: string, args: () => Promise<string[]>, attempts = 3): Promise<DaemonProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startServe(t, pool, await args());
    } catch (err) {
      if (attempt >= attempts || !(err instanceof Error && err.message.includes('EADDRINUSE'))) throw err;
    }
  }
}

/** Runs a python3 (system, with libnbd) script; argv after the script. */
export function python(script: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return run('/usr/bin/python3', ['-c', script, ...args], { timeoutMs });
}

/** sha256 of a whole NBD export, read with libnbd (a real client). */
export const hashExportPy = `
import hashlib, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size(); d = hashlib.sha256(); off = 0
while off < size:
    n = min(4 << 20, size - off); d.update(h.pread(n, off)); off += n
print(d.hexdigest(), size)
`;

/** qemu-io one command on a raw NBD URI; fails the test when qemu-io does. */
export async function qemuIo(uri: string, command: string): Promise<void> {
  const r = await run('qemu-io', ['-f', 'raw', '-c', command, uri]);
  assert.equal(r.code, 0, `qemu-io ${command}: ${r.stdout}${r.stderr}`);
  assert.doesNotMatch(r.stdout + r.stderr, /failed/i, `qemu-io ${command}`);
}

/** qemu-img compare of two raw NBD URIs (or files): equal contents, or the test fails. */
export async function compare(a: string, b: string): Promise<void> {
  const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b]);
  assert.equal(r.code, 0, `qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}

/**
 * Polls `probe` until it answers non-null (every `pollMs`), then returns that; throws after `timeoutMs`
 * (a hang bound, not a speed) naming `what`.
 */
export async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 60_000, pollMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
