// Engine behaviour through its public interface: volumes, snapshots, clones, revert, diff, flatten,
// space accounting, errors, and persistence across reopen. Every test ends with a pool check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPoolFile, checkPoolFile, CairnError } from '../src/engine/index.js';
import { tempPool, assertClean, pattern, MiB } from './engine-helpers.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool } from '../src/engine/pool.js';

const K4 = 4096;

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof CairnError && err.code === code);
}

test('volume lifecycle and typed errors', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  const v = await engine.createVolume('vol1', 16 * MiB);
  assert.equal(v.sizeBytes, 16 * MiB);
  assert.equal(v.mappedBytes, 0);
  await rejectsCode(engine.createVolume('vol1', 16 * MiB), 'name_taken');
  await rejectsCode(engine.createVolume('bad name', 16 * MiB), 'invalid_name');
  await rejectsCode(engine.createVolume('x', 1000), 'invalid_size');
  await rejectsCode(engine.createVolume('x', 0), 'invalid_size');
  assert.throws(() => engine.getVolume('nope'), (e: unknown) => e instanceof CairnError && e.code === 'volume_not_found');
  const id = engine.resolve('vol1').id;
  await rejectsCode(engine.write(id, 16 * MiB - 10, Buffer.alloc(20)), 'out_of_range');
  await rejectsCode(engine.read(id, 16 * MiB, 1), 'out_of_range');
  await engine.resizeVolume('vol1', 32 * MiB);
  await engine.write(id, 20 * MiB, pattern(1, K4));
  await rejectsCode(engine.resizeVolume('vol1', 8 * MiB), 'shrink_refused');
  await engine.resizeVolume('vol1', 8 * MiB, { allowShrink: true });
  assert.equal(engine.getVolume('vol1').mappedBytes, 0);
  await engine.resizeVolume('vol1', 32 * MiB);
  assert.deepEqual(await engine.read(id, 20 * MiB, K4), Buffer.alloc(K4), 'shrunk-away data does not come back');
  assert.deepEqual(engine.listVolumes().map((x) => x.name), ['vol1']);
  await engine.deleteVolume('vol1');
  assert.deepEqual(engine.listVolumes(), []);
  await rejectsCode(engine.read(id, 0, K4), 'volume_not_found');
  await engine.drainDeletes();
  await assertClean(engine);
});

test('thin: zero writes and write-zeroes leave holes; unaligned writes read back', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, Buffer.alloc(64 * K4));
  assert.equal(engine.getVolume('v').mappedBytes, 0, 'all-zero write maps nothing');
  await engine.write(id, 0, pattern(2, 16 * K4));
  await engine.writeZeroes(id, 4 * K4, 8 * K4);
  assert.equal(engine.getVolume('v').mappedBytes, 8 * K4);
  const ext = await engine.extents(id, 0, 16 * K4);
  assert.deepEqual(ext, [
    { offsetBytes: 0, lengthBytes: 4 * K4, hole: false },
    { offsetBytes: 4 * K4, lengthBytes: 8 * K4, hole: true },
    { offsetBytes: 12 * K4, lengthBytes: 4 * K4, hole: false },
  ]);
  await engine.writeZeroes(id, 0, K4, { noHole: true });
  assert.equal((await engine.extents(id, 0, K4))[0]!.hole, false, 'NO_HOLE allocates');
  // Unaligned, straddling blocks, concurrent in one block.
  const a = Buffer.from('A'.repeat(700)), b = Buffer.from('B'.repeat(300));
  await Promise.all([engine.write(id, 5000, a), engine.write(id, 5700, b), engine.write(id, 8000, pattern(3, 10000))]);
  assert.deepEqual(await engine.read(id, 5000, 700), a);
  assert.deepEqual(await engine.read(id, 5700, 300), b);
  assert.deepEqual(await engine.read(id, 8000, 10000), pattern(3, 10000));
  await engine.trim(id, 100, 50);
  assert.deepEqual(await engine.read(id, 100, 50), Buffer.alloc(50));
  await assertClean(engine);
});

