// Small writes carried inline by the intent log (deferred-data.ts): a lone write followed by a flush
// makes one contiguous device write, durable alone (O_DSYNC), its data reaching its home block only at
// the next commit; a round that names data written home syncs the device as before; reads see held data; a power cut after the flush loses nothing; a torn inline page discards
// its flush; more held blocks than a round carries go home first; the memory bound drains; a held
// copy never shadows a later write of its block; a failed drain stops the next commit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { openPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { DeferredData } from '../src/engine/deferred-data.js';
import { CairnError } from '../src/engine/errors.js';
import { DEFERRED_DATA_BLOCKS_MAX, LOG_INLINE_BLOCKS_MAX } from '../src/engine/constants.js';
import { pattern, MiB, eventOptions, simPoolWithVolume, type Events } from './engine-helpers.js';

const B = 4096;
const poolBlocks = 16384; // 64 MiB: a log of 256 blocks

const options = eventOptions;

function newPool(seed = 1): Promise<{ device: SimDevice; engine: CairnEngine; id: number }> {
  return simPoolWithVolume(poolBlocks, 32 * MiB, seed);
}

function inLog(engine: CairnEngine, block: number): boolean {
  const { logStartBlock, logBlocks } = engine.core.sb;
  return block >= logStartBlock && block < logStartBlock + logBlocks;
}

async function homeOf(engine: CairnEngine, id: number, lba: number): Promise<number> {
  const vol = engine.core.catalog.byId.get(id)!;
  const [e] = await engine.core.trees.lookup(vol.root, lba, lba + 1);
  assert.ok(e, `lba ${lba} is mapped`);
  return e.pba + (lba - e.lba);
}

test('a lone write and its flush: one contiguous durable write (O_DSYNC), no device sync; home only at the commit', async () => {
  const { device, engine, id } = await newPool();
  await engine.write(id, 0, pattern(1, B));
  await engine.flush();
  const data = pattern(2, 2 * B);
  const writes: Array<{ block: number; blocks: number; durable: boolean }> = [];
  let syncs = 0;
  const write = device.write.bind(device), flush = device.flush.bind(device), writeDurable = device.writeDurable.bind(device);
  device.write = (b, buf) => { writes.push({ block: b, blocks: buf.length / B, durable: false }); return write(b, buf); };
  device.writeDurable = (b, buf) => { writes.push({ block: b, blocks: buf.length / B, durable: true }); return writeDurable(b, buf); };
  device.flush = () => { syncs++; return flush(); };
  await engine.write(id, 5 * B, data);
  assert.equal(writes.length, 0, 'the write itself touches no device');
  assert.deepEqual(await engine.read(id, 5 * B, 2 * B), data, 'reads see held data');
  await engine.flush();
  device.write = write; device.flush = flush; device.writeDurable = writeDurable;
  assert.equal(syncs, 0, 'no sync of the whole device');
  assert.equal(writes.length, 1, `one write: ${JSON.stringify(writes)}`);
  assert.ok(inLog(engine, writes[0]!.block) && writes[0]!.blocks === 3 && writes[0]!.durable, 'the log block and two inline pages, durable alone');
  const home = await homeOf(engine, id, 5);
  assert.ok(!device.peek(home).equals(data.subarray(0, B)), 'not yet at home');
  assert.equal(engine.core.device.heldBlocks, 3, 'both writes held until a commit');
  assert.deepEqual(engine.stats().flushes, { logRounds: 2, eagerRounds: 0, committed: 0, inlineBlocks: 3, heldBlocks: 3 });
  // The power cut right after the flush: the log brings the data home.
  const events: Events = [];
  const e2 = await openPool(device.crash('clean'), options(events));
  const replayed = events.find((e) => e.event === 'log_replayed');
  assert.equal(replayed?.fields.inlinePages, 3, JSON.stringify(events.filter((e) => e.event.startsWith('log_'))));
  assert.deepEqual(await e2.read(id, 5 * B, 2 * B), data);
  assert.deepEqual(await e2.read(id, 0, B), pattern(1, B));
  assert.deepEqual((await e2.check()).problems, []);
  assert.ok(e2.core.device.inner instanceof SimDevice && (e2.core.device.inner as SimDevice).peek(home).equals(data.subarray(0, B)), 'at home after the replay');
  await e2.close();
  // On the running pool, the commit drains it home.
  await engine.core.commit();
  assert.equal(engine.stats().flushes?.heldBlocks, 0);
  assert.ok(device.peekDurable(home).equals(data.subarray(0, B)), 'home and durable after the commit');
  assert.deepEqual(await engine.read(id, 5 * B, 2 * B), data);
  await engine.close();
});

