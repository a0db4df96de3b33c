// Fault operations of the simulator: power cuts (clean, some, torn), clean close+reopen, bit flips
// in data and metadata blocks, and injected EIO on the write, flush, snapshot, read and open paths.
// After EIO the engine may go on or refuse with io_error; either way a crash+reopen must be consistent.

import type { CrashMode } from '../src/engine/device/sim-device.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { checkPool, openPool, type PoolCore } from '../src/engine/pool.js';
import { copyBlock } from '../src/engine/superblock.js';
import { META_CORRUPT_CODES } from '../src/engine/errors.js';
import { commitPlan, planWrite, type Plan } from './apply.js';
import { blockOf, fingerprint, isZero, matchRead, type ModelTarget } from './model.js';
import { makeData, pickRange } from './ops-data.js';
import type { Outcome, Simulator } from './simulator.js';
import { compareRead, verifyCatalog, verifyTarget } from './verify.js';
import { unlockKeys } from './keys.js';
import { findCiphertext, flipKeySlot } from './ops-keys.js';

const B = BLOCK_SIZE_BYTES;

export async function opCrash(sim: Simulator): Promise<void> {
  const mode: CrashMode = sim.prng.pick(['clean', 'some', 'some', 'torn', 'torn']);
  sim.note(`crash ${mode} (${sim.device.unflushedWrites} unflushed device writes)`);
  await sim.crashAndReopen(mode);
  for (const t of sim.model.targets.values()) if (sim.prng.chance(0.3)) await verifyTarget(sim, t, 'sample');
  sim.count(`crash-${mode}`);
}

export async function opReopen(sim: Simulator): Promise<void> {
  sim.note('close + reopen');
  await sim.closeAndReopen();
  sim.count('reopen');
}

export async function opBitFlip(sim: Simulator): Promise<void> {
  sim.must(await sim.attempt(() => sim.e.flush()), 'flush before bit flip');
  sim.model.durablePoint();
  const variant = sim.prng.weighted({ data: 6.5, metadata: 2.5, superblock: 1, keySlot: sim.model.liveKeys().size > 0 ? 1.5 : 0 });
  if (variant === 'data') await flipDataBlock(sim);
  else if (variant === 'metadata') await flipMetadataBlock(sim);
  else if (variant === 'superblock') await damageSuperblock(sim);
  else await flipKeySlot(sim);
}

/**
 * Bit flips in the superblock copies of the newest generation, on a cold reopen. One copy: the pool
 * opens at that generation, nothing lost, and the next commit repairs it. Both copies: open refuses
 * (superblock_lost) and opens with rewind at the previous generation. For the model, that generation
 * holds the same state: the newest one is a commit forced with nothing in it (a repair commit), so
 * the model needs no history; rewinding past real changes is covered by test/engine-superblock.test.ts.
 */