test('snapshots are point-in-time and read-only; clones are writable and independent', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('db', 8 * MiB);
  await engine.createVolume('log', 8 * MiB);
  const db = engine.resolve('db').id, log = engine.resolve('log').id;
  await engine.write(db, 0, pattern(10, 64 * K4));
  await engine.write(log, 0, pattern(11, 8 * K4));
  const snaps = await engine.createSnapshots(['db@s1', 'log@s1']);
  assert.deepEqual(snaps.map((s) => s.fullName), ['db@s1', 'log@s1']);
  await rejectsCode(engine.createSnapshots(['db@s1']), 'name_taken');
  await rejectsCode(engine.createSnapshots(['nope@s1']), 'volume_not_found');
  await engine.write(db, 0, pattern(12, 64 * K4));
  const s1 = engine.resolve('db@s1');
  assert.equal(s1.readOnly, true);
  assert.deepEqual(await engine.read(s1.id, 0, 64 * K4), pattern(10, 64 * K4));
  await rejectsCode(engine.write(s1.id, 0, Buffer.alloc(K4, 1)), 'read_only');
  await rejectsCode(engine.trim(s1.id, 0, K4), 'read_only');
  // Clone from a snapshot and from the live volume.
  const c1 = await engine.cloneVolume('c1', 'db@s1');
  assert.deepEqual(c1.origin, { volume: 'db', snapshot: 's1' });
  const c2 = await engine.cloneVolume('c2', 'db');
  assert.deepEqual(c2.origin, { volume: 'db', snapshot: null });
  const c1id = engine.resolve('c1').id, c2id = engine.resolve('c2').id;
  await engine.write(c1id, 0, pattern(13, K4));
  await engine.write(db, 0, pattern(14, K4));
  assert.deepEqual(await engine.read(c1id, 0, K4), pattern(13, K4));
  assert.deepEqual(await engine.read(c1id, K4, K4), pattern(10, 64 * K4).subarray(K4, 2 * K4));
  assert.deepEqual(await engine.read(c2id, 0, K4), pattern(12, K4));
  assert.deepEqual(await engine.read(s1.id, 0, K4), pattern(10, K4));
  // Deleting the origin keeps snapshots and clones working.
  await engine.deleteVolume('db');
  await rejectsCode(engine.createVolume('db', 8 * MiB), 'name_taken');
  assert.deepEqual(await engine.read(s1.id, 0, 64 * K4), pattern(10, 64 * K4));
  assert.deepEqual(await engine.read(c2id, 4 * K4, K4), pattern(12, 64 * K4).subarray(4 * K4, 5 * K4));
  await engine.deleteSnapshot('db@s1');
  await engine.createVolume('db', 8 * MiB);
  assert.deepEqual(await engine.read(c1id, 2 * K4, K4), pattern(10, 64 * K4).subarray(2 * K4, 3 * K4));
  await engine.drainDeletes();
  await assertClean(engine);
});

test('revert keeps later snapshots; diff reports exactly the changed ranges', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('v', 64 * MiB);
  const id = engine.resolve('v').id;
  for (let i = 0; i < 200; i++) await engine.write(id, i * 16 * K4, pattern(i, 4 * K4));
  await engine.createSnapshots(['v@a']);
  await engine.write(id, 5 * 16 * K4, pattern(900, K4));
  await engine.write(id, 100 * K4 * 16 + K4, pattern(901, 2 * K4));
  await engine.trim(id, 150 * 16 * K4, 4 * K4);
  await engine.createSnapshots(['v@b']);
  assert.deepEqual(await engine.diff('v@a', 'v@b'), [
    { offsetBytes: 5 * 16 * K4, lengthBytes: K4 },
    { offsetBytes: 100 * 16 * K4 + K4, lengthBytes: 2 * K4 },
    { offsetBytes: 150 * 16 * K4, lengthBytes: 4 * K4 },
  ]);
  assert.deepEqual(await engine.diff('v@b', 'v'), []);
  await engine.write(id, 0, pattern(902, K4));
  assert.deepEqual(await engine.diff('v@b', 'v'), [{ offsetBytes: 0, lengthBytes: K4 }]);
  assert.deepEqual(await engine.changedSince(id, 'v@a', 0, 10 * 16 * K4), [
    { offsetBytes: 0, lengthBytes: K4 }, { offsetBytes: 5 * 16 * K4, lengthBytes: K4 },
  ]);
  await engine.revertVolume('v', 'a');
  assert.deepEqual(await engine.read(id, 5 * 16 * K4, 4 * K4), pattern(5, 4 * K4));
  assert.deepEqual(engine.getVolume('v').snapshots, ['a', 'b']);
  assert.deepEqual(await engine.read(engine.resolve('v@b').id, 0, K4), pattern(0, K4));
  await engine.drainDeletes();
  await assertClean(engine);
});