test('a torn inline page discards its flush; one flipped bit in it applies the flush and reads checksum_error', async () => {
  for (const bits of [2, 1]) {
    const { device, engine, id } = await newPool(3);
    await engine.write(id, 0, pattern(10, B));
    await engine.flush();
    await engine.write(id, B, pattern(11, B));
    await engine.flush();
    const image = device.crash('clean');
    const [page] = image.findBlocks(pattern(11, B));
    assert.ok(page !== undefined && inLog(engine, page));
    for (let k = 0; k < bits; k++) image.injectBitFlip(page, 1000 + 77 * k);
    const events: Events = [];
    const e2 = await openPool(image.crash('clean'), options(events));
    assert.deepEqual(await e2.read(id, 0, B), pattern(10, B), 'the flush before');
    if (bits === 2) {
      assert.ok(events.some((e) => e.event === 'log_flush_discarded'), 'two bits: a tear, never acknowledged');
      assert.deepEqual(await e2.read(id, B, B), Buffer.alloc(B));
      assert.deepEqual((await e2.check()).problems, []);
    } else {
      assert.ok(events.some((e) => e.event === 'log_data_damaged'), 'one bit: written whole, then damaged');
      const bad = await e2.read(id, B, B).then(() => null, (err: unknown) => err);
      assert.ok(bad && (bad as { code?: string }).code === 'checksum_error', String(bad));
    }
    await e2.close();
    await engine.close();
  }
});

test('more held blocks than a round carries go home before its sync; every flushed write survives', async () => {
  const { device, engine, id } = await newPool(4);
  const n = LOG_INLINE_BLOCKS_MAX + 8;
  for (let i = 0; i < n; i++) await engine.write(id, i * 3 * B, pattern(100 + i, B));
  assert.equal(engine.core.device.heldBlocks, n);
  await engine.flush();
  assert.equal(engine.core.device.heldBlocks, 0, 'drained');
  const e2 = await openPool(device.crash('clean'), options());
  for (let i = 0; i < n; i++) assert.deepEqual(await e2.read(id, i * 3 * B, B), pattern(100 + i, B), `write ${i}`);
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
  await engine.close();
});

test('held blocks past the memory bound drain home without a flush; overwrites and reads stay right', async () => {
  const { device, engine, id } = await newPool(5);
  const n = DEFERRED_DATA_BLOCKS_MAX + 50;
  for (let i = 0; i < n; i++) {
    await engine.write(id, (i % 3000) * B, pattern(i, B));
    assert.ok(engine.core.device.heldBlocks <= DEFERRED_DATA_BLOCKS_MAX + 1, 'bounded');
  }
  for (let i = n - 100; i < n; i++) assert.deepEqual(await engine.read(id, (i % 3000) * B, B), pattern(i, B));
  await engine.flush();
  const e2 = await openPool(device.crash('some'), options());
  for (let i = 0; i < n; i += 37) assert.deepEqual(await e2.read(id, (i % 3000) * B, B), pattern(i, B), `write ${i}`);
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
  await engine.close();
});

test('DeferredData: a write drops a held copy of its block; a failed drain fails the next flush, and holds after it', async () => {
  const sim = new SimDevice(64, new Prng(9));
  const d = new DeferredData(sim);
  await d.hold(10, [pattern(1, 2 * B)]);
  const out = Buffer.alloc(3 * B);
  await d.read(9, out);
  assert.deepEqual(out.subarray(B), pattern(1, 2 * B), 'held blocks read over the device');
  await d.write(11, pattern(2, B));
  assert.equal(d.heldBlocks, 1, 'the write dropped the held copy of block 11');
  await d.read(10, out.subarray(0, 2 * B));
  assert.deepEqual(out.subarray(0, B), pattern(1, 2 * B).subarray(0, B));
  assert.deepEqual(out.subarray(B, 2 * B), pattern(2, B), 'the later write wins');
  // A drain under way, and a write of one of its later blocks: the drain never writes over it.
  for (let b = 30; b <= 50; b += 2) await d.hold(b, [pattern(b, B)]);
  const draining = d.drainAll();
  await d.write(48, pattern(99, B));
  await draining;
  assert.deepEqual(sim.peek(48), pattern(99, B), 'the write stands');
  assert.deepEqual(sim.peek(30), pattern(30, B), 'the rest went home');
  assert.equal(d.heldBlocks, 0, 'block 10 went too');
  await d.hold(12, [pattern(4, B)]);
  sim.failNextWrites(1);
  const failed = await d.flush().then(() => null, (err: unknown) => err);
  assert.ok(failed instanceof Error, 'the drain\'s failure reaches the flush');
  assert.equal(d.heldBlocks, 1, 'the data is still held');
  await assert.rejects(d.hold(20, [pattern(3, B)]));
  await assert.rejects(d.syncKeepingHeld());
  await d.close();
});

