// The intent log through the engine's interface: a flush is one device sync and no commit; a power cut
// after an acknowledged flush (or FUA write) loses nothing, whatever the commit had not yet written; a
// torn or never-synced newest flush is discarded whole; damage before a later flush refuses the pool
// unless rewound; the log's bounds (full region, overflowing records) fall back to a commit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { CairnError } from '../src/engine/index.js';
import { LOG_ROUND_BLOCKS_MAX, SUPERBLOCK_SLOTS, SUPERBLOCK_MIRROR_SLOTS, logBlocksFor } from '../src/engine/constants.js';
import { pattern, MiB, eventOptions, simPoolWithVolume, type Events } from './engine-helpers.js';

const B = 4096;
const poolBlocks = 8192; // 32 MiB: a log of 128 blocks

const options = eventOptions;

function newPool(seed = 1): Promise<{ device: SimDevice; engine: CairnEngine; id: number }> {
  return simPoolWithVolume(poolBlocks, 8 * MiB, seed);
}

/**
 * Device calls made while `fn` runs; a durable write (O_DSYNC: a round carrying all its data inline)
 * counts as a write and a sync.
 */
async function callsDuring(device: SimDevice, fn: () => Promise<unknown>): Promise<{ writes: number[]; flushes: number }> {
  const writes: number[] = [];
  let flushes = 0;
  const write = device.write.bind(device), flush = device.flush.bind(device), writeDurable = device.writeDurable.bind(device);
  device.write = (b, data) => { writes.push(b); return write(b, data); };
  device.writeDurable = (b, data) => { writes.push(b); flushes++; return writeDurable(b, data); };
  device.flush = () => { flushes++; return flush(); };
  try { await fn(); } finally { device.write = write; device.flush = flush; device.writeDurable = writeDurable; }
  return { writes, flushes };
}

test('a flush is one device sync and writes only log blocks: no metadata, no superblock', async () => {
  const { device, engine, id } = await newPool();
  const { logStartBlock, logBlocks } = engine.core.sb;
  assert.equal(logBlocks, logBlocksFor(poolBlocks));
  const generation = engine.stats().generation;
  for (let i = 0; i < 32; i++) await engine.write(id, i * 7 * B, pattern(i, B));
  const calls = await callsDuring(device, () => engine.flush());
  assert.equal(calls.flushes, 1, 'one device sync');
  assert.ok(calls.writes.length >= 1 && calls.writes.every((b) => b >= logStartBlock && b < logStartBlock + logBlocks), `writes ${calls.writes.join(',')}`);
  for (const b of [...SUPERBLOCK_SLOTS, ...SUPERBLOCK_MIRROR_SLOTS]) assert.ok(!calls.writes.includes(b));
  assert.equal(engine.stats().generation, generation, 'no commit');
  // Concurrent flushes share rounds: 16 flushes, far fewer syncs.
  const many = await callsDuring(device, async () => {
    await Promise.all(Array.from({ length: 16 }, (_, i) => engine.write(id, (200 + i) * B, pattern(100 + i, B)).then(() => engine.flush())));
  });
  assert.ok(many.flushes <= 3, `${many.flushes} syncs for 16 concurrent flushes`);
  // Nothing written since: a flush does nothing at all.
  assert.deepEqual(await callsDuring(device, () => engine.flush()), { writes: [], flushes: 0 });
  await engine.close();
});