test('flatten unshares a clone; exclusive space and freeing on delete', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('base', 16 * MiB);
  const base = engine.resolve('base').id;
  await engine.write(base, 0, pattern(20, 512 * K4));
  await engine.createSnapshots(['base@gold']);
  await engine.cloneVolume('clone', 'base@gold');
  const clone = engine.resolve('clone').id;
  await engine.write(clone, 0, pattern(21, 10 * K4));
  const before = await engine.spaceUsage('clone');
  assert.equal(before.mappedBytes, 512 * K4);
  assert.equal(before.exclusiveBytes, 10 * K4);
  const progress: number[] = [];
  const flat = await engine.flattenVolume('clone', (f) => progress.push(f));
  assert.equal(flat.origin, null);
  assert.equal(progress[progress.length - 1], 1);
  const after = await engine.spaceUsage('clone');
  assert.equal(after.exclusiveBytes, 512 * K4, 'a flattened clone owns all its data');
  assert.deepEqual(await engine.read(clone, 0, 512 * K4), Buffer.concat([pattern(21, 10 * K4), pattern(20, 512 * K4).subarray(10 * K4)]));
  await assertClean(engine);
  const free0 = engine.stats().freeBytes;
  await engine.deleteVolume('base');
  await engine.deleteSnapshot('base@gold');
  await engine.drainDeletes();
  await engine.checkpoint();
  assert.ok(engine.stats().freeBytes >= free0 + 512 * K4, 'deleting the origin returns its blocks');
  assert.deepEqual(await engine.read(clone, 20 * K4, K4), pattern(20, 512 * K4).subarray(20 * K4, 21 * K4));
  await assertClean(engine);
});

test('a full pool reports pool_full, loses nothing, and works again after freeing', async (t) => {
  const { engine, cleanup } = await tempPool(16 * MiB);
  t.after(cleanup);
  await engine.createVolume('a', 64 * MiB);
  await engine.createVolume('b', 64 * MiB);
  const a = engine.resolve('a').id, b = engine.resolve('b').id;
  await engine.write(b, 0, pattern(30, 64 * K4));
  await engine.flush();
  let written = 0, full = false;
  for (let i = 0; i < 4096 && !full; i++) {
    try { await engine.write(a, i * 16 * K4, pattern(31 + i, 16 * K4)); written = i + 1; } catch (err) {
      assert.ok(err instanceof CairnError && err.code === 'pool_full' && err.errno === 'ENOSPC');
      full = true;
    }
  }
  assert.ok(full, 'the pool filled up');
  await engine.flush();
  assert.deepEqual(await engine.read(b, 0, 64 * K4), pattern(30, 64 * K4), 'other volumes keep their data');
  assert.deepEqual(await engine.read(a, (written - 1) * 16 * K4, 16 * K4), pattern(31 + written - 1, 16 * K4));
  await assertClean(engine);
  await engine.trim(a, 0, 64 * MiB);
  await engine.checkpoint();
  await engine.checkpoint();
  await engine.write(a, 0, pattern(99, 16 * K4));
  assert.deepEqual(await engine.read(a, 0, 16 * K4), pattern(99, 16 * K4));
  await assertClean(engine);
});

