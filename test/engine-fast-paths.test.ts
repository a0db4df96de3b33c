// PoolOptions.fastPaths: false turns off every synchronous `...Now` fast path, so the awaited paths
// run (the simulator and the fault sweep run both ways, issue 17). Both must give the same pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempPool, assertClean, pattern, MiB } from './engine-helpers.js';

const K4 = 4096;

for (const fastPaths of [true, false]) {
  test(`fast paths ${fastPaths ? 'on' : 'off'}: writes, overwrites, snapshots and reads give the same data`, async (t) => {
    const { engine, cleanup } = await tempPool(64 * MiB, { fastPaths });
    t.after(cleanup);
    await engine.createVolume('v', 8 * MiB);
    const id = engine.resolve('v').id;
    await engine.write(id, 0, pattern(1, 16 * K4));
    // The path to block 0 is now cached and writable in this transaction: the case each fast path takes.
    const core = engine.core;
    const root = core.catalog.volumesByName.get('v')!.root;
    assert.equal(core.mutateNow(() => 1), fastPaths ? 1 : undefined, 'mutateNow');
    assert.equal(core.trees.lookupCached(root, 0, 1) !== undefined, fastPaths, 'lookupCached');
    const reserved = core.space.tryReserveSync(1);
    assert.equal(reserved !== null, fastPaths, 'tryReserveSync');
    if (reserved !== null) core.space.unreserve(reserved);
    await engine.write(id, 2 * K4, pattern(2, K4));
    await engine.createSnapshots(['v@s']);
    await engine.write(id, 4 * K4 + 100, pattern(3, 3 * K4));
    await engine.trim(id, 8 * K4, 4 * K4);
    const want = Buffer.concat([pattern(1, 16 * K4)]);
    pattern(2, K4).copy(want, 2 * K4);
    const snapshot = Buffer.from(want);
    pattern(3, 3 * K4).copy(want, 4 * K4 + 100);
    want.fill(0, 8 * K4, 12 * K4);
    assert.deepEqual(await engine.read(id, 0, 16 * K4), want);
    assert.deepEqual(await engine.read(engine.resolve('v@s').id, 0, 16 * K4), snapshot);
    await engine.flush();
    await assertClean(engine);
  });
}

// Snapshots taken while writes run: after each one every leaf is shared, and the first write to each
// shadows it and counts its extents (the references a snapshot-per-second platform makes). Both ways
// the counts must come out exact (the checker recounts them) and every snapshot keep its data.
for (const fastPaths of [true, false]) {
  test(`fast paths ${fastPaths ? 'on' : 'off'}: snapshots between concurrent random writes keep exact counts`, async (t) => {
    const { engine, cleanup } = await tempPool(64 * MiB, { fastPaths });
    t.after(cleanup);
    const blocks = 2048;
    await engine.createVolume('v', blocks * K4);
    const id = engine.resolve('v').id;
    // Counts how often a shared node's children were counted without awaiting (the fast path's case).
    const space = engine.core.space;
    const increfReferenced = space.tryIncrefReferenced.bind(space);
    let countedNow = 0;
    space.tryIncrefReferenced = (pba: number, lengthBlocks: number): boolean => {
      const done = increfReferenced(pba, lengthBlocks);
      if (done) countedNow++;
      return done;
    };
    // A shadowed leaf's extents all at once (the usual case), counted likewise.
    const increfExtents = space.tryIncrefReferencedExtents.bind(space);
    let leavesCountedNow = 0;
    space.tryIncrefReferencedExtents = (pbas: Float64Array, lens: Uint8Array, count: number): boolean => {
      const done = increfExtents(pbas, lens, count);
      if (done) leavesCountedNow++;
      return done;
    };
    for (let b = 0; b < blocks; b += 64) await engine.write(id, b * K4, pattern(b, 64 * K4));
    const model = Buffer.alloc(blocks * K4);
    for (let b = 0; b < blocks; b += 64) pattern(b, 64 * K4).copy(model, b * K4);
    const snaps: Buffer[] = [];
    let seed = 7;
    const next = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; };
    for (let round = 0; round < 4; round++) {
      const writes: Promise<void>[] = [];
      // Distinct blocks within a round: two writes in flight to one block may land in either order.
      const touched = new Set<number>();
      for (let k = 0; k < 300; k++) {
        const b = next() % blocks;
        if (touched.has(b)) continue;
        touched.add(b);
        const data = pattern(10000 * round + k, K4);
        data.copy(model, b * K4);
        writes.push(engine.write(id, b * K4, data));
      }
      // Taken with the round's writes in flight: it holds whatever they had switched when it got the lock.
      const snap = engine.createSnapshots([`v@r${round}`]);
      await Promise.all(writes);
      await snap;
      snaps.push(await engine.read(engine.resolve(`v@r${round}`).id, 0, blocks * K4));
    }
    assert.deepEqual(await engine.read(id, 0, blocks * K4), model);
    if (fastPaths) assert.ok(leavesCountedNow > 0, 'shared leaves\' extents were counted on dirty pages');
    else assert.equal(countedNow + leavesCountedNow, 0, 'fastPaths off: every count takes the awaited path');
    for (let round = 0; round < 4; round++) assert.deepEqual(await engine.read(engine.resolve(`v@r${round}`).id, 0, blocks * K4), snaps[round]);
    await engine.flush();
    await assertClean(engine);
    for (let round = 0; round < 4; round++) await engine.deleteSnapshot(`v@r${round}`);
    await engine.drainDeletes();
    await assertClean(engine);
  });
}