test('a round that names data written home syncs the device: the durable write alone would not cover it', async () => {
  const { device, engine, id } = await newPool(6);
  let syncs = 0, durable = 0;
  const flush = device.flush.bind(device), writeDurable = device.writeDurable.bind(device);
  device.flush = () => { syncs++; return flush(); };
  device.writeDurable = (b, buf) => { durable++; return writeDurable(b, buf); };
  await engine.write(id, 0, pattern(20, 12 * B)); // over the held bound: written home at once
  await engine.flush();
  assert.equal(syncs, 1, 'the device synced');
  assert.equal(durable, 0);
  await engine.write(id, 40 * B, pattern(21, B)); // held
  await engine.flush();
  assert.equal(syncs, 1, 'a round of held data only: no device sync');
  assert.equal(durable, 1);
  device.flush = flush; device.writeDurable = writeDurable;
  const e2 = await openPool(device.crash('clean'), options());
  assert.deepEqual(await e2.read(id, 0, 12 * B), pattern(20, 12 * B));
  assert.deepEqual(await e2.read(id, 40 * B, B), pattern(21, B));
  await e2.close();
  await engine.close();
});

test('SimDevice.writeDurable: durable alone; an older unflushed write of its block never comes back over it', async () => {
  for (let seed = 1; seed <= 20; seed++) {
    const sim = new SimDevice(32, new Prng(seed));
    await sim.write(5, pattern(1, 2 * B)); // blocks 5 and 6, unflushed
    await sim.writeDurable(5, pattern(2, B));
    await sim.write(9, pattern(3, B));
    const clean = sim.crash('clean');
    assert.deepEqual(clean.peek(5), pattern(2, B), 'durable');
    assert.deepEqual(clean.peek(6), Buffer.alloc(B), 'the older write\'s other block stays unflushed');
    assert.deepEqual(clean.peek(9), Buffer.alloc(B));
    for (const mode of ['some', 'torn'] as const) {
      const img = sim.crash(mode);
      assert.deepEqual(img.peek(5).subarray(0, 512), pattern(2, B).subarray(0, 512), `seed ${seed} ${mode}: never the older content`);
    }
    assert.deepEqual(sim.peek(5), pattern(2, B));
  }
});

test('an inline page of an older flush damaged since: the pool opens, the later flushes apply, that block reads checksum_error', async () => {
  const { device, engine, id } = await newPool(7);
  await engine.write(id, 0, pattern(30, B));
  await engine.flush();
  await engine.write(id, B, pattern(31, B));
  await engine.flush();
  const home = await homeOf(engine, id, 0);
  const image = device.crash('clean');
  const [page] = image.findBlocks(pattern(30, B));
  assert.ok(page !== undefined && inLog(engine, page));
  for (const bit of [10, 9000, 20000]) image.injectBitFlip(page, bit); // more than one bit: no tear either
  const events: Events = [];
  const e2 = await openPool(image.crash('clean'), options(events));
  assert.deepEqual(events.find((e) => e.event === 'log_data_damaged')?.fields.physicalBlocks, [home]);
  assert.ok(!events.some((e) => e.event === 'log_flush_discarded'));
  assert.deepEqual(await e2.read(id, B, B), pattern(31, B), 'the newest flush applied');
  const bad = await e2.read(id, 0, B).then(() => null, (err: unknown) => err);
  assert.ok(bad && (bad as { code?: string }).code === 'checksum_error', String(bad));
  await e2.close();
  await engine.close();
});