test('persistence: reopen keeps flushed state; a bit flip is reported, never returned', async (t) => {
  const { engine, path, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(40, 32 * K4));
  await engine.createSnapshots(['v@s']);
  await engine.write(id, 0, pattern(41, K4), { fua: true });
  await engine.close();
  let e2 = await openPoolFile(path);
  const id2 = e2.resolve('v').id;
  assert.deepEqual(await e2.read(id2, 0, K4), pattern(41, K4));
  assert.deepEqual(await e2.read(e2.resolve('v@s').id, 0, 32 * K4), pattern(40, 32 * K4));
  await e2.close();
  assert.equal((await checkPoolFile(path)).ok, true);
  // Flip one bit in the file where block 5 of the volume lives (found via its content).
  const { readFileSync, writeFileSync } = await import('node:fs');
  const file = readFileSync(path);
  const needle = pattern(40, 32 * K4).subarray(5 * K4, 6 * K4);
  const at = file.indexOf(needle);
  assert.ok(at > 0 && at % K4 === 0);
  file[at + 100]! ^= 0x10;
  writeFileSync(path, file);
  e2 = await openPoolFile(path);
  await assert.rejects(e2.read(e2.resolve('v').id, 5 * K4, K4), (err: unknown) => err instanceof CairnError && err.code === 'checksum_error' && err.errno === 'EIO');
  assert.equal(e2.stats().checksumErrors, 1);
  assert.deepEqual(await e2.read(e2.resolve('v').id, 6 * K4, K4), pattern(40, 32 * K4).subarray(6 * K4, 7 * K4), 'other blocks still read');
  await e2.close();
  const report = await checkPoolFile(path);
  assert.equal(report.ok, false);
  assert.equal(report.problems[0]!.kind, 'corrupt');
  assert.equal(report.problems[0]!.physicalBlock, at / K4);
});

test('damage to the newest superblock copy keeps the newest commit (its mirror opens)', async (t) => {
  // Format 1 fell back to the previous commit here, silently; test/engine-superblock.test.ts has the rest.
  const { engine, path, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  await engine.write(engine.resolve('v').id, 0, pattern(50, K4), { fua: true });
  const gen = engine.stats().generation;
  await engine.createVolume('w', 8 * MiB);
  assert.equal(engine.stats().generation, gen + 1);
  await engine.close();
  const { openSync, writeSync, closeSync } = await import('node:fs');
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(100, 0xff), 0, 100, ((gen + 1) % 2) * K4 + 20);
  closeSync(fd);
  const e2 = await openPoolFile(path);
  assert.deepEqual(e2.listVolumes().map((v) => v.name), ['v', 'w']);
  assert.deepEqual(await e2.read(e2.resolve('v').id, 0, K4), pattern(50, K4));
  await assertClean(e2);
  await e2.close();
});

test('many snapshots: creation stays O(1) and reads unaffected; listing is complete', async (t) => {
  const { engine, cleanup } = await tempPool(512 * MiB);
  t.after(cleanup);
  await engine.createVolume('v', 64 * MiB);
  const id = engine.resolve('v').id;
  for (let i = 0; i < 1000; i++) {
    await engine.write(id, (i % 64) * K4 * 64, pattern(i, K4));
    await engine.createSnapshots([`v@s${i}`]);
  }
  assert.equal(engine.listSnapshots('v').length, 1000);
  assert.deepEqual(await engine.read(engine.resolve('v@s500').id, (500 % 64) * K4 * 64, K4), pattern(500, K4));
  for (let i = 0; i < 1000; i += 3) await engine.deleteSnapshot(`v@s${i}`);
  assert.equal(engine.listSnapshots().length, 666);
  await engine.drainDeletes();
  await assertClean(engine);
});

test('overwrites on a nearly full pool reuse freed blocks instead of failing (frees wait for a commit)', async (t) => {
  const { engine, cleanup } = await tempPool(64 * MiB);
  t.after(cleanup);
  await engine.createVolume('v', 40 * MiB);
  const id = engine.resolve('v').id;
  for (let pass = 0; pass < 12; pass++) {
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 40) { const i = next++; await engine.write(id, i * MiB, pattern(pass * 100 + i, MiB)); }
    }));
  }
  assert.deepEqual(await engine.read(id, 7 * MiB, MiB), pattern(11 * 100 + 7, MiB));
  await assertClean(engine);
});

