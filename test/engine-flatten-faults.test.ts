// A flatten that meets a damaged or unreadable block of its origin: the flatten fails with that block's
// error, the pool keeps running (the clone and the origin read and write), the steps done before it are
// kept and survive a reopen, and a later flatten resumes from its cursor and finishes once the block has
// been overwritten. Before, the error stopped the whole pool (simulator seed 24044).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SimDevice } from '../src/engine/device/sim-device.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { CairnError } from '../src/engine/index.js';
import { openPool, checkPool } from '../src/engine/pool.js';
import { FLATTEN_CHUNK_BLOCKS } from '../src/engine/constants.js';
import { pattern, MiB, eventOptions, simPoolWithVolume } from './engine-helpers.js';

const B = 4096;
const volumeBlocks = 1024; // four flatten steps of FLATTEN_CHUNK_BLOCKS
/** The block of the origin that goes bad: in the flatten's third step, so two steps are done before it. */
const badLba = 2 * FLATTEN_CHUNK_BLOCKS + 17;

interface Setup { device: SimDevice; engine: CairnEngine; origin: Buffer; cloneData: Buffer }

/** Volume `v` written in full, snapshot `v@s`, clone `c` of it sharing every block; all committed. */
async function cloneSharingAll(seed: number): Promise<Setup> {
  assert.ok(badLba < volumeBlocks && FLATTEN_CHUNK_BLOCKS * 4 === volumeBlocks, 'the bad block lies in a later step');
  const { device, engine, id } = await simPoolWithVolume(8192, volumeBlocks * B, seed);
  const origin = pattern(seed, volumeBlocks * B);
  await engine.write(id, 0, origin);
  await engine.createSnapshots(['v@s']);
  await engine.cloneVolume('c', 'v@s');
  await engine.checkpoint();
  return { device, engine, origin, cloneData: Buffer.from(origin) };
}

async function pbaOf(engine: CairnEngine, name: string, lba: number): Promise<number> {
  const rec = engine.core.catalog.byId.get(engine.resolve(name).id)!;
  const [e] = await engine.core.trees.lookup(rec.root, lba, lba + 1);
  assert.ok(e !== undefined, `${name} maps block ${lba}`);
  return e.pba + (lba - e.lba);
}

async function failureOf(p: Promise<unknown>): Promise<CairnError> {
  const err = await p.then(() => null, (e: unknown) => e);
  assert.ok(err instanceof CairnError, `a typed error, got ${String(err)}`);
  return err;
}

/** The pool still serves: the clone and the origin read back, and a write to each lands. */
async function assertServing(s: Setup, except: number): Promise<void> {
  const c = s.engine.resolve('c').id, v = s.engine.resolve('v').id;
  assert.deepEqual(await s.engine.read(c, 0, except * B), s.cloneData.subarray(0, except * B), 'the clone before the bad block');
  assert.deepEqual(await s.engine.read(c, (except + 1) * B, (volumeBlocks - except - 1) * B), s.cloneData.subarray((except + 1) * B), 'the clone after it');
  const w = pattern(99, 2 * B);
  await s.engine.write(v, 3 * B, w);
  assert.deepEqual(await s.engine.read(v, 3 * B, 2 * B), w, 'the origin takes writes');
  s.origin.set(w, 3 * B);
  await s.engine.flush();
}

for (const fault of ['checksum', 'eio'] as const) {
  test(`${fault === 'checksum' ? 'a damaged' : 'an unreadable'} origin block fails the flatten alone; a later flatten resumes and finishes`, async () => {
    const s = await cloneSharingAll(fault === 'checksum' ? 3 : 4);
    const bad = await pbaOf(s.engine, 'c', badLba);
    assert.equal(bad, await pbaOf(s.engine, 'v', badLba), 'the clone shares the block with its origin');
    const progress: number[] = [];
    let err: CairnError;
    if (fault === 'checksum') {
      s.device.injectBitFlip(bad, 4242);
      err = await failureOf(s.engine.flattenVolume('c', (f) => progress.push(f)));
      assert.equal(err.code, 'checksum_error', err.message);
    } else {
      // Every read fails while the flatten reaches the block: the reads of the steps before it are
      // served first, so the fault is switched on only once two steps are done.
      const flatten = s.engine.flattenVolume('c', (f) => {
        progress.push(f);
        if (progress.length === 2) s.device.failNextReads(1_000_000);
      });
      err = await failureOf(flatten);
      s.device.failNextReads(0);
      assert.equal(err.errno, 'EIO', `${err.code}: ${err.message}`);
    }
    assert.deepEqual(progress, [0.25, 0.5], 'two steps done before the bad block');
    const info = s.engine.getVolume('c');
    assert.ok(info.flattenProgress !== null && info.flattenProgress >= 0.5 && info.flattenProgress < 0.75, `cursor kept: ${info.flattenProgress}`);
    // Not stopped: both volumes serve, and commits go on.
    await assertServing(s, badLba);
    await s.engine.checkpoint();
    if (fault === 'checksum') {
      assert.equal((await failureOf(s.engine.read(s.engine.resolve('c').id, badLba * B, B))).code, 'checksum_error', 'the bad block itself reads as damaged');
    }
    // Overwritten in the clone, the block is the clone's own: the flatten resumes and finishes.
    const fresh = pattern(7, B);
    await s.engine.write(s.engine.resolve('c').id, badLba * B, fresh);
    s.cloneData.set(fresh, badLba * B);
    const resumed: number[] = [];
    await s.engine.flattenVolume('c', (f) => resumed.push(f));
    assert.deepEqual(resumed, [0.75, 1, 1], 'resumed at the failed step, not from the start');
    assert.equal(s.engine.getVolume('c').origin, null);
    // What both flattens did survives a reopen, and the pool checks clean.
    await s.engine.close();
    const reopened = await openPool(s.device.crash('clean'), eventOptions());
    assert.deepEqual(await reopened.read(reopened.resolve('c').id, 0, volumeBlocks * B), s.cloneData);
    const v = reopened.resolve('v').id;
    assert.deepEqual(await reopened.read(v, 0, badLba * B), s.origin.subarray(0, badLba * B));
    await reopened.close();
    // Counts and owners agree: the only problem a check may find is the flipped block itself, still
    // the origin's (an unreadable block was never damaged).
    const report = await checkPool(s.device.crash('clean'));
    const expected = fault === 'checksum' ? [bad] : [];
    assert.deepEqual([...new Set(report.problems.map((p) => `${p.kind} ${p.physicalBlock}`))], expected.map((b) => `corrupt ${b}`), JSON.stringify(report.problems));
  });
}
