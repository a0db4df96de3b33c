// Shared set-up for the NBD tests: a real pool file in a temp dir, the NBD server on an ephemeral
// port, and a runner for real client programs (qemu-io, qemu-img, nbdinfo, nbdcopy, fio, python3
// libnbd). Everything started here is cleaned up by t.after, also when a test fails.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { createPoolFile, type Engine } from '../src/engine/index.js';
import { startNbdServer, type NbdServer, type NbdServerOptions } from '../src/nbd/server.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

const cleanups = new WeakMap<TestContext, (() => unknown)[]>();

/**
 * Registers a clean-up step. Steps run last-registered first (node:test runs t.after hooks in
 * registration order, which would remove a temp dir before the server using it closes).
 */
export function defer(t: TestContext, step: () => unknown): void {
  let steps = cleanups.get(t);
  if (!steps) {
    const list: (() => unknown)[] = [];
    steps = list;
    cleanups.set(t, list);
    t.after(async () => {
      const errors: unknown[] = [];
      while (list.length > 0) {
        try { await (list.pop() as () => unknown)(); } catch (error) { errors.push(error); }
      }
      if (errors.length > 0) throw errors[0];
    });
  }
  steps.push(step);
}

export interface Fixture {
  dir: string;
  engine: Engine;
  server: NbdServer;
  uri(exportName: string): string;
  events: { event: string; fields: Record<string, unknown> }[];
}

export async function startFixture(t: TestContext, opts: Omit<NbdServerOptions, 'log'> = {}): Promise<Fixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-nbd-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const engine = await createPoolFile(path.join(dir, 'pool.cairn'), 1 * GiB);
  defer(t, () => engine.close());
  const events: Fixture['events'] = [];
  const server = await startNbdServer(engine, { host: '127.0.0.1', port: 0, ...opts, log: (event, fields) => events.push({ event, fields }) });
  defer(t, () => server.close());
  return { dir, engine, server, events, uri: (exportName) => `nbd://127.0.0.1:${server.port}/${encodeURIComponent(exportName)}` };
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs a client program to completion (killed after timeoutMs) and returns its exit code and output. */
export function run(command: string, args: string[], options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.on('error', () => undefined); // a program that exits without reading stdin
    child.stdin.end(options.input ?? '');
  });
}

/** Like run() but throws with the output when the program fails. */
export async function runOk(command: string, args: string[], options: Parameters<typeof run>[2] = {}): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
  return result.stdout;
}

/** Debian's python3 (with python3-libnbd), not a pyenv shim that lacks the module. */
export const python3 = '/usr/bin/python3';

/** Runs a python3 libnbd script given as text; argv[1..] = args. Returns its stdout parsed as JSON. */
export async function runPython(script: string, args: string[], timeoutMs = 60_000): Promise<unknown> {
  const out = await runOk(python3, ['-c', script, ...args], { timeoutMs });
  return JSON.parse(out);
}

/** nbdinfo --map output parsed into [offset, length, flags] rows. */
export function parseMap(text: string): [number, number, number][] {
  return text.trim().split('\n').filter((l) => l.trim() !== '').map((line) => {
    const [offset, length, flags] = line.trim().split(/\s+/).map(Number);
    if (offset === undefined || length === undefined || flags === undefined) throw new Error(`bad nbdinfo --map line: ${line}`);
    return [offset, length, flags];
  });
}

/**
 * A long-lived python3 libnbd process driven line by line: the script reads commands from stdin and
 * prints one JSON line per command, so a test can act on the engine between client requests.
 */
export class PythonSession {
  private buffer = '';
  private readonly lines: string[] = [];
  private waiting: ((line: string) => void) | null = null;
  private readonly child;
  stderr = '';

  constructor(t: TestContext, script: string, args: string[]) {
    this.child = spawn(python3, ['-u', '-c', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (d: Buffer) => {
      this.buffer += d.toString();
      let newline: number;
      while ((newline = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, newline);
        this.buffer = this.buffer.slice(newline + 1);
        if (this.waiting) { const w = this.waiting; this.waiting = null; w(line); } else this.lines.push(line);
      }
    });
    this.child.stderr.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    defer(t, () => { this.child.kill('SIGKILL'); });
  }

  /** Sends one command line and returns the parsed JSON reply line. */
  async call(command: string, timeoutMs = HANG_BOUND_MS): Promise<Record<string, unknown>> {
    this.child.stdin.write(`${command}\n`);
    const line = this.lines.shift() ?? await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`python did not answer ${command}: ${this.stderr}`)), timeoutMs);
      this.waiting = (l) => { clearTimeout(timer); resolve(l); };
    });
    return JSON.parse(line) as Record<string, unknown>;
  }
}

/**
 * A bound on a hang, not a measure of speed: waits for a condition end here, however slow or busy the
 * machine, only when something is plainly stuck (a short deadline made tests fail on busy machines).
 */
export const HANG_BOUND_MS = 60_000;

/** Polls `condition` until it holds; fails only after HANG_BOUND_MS (something is stuck). */
export async function waitUntil(condition: () => boolean | Promise<boolean>, what = 'condition'): Promise<void> {
  const deadline = Date.now() + HANG_BOUND_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
