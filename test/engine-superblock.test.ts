// The superblock copies (format 2): commit order, damage to one copy costs nothing, damage to both
// copies of the newest generation refuses the pool unless told to rewind, a power cut at every device
// write and flush of a commit recovers automatically, and format-1 pools still open (and upgrade).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { CairnError, SuperblockLost } from '../src/engine/errors.js';
import { BLOCK_SIZE_BYTES, SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS } from '../src/engine/constants.js';
import { decodeSuperblock, type Superblock } from '../src/engine/superblock.js';
import { pattern } from './engine-helpers.js';

const B = BLOCK_SIZE_BYTES;
const MiB = 1024 * 1024;
const poolBlocks = 4096;

type LogEntry = { event: string; fields: Record<string, unknown> };
function logger(): { entries: LogEntry[]; log: (event: string, fields: Record<string, unknown>) => void } {
  const entries: LogEntry[] = [];
  return { entries, log: (event, fields) => entries.push({ event, fields }) };
}

const primaryOf = (g: number): number => SUPERBLOCK_SLOTS[g % 2 === 0 ? 0 : 1];
const mirrorOf = (g: number): number => SUPERBLOCK_MIRROR_SLOTS[g % 2 === 0 ? 0 : 1];

/** A pool with volume v: A flushed, snapshot v@s, then B over A flushed (the reproduction). */
async function poolWithHistory(): Promise<{ device: SimDevice; generation: number }> {
  const device = new SimDevice(poolBlocks, new Prng(11));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 4 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(1, 8 * B));
  await engine.checkpoint();
  await engine.createSnapshots(['v@s']);
  await engine.write(id, 0, pattern(2, 8 * B));
  await engine.checkpoint();
  const generation = engine.stats().generation;
  await engine.close();
  return { device: device.crash('clean'), generation };
}

/** The device after a clean close (closing an engine closes its device): the same blocks, open. */
const after = (device: SimDevice): SimDevice => device.crash('clean');

/** Damages a few bytes of a stored block (as the issue did with a hex editor). */
async function damage(device: SimDevice, blockNumber: number): Promise<void> {
  const buf = device.peek(blockNumber);
  buf.fill(0xff, 20, 28);
  await device.write(blockNumber, buf);
  await device.flush();
}

async function readV(engine: CairnEngine, name = 'v'): Promise<Buffer> {
  return engine.read(engine.resolve(name).id, 0, 8 * B);
}

test('a commit writes metadata, flush, primary, flush, mirror, flush; both copies hold the same state', async () => {
  const device = new SimDevice(poolBlocks, new Prng(1));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 4 * MiB);
  const ops: string[] = [];
  const write = device.write.bind(device), flush = device.flush.bind(device);
  device.write = (b, data) => { ops.push(`w${b}`); return write(b, data); };
  device.flush = () => { ops.push('f'); return flush(); };
  await engine.write(engine.resolve('v').id, 0, pattern(3, B));
  await engine.checkpoint();
  const g = engine.stats().generation;
  assert.deepEqual(ops.slice(-5), ['f', `w${primaryOf(g)}`, 'f', `w${mirrorOf(g)}`, 'f'], ops.join(' '));
  assert.ok(ops.slice(0, -5).every((op) => op === 'f' || !['w0', 'w1', 'w128', 'w129'].includes(op)), 'metadata first, superblocks last');
  const p = decodeSuperblock(device.peekDurable(primaryOf(g)), primaryOf(g));
  const m = decodeSuperblock(device.peekDurable(mirrorOf(g)), mirrorOf(g));
  assert.equal(p.state, 'valid');
  assert.equal(m.state, 'valid');
  assert.deepEqual((p as { sb: Superblock }).sb, (m as { sb: Superblock }).sb);
  // The mirror slots are used in the space map from create on: the check counts them.
  const report = await checkPool(device.crash('clean'));
  assert.deepEqual(report.problems, []);
  await engine.close();
});

