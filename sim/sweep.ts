// The deterministic fault sweep, beside the random simulator (SQLite's I/O-error and crash tests):
// for each engine operation (sweep-ops.ts), from the same history every time, the 1st device call of
// the operation fails with EIO, then the 2nd, the 3rd, ... until the operation completes without
// reaching the fault; the same with a power cut ('clean', 'some', 'torn') just before the N-th device
// write and before the N-th flush. After each case the pool is reopened from what the device keeps,
// checked offline, and every volume and snapshot is compared with the reference model: the catalog
// is as before the op or as after it (or after one of its steps, for an op of several), the key
// slots hold the live lineages' keys in an allowed wrapped form (a deleted lineage's key is gone
// from the device), every acknowledged write is there, and each unacknowledged block holds one of
// the states the model allows. A failure names its case, which replays alone.

import { Prng } from '../src/engine/device/prng.js';
import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { checkPool, createPool, openPool } from '../src/engine/pool.js';
import { readSuperblockCopies } from '../src/engine/superblock-recovery.js';
import type { PoolOptions } from '../src/engine/types.js';
import type { Model } from './model.js';
import { SimFailure, Simulator, type Outcome } from './simulator.js';
import { FaultDevice, type Fault } from './sweep-device.js';
import { setupHistory, setupUnflushed, sweepOps, type SweepOp } from './sweep-ops.js';
import { sweepWrappedKeys } from './sweep-ops-keys.js';
import { checkShredded, fillKeyIds, keyMismatch } from './keys.js';
import { resolvePending, verifyCatalog, verifyTarget } from './verify.js';
import { engineCatalog, modelCatalog } from './ops-midcrash.js';

export type FaultKind = Fault['kind'];
export const faultKinds: FaultKind[] = ['eio', 'eioPersistent', 'crashWrite', 'crashFlush'];
export const crashModes: CrashMode[] = ['clean', 'some', 'torn'];

/** The seed of the sweep's device (crash images of 'some' and 'torn' draw from it) and of its checks. */
const sweepSeed = 17;
const poolBlocks = 4096; // 16 MiB
/** A small metadata cache, so operations read nodes back from the device (and those reads can fail). */
const cacheBytesSweep = 64 * 1024;
/** Crash images drawn per power cut in 'some' and 'torn' mode (each kept a different set of writes). */
export const imagesPerCut = 4;
/** No operation of the sweep makes this many device calls: past it the loop is stuck. */
const callsPerOpMax = 20_000;

/**
 * 'warm': the op runs on the engine that made the history (metadata mostly cached, dirty state in
 * memory); 'cold': the history is flushed and the pool reopened first, so the op reads its metadata
 * from the device (and those reads fail in the EIO cases).
 */
export type SweepStart = 'warm' | 'cold';
export const sweepStarts: SweepStart[] = ['warm', 'cold'];

export interface SweepCase {
  op: string;
  start: SweepStart;
  fault: Fault;
  fastPaths: boolean;
  /** Crash images per power cut in 'some' and 'torn' mode (default imagesPerCut). */
  images?: number;
}

export function describeCase(c: SweepCase): string {
  const f = c.fault;
  const mode = f.kind === 'eio' || f.kind === 'eioPersistent' ? '' : ` --sweep-mode ${f.mode}`;
  return `--sweep-op ${c.op} --sweep-start ${c.start} --sweep-fault ${f.kind} --sweep-n ${f.n}${mode}${c.fastPaths ? '' : ' --no-fast-paths'}`;
}

class SweepSimulator extends Simulator {
  constructor(opts: ConstructorParameters<typeof Simulator>[0]) {
    super(opts);
    for (const [wrapped, dek] of sweepWrappedKeys) this.keyBook.remember(wrapped, dek);
  }

  override poolOptions(): PoolOptions {
    return { ...super.poolOptions(), cacheBytesMax: cacheBytesSweep };
  }
}

/** Targets the op created have no id (nor key slot) in the model until the engine lists them. */
function fillIds(sim: Simulator, model: Model = sim.model): void {
  for (const t of model.targets.values()) {
    if (t.id !== -1) continue;
    const found = t.kind === 'volume'
      ? sim.e.listVolumes().find((v) => v.name === t.name)
      : sim.e.listSnapshots().find((s) => s.fullName === t.name);
    if (found !== undefined) t.id = found.id;
  }
  fillKeyIds(sim.e, model);
}