async function damageSuperblock(sim: Simulator): Promise<void> {
  const both = sim.prng.chance(0.4);
  // Everything into a commit first: the damaged generation is then the newest state, with nothing
  // past it in the intent log (replaying the log would open a generation after it).
  sim.must(await sim.attempt(() => sim.e.checkpoint()), 'checkpoint before damaging superblocks');
  if (both) {
    (sim.e as unknown as { core: PoolCore }).core.superblockRepair = true;
    sim.must(await sim.attempt(() => sim.e.checkpoint()), 'an empty commit before damaging its superblocks');
  }
  const generation = sim.e.stats().generation;
  const copies = [copyBlock('primary', generation), copyBlock('mirror', generation)];
  const image = sim.device.crash('clean');
  const damaged = both ? copies : [sim.prng.pick(copies)];
  for (const block of damaged) image.injectBitFlip(block);
  sim.note(`bit flip in superblock copies [${damaged.join(', ')}] of generation ${generation}, cold reopen`);
  sim.engine = null;
  sim.device = image;
  const report = await checkPool(image);
  const named = report.problems.filter((p) => p.kind === 'superblock').map((p) => p.physicalBlock);
  if (!damaged.every((b) => named.includes(b))) sim.fail(`check names superblock blocks [${named.join(', ')}], damaged [${damaged.join(', ')}]`);
  if (!both) {
    if (report.problems.length !== 1) sim.fail(`check of one damaged superblock copy: ${JSON.stringify(report.problems.slice(0, 4))}`);
    const opened = sim.must(await sim.attempt(() => openPool(image, sim.poolOptions())), `openPool with superblock block ${damaged[0]} damaged`);
    if (opened.stats().generation !== generation) sim.fail(`one damaged superblock copy opened generation ${opened.stats().generation}, not ${generation}`);
    sim.must(await sim.attempt(() => opened.close()), 'close (its commit rewrites the damaged copy)');
    sim.device = sim.device.crash('clean');
    await sim.openChecked(`after a flip in superblock block ${damaged[0]} and its repair`);
  } else {
    if (!report.problems.some((p) => p.kind === 'superblock' && / is lost/.test(p.message))) sim.fail('check does not report the lost generation');
    const refused = await sim.attempt(() => openPool(image, sim.poolOptions()));
    if (refused.ok) sim.fail(`a pool whose newest generation ${generation} has no valid superblock copy opened (at generation ${refused.value.stats().generation})`);
    sim.expectError(refused, ['superblock_lost'], 'openPool with both superblock copies damaged');
    const rewound = await sim.attempt(() => openPool(image, { ...sim.poolOptions(), rewind: true }));
    sim.engine = sim.must(rewound, 'openPool with rewind');
    if (sim.e.stats().generation !== generation) sim.fail(`rewind opened generation ${sim.e.stats().generation}; want ${generation - 1} made durable again as ${generation}`);
    await unlockKeys(sim, 'after a rewind');
    verifyCatalog(sim, 'after a rewind');
    // The rewind is durable: a plain reopen works, and the offline check is clean.
    sim.engine = null;
    sim.device = sim.device.crash('clean');
    await sim.openChecked('after a rewind');
  }
  for (const t of sim.model.targets.values()) if (sim.prng.chance(0.5)) await verifyTarget(sim, t, 'sample');
  sim.count(both ? 'superblockLostRewind' : 'superblockCopyDamaged');
}

/** A flipped data block must read as checksum_error, never as wrong data; then it is restored. */
async function flipDataBlock(sim: Simulator): Promise<void> {
  const candidates: [ModelTarget, number, Buffer][] = [];
  for (const t of sim.model.targets.values()) {
    for (const [b, s] of t.blocks) if (s.content !== null && b * B < t.sizeBytes) candidates.push([t, b, s.content]);
  }
  if (candidates.length === 0) return;
  const [t, b, content] = sim.prng.pick(candidates);
  const plaintext = sim.device.findBlocks(content);
  if (t.key !== null && plaintext.length > 0) sim.fail(`the plaintext of encrypted ${t.name}:${b} is on the device (blocks ${plaintext.join(',')})`);
  const physical = t.key === null ? plaintext : findCiphertext(sim, t, content);
  if (physical.length !== 1) return; // not (yet) on the device as one block; nothing to aim at
  // The only copy in the log (an inline page of a flush, its home write still held): replay is what
  // reads it, so that flip is tried cold.
  const { logStartBlock, logBlocks } = (sim.e as unknown as { core: PoolCore }).core.sb;
  const inLog = physical[0]! >= logStartBlock && physical[0]! < logStartBlock + logBlocks;
  if (sim.prng.chance(0.3) || inLog) { await flipDataBlockCold(sim, t, b, content, physical[0]!); return; }
  const flip = sim.device.injectBitFlip(physical[0]);
  if (flip === null) return;
  sim.note(`bit flip in ${t.key === null ? '' : 'encrypted '}data block ${flip.blockNumber} bit ${flip.bitIndex} (${t.name}:${b})`);
  const errorsBefore = sim.e.stats().checksumErrors;
  const o = await sim.attempt(() => sim.e.read(t.id, b * B, B));
  if (o.ok) {
    if (!o.value.equals(content)) sim.fail(`read of bit-flipped block ${t.name}:${b} returned wrong data ${fingerprint(o.value)} instead of an error`);
  } else {
    sim.expectError(o, ['checksum_error'], `read of bit-flipped block ${t.name}:${b}`);
    if (sim.e.stats().checksumErrors <= errorsBefore) sim.fail('checksum error not counted in stats().checksumErrors');
  }
  if (sim.prng.chance(0.4)) {
    const report = sim.must(await sim.attempt(() => sim.e.check()), 'check with a flipped data block');
    if (!report.problems.some((p) => p.physicalBlock === flip.blockNumber)) {
      sim.fail(`check did not report flipped data block ${flip.blockNumber}: ${JSON.stringify(report.problems.slice(0, 4))}`);
    }
  }
  sim.device.injectBitFlip(flip.blockNumber, flip.bitIndex);
  const again = sim.must(await sim.attempt(() => sim.e.read(t.id, b * B, B)), `read of restored block ${t.name}:${b}`);
  compareRead(sim, t, b * B, again, 'read after the flipped bit was restored');
  sim.count(t.key === null ? 'bitFlipData' : 'bitFlipEncryptedData');
}