test('a round that may not fit while a commit runs waits for that commit to retire the log; no second commit, nothing lost', async () => {
  const { device, engine, id } = await newPool(11);
  const { logBlocks } = engine.core.sb;
  // The commit the fill starts is held at its sync; rounds go on (durable writes need no sync).
  let release!: () => void;
  const gate = new Promise<void>((resolve) => { release = resolve; });
  const flush = device.flush.bind(device);
  let gated = 0;
  // Only the first sync waits (the commit's); the rounds' own syncs go through (a round can name a
  // block that commit drained home).
  device.flush = async () => { if (gated++ === 0) await gate; return flush(); };
  const generation = engine.core.sb.generation;
  const written: number[] = [];
  let blocked: Promise<void> | null = null;
  for (let i = 0; i < logBlocks && blocked === null; i++) {
    const lba = (i * 7) % 8192;
    await engine.write(id, lba * B, pattern(100 + i, B));
    written.push(lba);
    const flushed = engine.flush();
    const settled = await Promise.race([flushed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20))]);
    if (!settled) blocked = flushed;
  }
  assert.ok(blocked !== null, 'a flush waits once the log has no room');
  assert.ok(gated >= 1 && engine.core.intentLog!.blocksInUse > logBlocks / 2, 'the commit under way is at its sync; the log is past half full');
  assert.equal(engine.stats().flushes?.committed, 0, 'no flush committed instead of logging');
  release();
  await blocked;
  device.flush = flush;
  assert.equal(engine.core.sb.generation, generation + 1, 'one commit, not one more right after it');
  assert.ok(engine.core.intentLog!.blocksInUse < logBlocks / 2, 'the commit retired the log');
  const e2 = await openPool(device.crash('clean'), options());
  const last = new Map<number, number>();
  written.forEach((lba, i) => last.set(lba, i));
  for (const [lba, i] of last) assert.deepEqual(await e2.read(id, lba * B, B), pattern(100 + i, B), `lba ${lba}`);
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
  await engine.close();
});

test('a volume\'s lone small write is held while another volume\'s writes batch; a second write of its own is not', async () => {
  const { device, engine, id: flood } = await newPool(11);
  await engine.createVolume('light', 4 * MiB);
  const light = engine.resolve('light').id;
  // The flood: 64 KiB writes (never held), several under way, so the block writer is batching.
  const floodWrites = Array.from({ length: 6 }, (_, i) => engine.write(flood, i * 16 * B, pattern(20 + i, 16 * B)));
  const lone = pattern(40, B);
  await engine.write(light, 3 * B, lone);
  assert.equal(engine.core.device.heldBlocks, 1, 'the light volume\'s write was held, not queued behind the flood\'s');
  // Two writes of the light volume at once: the second has company in its own volume and batches.
  await Promise.all([engine.write(light, 8 * B, pattern(41, B)), engine.write(light, 9 * B, pattern(42, B)), ...floodWrites]);
  assert.equal(engine.core.device.heldBlocks, 2, 'one of the two concurrent writes held, the other written');
  await engine.flush();
  const events: Events = [];
  const e2 = await openPool(device.crash('clean'), options(events));
  assert.deepEqual(await e2.read(light, 3 * B, B), lone, 'the held write survives a power cut after the flush');
  assert.deepEqual(await e2.read(light, 8 * B, 2 * B), Buffer.concat([pattern(41, B), pattern(42, B)]));
  for (let i = 0; i < 6; i++) assert.deepEqual(await e2.read(flood, i * 16 * B, 16 * B), pattern(20 + i, 16 * B));
  assert.deepEqual((await e2.check()).problems, []);
  await e2.close();
  await engine.close();
});

test('a flush waiting on a commit that fails gets the engine\'s io_error, never the device\'s own error', async () => {
  const { device, engine, id } = await newPool(12);
  await engine.write(id, 0, pattern(1, B)); // logged, not yet flushed: the commit below takes its record
  // Every device sync waits at the gate, then fails with a plain Error, as a file system's EIO does.
  let failSyncs!: (err: Error) => void;
  const gate = new Promise<void>((_, reject) => { failSyncs = reject; });
  gate.catch(() => undefined);
  let syncs = 0;
  device.flush = () => { syncs++; return gate; };
  const commit = engine.core.commit();
  commit.catch(() => undefined);
  while (syncs === 0) await new Promise((resolve) => setImmediate(resolve));
  const flushed = engine.flush(); // its record is in the commit under way: it waits for that commit
  failSyncs(new Error('simulated EIO'));
  const typed = (e: unknown): boolean => e instanceof CairnError && e.code === 'io_error' && /simulated EIO/.test(e.message);
  await assert.rejects(commit, typed);
  await assert.rejects(flushed, typed);
  await assert.rejects(engine.flush(), typed, 'the stopped pool names the cause');
  await engine.close().catch(() => undefined);
});
