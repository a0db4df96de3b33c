// Growing a pool in place (Engine.growPool): the new space is usable at once and survives a reopen,
// the space map's radix gains a level when it must, a power cut at any device write or flush of a
// grow leaves the old size or the new one (check clean either way), and a shrink or a bad size is a
// typed error that changes nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, truncateSync } from 'node:fs';
import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { REFCOUNTS_PER_PAGE, RADIX_FANOUT } from '../src/engine/constants.js';
import { openPoolFile, type Engine } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { tempPool, assertClean, pattern, MiB } from './engine-helpers.js';

const BLOCK = 4096;

async function fill(engine: Engine, name: string, offsetBytes: number, lengthBytes: number, seed: number): Promise<void> {
  const id = engine.resolve(name).id;
  for (let done = 0; done < lengthBytes; done += MiB) {
    await engine.write(id, offsetBytes + done, pattern(seed + done / MiB, Math.min(MiB, lengthBytes - done)));
  }
}

async function assertFilled(engine: Engine, name: string, offsetBytes: number, lengthBytes: number, seed: number): Promise<void> {
  const id = engine.resolve(name).id;
  for (let done = 0; done < lengthBytes; done += MiB) {
    const got = await engine.read(id, offsetBytes + done, Math.min(MiB, lengthBytes - done));
    assert.ok(got.equals(pattern(seed + done / MiB, got.length)), `${name} at ${offsetBytes + done}`);
  }
}

test('a grown pool takes data past its old free space at once, and keeps it across a reopen', async () => {
  const device = new SimDevice(4096, new Prng(11)); // 16 MiB
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 64 * MiB);
  await fill(engine, 'v', 0, 8 * MiB, 1);
  await engine.flush();
  assert.ok(engine.stats().freeBytes < 40 * MiB);
  await assert.rejects(fill(engine, 'v', 8 * MiB, 40 * MiB, 2), { code: 'pool_full' });
  await engine.trim(engine.resolve('v').id, 8 * MiB, 56 * MiB);

  await device.resize(32768); // the device was enlarged from outside; grow without a size takes all of it
  const stats = await engine.growPool();
  assert.equal(stats.sizeBytes, 128 * MiB);
  await fill(engine, 'v', 8 * MiB, 40 * MiB, 2);
  await engine.flush();
  await assertClean(engine);
  await engine.close();

  const check = await checkPool(device.crash('clean'));
  assert.deepEqual(check.problems, []);
  const reopened = await openPool(device.crash('clean'), { commitIntervalMs: 0 });
  assert.equal(reopened.stats().sizeBytes, 128 * MiB);
  await assertFilled(reopened, 'v', 0, 8 * MiB, 1);
  await assertFilled(reopened, 'v', 8 * MiB, 40 * MiB, 2);
  await reopened.close();
});

