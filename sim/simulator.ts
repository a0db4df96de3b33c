// The seeded deterministic simulator: one seed picks the pool, the op mix and every operation;
// the engine runs on a SimDevice with a fake clock; every read is compared with the reference
// model; `check` runs after every reopen and at the end. A failure names its seed and op index
// and replays exactly with `npm run sim -- --seed N`.

import { Prng } from '../src/engine/device/prng.js';
import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { CairnError, type ErrorCode } from '../src/engine/errors.js';
import { BLOCK_SIZE_BYTES, type CheckReport, type Engine, type PoolOptions, type TargetEvent } from '../src/engine/types.js';
import { Model, type ModelTarget } from './model.js';
import { chooseParams, type OpKind, type SimParams } from './params.js';
import { runOp } from './ops.js';
import { blocksBesideMetadata, describeModelSettings, describeSettings, verifyCatalog, verifyEverythingReturns, verifyTarget, resolvePending } from './verify.js';
import { paranoidCheck } from './ops-query.js';
import { KeyBook, checkShredded, keyMismatch, unlockKeys } from './keys.js';
import { installInlineCrypto } from './inline-crypto.js';

export interface SimulationOptions {
  seed: number;
  ops: number;
  /** Op kinds never to pick (a triage aid: find the next bug while one is being fixed). */
  skipOps?: OpKind[];
  /** After every op, check space usage of every target and the catalog (slow; for triage). */
  paranoid?: boolean;
  /** With paranoid: start checking at this op index (checks change cache state and timing). */
  paranoidFromOp?: number;
  /** Receives the engine's structured log events (commits, checksum errors), for triage. */
  engineLog?: (event: string, fields: Record<string, unknown>) => void;
  /** Called with each op line as it runs (for --verbose). */
  trace?: (line: string) => void;
  /** false: the engine's synchronous `...Now` fast paths are off, so every awaited path runs (PoolOptions.fastPaths). */
  fastPaths?: boolean;
}

export interface SimulationResult {
  ok: boolean;
  seed: number;
  failure?: string;
  /** Ops drawn from the seed (the `ops` asked for, or fewer after a failure). */
  opsRun: number;
  /** Ops among them that called the engine at all; the others (no target to act on) did nothing. */
  opsEffective: number;
  /** How often each op kind ran (skipped ones not counted). */
  opCounts: Record<string, number>;
}

/** An expectation of the model the engine broke. */
export class SimFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SimFailure';
  }
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; error: CairnError };

/** Recent op lines kept for a failure message. */
const historyLinesMax = 40;
const clockStepMs = 1000;
/**
 * Consecutive ops that may find nothing to act on before the run counts as stalled (a failure): a
 * seed whose op mix picks, say, revert with no snapshot around idles for a few ops, never for this many.
 */
const idleOpsMax = 200;

export class Simulator {
  readonly seed: number;
  readonly prng: Prng;
  readonly params: SimParams;
  model = new Model();
  device: SimDevice;
  engine: Engine | null = null;
  opIndex = -1;
  clockMs = 1_700_000_000_000;
  readonly opCounts: Record<string, number> = {};
  /** Accesses to the engine (`e`); an op that made none did nothing and is not counted as run. */
  engineCalls = 0;
  /** Times relieveSpace ran (a mid-op crash across it is not judged: several ops ran). */
  relieved = 0;
  /** Every wrapped key the simulator made, and its data key (keys.ts). */
  readonly keyBook = new KeyBook();
  /** Target events the open engine emitted since the last `takeEvents()`. */
  private events: TargetEvent[] = [];
  private readonly history: string[] = [];
  private nameCounter = 0;
  private readonly cacheBytesMax: number;
  private readonly trace: ((line: string) => void) | undefined;
  private readonly paranoid: boolean;
  private readonly engineLog: SimulationOptions['engineLog'];
  private readonly paranoidFromOp: number;
  /** Blocks in use beside tree and radix blocks in the new pool (verify.ts blocksBesideMetadata). */
  private emptyBesideMetadata = 0;
  private readonly fastPaths: boolean;