/** The states the op may leave when a cut or a failure stops it: before, after each step, after. */
function allowedModels(sim: Simulator, op: SweepOp, pre: Model): Model[] {
  return [pre, ...(op.stages?.(sim, pre) ?? []), modelAfter(sim, op, pre, false)];
}

/**
 * The candidates whose catalog and key slots are what the open engine lists (`allLocked`: just
 * opened, no key offered yet), with the engine's ids filled in; fails when there is none.
 */
function catalogMatches(sim: Simulator, candidates: Model[], allLocked: boolean, what: string): Model[] {
  const got = engineCatalog(sim);
  const sameCatalog = candidates.filter((m) => modelCatalog(m) === got);
  if (sameCatalog.length === 0) {
    sim.fail(`${what}: the catalog is [${got}], allowed only ${candidates.map((m) => `[${modelCatalog(m)}]`).join(' or ')}`);
  }
  const misses: string[] = [];
  const matching = sameCatalog.map((m) => m.clone()).filter((m) => {
    fillIds(sim, m);
    const mismatch = keyMismatch(sim.e, m, allLocked);
    if (mismatch !== null) misses.push(mismatch);
    return mismatch === null;
  });
  if (matching.length === 0) sim.fail(`${what}: the key slots fit no allowed state: ${misses.join(' | ')}`);
  return matching;
}

/** The first of `matching` that the engine's data fits (each uncertain block resolved); it becomes the model. */
async function adoptDataMatch(sim: Simulator, matching: Model[], what: string): Promise<void> {
  const misses: string[] = [];
  for (const m of matching) {
    sim.model = m.clone();
    try {
      fillIds(sim);
      await resolvePending(sim);
      await verifyAll(sim, what);
      return;
    } catch (err) {
      if (!(err instanceof SimFailure)) throw err;
      misses.push(err.message);
    }
  }
  sim.fail(`${what}: the data fit no allowed state: ${misses.join(' | ')}`);
}

/** The model after `op` (from a copy of `pre`), and the data op's plan. */
function modelAfter(sim: Simulator, op: SweepOp, pre: Model, durable: boolean): Model {
  const saved = sim.model;
  sim.model = pre.clone();
  op.apply(sim, durable);
  const after = sim.model;
  sim.model = saved;
  return after;
}

/** Every target of the model, read whole, must equal what the open engine returns. */
async function verifyAll(sim: Simulator, what: string): Promise<void> {
  fillIds(sim);
  verifyCatalog(sim, what);
  for (const t of sim.model.targets.values()) await verifyTarget(sim, t, 'full');
}

/**
 * Opens `image` (after checkPool finds no problem) and compares it with the candidates: its catalog
 * must be one of theirs, and its data must fit one of those with that catalog (a crash may keep,
 * per block, any state since the last durable point: resolvePending).
 */
async function reopenMatching(sim: Simulator, image: SimDevice, candidates: Model[], what: string): Promise<void> {
  sim.engine = null;
  sim.device = image;
  let matching: Model[] = [];
  await sim.openChecked(what, () => {
    matching = catalogMatches(sim, candidates, true, what);
    sim.model = (matching[0] as Model).clone();
  });
  await adoptDataMatch(sim, matching, what);
}

/**
 * A copy of `image` with one bit flipped in the primary superblock of its newest generation, when that
 * generation's mirror is whole too (damage to one of two copies must cost nothing; a crash between
 * the two copies leaves one, and damaging that is the double fault, left to the simulator): `check`
 * must name exactly that block, and an open and close must repair it. Returns the repaired device,
 * whose content the caller compares with the model; null when the image has no such pair.
 */
async function withNewestPrimaryDamaged(sim: Simulator, image: SimDevice, what: string): Promise<SimDevice | null> {
  const copies = await readSuperblockCopies(image);
  const generations = copies.map((c) => (c.decoded.state === 'valid' ? c.decoded.sb.generation : -1));
  const newest = Math.max(...generations);
  const primary = copies.find((c, i) => c.role === 'primary' && generations[i] === newest);
  const mirror = copies.find((c, i) => c.role === 'mirror' && generations[i] === newest);
  if (newest < 0 || primary === undefined || mirror === undefined) return null;
  const copy = image.crash('clean');
  copy.injectBitFlip(primary.blockNumber, 8 * 100 + 3);
  const report = await checkPool(copy);
  const named = report.problems.map((p) => `${p.kind}@${p.physicalBlock}`);
  if (JSON.stringify(named) !== JSON.stringify([`superblock@${primary.blockNumber}`])) {
    sim.fail(`${what}: with the newest primary superblock damaged, check found [${named.join(', ')}], want exactly superblock@${primary.blockNumber}`);
  }
  const opened = await sim.attempt(() => openPool(copy, sim.poolOptions()));
  const engine = sim.must(opened, `${what}: open with the newest primary superblock damaged`);
  await engine.close();
  // close() closed the device: what it left on disk, as a device to open again.
  return copy.crash('clean');
}