/**
 * A flipped data block found by a cold open: its write may be in the intent log's newest flush, which
 * the open replays (seed 1844624919: replay took the flip for a torn flush and dropped every write of
 * it). Reads answer the right data or checksum_error (the flipped block, and every target sharing it);
 * the clean image is restored afterwards.
 */
async function flipDataBlockCold(sim: Simulator, t: ModelTarget, b: number, content: Buffer, physical: number): Promise<void> {
  const saved = sim.device.crash('clean');
  const image = sim.device.crash('clean');
  const flip = image.injectBitFlip(physical);
  if (flip === null) return;
  sim.note(`bit flip in ${t.key === null ? '' : 'encrypted '}data block ${flip.blockNumber} bit ${flip.bitIndex} (${t.name}:${b}), cold reopen`);
  sim.engine = null;
  sim.device = image;
  sim.engine = sim.must(await sim.attempt(() => openPool(image, sim.poolOptions())), 'openPool with a flipped data block');
  await unlockKeys(sim, 'with a flipped data block');
  const o = await sim.attempt(() => sim.e.read(t.id, b * B, B));
  if (o.ok && !o.value.equals(content)) sim.fail(`cold read of bit-flipped block ${t.name}:${b} returned wrong data ${fingerprint(o.value)} instead of an error`);
  if (!o.ok) sim.expectError(o, ['checksum_error'], `cold read of bit-flipped block ${t.name}:${b}`);
  for (const other of sim.model.targets.values()) {
    for (const ob of [...other.blocks.keys()].slice(0, 16)) {
      if (ob * B >= other.sizeBytes) continue;
      const r = await sim.attempt(() => sim.e.read(other.id, ob * B, B));
      if (r.ok) compareRead(sim, other, ob * B, r.value, 'read with a flipped data block, cold');
      else sim.expectError(r, ['checksum_error'], `read ${other.name}:${ob} with a flipped data block, cold`);
    }
  }
  sim.engine = null;
  sim.device = saved;
  await sim.openChecked('after restoring the data bit flip');
  sim.count(t.key === null ? 'bitFlipDataCold' : 'bitFlipEncryptedDataCold');
}

/**
 * A flipped metadata block (tree node, space map, catalog) on a cold cache: opening or reading may
 * fail with checksum_error / pool_corrupt, but no read may return wrong data. The clean image is
 * restored afterwards (the engine never saw the flip persist).
 */
async function flipMetadataBlock(sim: Simulator): Promise<void> {
  const dataContents = new Set<string>();
  for (const t of sim.model.targets.values()) for (const s of t.blocks.values()) if (s.content) dataContents.add(s.content.toString('base64'));
  const meta = sim.device.storedBlocks().filter((pb) => pb >= 2 && !isZero(sim.device.peek(pb)) && !dataContents.has(sim.device.peek(pb).toString('base64')));
  if (meta.length === 0) return;
  const saved = sim.device.crash('clean');
  const image = sim.device.crash('clean');
  const flip = image.injectBitFlip(sim.prng.pick(meta));
  if (flip === null) return;
  sim.note(`bit flip in metadata(?) block ${flip.blockNumber} bit ${flip.bitIndex}, cold reopen`);
  sim.engine = null;
  sim.device = image;
  const tolerated = ['checksum_error', 'pool_corrupt', 'io_error', 'log_damaged', ...META_CORRUPT_CODES] as const;
  const opened = await sim.attempt(() => openPool(image, sim.poolOptions()));
  if (opened.ok) {
    sim.engine = opened.value;
    // The flip may be in one copy of a key slot: the other copy still unlocks the lineage.
    await unlockKeys(sim, 'with a flipped metadata block');
    for (const t of sim.model.targets.values()) {
      for (const b of [...t.blocks.keys()].slice(0, 16)) {
        if (b * B >= t.sizeBytes) continue;
        const o = await sim.attempt(() => sim.e.read(t.id, b * B, B));
        if (o.ok) compareRead(sim, t, b * B, o.value, 'read with a flipped metadata block');
        else sim.expectError(o, [...tolerated], `read ${t.name}:${b} with a flipped metadata block`);
      }
    }
  } else {
    sim.expectError(opened, [...tolerated], 'openPool with a flipped metadata block');
  }
  sim.engine = null;
  sim.device = saved;
  await sim.openChecked('after restoring the metadata bit flip');
  sim.count('bitFlipMeta');
}

