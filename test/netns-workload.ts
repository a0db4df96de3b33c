// The test side of test/netns-workload.py: runs the Python libnbd client, folds its JSON lines into
// what the volume must hold (per block: the versions ever attempted, the newest one acknowledged
// before an acknowledged flush), and checks a read-back against that.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './cli-helpers.js';

/** Debian's python3-libnbd installs for the system interpreter, not for a pyenv one first in PATH. */
export const PYTHON = '/usr/bin/python3';
export const WORKLOAD = join(repoRoot(), 'test', 'netns-workload.py');
export const BLOCK_BYTES = 4096;

export interface WorkloadConfig {
  uris: string[];
  /** A number stamped into every block (tells this volume's blocks from any other's). */
  tag: number;
  blocks: number;
  flushEvery: number;
  seed: number;
  /** Stop by itself after this many writes (or earlier, when told). */
  writesMax: number;
  /** One request's deadline: a paused or cut-off node must not hang the client. */
  timeoutS: number;
  /** How long the final flush (or a read-back) may keep reconnecting before failing. */
  giveUpS: number;
}

/** What the workload's reports say the volume may hold. */
export class WriteModel {
  /** Per block: every version written or attempted (an attempt that failed may have landed). */
  readonly attempted = new Map<number, Set<number>>();
  /** Per block: the newest version acknowledged before an acknowledged flush. */
  readonly flushed = new Map<number, number>();
  private pending = new Map<number, number>();
  acked = 0;
  flushes = 0;
  errors = 0;
  reconnects = 0;
  done = false;

  apply(line: string): void {
    const ev = JSON.parse(line) as { w?: number; x?: number; v?: number; f?: number; err?: string; connected?: string; done?: number };
    if (ev.w !== undefined) {
      this.attempt(ev.w, ev.v!);
      this.pending.set(ev.w, ev.v!);
      this.acked++;
    } else if (ev.x !== undefined) {
      this.attempt(ev.x, ev.v!);
      this.errors++;
      // Writes acknowledged on a connection that then failed, with no flush acknowledged after
      // them, are not counted as flushed (a flush on the next connection is a new one).
      this.pending = new Map();
    } else if (ev.f !== undefined) {
      for (const [block, version] of this.pending) this.flushed.set(block, version);
      this.pending = new Map();
      this.flushes++;
    } else if (ev.err !== undefined) {
      this.errors++;
      this.pending = new Map();
    } else if (ev.connected !== undefined) {
      this.reconnects++;
    } else if (ev.done !== undefined) {
      this.done = true;
    }
  }

  private attempt(block: number, version: number): void {
    let set = this.attempted.get(block);
    if (set === undefined) this.attempted.set(block, set = new Set());
    set.add(version);
  }

  /**
   * Problems of a read-back (the version each block holds; 0 = zeros, null = damaged): a block must
   * hold a version that was written to it, at least the newest flushed one.
   */
  check(versions: Array<number | null>): string[] {
    const problems: string[] = [];
    versions.forEach((got, block) => {
      const attempted = this.attempted.get(block);
      const floor = this.flushed.get(block) ?? 0;
      if (got === null) problems.push(`block ${block}: damaged or foreign content`);
      else if (got === 0 && attempted !== undefined && floor > 0) problems.push(`block ${block}: zeros, flushed version ${floor} lost`);
      else if (got !== 0 && attempted?.has(got) !== true) problems.push(`block ${block}: version ${got} was never written to it`);
      else if (got < floor) problems.push(`block ${block}: version ${got} older than the flushed ${floor}`);
    });
    return problems;
  }
}

/** The running writer: its model grows with each line; `stop()` asks for the final flush and waits. */
export class Writer {
  readonly model = new WriteModel();
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private stderr = '';

  constructor(cfg: WorkloadConfig, onLine?: (line: string) => void) {
    this.child = spawn(PYTHON, [WORKLOAD, JSON.stringify({ mode: 'write', ...cfg })], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
    let buffered = '';
    this.child.stdout!.on('data', (b: Buffer) => {
      buffered += b.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        this.model.apply(line);
        onLine?.(line);
      }
    });
    this.child.stderr!.on('data', (b: Buffer) => { this.stderr += b.toString(); });
    this.child.stdin!.on('error', () => { /* the writer exited on its own (writesMax): nothing to tell it */ });
  }

  /** Tells the writer to stop (final flush) and waits; throws if it failed. */
  async stop(): Promise<WriteModel> {
    this.child.stdin!.end('stop\n');
    const code = await this.exited;
    if (code !== 0 || !this.model.done) throw new Error(`workload writer exited ${code}: ${this.stderr.slice(-2000)}`);
    return this.model;
  }

  kill(): void { if (this.child.exitCode === null) this.child.kill('SIGKILL'); }
}

/** Reads every block through `uris` (the first that answers) and returns the version each holds. */
export async function readVersions(cfg: Pick<WorkloadConfig, 'uris' | 'tag' | 'blocks' | 'timeoutS' | 'giveUpS'>): Promise<Array<number | null>> {
  const child = spawn(PYTHON, [WORKLOAD, JSON.stringify({ mode: 'read', ...cfg })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  const last = out.trim().split('\n').map((l) => JSON.parse(l) as { versions?: Array<number | null> }).find((e) => e.versions !== undefined);
  if (code !== 0 || last === undefined) throw new Error(`workload reader exited ${code}: ${err.slice(-2000)}`);
  return last.versions!;
}
