// Eager log rounds (intent-log.ts): a client that writes, then flushes, one request at a time gets
// each lone write's round started in the next check phase, before its flush arrives; the flush then
// writes nothing. A second write before a flush, plain writes, and batched flushes never start one; a
// round started early is as durable as any (a power cut before the flush keeps the write); one that
// fails stops the pool and the flush reports it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { CairnError } from '../src/engine/errors.js';
import { LOG_EAGER_STREAK_MIN } from '../src/engine/constants.js';
import { pattern, MiB, eventOptions, simPoolWithVolume } from './engine-helpers.js';

const B = 4096;

/** Lets the event loop run its check phase (where an eager round starts) and the round finish. */
async function turns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

function counts(engine: CairnEngine): { rounds: number; eager: number } {
  const f = engine.stats().flushes!;
  return { rounds: f.logRounds, eager: f.eagerRounds };
}

/** `n` lone writes, each followed (a turn later, as over a network) by its flush. */
async function loneWritesWithFlushes(engine: CairnEngine, id: number, n: number, firstLba: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await engine.write(id, (firstLba + i) * B, pattern(firstLba + i, B));
    await turns();
    await engine.flush();
  }
}

test('after a streak of lone write+flush pairs, each lone write starts its round before its flush; the flush adds none; a power cut before the flush keeps it', async () => {
  const { device, engine, id } = await simPoolWithVolume(16384, 32 * MiB, 41);
  await loneWritesWithFlushes(engine, id, LOG_EAGER_STREAK_MIN, 0);
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN, eager: 0 }, 'the streak is being built: every flush ran its own round');
  const lba = 100;
  await engine.write(id, lba * B, pattern(lba, B));
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN, eager: 0 }, 'nothing starts inside the write itself');
  await turns();
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN + 1, eager: 1 }, 'the round ran before any flush');
  // A power cut now, before the client's flush: the early round made the write durable.
  const crashed = await openPool(device.crash('clean'), eventOptions());
  assert.deepEqual(await crashed.read(id, lba * B, B), pattern(lba, B));
  assert.deepEqual((await crashed.check()).problems, []);
  await crashed.close();
  let deviceWrites = 0;
  const writeDurable = device.writeDurable.bind(device), write = device.write.bind(device);
  device.writeDurable = (b, buf) => { deviceWrites++; return writeDurable(b, buf); };
  device.write = (b, buf) => { deviceWrites++; return write(b, buf); };
  await engine.flush();
  assert.equal(deviceWrites, 0, 'the flush found its write durable');
  device.writeDurable = writeDurable; device.write = write;
  await loneWritesWithFlushes(engine, id, 5, 200);
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN + 6, eager: 6 }, 'one round per flush, each started early');
  for (const at of [0, LOG_EAGER_STREAK_MIN - 1, lba, 204]) assert.deepEqual(await engine.read(id, at * B, B), pattern(at, B));
  await engine.close();
});

test('a second write before a flush ends the streak; plain writes and batched flushes never start a round', async () => {
  const { engine, id } = await simPoolWithVolume(16384, 32 * MiB, 42);
  await loneWritesWithFlushes(engine, id, LOG_EAGER_STREAK_MIN, 0);
  await engine.write(id, 50 * B, pattern(50, B));
  await turns();
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN + 1, eager: 1 }, 'the streak predicted a flush');
  // No flush came: the next write breaks the streak, and neither it nor later plain writes start one.
  for (let i = 0; i < 20; i++) {
    await engine.write(id, (60 + i) * B, pattern(60 + i, B));
    await turns();
  }
  assert.deepEqual(counts(engine), { rounds: LOG_EAGER_STREAK_MIN + 1, eager: 1 }, 'plain writes wait for their flush');
  await engine.flush();
  // Flushes every two writes (a batch each): no streak forms.
  for (let i = 0; i < 2 * LOG_EAGER_STREAK_MIN; i++) {
    await engine.write(id, (100 + 2 * i) * B, pattern(100 + 2 * i, B));
    await turns();
    await engine.write(id, (101 + 2 * i) * B, pattern(101 + 2 * i, B));
    await turns();
    await engine.flush();
  }
  assert.equal(counts(engine).eager, 1, 'batched flushes never start an early round');
  // Lone pairs again: after a new streak, early rounds resume.
  await loneWritesWithFlushes(engine, id, LOG_EAGER_STREAK_MIN + 2, 300);
  assert.equal(counts(engine).eager, 3);
  for (const at of [50, 79, 100 + 4 * LOG_EAGER_STREAK_MIN - 1, 300 + LOG_EAGER_STREAK_MIN + 1]) {
    assert.deepEqual(await engine.read(id, at * B, B), pattern(at, B));
  }
  await engine.close();
});

test('an early round that fails stops the pool; the flush that follows gets io_error, and nothing goes unhandled', async () => {
  const { device, engine, id } = await simPoolWithVolume(16384, 32 * MiB, 43);
  await loneWritesWithFlushes(engine, id, LOG_EAGER_STREAK_MIN, 0);
  device.writeDurable = () => Promise.reject(new Error('simulated EIO'));
  device.write = () => Promise.reject(new Error('simulated EIO'));
  await engine.write(id, 70 * B, pattern(70, B));
  await turns();
  assert.equal(counts(engine).eager, 1);
  const typed = (e: unknown): boolean => e instanceof CairnError && e.code === 'io_error' && /simulated EIO/.test(e.message);
  await assert.rejects(engine.flush(), typed);
  await assert.rejects(engine.write(id, 71 * B, pattern(71, B)), typed, 'the stopped pool names the cause');
  await engine.close().catch(() => undefined);
});