export async function opEio(sim: Simulator): Promise<void> {
  const variant = sim.prng.weighted({ writePath: 3, flushFail: 2, snapshotFail: 1.5, readPath: 1.5, openFail: 1 });
  sim.note(`eio ${variant}`);
  if (variant === 'writePath') await eioWritePath(sim);
  else if (variant === 'flushFail') await eioFlush(sim);
  else if (variant === 'snapshotFail') await eioSnapshot(sim);
  else if (variant === 'readPath') await eioReadPath(sim);
  else await eioOpen(sim);
  sim.count(`eio-${variant}`);
}

function tolerateIo<T>(sim: Simulator, o: Outcome<T>, what: string): boolean {
  if (o.ok) return true;
  sim.expectError(o, ['io_error', 'pool_full'], what);
  return false;
}

/** Writes and a flush with device writes failing; then either a clean retry or a crash. */
async function eioWritePath(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null || t.sizeBytes === 0) return;
  if (sim.prng.chance(0.5)) sim.device.failNextWrites(sim.prng.int(1, 3));
  else sim.device.setFaultProbability({ write: sim.prng.pick([0.1, 0.3, 0.7]) });
  const failed: Plan[] = [];
  let engineFailed = false;
  for (let i = sim.prng.int(1, 4); i > 0 && !engineFailed; i--) {
    const range = pickRange(sim, t, sim.prng.chance(0.8));
    const data = makeData(sim, range.lengthBytes);
    const fua = sim.prng.chance(0.3);
    const plan = planWrite(sim, t, range.offsetBytes, data);
    sim.note(`  write ${t.name} @${range.offsetBytes} +${range.lengthBytes}${fua ? ' fua' : ''}`);
    const o = await sim.attempt(() => sim.e.write(t.id, range.offsetBytes, data, { fua }));
    if (tolerateIo(sim, o, 'write under EIO')) commitPlan(sim, t, plan, fua);
    else { commitPlan(sim, t, plan, false); failed.push(plan); engineFailed = true; }
  }
  const flushed = engineFailed ? false : tolerateIo(sim, await sim.attempt(() => sim.e.flush()), 'flush under EIO');
  if (flushed) sim.model.durablePoint();
  sim.device.clearFaults();
  if (!flushed && sim.prng.chance(0.5)) {
    // The faults are gone: the engine either recovers (flush works) or stays failed (io_error).
    const retry = await sim.attempt(() => sim.e.flush());
    if (retry.ok) {
      await adoptFailed(sim, t, failed);
      sim.model.durablePoint();
      sim.note('  retry flush ok');
    } else {
      sim.expectError(retry, ['io_error'], 'flush after EIO cleared');
    }
  }
  await sim.crashAndReopen(sim.prng.pick(['clean', 'some', 'torn']));
}

/** After a failed write and a successful flush, each failed block holds old or new, durably. */
async function adoptFailed(sim: Simulator, t: ModelTarget, failed: Plan[]): Promise<void> {
  for (const plan of failed) {
    for (const b of plan.keys()) {
      const candidates = t.pending.get(b) ?? [blockOf(t, b)];
      const got = sim.must(await sim.attempt(() => sim.e.read(t.id, b * B, B)), `read back failed write ${t.name}:${b}`);
      const match = matchRead(candidates, got);
      if (match === null) sim.fail(`after a failed write and a good flush ${t.name}:${b} holds ${fingerprint(got)}, not one of [${candidates.map((c) => fingerprint(c.content)).join(', ')}]`);
      sim.model.setBlock(t, b, match, true);
    }
  }
}

