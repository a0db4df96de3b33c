// Freeing a deleted volume's metadata in the background when one of its nodes cannot be read: the
// pool keeps serving every live volume. A damaged node is given up and its subtree leaked (reported by
// the check as leaks, nothing worse); a read error only postpones the freeing, which finishes once the
// device reads again. Before, either stopped the whole pool for a volume that was already gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SimDevice } from '../src/engine/device/sim-device.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { IoError } from '../src/engine/index.js';
import { openPool, checkPool } from '../src/engine/pool.js';
import { MetaType } from '../src/engine/format.js';
import { pattern, MiB, eventOptions, simPoolWithVolume, type Events } from './engine-helpers.js';

const B = 4096;

interface Setup { image: SimDevice; engine: CairnEngine; events: Events; leaf: number; kept: Buffer }

/**
 * Volume `v` with a tree of several leaves (a block written at every other address, so no extents
 * merge) and volume `w` that stays; committed, closed and reopened so that nothing is cached.
 */
async function deletedTreeSetup(seed: number, damageLeaf: boolean): Promise<Setup> {
  const { device, engine, id } = await simPoolWithVolume(8192, 8 * MiB, seed);
  for (let lba = 0; lba < 2048; lba += 2) await engine.write(id, lba * B, pattern(lba, B));
  await engine.createVolume('w', MiB);
  const kept = pattern(seed, MiB);
  await engine.write(engine.resolve('w').id, 0, kept);
  await engine.checkpoint();
  const root = await engine.core.trees.load(engine.core.catalog.byId.get(id)!.root);
  assert.equal(root.type, MetaType.Branch, 'the tree has a branch over its leaves');
  assert.ok(root.type === MetaType.Branch && root.children.length >= 4, 'several leaves');
  const leaf = root.children[2]!;
  await engine.close();
  const image = device.crash('clean');
  if (damageLeaf) image.injectBitFlip(leaf, 777);
  const events: Events = [];
  return { image, engine: await openPool(image, eventOptions(events)), events, leaf, kept };
}

async function assertServing(s: Setup): Promise<void> {
  const w = s.engine.resolve('w').id;
  assert.deepEqual(await s.engine.read(w, 0, MiB), s.kept, 'the live volume reads back');
  const data = pattern(42, 8 * B);
  await s.engine.write(w, 16 * B, data);
  await s.engine.flush();
  s.kept.set(data, 16 * B);
  assert.deepEqual(await s.engine.read(w, 0, MiB), s.kept, 'and takes writes');
}

test('a damaged node of a deleted volume is leaked, not fatal: the rest is freed and every live volume serves', async () => {
  const s = await deletedTreeSetup(11, true);
  await s.engine.deleteVolume('v');
  await s.engine.drainDeletes();
  const leaked = s.events.filter((e) => e.event === 'gc_node_leaked');
  assert.deepEqual(leaked.map((e) => e.fields.block), [s.leaf], JSON.stringify(leaked));
  assert.equal(s.engine.stats().pendingDeleteNodes, 0);
  await assertServing(s);
  await s.engine.close();
  // What the damaged leaf referenced (itself and its data blocks) is leaked; everything else was freed.
  const report = await checkPool(s.image.crash('clean'));
  assert.ok(report.problems.length > 0, 'the leak is reported');
  assert.deepEqual([...new Set(report.problems.map((p) => p.kind))], ['leak'], JSON.stringify(report.problems.slice(0, 5)));
  assert.ok(report.problems.some((p) => p.physicalBlock === s.leaf), 'the damaged leaf is among the leaked blocks');
  assert.ok(report.problems.length < 300, `only that leaf's blocks: ${report.problems.length}`);
});

test('a read error while freeing a deleted volume postpones the freeing, and it finishes once the device reads', async () => {
  const s = await deletedTreeSetup(12, false);
  await s.engine.deleteVolume('v');
  // Before the background step's turn: every read fails from here on.
  s.image.failNextReads(1_000_000);
  await assert.rejects(s.engine.drainDeletes(), (err: unknown) => err instanceof IoError && /freeing deleted metadata stopped/.test(err.message));
  assert.ok(s.events.some((e) => e.event === 'gc_deferred'), 'logged');
  assert.ok(!s.events.some((e) => e.event === 'engine_stopped' || e.event === 'gc_node_leaked'), JSON.stringify(s.events.map((e) => e.event)));
  assert.ok(s.engine.stats().pendingDeleteNodes > 0, 'still queued');
  s.image.failNextReads(0);
  await assertServing(s);
  await s.engine.drainDeletes();
  assert.equal(s.engine.stats().pendingDeleteNodes, 0);
  await s.engine.close();
  assert.deepEqual((await checkPool(s.image.crash('clean'))).problems, [], 'nothing leaked');
});