test('a power cut after acknowledged flushes and a FUA write loses none of them: open replays the log', async () => {
  for (const mode of ['clean', 'some', 'torn'] as const) {
    const { device, engine, id } = await newPool(3);
    await engine.write(id, 0, pattern(1, 64 * B));
    await engine.checkpoint();
    await engine.write(id, 8 * B, pattern(2, 8 * B));
    await engine.trim(id, 32 * B, 4 * B);
    await engine.flush();
    await engine.write(id, 100 * B, pattern(3, 3 * B), { fua: true });
    await engine.write(id, 200 * B, pattern(4, B)); // never flushed: may be lost, or not
    const image = device.crash(mode);
    const events: Events = [];
    const e2 = await openPool(image, options(events));
    const replayed = events.find((e) => e.event === 'log_replayed');
    assert.ok(replayed, `${mode}: the replay is logged`);
    assert.ok(Number(replayed.fields.records) >= 3, `${mode}: records ${String(replayed.fields.records)}`);
    const expect = Buffer.from(pattern(1, 64 * B));
    pattern(2, 8 * B).copy(expect, 8 * B);
    expect.fill(0, 32 * B, 36 * B);
    assert.deepEqual(await e2.read(id, 0, 64 * B), expect, `${mode}: flushed writes and trim`);
    assert.deepEqual(await e2.read(id, 100 * B, 3 * B), pattern(3, 3 * B), `${mode}: FUA write`);
    const last = await e2.read(id, 200 * B, B);
    assert.ok(last.equals(pattern(4, B)) || last.equals(Buffer.alloc(B)), `${mode}: an unflushed write is old or new`);
    // The replay was committed: a second power cut with nothing written opens without replaying.
    const events2: Events = [];
    const e3 = await openPool((image as SimDevice).crash('clean'), options(events2));
    assert.ok(!events2.some((e) => e.event === 'log_replayed'), `${mode}: nothing replayed twice`);
    assert.deepEqual(await e3.read(id, 0, 64 * B), expect);
    assert.deepEqual((await e3.check()).problems, []);
    await e3.close();
  }
});

test('a snapshot taken after a flushed write contains it, and writes flushed after it do not leak into it', async () => {
  const { device, engine, id } = await newPool(4);
  await engine.write(id, 0, pattern(10, 4 * B));
  await engine.flush();
  await engine.createSnapshots(['v@s']);
  await engine.write(id, 0, pattern(11, 4 * B));
  await engine.flush();
  const e2 = await openPool(device.crash('some'), options());
  assert.deepEqual(await e2.read(e2.resolve('v@s').id, 0, 4 * B), pattern(10, 4 * B));
  assert.deepEqual(await e2.read(id, 0, 4 * B), pattern(11, 4 * B));
  await e2.close();
});

test('a power cut at every device call of a flush: the pool opens, the flush is all there or not at all', async () => {
  let cases = 0;
  for (const mode of ['clean', 'some', 'torn'] as const) {
    for (let k = 0; ; k++) {
      const { device, engine, id } = await newPool(20 + k);
      await engine.write(id, 0, pattern(20, 16 * B));
      await engine.flush();
      // Enough records for several log blocks: 300 scattered one-block writes.
      for (let i = 0; i < 300; i++) await engine.write(id, (64 + 3 * i) * B, pattern(1000 + i, B));
      device.armCrash(k, mode);
      await engine.flush();
      const image = device.takeArmedImage();
      await engine.close();
      if (image === null) break;
      cases++;
      const e2 = await openPool(image, options());
      assert.deepEqual(await e2.read(id, 0, 16 * B), pattern(20, 16 * B), `${mode} cut ${k}: the earlier flush`);
      // The interrupted flush was never acknowledged: all of its writes, or none (one round, one record set).
      let present = 0;
      for (let i = 0; i < 300; i++) if ((await e2.read(id, (64 + 3 * i) * B, B)).equals(pattern(1000 + i, B))) present++;
      assert.ok(present === 0 || present === 300, `${mode} cut ${k}: ${present} of 300 writes of a torn flush`);
      assert.deepEqual((await e2.check()).problems, [], `${mode} cut ${k}`);
      await e2.close();
    }
  }
  assert.ok(cases >= 6, `${cases} cases`);
});

test('a newest flush whose data never became durable is discarded whole, the earlier ones kept', async () => {
  const { device, engine, id } = await newPool(5);
  await engine.write(id, 0, pattern(30, 2 * B));
  await engine.flush();
  await engine.write(id, 10 * B, pattern(31, 2 * B));
  await engine.write(id, 0, pattern(32, B));
  await engine.flush();
  const image = device.crash('clean');
  // The newest flush's data block as if its write never reached the disk before the log block did.
  const [pba] = image.findBlocks(pattern(31, 2 * B).subarray(0, B));
  assert.ok(pba !== undefined);
  await image.write(pba, Buffer.alloc(B, 0x77));
  await image.flush();
  const events: Events = [];
  const e2 = await openPool(image.crash('clean'), options(events));
  assert.ok(events.some((e) => e.event === 'log_flush_discarded' && /never became durable/.test(String(e.fields.reason))));
  assert.deepEqual(await e2.read(id, 0, 2 * B), pattern(30, 2 * B), 'the earlier flush, not a half of the discarded one');
  assert.deepEqual(await e2.read(id, 10 * B, 2 * B), Buffer.alloc(2 * B));
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
});