test('growing past the span of the space map\'s radix root adds a level, and its summaries stay exact', async () => {
  const oneLevelBlocks = RADIX_FANOUT * REFCOUNTS_PER_PAGE; // the most a one-level radix covers
  const device = new SimDevice(4096, new Prng(12));
  const engine = await createPool(device, { commitIntervalMs: 0 }) as CairnEngine;
  await engine.createVolume('v', 64 * MiB);
  await fill(engine, 'v', 0, 4 * MiB, 3);
  assert.equal(engine.core.space.array.depth, 1);
  const freeBefore = engine.stats().freeBytes;
  const grownBlocks = oneLevelBlocks + 12000; // room for 8 MiB of data past the metadata reserve
  await engine.growPool(grownBlocks * BLOCK);
  assert.equal(engine.core.space.array.depth, 2);
  // Every new block is free, less the few metadata blocks the grow's commit placed.
  const freeGained = (engine.stats().freeBytes - freeBefore) / BLOCK;
  assert.ok(freeGained <= grownBlocks - 4096 && freeGained > grownBlocks - 4096 - 64, `${freeGained} blocks gained`);
  // Hold every usable block under the old root's span (reserved: flags in memory, no data), so the
  // next data and metadata must come from the new subtree.
  const space = engine.core.space;
  const hog = await engine.core.mutate(() => space.reserve(space.availableBlocks - (grownBlocks - oneLevelBlocks), true));
  await fill(engine, 'v', 4 * MiB, 8 * MiB, 4);
  await engine.flush();
  let usedPastOldSpan = 0;
  for (let b = oneLevelBlocks; b < grownBlocks; b++) if (await space.get(b) > 0) usedPastOldSpan++;
  assert.ok(usedPastOldSpan >= 2048, `the data went to the new subtree (${usedPastOldSpan} blocks)`);
  space.unreserve(hog);
  await assertClean(engine);
  await engine.close();
  const reopened = await openPool(device.crash('clean'), { commitIntervalMs: 0 }) as CairnEngine;
  assert.equal(reopened.stats().sizeBytes, grownBlocks * BLOCK);
  assert.equal(reopened.stats().freeBytes, engine.stats().freeBytes, 'the free count read back from the summaries');
  await assertFilled(reopened, 'v', 0, 4 * MiB, 3);
  await assertFilled(reopened, 'v', 4 * MiB, 8 * MiB, 4);
  // Two more levels at once (to ~64 TiB): the summaries count every new block free, also read back.
  const hugeBlocks = RADIX_FANOUT ** 3 * REFCOUNTS_PER_PAGE + 7;
  const freeHuge = reopened.stats().freeBytes + (hugeBlocks - grownBlocks) * BLOCK;
  const reopenedDevice = reopened.core.device.inner as SimDevice;
  await reopenedDevice.resize(hugeBlocks);
  await reopened.growPool();
  assert.equal(reopened.core.space.array.depth, 4);
  const freeHugeNow = reopened.stats().freeBytes;
  assert.ok(freeHugeNow <= freeHuge && freeHugeNow > freeHuge - 64 * BLOCK, 'every new block is free');
  await reopened.close();
  const again = await openPool(reopenedDevice.crash('clean')) as CairnEngine;
  assert.equal(again.stats().sizeBytes, hugeBlocks * BLOCK);
  assert.equal(again.stats().freeBytes, freeHugeNow, 'summaries of the new levels, read back');
  await assertFilled(again, 'v', 4 * MiB, 8 * MiB, 4);
  await again.close();
});

test('a power cut at every device write and flush of a grow leaves the old or the new size, consistent', async () => {
  const oldBlocks = 4096, newBlocks = 6000;
  const history = async (device: SimDevice): Promise<Engine> => {
    const engine = await createPool(device, { commitIntervalMs: 0 });
    await engine.createVolume('v', 32 * MiB);
    await fill(engine, 'v', 0, 6 * MiB, 5);
    await engine.createSnapshots(['v@s']);
    await fill(engine, 'v', 2 * MiB, 2 * MiB, 6);
    await engine.flush();
    return engine;
  };
  let cases = 0;
  for (const mode of ['clean', 'some', 'torn'] as CrashMode[]) {
    let sawOld = false, sawNew = false;
    // Each cut with a few seeds, since which unflushed writes survive is the seed's choice.
    const seeds = mode === 'clean' ? 1 : 3;
    for (let run = 0; ; run++) {
      const cut = Math.floor(run / seeds);
      const device = new SimDevice(oldBlocks, new Prng(100 + run));
      const engine = await history(device);
      device.armCrash(cut, mode);
      await engine.growPool(newBlocks * BLOCK);
      const image = device.takeArmedImage();
      await engine.close();
      if (image === null) break; // the grow made fewer device calls than `cut`
      cases++;
      const report = await checkPool(image);
      assert.deepEqual(report.problems, [], `${mode} cut at call ${cut}`);
      const reopened = await openPool(image, { commitIntervalMs: 0 });
      const size = reopened.stats().sizeBytes;
      assert.ok(size === oldBlocks * BLOCK || size === newBlocks * BLOCK, `old or new size, got ${size} (${mode} cut ${cut})`);
      if (size === oldBlocks * BLOCK) sawOld = true; else sawNew = true;
      await assertFilled(reopened, 'v@s', 0, 6 * MiB, 5);
      await assertFilled(reopened, 'v', 2 * MiB, 2 * MiB, 6);
      // Either way the pool works on: it grows (again) and the new space takes data.
      await reopened.growPool(newBlocks * BLOCK);
      await fill(reopened, 'v', 8 * MiB, 12 * MiB, 7);
      await reopened.flush();
      await assertClean(reopened);
      await reopened.close();
    }
    // A clean cut keeps only flushed writes, and it falls before a call: the new size shows only
    // where unflushed writes may land (the final flush is what makes the new superblock durable).
    assert.ok(sawOld && (sawNew || mode === 'clean'), `${mode}: the cuts fall on both sides of the grow's commit`);
  }
  assert.ok(cases >= 9);
});

