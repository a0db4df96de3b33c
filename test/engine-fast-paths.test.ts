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