  constructor(opts: SimulationOptions) {
    this.seed = opts.seed;
    this.trace = opts.trace;
    this.paranoid = opts.paranoid ?? false;
    this.engineLog = opts.engineLog;
    this.paranoidFromOp = opts.paranoidFromOp ?? 0;
    this.fastPaths = opts.fastPaths ?? true;
    installInlineCrypto();
    this.prng = new Prng(opts.seed);
    this.params = chooseParams(this.prng);
    for (const kind of opts.skipOps ?? []) this.params.weights[kind] = 0;
    this.cacheBytesMax = this.prng.pick([64 * 1024, 256 * 1024, 4 * 1024 * 1024]);
    this.device = new SimDevice(this.params.poolSizeBytes / BLOCK_SIZE_BYTES, this.prng.fork());
    this.device.jitterTicksMax = this.params.deviceJitterTicksMax;
  }

  get e(): Engine {
    if (this.engine === null) throw new SimFailure('engine is not open');
    this.engineCalls++;
    return this.engine;
  }

  poolOptions(): PoolOptions {
    const log = this.engineLog;
    return {
      nowMs: () => this.clockMs, commitIntervalMs: 0, cacheBytesMax: this.cacheBytesMax, fastPaths: this.fastPaths,
      ...(log ? { log: (event: string, fields: Record<string, unknown>) => log(`#${this.opIndex} ${event}`, fields) } : {}),
    };
  }

  newName(prefix: string): string {
    this.nameCounter++;
    return `${prefix}${this.nameCounter}`;
  }

  note(line: string): void {
    const full = `#${this.opIndex} ${line}`;
    this.history.push(full);
    if (this.history.length > historyLinesMax) this.history.shift();
    this.trace?.(full);
  }

  fail(message: string): never {
    throw new SimFailure(message);
  }

  count(kind: string): void {
    this.opCounts[kind] = (this.opCounts[kind] ?? 0) + 1;
  }

  /** Runs an engine call; CairnErrors become values, anything else (an engine bug) propagates. */
  async attempt<T>(fn: () => Promise<T> | T): Promise<Outcome<T>> {
    try {
      return { ok: true, value: await fn() };
    } catch (err) {
      if (err instanceof CairnError) return { ok: false, code: err.code, error: err };
      throw err;
    }
  }

  /** The value of a call that must succeed. */
  must<T>(o: Outcome<T>, what: string): T {
    if (!o.ok) this.fail(`${what}: expected success, got ${o.code}: ${o.error.message}`);
    return o.value;
  }

  /** Checks that a call failed with one of `codes`. */
  expectError<T>(o: Outcome<T>, codes: ErrorCode[], what: string): ErrorCode {
    if (o.ok) this.fail(`${what}: expected error ${codes.join('|')}, but it succeeded`);
    if (!codes.includes(o.code)) this.fail(`${what}: expected error ${codes.join('|')}, got ${o.code}: ${o.error.message}`);
    return o.code;
  }

  checkReport(report: CheckReport, what: string): void {
    if (!report.ok || report.problems.length > 0) {
      const shown = report.problems.slice(0, 8).map((p) => `${p.kind}@${p.physicalBlock}: ${p.message}`);
      this.fail(`${what} found ${report.problems.length} problem(s) (ok=${report.ok}): ${shown.join('; ')}`);
    }
  }

  /** Power cut: the engine object is abandoned (a dead process), the crash image reopened. */
  async crashAndReopen(mode: CrashMode, afterOpen?: () => void): Promise<void> {
    const image = this.device.crash(mode);
    this.engine = null;
    this.device = image;
    this.note(`  crash image: ${JSON.stringify(image.lastCrash)}`);
    await this.openChecked(`after ${mode} crash`, afterOpen);
    await resolvePending(this);
  }