async function eioFlush(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null || t.sizeBytes === 0) return;
  for (let i = sim.prng.int(1, 3); i > 0; i--) {
    const range = pickRange(sim, t, true);
    const data = makeData(sim, range.lengthBytes);
    const plan = planWrite(sim, t, range.offsetBytes, data);
    sim.note(`  write ${t.name} @${range.offsetBytes} +${range.lengthBytes}`);
    const o = await sim.attempt(() => sim.e.write(t.id, range.offsetBytes, data));
    if (!o.ok) { sim.expectError(o, ['pool_full'], 'write before failed flush'); break; }
    commitPlan(sim, t, plan, false);
  }
  if (sim.prng.chance(0.5)) sim.device.failFlush(1);
  else sim.device.failNextWrites(1);
  const o = await sim.attempt(() => sim.e.flush());
  sim.note(`  flush with a failing device: ${o.ok ? 'ok' : o.code}`);
  if (o.ok) sim.model.durablePoint();
  else sim.expectError(o, ['io_error'], 'flush with a failing device');
  sim.device.clearFaults();
  await sim.crashAndReopen(sim.prng.pick(['clean', 'some', 'torn']));
}

/** A snapshot whose commit fails: after the crash it exists completely or not at all. */
async function eioSnapshot(sim: Simulator): Promise<void> {
  const v = sim.pickVolume();
  if (v === null) return;
  const fullName = `${v.name}@${sim.newName('s')}`;
  const copy = { ...v, blocks: new Map(v.blocks) };
  if (sim.prng.chance(0.5)) sim.device.failFlush(1);
  else sim.device.failNextWrites(sim.prng.int(1, 2));
  const o = await sim.attempt(() => sim.e.createSnapshots([fullName]));
  sim.note(`  createSnapshots ${fullName} with a failing device: ${o.ok ? 'ok' : o.code}`);
  sim.device.clearFaults();
  if (o.ok) {
    sim.model.durablePoint();
    sim.model.addCopy(v, fullName, 'snapshot', o.value[0]?.id ?? -1);
    await sim.crashAndReopen(sim.prng.pick(['clean', 'some', 'torn']));
    return;
  }
  sim.expectError(o, ['io_error'], `createSnapshots ${fullName} under EIO`);
  const mode: CrashMode = sim.prng.pick(['clean', 'some', 'torn']);
  await sim.crashAndReopen(mode, () => {
    const found = sim.e.listSnapshots().find((s) => s.fullName === fullName);
    sim.note(`  after crash the failed snapshot ${found ? 'exists' : 'does not exist'}`);
    if (found) {
      // Its commit made it (and every write before it) durable.
      sim.model.durablePoint();
      sim.model.addCopy(copy, fullName, 'snapshot', found.id);
    }
  });
}

/** Reads with failing device reads on a cold cache: io_error or the right data, never wrong data. */
async function eioReadPath(sim: Simulator): Promise<void> {
  await sim.crashAndReopen('clean');
  sim.device.failNextReads(sim.prng.int(1, 3));
  for (const t of sim.model.targets.values()) {
    if (t.sizeBytes === 0) continue;
    const range = pickRange(sim, t, sim.prng.chance(0.5));
    const o = await sim.attempt(() => sim.e.read(t.id, range.offsetBytes, range.lengthBytes));
    if (o.ok) compareRead(sim, t, range.offsetBytes, o.value, 'read under EIO');
    else sim.expectError(o, ['io_error'], `read ${t.name} under EIO`);
  }
  sim.device.clearFaults();
  await sim.crashAndReopen('clean');
}

/** Opening with failing reads fails with io_error (or succeeds); a retry without faults opens. */
async function eioOpen(sim: Simulator): Promise<void> {
  sim.must(await sim.attempt(() => sim.e.flush()), 'flush before open-under-EIO');
  sim.model.durablePoint();
  sim.engine = null;
  sim.device = sim.device.crash('clean');
  sim.device.failNextReads(sim.prng.int(1, 4));
  const o = await sim.attempt(() => openPool(sim.device, sim.poolOptions()));
  sim.note(`  openPool with failing reads: ${o.ok ? 'ok' : o.code}`);
  if (!o.ok) sim.expectError(o, ['io_error'], 'openPool under EIO');
  else {
    // An open that succeeds despite failed reads must still be the newest durable state, not a
    // fallback to an older superblock (that would silently drop flushed writes).
    sim.engine = o.value;
    await unlockKeys(sim, 'after an open that survived EIO');
    verifyCatalog(sim, 'after an open that survived EIO');
    for (const t of sim.model.targets.values()) await verifyTarget(sim, t, 'sample');
    sim.engine = null;
  }
  sim.device.clearFaults();
  sim.device = sim.device.crash('clean');
  await sim.openChecked('after open under EIO');
}