test('a checksum failure anywhere in the block (not only its head) makes a copy damaged', () => {
  const sb: Superblock = { formatVersion: 2, generation: 7, totalBlocks: 4096, spaceRoot: 9, catalogRoot: 10, catalogSlots: 3, nextId: 4, poolUuid: '00112233-4455-6677-8899-aabbccddeeff', firstMirroredGeneration: 1, logStartBlock: 0, logBlocks: 0, logTailSeq: 0, keyringStartBlock: 0, keyringBlocks: 0, metaObjects: 17 };
  return import('../src/engine/superblock.js').then(({ encodeSuperblock }) => {
    const buf = encodeSuperblock(sb, 1);
    assert.equal(decodeSuperblock(buf, 1).state, 'valid');
    const late = Buffer.from(buf);
    late[4000] = 1;
    assert.equal(decodeSuperblock(late, 1).state, 'damaged', 'a flip past the first 512 bytes is caught');
    assert.equal(decodeSuperblock(buf, 129).state, 'damaged', 'a copy read from the wrong block is not valid there');
    assert.equal(decodeSuperblock(Buffer.alloc(B), 1).state, 'empty');
  });
});

test('the issue: damage to the newest primary copy loses nothing; check reports it; the next commit rewrites it', async () => {
  const { device, generation } = await poolWithHistory();
  await damage(device, primaryOf(generation));
  const report = await checkPool(device);
  assert.equal(report.ok, false);
  assert.equal(report.problems.length, 1, JSON.stringify(report.problems));
  assert.equal(report.problems[0]!.kind, 'superblock');
  assert.equal(report.problems[0]!.physicalBlock, primaryOf(generation));
  assert.match(report.problems[0]!.message, /damaged \(bad checksum/);
  const { entries, log } = logger();
  const e2 = await openPool(device, { commitIntervalMs: 0, log });
  assert.equal(e2.stats().generation, generation, 'opens the newest generation, from its mirror');
  assert.deepEqual(await readV(e2), pattern(2, 8 * B), 'the last flushed write is there');
  assert.deepEqual(await readV(e2, 'v@s'), pattern(1, 8 * B));
  assert.ok(entries.some((e) => e.event === 'superblock_copy_corrupt' && e.fields.block === primaryOf(generation)), 'logged');
  await e2.checkpoint(); // nothing dirty: the repair alone makes this commit
  assert.equal(e2.stats().generation, generation + 1);
  await e2.close();
  assert.deepEqual((await checkPool(after(device))).problems, []);
});

test('damage to the newest mirror copy loses nothing either; check names the mirror block', async () => {
  const { device, generation } = await poolWithHistory();
  await damage(device, mirrorOf(generation));
  const report = await checkPool(device);
  assert.deepEqual(report.problems.map((p) => [p.kind, p.physicalBlock]), [['superblock', mirrorOf(generation)]]);
  const e2 = await openPool(device, { commitIntervalMs: 0 });
  assert.equal(e2.stats().generation, generation);
  assert.deepEqual(await readV(e2), pattern(2, 8 * B));
  await e2.close();
  assert.deepEqual((await checkPool(after(device))).problems, [], 'close ran the repairing commit');
});

test('both copies of the newest generation damaged: open refuses (superblock_lost), rewind opens the previous one and says so', async () => {
  const { device, generation } = await poolWithHistory();
  await damage(device, primaryOf(generation));
  await damage(device, mirrorOf(generation));
  const report = await checkPool(device);
  assert.equal(report.ok, false);
  const lines = report.problems.filter((p) => p.kind === 'superblock');
  assert.deepEqual(lines.map((p) => p.physicalBlock), [primaryOf(generation), mirrorOf(generation), primaryOf(generation)]);
  assert.match(lines[2]!.message, new RegExp(`generation ${generation} is lost`));
  await assert.rejects(openPool(device, { commitIntervalMs: 0 }), (err: unknown) =>
    err instanceof SuperblockLost && err.code === 'superblock_lost' && err.lostGeneration === generation &&
    err.newestValidGeneration === generation - 1 && !err.message.includes('\n') && /rewind/.test(err.message));
  const { entries, log } = logger();
  const e2 = await openPool(device, { commitIntervalMs: 0, rewind: true, log });
  const rewind = entries.find((e) => e.event === 'pool_rewind');
  assert.ok(rewind, 'the rewind is logged');
  assert.equal(rewind.fields.lostGeneration, generation);
  assert.equal(rewind.fields.generation, generation - 1);
  assert.deepEqual(await readV(e2), pattern(1, 8 * B), 'the previous generation: before the overwrite');
  assert.deepEqual(await readV(e2, 'v@s'), pattern(1, 8 * B));
  const check = await e2.check();
  assert.deepEqual(check.problems, []);
  await e2.close();
  // The rewind was made durable: a plain open works from now on.
  const e3 = await openPool(after(device), { commitIntervalMs: 0 });
  assert.deepEqual(await readV(e3), pattern(1, 8 * B));
  await e3.close();
});

test('a torn primary of a commit never acknowledged is passed over automatically (a note, not a problem)', async () => {
  const { device, generation } = await poolWithHistory();
  // The next commit's primary, torn mid-sector by a power cut: half new, half the old copy.
  const next = primaryOf(generation + 1);
  const old = device.peek(next);
  const torn = Buffer.concat([Buffer.alloc(12, 0xab), old.subarray(12)]);
  await device.write(next, torn);
  await device.flush();
  const report = await checkPool(device);
  assert.deepEqual(report.problems, []);
  assert.equal(report.notes.length, 1);
  assert.match(report.notes[0]!, /torn write of generation/);
  const e2 = await openPool(device, { commitIntervalMs: 0 });
  assert.equal(e2.stats().generation, generation);
  assert.deepEqual(await readV(e2), pattern(2, 8 * B));
  await e2.close();
});

test('power cut at every device write and flush of a commit (clean, some, torn, and a sub-sector tear): reopen is automatic and loses nothing acknowledged', async (t) => {
  const modes: (CrashMode | 'byte-tear')[] = ['clean', 'some', 'torn', 'byte-tear'];
  let cases = 0, sawNew = 0, sawOld = 0;
  for (const mode of modes) {
    for (let k = 0; ; k++) {
      const device = new SimDevice(poolBlocks, new Prng(100 + k));
      const engine = await createPool(device, { commitIntervalMs: 0 });
      await engine.createVolume('v', 4 * MiB);
      const id = engine.resolve('v').id;
      await engine.write(id, 0, pattern(1, 8 * B));
      await engine.checkpoint();
      const acked = engine.stats().generation;
      await engine.write(id, 0, pattern(2, 8 * B));
      await engine.write(id, 64 * B, pattern(3, 300 * B)); // enough for several metadata writes
      const written: { block: number; data: Buffer }[] = [];
      const write = device.write.bind(device);
      device.write = (b, data) => { written.push({ block: b, data: Buffer.from(data) }); return write(b, data); };
      device.armCrash(k, mode === 'byte-tear' ? 'clean' : mode);
      await engine.checkpoint();
      let image = device.takeArmedImage();
      await engine.close();
      if (image === null) break; // k is past the commit
      cases++;
      if (mode === 'byte-tear') {
        // The last write before the cut lands half: its first block mixes new and old below a sector.
        const last = written.at(-1);
        if (last !== undefined) {
          const old = image.peek(last.block);
          const mixed = Buffer.concat([last.data.subarray(0, 12), old.subarray(12)]);
          await image.write(last.block, mixed);
          await image.flush();
          image = image.crash('clean');
        }
      }
      const what = `${mode} crash before device op ${k}`;
      const e2 = await openPool(image, { commitIntervalMs: 0 }).catch((err: unknown) => assert.fail(`${what}: reopen failed: ${String(err)}`));
      assert.ok(e2.stats().generation >= acked, `${what}: generation ${e2.stats().generation} < acknowledged ${acked}`);
      const got = await e2.read(id, 0, 8 * B);
      const isNew = got.equals(pattern(2, 8 * B));
      assert.ok(isNew || got.equals(pattern(1, 8 * B)), `${what}: block 0..8 is neither the acknowledged nor the new write`);
      if (e2.stats().generation > acked) assert.ok(isNew, `${what}: the new generation opened without its write`);
      if (isNew) sawNew++; else sawOld++;
      assert.deepEqual((await e2.check()).problems, [], what);
      await e2.close();
    }
  }
  t.diagnostic(`${cases} power cuts: ${sawNew} opened the new generation, ${sawOld} the acknowledged one`);
  assert.ok(cases >= 4 * 5, `every op of the commit was cut (${cases} cases)`);
  assert.ok(sawNew > 0 && sawOld > 0, `both outcomes seen (${sawNew} new, ${sawOld} old)`);
});

// ---- format 1 ----

/** The format-1 encoder as Cairn wrote it before format 2 (kept here as the test's oracle). */
function encodeV1(sb: Superblock): Buffer {
  const buf = Buffer.alloc(B);
  buf.writeUInt32LE(0x43524e53, 0);
  buf.writeUInt32LE(1, 4);
  buf.writeUInt32LE(B, 12);
  const u64 = (at: number, v: number): void => { buf.writeUInt32LE(v % 2 ** 32, at); buf.writeUInt32LE(Math.floor(v / 2 ** 32), at + 4); };
  u64(16, sb.generation); u64(24, sb.totalBlocks); u64(32, sb.spaceRoot); u64(40, sb.catalogRoot); u64(48, sb.catalogSlots); u64(56, sb.nextId);
  Buffer.from(sb.poolUuid.replace(/-/g, ''), 'hex').copy(buf, 64);
  buf.writeUInt32LE(crc32c(buf.subarray(0, 512)), 8);
  return buf;
}

/**
 * A format-1 pool: only blocks 0 and 1 reserved, one superblock copy per commit. Built by running the
 * engine with its mirror slots handed back to the allocator and format 1 in its superblock, then
 * writing the newest superblock with the encoder above. `fillMirrorSlots`: data lands on blocks 128, 129.
 */
async function formatOnePool(fillMirrorSlots: boolean): Promise<{ device: SimDevice; sb: Superblock }> {
  const built = new SimDevice(poolBlocks, new Prng(5));
  const engine = await createPool(built, { commitIntervalMs: 0 });
  await engine.core.mutate(async () => {
    for (const b of SUPERBLOCK_MIRROR_SLOTS) await engine.core.space.decref(b);
    // Format 1 had no intent log either: its region goes back to the allocator too.
    await engine.core.space.addRange(engine.core.sb.logStartBlock, engine.core.sb.logBlocks, -1);
    engine.core.sb = { ...engine.core.sb, formatVersion: 1, firstMirroredGeneration: 0, logStartBlock: 0, logBlocks: 0, logTailSeq: 0 };
    engine.core.intentLog = null;
  });
  await engine.checkpoint();
  await engine.createVolume('old', 4 * MiB);
  // In pieces below WHOLE_RUN_WANTED_BLOCKS_MIN: a larger write takes one whole free run, which would
  // pass over the two freed slots between the metadata blocks instead of filling them.
  const data = pattern(7, (fillMirrorSlots ? 200 : 8) * B);
  for (let at = 0; at < data.length; at += 50 * B) await engine.write(engine.resolve('old').id, at, data.subarray(at, at + 50 * B));
  await engine.checkpoint();
  const sb = engine.core.sb;
  if (fillMirrorSlots) for (const b of SUPERBLOCK_MIRROR_SLOTS) assert.notEqual(await engine.core.space.get(b), 0, `data on block ${b}`);
  await engine.close();
  const device = after(built);
  // Format 1 had no mirrors: where free, those blocks hold whatever was there (here: junk).
  if (!fillMirrorSlots) for (const b of SUPERBLOCK_MIRROR_SLOTS) await device.write(b, Buffer.alloc(B, 0x5a));
  assert.deepEqual(device.peek(primaryOf(sb.generation)), encodeV1(sb), 'the engine writes format 1 byte for byte as before');
  await device.write(primaryOf(sb.generation), encodeV1(sb));
  await device.flush();
  return { device, sb };
}

test('a format-1 pool whose mirror slots are in use opens, keeps its data, stays format 1 (logged, a check note)', async () => {
  const { device, sb } = await formatOnePool(true);
  const report = await checkPool(device);
  assert.deepEqual(report.problems, []);
  assert.ok(report.notes.some((n) => /format 1 pool.*stays unmirrored/.test(n)), JSON.stringify(report.notes));
  const { entries, log } = logger();
  const e2 = await openPool(device, { commitIntervalMs: 0, log });
  assert.ok(entries.some((e) => e.event === 'superblock_unmirrored_warning'));
  assert.deepEqual(await e2.read(e2.resolve('old').id, 0, 200 * B), pattern(7, 200 * B));
  await e2.write(e2.resolve('old').id, 0, pattern(8, B));
  await e2.checkpoint();
  assert.equal(e2.stats().generation, sb.generation + 1);
  await e2.close();
  assert.equal(decodeSuperblock(device.peek(primaryOf(sb.generation + 1)), primaryOf(sb.generation + 1)).state, 'valid');
  const e3 = await openPool(after(device), { commitIntervalMs: 0 });
  assert.deepEqual(await e3.read(e3.resolve('old').id, 0, B), pattern(8, B));
  assert.deepEqual(await e3.read(e3.resolve('old').id, B, 199 * B), pattern(7, 200 * B).subarray(B));
  assert.deepEqual((await e3.check()).problems, []);
  await e3.close();
});

test('a format-1 pool with free mirror slots is upgraded in place to format 3 (mirrored, with an intent log) on open', async () => {
  const { device, sb } = await formatOnePool(false);
  assert.ok((await checkPool(device)).notes.some((n) => /opening it upgrades it/.test(n)));
  const { entries, log } = logger();
  const e2 = await openPool(device, { commitIntervalMs: 0, log });
  assert.ok(entries.some((e) => e.event === 'pool_format_upgraded'));
  assert.deepEqual(await e2.read(e2.resolve('old').id, 0, 8 * B), pattern(7, 8 * B));
  const g = e2.stats().generation;
  assert.equal(g, sb.generation + 1, 'the upgrade is one commit');
  await e2.close();
  const upgraded = after(device);
  for (const block of [primaryOf(g), mirrorOf(g)]) {
    const copy = decodeSuperblock(upgraded.peek(block), block);
    assert.equal(copy.state, 'valid');
    assert.equal((copy as { sb: Superblock }).sb.formatVersion, 3);
    assert.ok((copy as { sb: Superblock }).sb.logBlocks > 0, 'the upgrade gave the pool an intent log');
  }
  const report = await checkPool(upgraded);
  assert.deepEqual(report.problems, []);
  assert.deepEqual(report.notes, []);
  // From now on one damaged copy costs nothing.
  await damage(upgraded, primaryOf(g));
  const e3 = await openPool(upgraded, { commitIntervalMs: 0 });
  assert.equal(e3.stats().generation, g);
  await e3.close();
});

test('superblock_lost is a typed engine error with a code the API knows', async () => {
  const err = new SuperblockLost(9, 8, 'x');
  assert.ok(err instanceof CairnError);
  assert.equal(err.errno, 'EIO');
  const { statusForCode } = await import('../src/api/problem.js');
  assert.equal(statusForCode('superblock_lost'), 500);
});