// Seeds 1844624919 and 26 (--no-fast-paths) of the simulator: a bit flipped in a data block of the
// newest flush after it was acknowledged made replay take the flush for a torn one and drop it whole,
// so every write of it silently read old data. One bit off its checksum proves the block was written.
test('a flipped bit in a data block of the acknowledged newest flush: the flush applies, that block reads checksum_error', async () => {
  // 3 blocks: a lone small write, held and carried inline by its flush; 12 blocks: written home first.
  for (const blocks of [3, 12]) {
    const { device, engine, id } = await newPool(7);
    await engine.write(id, 0, pattern(50, 2 * B));
    await engine.flush();
    const data = pattern(51, blocks * B);
    await engine.write(id, 10 * B, data);
    await engine.flush();
    const vol = engine.core.catalog.byId.get(id)!;
    const home = (await engine.core.trees.lookup(vol.root, 11, 12))[0]!.pba;
    const image = device.crash('clean');
    const found = image.findBlocks(data.subarray(B, 2 * B));
    assert.equal(found.length, 1, `${blocks} blocks: one copy of the block is durable`);
    const inLog = found[0]! >= engine.core.sb.logStartBlock && found[0]! < engine.core.sb.logStartBlock + engine.core.sb.logBlocks;
    assert.equal(inLog, blocks === 3, `${blocks} blocks: the copy is ${inLog ? 'in the log' : 'at home'}`);
    image.injectBitFlip(found[0]!, 12345);
    const events: Events = [];
    const e2 = await openPool(image.crash('clean'), options(events));
    assert.ok(!events.some((e) => e.event === 'log_flush_discarded'), JSON.stringify(events.filter((e) => e.event.startsWith('log_'))));
    const damaged = events.find((e) => e.event === 'log_data_damaged');
    assert.deepEqual(damaged?.fields.physicalBlocks, [home]);
    assert.deepEqual(await e2.read(id, 0, 2 * B), pattern(50, 2 * B));
    assert.deepEqual(await e2.read(id, 10 * B, B), data.subarray(0, B), 'the rest of the newest flush is there');
    assert.deepEqual(await e2.read(id, 12 * B, (blocks - 2) * B), data.subarray(2 * B));
    const bad = await e2.read(id, 11 * B, B).then(() => null, (err: unknown) => err);
    assert.ok(bad instanceof CairnError && bad.code === 'checksum_error', `the damaged block: ${String(bad)}`);
    assert.deepEqual((await e2.check()).problems.map((p) => p.physicalBlock), [home], 'check names the damaged block only');
    await e2.close();
  }
});

test('a flipped bit in the newest flush\'s log block (content or checksum field) refuses the pool; rewind discards that flush', async () => {
  for (const bitIndex of [100, 4 * 8 + 5, 2000 * 8]) {
    const { device, engine, id } = await newPool(8);
    await engine.write(id, 0, pattern(60, B));
    await engine.flush();
    await engine.write(id, B, pattern(61, B));
    await engine.flush();
    const image = device.crash('clean');
    // Each flush is a log block and its write's data inline after it: the second flush's block is 2.
    image.injectBitFlip(engine.core.sb.logStartBlock + 2, bitIndex);
    const refused = await openPool(image.crash('clean'), options()).then(() => null, (err: unknown) => err);
    assert.ok(refused instanceof CairnError && refused.code === 'log_damaged', `bit ${bitIndex}: ${String(refused)}`);
    assert.match(refused.message, /flipped bit/);
    const events: Events = [];
    const e2 = await openPool(image.crash('clean'), { ...options(events), rewind: true });
    assert.ok(events.some((e) => e.event === 'log_rewind'));
    assert.deepEqual(await e2.read(id, 0, B), pattern(60, B), 'the flush before the damage');
    assert.deepEqual(await e2.read(id, B, B), Buffer.alloc(B), 'the damaged flush: discarded');
    assert.deepEqual((await e2.check()).problems, []);
    await e2.close();
  }
});