  /** Clean shutdown and reopen: close() is a durable point, so nothing may be uncertain after. */
  async closeAndReopen(): Promise<void> {
    this.must(await this.attempt(() => this.e.close()), 'close');
    this.engine = null;
    this.model.durablePoint();
    this.device = this.device.crash('clean');
    await this.openChecked('after clean close');
  }

  /**
   * Offline check of the image, open, every key unlocked, catalog comparison (`afterOpen` may first
   * fix up the model); the open destroyed the keys of lineages whose deletion a crash cut short.
   */
  async openChecked(what: string, afterOpen?: () => void): Promise<void> {
    this.checkReport(await checkPool(this.device), `checkPool ${what}`);
    const opened = await this.attempt(() => openPool(this.device, this.poolOptions()));
    this.engine = this.must(opened, `openPool ${what}`);
    this.listen();
    afterOpen?.();
    await unlockKeys(this, what);
    checkShredded(this, this.device, `open ${what}`);
    verifyCatalog(this, what);
    await this.resumedFlattens();
  }

  private listen(): void {
    this.events = [];
    this.e.onTargetEvent((event) => this.events.push(event));
  }

  drainEvents(): void {
    this.events = [];
  }

  /** Checks that exactly `want` was emitted since the last call (types.ts TargetEvent). */
  expectEvents(want: TargetEvent[], what: string): void {
    const got = this.events;
    this.events = [];
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      this.fail(`${what}: target events ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
  }

  /**
   * A catalog change is durable when its promise resolves (types.ts): the clean crash image taken
   * right now must list exactly what the model has.
   */
  async verifyDurableCatalog(what: string): Promise<void> {
    const image = this.device.crash('clean');
    // A lineage whose last member went has had its key destroyed before the delete resolved.
    checkShredded(this, image, `the durable image after ${what}`);
    const opened = await this.attempt(() => openPool(image, { nowMs: () => this.clockMs, commitIntervalMs: 0, fastPaths: this.fastPaths }));
    const durable = this.must(opened, `open of the durable image after ${what}`);
    const got = [...durable.listVolumes().map((v) => `${v.name}:${v.sizeBytes}`), ...durable.listSnapshots().map((s) => `${s.fullName}:${s.sizeBytes}`)].sort();
    const want = [...this.model.targets.values()].map((t) => `${t.name}:${t.sizeBytes}`).sort();
    const settings = describeSettings(durable.listSettings(''));
    if (settings !== describeModelSettings(this.model)) this.fail(`${what} resolved, but the durable image holds settings [${settings}], the model [${describeModelSettings(this.model)}]`);
    const keys = keyMismatch(durable, this.model, true);
    if (keys !== null) this.fail(`${what} resolved, but in the durable image ${keys}`);
    if (got.join(',') !== want.join(',')) {
      this.fail(`${what} resolved, but the durable image (generation ${durable.stats().generation}) lists [${got.join(',')}], ` +
        `the model [${want.join(',')}] (in memory generation ${this.e.stats().generation})`);
    }
  }

  /**
   * A flatten cut by a crash resumes in the background when the pool opens (issue 2: "resumable
   * after a crash"). Half the time the simulator finishes it now (joining the background one);
   * otherwise it runs on under the following ops and the volume's identities become unknown.
   */
  private async resumedFlattens(): Promise<void> {
    for (const v of this.e.listVolumes()) {
      if (v.flattenProgress === null) continue;
      const t = this.model.targets.get(v.name);
      if (t === undefined) continue;
      if (this.prng.chance(0.5)) {
        this.note(`  flatten of ${v.name} resumed at ${v.flattenProgress.toFixed(3)}: finishing it`);
        const o = await this.attempt(() => this.e.flattenVolume(v.name));
        if (!o.ok) {
          // A small pool may not hold the copies: the flatten stops (and may resume at the next open).
          this.expectError(o, ['pool_full'], `finish resumed flatten of ${v.name}`);
          t.flattening = true;
          continue;
        }
        if (o.value.flattenProgress !== null) this.fail(`resumed flatten of ${v.name} finished with progress ${o.value.flattenProgress}`);
        this.model.markCopied(t);
      } else {
        this.note(`  flatten of ${v.name} resumed at ${v.flattenProgress.toFixed(3)}: left running`);
        t.flattening = true;
      }
    }
  }

  pickVolume(filter?: (t: ModelTarget) => boolean): ModelTarget | null {
    const all = this.model.volumes().filter(filter ?? (() => true));
    return all.length === 0 ? null : this.prng.pick(all);
  }

  pickSnapshot(filter?: (t: ModelTarget) => boolean): ModelTarget | null {
    const all = this.model.snapshots().filter(filter ?? (() => true));
    return all.length === 0 ? null : this.prng.pick(all);
  }

  pickTarget(): ModelTarget | null {
    const all = [...this.model.targets.values()];
    return all.length === 0 ? null : this.prng.pick(all);
  }

  async setup(): Promise<void> {
    this.note(`params ${JSON.stringify({ ...this.params, weights: undefined })} cacheBytesMax=${this.cacheBytesMax}`);
    this.engine = this.must(await this.attempt(() => createPool(this.device, this.poolOptions())), 'createPool');
    this.listen();
    const report = await this.e.check();
    this.checkReport(report, 'check of a new pool');
    this.emptyBesideMetadata = blocksBesideMetadata(this.e.stats(), report);
  }

  async finish(): Promise<void> {
    this.opIndex = -2;
    this.note('final: flush, verify every target, check, close, reopen, check, delete everything, check that every block returns');
    this.must(await this.attempt(() => this.e.flush()), 'final flush');
    this.model.durablePoint();
    verifyCatalog(this, 'at the end');
    for (const t of this.model.targets.values()) await verifyTarget(this, t, 'full');
    this.checkReport(this.must(await this.attempt(() => this.e.check()), 'final check'), 'final check');
    await this.closeAndReopen();
    for (const t of this.model.targets.values()) await verifyTarget(this, t, 'sample');
    await verifyEverythingReturns(this, this.emptyBesideMetadata);
    this.must(await this.attempt(() => this.e.close()), 'final close');
    this.engine = null;
  }

  async run(ops: number): Promise<SimulationResult> {
    let opsRun = 0;
    let opsEffective = 0;
    let idleOps = 0;
    try {
      await this.setup();
      for (this.opIndex = 0; this.opIndex < ops; this.opIndex++) {
        this.clockMs += clockStepMs;
        const kind: OpKind = this.prng.weighted(this.params.weights);
        const callsBefore = this.engineCalls;
        await runOp(this, kind);
        const acted = this.engineCalls > callsBefore;
        if (this.paranoid && this.opIndex >= this.paranoidFromOp) await paranoidCheck(this);
        opsRun++;
        if (acted) {
          opsEffective++;
          idleOps = 0;
        } else if (++idleOps >= idleOpsMax) {
          this.fail(`stalled: the last ${idleOps} ops found nothing to act on (${this.model.volumes().length} volumes, ` +
            `${this.model.snapshots().length} snapshots, targetsMax ${this.params.targetsMax})`);
        }
      }
      await this.finish();
      return { ok: true, seed: this.seed, opsRun, opsEffective, opCounts: this.opCounts };
    } catch (err) {
      const what = err instanceof SimFailure ? err.message : `unexpected ${err instanceof Error ? err.stack ?? err.message : String(err)}`;
      const failure = `SEED=${this.seed} op #${this.opIndex}: ${what}\n  recent ops:\n    ${this.history.join('\n    ')}`;
      return { ok: false, seed: this.seed, failure, opsRun, opsEffective, opCounts: this.opCounts };
    }
  }
}

export async function runSimulation(opts: SimulationOptions): Promise<SimulationResult> {
  return new Simulator(opts).run(opts.ops);
}