test('a shrink, an unaligned size and a size past the limit are refused with typed errors, changing nothing', async () => {
  const device = new SimDevice(4096, new Prng(13));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await assert.rejects(engine.growPool(8 * MiB), { code: 'shrink_refused', message: /from 16777216 to 8388608 bytes/ });
  await assert.rejects(engine.growPool(32 * MiB + 512), { code: 'invalid_size', message: /multiple of 4096/ });
  await assert.rejects(engine.growPool(-4096), { code: 'invalid_size' });
  await assert.rejects(engine.growPool(2 ** 52 + 4096), { code: 'invalid_size', message: /maximum/ });
  assert.equal(device.sizeBlocks, 4096, 'the device was not touched');
  assert.equal((await engine.growPool(16 * MiB)).sizeBytes, 16 * MiB, 'the same size is no change');
  assert.equal((await engine.growPool()).sizeBytes, 16 * MiB, 'a device not enlarged is no change');
  await assertClean(engine);
  await engine.close();
});

test('growing a pool file enlarges the file; a file enlarged from outside is taken without a size', async (t) => {
  const { engine, path, cleanup } = await tempPool(16 * MiB);
  t.after(cleanup);
  await engine.createVolume('v', 96 * MiB);
  await fill(engine, 'v', 0, 8 * MiB, 8);
  const stats = await engine.growPool(48 * MiB);
  assert.equal(stats.sizeBytes, 48 * MiB);
  assert.equal(statSync(path).size, 48 * MiB);
  await fill(engine, 'v', 8 * MiB, 32 * MiB, 9);
  truncateSync(path, 96 * MiB);
  assert.equal((await engine.growPool()).sizeBytes, 96 * MiB);
  await fill(engine, 'v', 40 * MiB, 40 * MiB, 10);
  await assertClean(engine);
  await engine.close();
  const reopened = await openPoolFile(path, { commitIntervalMs: 0 });
  t.after(() => reopened.close());
  assert.equal(reopened.stats().sizeBytes, 96 * MiB);
  await assertFilled(reopened, 'v', 0, 8 * MiB, 8);
  await assertFilled(reopened, 'v', 8 * MiB, 32 * MiB, 9);
  await assertFilled(reopened, 'v', 40 * MiB, 40 * MiB, 10);
  await assertClean(reopened);
});

test('a raw device enlarged with its own tools is grown without a size; a size is refused there', { skip: process.getuid?.() === 0 ? false : 'needs root for losetup' }, async (t) => {
  const { execFileSync } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { createPoolFile, checkPoolFile } = await import('../src/engine/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'cairn-grow-dev-'));
  const backing = join(dir, 'disk');
  writeFileSync(backing, '');
  truncateSync(backing, 32 * MiB);
  const loop = execFileSync('losetup', ['-f', '--show', backing]).toString().trim();
  t.after(() => { execFileSync('losetup', ['-d', loop]); rmSync(dir, { recursive: true, force: true }); });
  const engine = await createPoolFile(loop, 0, { commitIntervalMs: 0 });
  await engine.createVolume('v', 64 * MiB);
  await fill(engine, 'v', 0, 8 * MiB, 11);
  await assert.rejects(engine.growPool(64 * MiB), { code: 'invalid_argument', message: /block device.*lvextend/ });
  truncateSync(backing, 96 * MiB);
  execFileSync('losetup', ['-c', loop]); // the loop device takes its backing file's new size
  assert.equal((await engine.growPool()).sizeBytes, 96 * MiB);
  await fill(engine, 'v', 8 * MiB, 48 * MiB, 12);
  await assertClean(engine);
  await engine.close();
  assert.equal((await checkPoolFile(loop)).ok, true);
  const reopened = await openPoolFile(loop);
  assert.equal(reopened.stats().sizeBytes, 96 * MiB);
  await assertFilled(reopened, 'v', 8 * MiB, 48 * MiB, 12);
  await reopened.close();
});