/** After an EIO case: the op succeeded, or failed cleanly, or stopped the pool; then the power goes. */
async function checkAfterEio(sim: Simulator, op: SweepOp, pre: Model, o: Outcome<unknown>, inner: SimDevice): Promise<void> {
  let candidates: Model[];
  if (o.ok) {
    sim.model = modelAfter(sim, op, pre, true);
    await verifyAll(sim, `live pool after ${op.name}`);
    checkShredded(sim, inner, `live pool after ${op.name}`);
    candidates = [sim.model];
  } else {
    sim.expectError(o, ['io_error'], `${op.name} under EIO`);
    const flushed = await sim.attempt(() => sim.e.flush());
    if (flushed.ok && op.stages !== undefined) {
      // Still working: the steps that completed are there, the failed one is not.
      const what = `live pool after ${op.name} failed with io_error`;
      await adoptDataMatch(sim, catalogMatches(sim, allowedModels(sim, op, pre), false, what), what);
      sim.model.durablePoint();
      candidates = [sim.model];
    } else if (flushed.ok) {
      // Still working: a failed op changed nothing, except that each block of a data op holds its
      // old or its new content (a re-wrap: either wrapped form); the flush made whatever is there durable.
      sim.model = pre.clone();
      sim.model.durablePoint();
      if (op.kind !== 'catalog') op.apply(sim, false);
      fillIds(sim);
      await resolvePending(sim);
      await verifyAll(sim, `live pool after ${op.name} failed with io_error`);
      sim.model.durablePoint();
      candidates = [sim.model];
    } else {
      // Stopped (poisoned): nothing more is acknowledged; reopening recovers the durable state.
      sim.expectError(flushed, ['io_error'], `flush after ${op.name} failed`);
      candidates = allowedModels(sim, op, pre);
    }
  }
  await reopenMatching(sim, inner.crash('clean'), candidates, `reopen after ${op.name} under EIO`);
}

export interface CaseResult { reached: boolean; failure: string | null }

/** The flushed history: the content of each stored block, and the model. */
interface ColdBase { blocks: Map<number, Buffer>; model: Model }
let coldBaseMade: Promise<ColdBase> | null = null;

/** The history, flushed: the device content and the model every cold case starts from. */
function coldBase(): Promise<ColdBase> {
  coldBaseMade ??= (async () => {
    const sim = new SweepSimulator({ seed: sweepSeed, ops: 0 });
    const inner = new SimDevice(poolBlocks, new Prng(sweepSeed));
    sim.device = inner;
    sim.engine = sim.must(await sim.attempt(() => createPool(inner, sim.poolOptions())), 'createPool');
    await setupHistory(sim);
    sim.must(await sim.attempt(() => sim.e.flush()), 'flush before the cold start');
    sim.model.durablePoint();
    const blocks = new Map(inner.storedBlocks().map((b) => [b, inner.peekDurable(b)]));
    return { blocks, model: sim.model };
  })();
  return coldBaseMade;
}