test('a snapshot group shares one timestamp even when the clock moves while it is taken', async (t) => {
  let now = 1_000;
  const { engine, cleanup } = await tempPool(256 * MiB, { nowMs: () => now++ });
  t.after(cleanup);
  for (const name of ['a', 'b', 'c']) {
    await engine.createVolume(name, 8 * MiB);
    await engine.write(engine.resolve(name).id, 0, pattern(1, 4 * K4));
  }
  const group = await engine.createSnapshots(['a@g', 'b@g', 'c@g']);
  assert.equal(new Set(group.map((s) => s.createdMs)).size, 1, 'one instant for the whole group');
  const later = await engine.createSnapshots(['a@h']);
  assert.ok(later[0]!.createdMs > group[0]!.createdMs);
});

test('a flatten gives the event loop a turn between its steps, so other work is not held until it ends', async () => {
  // The simulated device completes every call without a turn of the loop, as cached I/O does inline.
  const engine = await createPool(new SimDevice(16384, new Prng(7)), { commitIntervalMs: 0 });
  await engine.createVolume('o', 16 * MiB);
  await engine.write(engine.resolve('o').id, 0, pattern(71, 16 * MiB));
  await engine.createSnapshots(['o@s']);
  await engine.cloneVolume('c', 'o@s');
  let progress = 0;
  const seen: number[] = [];
  const tick = (): void => { seen.push(progress); if (progress < 1) setImmediate(tick); };
  setImmediate(tick);
  await engine.flattenVolume('c', (f) => { progress = f; });
  assert.ok(seen.some((f) => f > 0 && f < 1), `the loop turned during the flatten (progress seen by turns: ${seen.join(', ')})`);
  await assertClean(engine);
  await engine.close();
});

// Simulator seed 5009 x 1000 ops: flatten checked for room to copy a chunk's blocks, then reserved
// each copy's block after tree edits whose new nodes had taken some of that room; the late
// reservation failed (pool_full) after the chunk's changes, and a mutation failing after changes
// stops the pool. Now the blocks are reserved first: flatten succeeds or fails cleanly at every fill.
test('flatten on a pool filled to just above its chunk\'s copies succeeds or fails with pool_full; the pool keeps working', async () => {
  const blocks = 256;
  for (let slack = 0; slack <= 12; slack += 2) {
    const device = new SimDevice(8192, new Prng(slack + 1));
    const engine = await createPool(device, { commitIntervalMs: 0 });
    await engine.createVolume('o', blocks * K4);
    const o = engine.resolve('o').id;
    await engine.write(o, 0, pattern(70, blocks * K4));
    await engine.createSnapshots(['o@s']);
    await engine.cloneVolume('c', 'o@s');
    await engine.createVolume('fill', 32 * MiB);
    const fill = engine.resolve('fill').id;
    const space = engine.core.space;
    const gap = (): number => space.availableBlocks - space.reserveBlocks - blocks;
    let at = 0;
    await engine.checkpoint();
    while (gap() > slack) {
      const n = Math.min(64, gap() - slack);
      await engine.write(fill, at * K4, pattern(1000 + at, n * K4));
      at += n;
      await engine.checkpoint();
      await engine.checkpoint();
    }
    const result = await engine.flattenVolume('c').then(() => 'ok', (err: unknown) => err instanceof CairnError ? err.code : String(err));
    assert.ok(result === 'ok' || result === 'pool_full', `slack ${slack} (gap ${gap()}): flatten ${result}`);
    const c = engine.resolve('c').id;
    assert.deepEqual(await engine.read(c, 0, blocks * K4), pattern(70, blocks * K4), `slack ${slack}: the clone reads its data`);
    await engine.checkpoint(); // the pool was not stopped (a stopped pool answers io_error)
    await assertClean(engine);
    await engine.close();
  }
});