test('damage to a log block before a later whole flush refuses the pool (log_damaged); rewind replays up to it', async () => {
  const { device, engine, id } = await newPool(6);
  await engine.write(id, 0, pattern(40, B));
  await engine.flush();
  await engine.write(id, B, pattern(41, B));
  await engine.flush();
  await engine.write(id, 2 * B, pattern(42, B));
  await engine.flush();
  const image = device.crash('clean');
  // The log restarted at its tail 0: each flush is a log block and its inline page, at 0, 2 and 4.
  const second = engine.core.sb.logStartBlock + 2;
  image.injectBitFlip(second, 100);
  await engine.close();
  const refused = await openPool(image.crash('clean'), options()).then(() => null, (err: unknown) => err);
  assert.ok(refused instanceof CairnError && refused.code === 'log_damaged', String(refused));
  assert.match(refused.message, /--rewind/);
  const events: Events = [];
  const e2 = await openPool(image.crash('clean'), { ...options(events), rewind: true });
  assert.ok(events.some((e) => e.event === 'log_rewind'));
  assert.deepEqual(await e2.read(id, 0, B), pattern(40, B), 'the flush before the damage');
  assert.deepEqual(await e2.read(id, B, 2 * B), Buffer.alloc(2 * B), 'from the damage on: discarded');
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
});

test('bounds: a full region and records past a round\'s bound make the flush commit instead', async () => {
  const { device, engine, id } = await newPool(7);
  const log = engine.core.intentLog!;
  const region = engine.core.sb.logBlocks;
  // One log block per flush: past half the region a commit starts in the background and retires it.
  for (let i = 0; i < region * 2; i++) {
    await engine.write(id, (i % 1024) * B, pattern(50 + i, B));
    await engine.flush();
    assert.ok(log.blocksInUse <= region, 'the log never holds more than its region');
  }
  assert.ok(engine.stats().generation > 4, 'commits retired the log as it filled');
  // More records than one round may write: the flush commits.
  const before = log.roundsCommitted;
  // Zeroes over a hole: each write is a record (a switch to a hole) that dirties one leaf and frees
  // nothing, so no dirty or free bound commits first. A block holds ~110 such records.
  const perBlock = 110;
  const zero = Buffer.alloc(B);
  for (let i = 0; i < (LOG_ROUND_BLOCKS_MAX + 4) * perBlock; i++) await engine.write(id, (1500 + (i % 8)) * B, zero);
  const generation = engine.stats().generation;
  await engine.flush();
  assert.ok(log.roundsCommitted > before && engine.stats().generation > generation, 'the overflowing flush committed');
  const e2 = await openPool(device.crash('some'), options());
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
  await engine.close();
});

test('a format-2 pool is given an intent log on open (one commit), and its check stays clean', async () => {
  const { device, engine, id } = await newPool(8);
  await engine.write(id, 0, pattern(60, 4 * B));
  // Back to format 2: the region is handed back and the superblock names none.
  await engine.core.mutate(async () => {
    await engine.core.space.addRange(engine.core.sb.logStartBlock, engine.core.sb.logBlocks, -1);
    engine.core.sb = { ...engine.core.sb, formatVersion: 2, logStartBlock: 0, logBlocks: 0, logTailSeq: 0 };
    engine.core.intentLog = null;
  });
  await engine.checkpoint();
  await engine.close();
  const formatTwo = device.crash('clean');
  assert.deepEqual((await checkPool(formatTwo)).problems, []);
  const events: Events = [];
  const e2 = await openPool(formatTwo, options(events));
  const upgraded = events.find((e) => e.event === 'pool_format_upgraded');
  assert.deepEqual(upgraded?.fields.from, 2);
  assert.deepEqual(upgraded?.fields.to, 3);
  assert.ok(e2.core.intentLog !== null && e2.core.sb.logBlocks > 0);
  await e2.write(id, 8 * B, pattern(61, B));
  await e2.flush();
  const e3 = await openPool(formatTwo.crash('clean'), options());
  assert.deepEqual(await e3.read(id, 0, 4 * B), pattern(60, 4 * B));
  assert.deepEqual(await e3.read(id, 8 * B, B), pattern(61, B));
  assert.deepEqual((await e3.check()).problems, []);
  await e3.close();
});