/** Runs one case from a fresh pool; `reached` false: the op finished before its N-th call. */
export async function runSweepCase(c: SweepCase): Promise<CaseResult> {
  const op = sweepOps.find((o) => o.name === c.op);
  if (op === undefined) throw new Error(`unknown sweep op ${c.op} (ops: ${sweepOps.map((o) => o.name).join(', ')})`);
  const sim = new SweepSimulator({ seed: sweepSeed, ops: 0, fastPaths: c.fastPaths });
  const inner = new SimDevice(poolBlocks, new Prng(sweepSeed));
  const device = new FaultDevice(inner, c.images ?? imagesPerCut);
  sim.device = inner;
  try {
    if (c.start === 'cold') {
      // The flushed history is the same for every cold case: made once, copied per case.
      // Copied onto this case's own device (seeded alike for every case, so a case replays alone).
      const base = await coldBase();
      for (const [blockNumber, content] of base.blocks) await inner.write(blockNumber, content);
      await inner.flush();
      sim.model = base.model.clone();
      sim.engine = sim.must(await sim.attempt(() => openPool(device, sim.poolOptions())), 'open for the cold start');
    } else {
      sim.engine = sim.must(await sim.attempt(() => createPool(device, sim.poolOptions())), 'createPool');
      await setupHistory(sim);
    }
    await setupUnflushed(sim);
    await op.prepare?.(sim);
    const pre = sim.model.clone();
    device.arm(c.fault);
    const o = await sim.attempt(() => op.run(sim)).finally(() => device.disarm());
    const reached = device.reached;
    if (c.fault.kind === 'eio' || c.fault.kind === 'eioPersistent' || !reached) {
      await checkAfterEio(sim, op, pre, o, inner);
    } else {
      // The power went just before the N-th write or flush: the op never finished as far as any
      // caller knows, whatever the live device did after.
      const candidates = allowedModels(sim, op, pre);
      for (const [i, image] of device.images.entries()) {
        const what = `reopen after a power cut (${c.fault.mode}, image ${i + 1} of ${device.images.length}: ${JSON.stringify(image.lastCrash)}) in ${op.name}`;
        // The same image with one copy of its newest superblock damaged as well: nothing may be lost.
        const damaged = await withNewestPrimaryDamaged(sim, image, what);
        if (damaged !== null) await reopenMatching(sim, damaged, candidates, `${what}, its newest primary superblock then damaged and repaired`);
        await reopenMatching(sim, image, candidates, what);
      }
    }
    return { reached, failure: null };
  } catch (err) {
    const what = err instanceof SimFailure ? err.message : `unexpected ${err instanceof Error ? err.stack ?? err.message : String(err)}`;
    // An op that failed on its fault reached it: the sweep goes on to the next N.
    const mode = c.fault.kind === 'crashWrite' || c.fault.kind === 'crashFlush' ? ` ${c.fault.mode}` : '';
    return { reached: device.reached, failure: `${c.op} ${c.start} ${c.fault.kind} n=${c.fault.n}${mode} ` +
      `fast paths ${c.fastPaths ? 'on' : 'off'}: ${what}\n  replay: npm run sim -- --sweep ${describeCase(c)}` };
  }
}

export interface SweepOptions {
  ops?: string[];
  starts?: SweepStart[];
  kinds?: FaultKind[];
  modes?: CrashMode[];
  fastPaths?: boolean;
  /** Only this N (replay of one case). */
  n?: number;
  /** Crash images per power cut in 'some' and 'torn' mode (default imagesPerCut). */
  images?: number;
  /** Every stride-th N from 1 (a bounded subset); it still ends with a case the op completes. */
  nStride?: number;
  onFailure?: (failure: string) => void;
}

export interface SweepResult {
  cases: number;
  /** Cases run per "op fault[/mode]". */
  counts: Record<string, number>;
  failures: string[];
}

export async function runSweep(opts: SweepOptions = {}): Promise<SweepResult> {
  const result: SweepResult = { cases: 0, counts: {}, failures: [] };
  for (const op of sweepOps.filter((o) => opts.ops === undefined || opts.ops.includes(o.name))) {
    for (const start of opts.starts ?? sweepStarts) {
      await sweepOp(op.name, start, opts, result);
    }
  }
  return result;
}

/** Every fault kind (and crash mode) for one op from one start, N = 1, 2, ... until the op completes. */
async function sweepOp(op: string, start: SweepStart, opts: SweepOptions, result: SweepResult): Promise<void> {
  const fastPaths = opts.fastPaths ?? true;
  const stride = opts.nStride ?? 1;
  for (const kind of opts.kinds ?? faultKinds) {
    const crash = kind === 'crashWrite' || kind === 'crashFlush';
    for (const mode of crash ? opts.modes ?? crashModes : ['clean' as const]) {
      const key = `${op} ${start} ${kind}${crash ? `/${mode}` : ''}`;
      for (let n = opts.n ?? 1; ; n += stride) {
        const fault: Fault = crash ? { kind, n, mode } : { kind, n };
        const r = await runSweepCase({ op, start, fault, fastPaths, ...(opts.images === undefined ? {} : { images: opts.images }) });
        result.cases++;
        result.counts[key] = (result.counts[key] ?? 0) + 1;
        if (r.failure !== null) {
          result.failures.push(r.failure);
          opts.onFailure?.(r.failure);
        }
        // Let engines abandoned at a power cut finish their background steps and be freed.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (!r.reached || opts.n !== undefined) break;
        if (n > callsPerOpMax) {
          result.failures.push(`${key}: still reaching the fault after ${n} device calls`);
          break;
        }
      }
    }
  }
}