test('racing writes, flushes and commits on a device that completes out of order: every flushed write survives a power cut', async () => {
  for (let seed = 1; seed <= 12; seed++) {
    const prng = new Prng(900 + seed);
    const device = new SimDevice(poolBlocks, new Prng(seed));
    device.jitterTicksMax = 6;
    const engine = await createPool(device, options());
    await engine.createVolume('v', 8 * MiB);
    const id = engine.resolve('v').id;
    const slots = 48;
    // Per block: the values written in order, and how many of them a resolved flush covers.
    const history: Buffer[][] = Array.from({ length: slots }, () => []);
    const durable = new Array<number>(slots).fill(0);
    let tag = 0;
    const ops: Promise<void>[] = [];
    const busy = new Set<number>();
    for (let step = 0; step < 400; step++) {
      const r = prng.float();
      if (r < 0.7) {
        // One write per block at a time: the order of overlapping concurrent writes is undefined.
        const b = prng.int(0, slots - 1);
        if (busy.has(b)) continue;
        busy.add(b);
        const data = pattern(seed * 100000 + ++tag, B);
        const fua = prng.float() < 0.1;
        ops.push(engine.write(id, b * 16 * B, data, { fua }).then(() => {
          busy.delete(b);
          history[b]!.push(data);
          if (fua) durable[b] = Math.max(durable[b]!, history[b]!.length);
        }));
      } else if (r < 0.93) {
        const covered = history.map((h) => h.length); // writes completed before the flush call
        ops.push(engine.flush().then(() => { covered.forEach((n, b) => { durable[b] = Math.max(durable[b]!, n); }); }));
      } else {
        ops.push(engine.checkpoint());
      }
      if (prng.float() < 0.3) await Promise.all(ops.splice(0));
    }
    await Promise.all(ops);
    const live: Buffer[] = [];
    for (let b = 0; b < slots; b++) live.push(await engine.read(id, b * 16 * B, B));
    const image = device.crash(prng.float() < 0.5 ? 'some' : 'torn');
    const e2 = await openPool(image, options());
    for (let b = 0; b < slots; b++) {
      const got = await e2.read(id, b * 16 * B, B);
      const allowed = history[b]!.slice(Math.max(0, durable[b]! - 1));
      const ok = allowed.some((v) => v.equals(got)) || (durable[b] === 0 && got.equals(Buffer.alloc(B)));
      const at = history[b]!.findIndex((v) => v.equals(got));
      const liveAt = history[b]!.findIndex((v) => v.equals(live[b]!));
      assert.equal(liveAt, history[b]!.length - 1, `seed ${seed} block ${b}: live holds write ${liveAt + 1}`);
      assert.ok(ok, `seed ${seed} block ${b}: not its last flushed write or a later one (${durable[b]} of ${history[b]!.length} flushed; holds write ${at + 1}${got.equals(Buffer.alloc(B)) ? ', zeroes' : ''})`);
    }
    assert.deepEqual((await e2.check()).problems, [], `seed ${seed}`);
    await e2.close();
    await engine.close();
  }
});

test('log blocks reused by a later round carry nothing of the earlier one past their records', async () => {
  const { device, engine, id } = await newPool(7);
  const { logStartBlock, logBlocks } = engine.core.sb;
  // A first round full of records (one per scattered write), then one of a single record.
  for (let i = 0; i < 60; i++) await engine.write(id, i * 9 * B, pattern(300 + i, B));
  await engine.flush();
  await engine.write(id, 1000 * B, pattern(400, B));
  const written: Buffer[] = [];
  const write = device.write.bind(device), writeDurable = device.writeDurable.bind(device);
  const keep = (b: number, data: Buffer): void => { if (b >= logStartBlock && b < logStartBlock + logBlocks) written.push(Buffer.from(data)); };
  device.write = (b, data) => { keep(b, data); return write(b, data); };
  device.writeDurable = (b, data) => { keep(b, data); return writeDurable(b, data); };
  try { await engine.flush(); } finally { device.write = write; device.writeDurable = writeDurable; }
  assert.ok(written.length >= 1, 'the second round wrote the log');
  const block = written[0]!.subarray(0, B);
  const used = block.readUInt32LE(48); // the header's bytes-used field (intent-log-format.ts)
  assert.ok(used > 64 && used < 400, `one record and the inline index in the block (${used} bytes used)`);
  assert.ok(block.subarray(used).every((b) => b === 0), 'zeros past the records, as in a new block');
  // And the pool replays both rounds after a power cut.
  const reopened = await openPool(device.crash('torn'), options());
  assert.deepEqual(await reopened.read(id, 1000 * B, B), pattern(400, B));
  assert.deepEqual(await reopened.read(id, 59 * 9 * B, B), pattern(359, B));
  await reopened.close();
});
