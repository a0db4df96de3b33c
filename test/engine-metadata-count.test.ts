// The pool's metadata share (issue 23): the space map counts data and metadata blocks alike, so the
// engine counts the blocks holding metadata objects as it allocates and frees them and stores the count
// in the superblock. The check's walk is the oracle: the count it finds is the one the superblock says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { BLOCK_SIZE_BYTES, FIRST_FREE_BLOCK, SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS } from '../src/engine/constants.js';
import { decodeSuperblock, encodeSuperblock } from '../src/engine/superblock.js';
import { pattern } from './engine-helpers.js';

const B = BLOCK_SIZE_BYTES;
const MiB = 1024 * 1024;

/** The metadata the check's walk finds, in bytes: its metadata objects plus the fixed regions. */
async function walkedMetadataBytes(engine: CairnEngine, device: SimDevice): Promise<number> {
  const report = await engine.check();
  assert.deepEqual(report.problems, []);
  const sb = newestSuperblock(device);
  return (FIRST_FREE_BLOCK + SUPERBLOCK_MIRROR_SLOTS.length + sb.logBlocks + 2 * sb.keyringBlocks + report.nodesChecked) * B;
}

function newestSuperblock(device: SimDevice): ReturnType<typeof decodeSuperblockValid> {
  const [a, b] = SUPERBLOCK_SLOTS.map((slot) => decodeSuperblockValid(device, slot));
  return a!.generation > b!.generation ? a! : b!;
}

function decodeSuperblockValid(device: SimDevice, block: number) {
  const d = decodeSuperblock(device.peek(block), block);
  assert.equal(d.state, 'valid');
  if (d.state !== 'valid') throw new Error('unreachable');
  return d.sb;
}

/** Rewrites every copy of the newest generation with `metaObjects` (what an older version, or damage, leaves). */
async function rewriteCount(device: SimDevice, metaObjects: number | null): Promise<void> {
  const sb = { ...newestSuperblock(device), metaObjects };
  for (const block of [...SUPERBLOCK_SLOTS, ...SUPERBLOCK_MIRROR_SLOTS]) {
    const d = decodeSuperblock(device.peek(block), block);
    if (d.state === 'valid' && d.sb.generation === sb.generation) await device.write(block, encodeSuperblock(sb, block));
  }
  await device.flush();
}

test('the metadata count follows writes, snapshots, clones, overwrites and deletes, and matches the walk after each', async () => {
  const device = new SimDevice(16384, new Prng(5));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  const stats = (): number => { const m = engine.stats().metadataBytes; assert.ok(m !== null); return m; };
  assert.equal(await walkedMetadataBytes(engine, device), stats(), 'a new pool');
  await engine.createVolume('v', 32 * MiB);
  const id = engine.resolve('v').id;
  const prng = new Prng(9);
  // Scattered 4 KiB writes: many leaves, branches, count pages.
  for (let i = 0; i < 600; i++) await engine.write(id, prng.int(0, 8191) * B, pattern(i, B));
  assert.equal(await walkedMetadataBytes(engine, device), stats(), 'after scattered writes');
  const afterWrites = stats();
  await engine.createSnapshots(['v@a']);
  await engine.cloneVolume('c', 'v@a');
  // Writes to both sides of the shared tree: nodes are shadowed, shared ones get a second owner.
  for (let i = 0; i < 300; i++) {
    await engine.write(id, prng.int(0, 8191) * B, pattern(1000 + i, B));
    await engine.write(engine.resolve('c').id, prng.int(0, 8191) * B, pattern(2000 + i, B));
  }
  assert.equal(await walkedMetadataBytes(engine, device), stats(), 'after snapshot, clone and writes to both');
  assert.ok(stats() > afterWrites, 'the shadowed nodes count');
  await engine.deleteVolume('c');
  await engine.deleteSnapshot('v@a');
  while (engine.stats().pendingDeleteNodes > 0) { await engine.flush(); await new Promise((resolve) => setImmediate(resolve)); }
  assert.equal(await walkedMetadataBytes(engine, device), stats(), 'after the deletes drained');
  const allocated = engine.stats().allocatedBytes;
  assert.ok(stats() < allocated && stats() > 0, 'metadata is part of what is allocated');
  await engine.close();
  // Stored in the superblock: the reopened pool says the same without a walk.
  const reopened = await openPool(device.crash('clean'), { commitIntervalMs: 0 });
  assert.equal(reopened.stats().metadataBytes, stats());
  await reopened.close();
});

test('a pool whose superblock does not say (an older version wrote it) is counted by a walk at open, and stores the count at its next commit', async () => {
  const device = new SimDevice(8192, new Prng(6));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 8 * MiB);
  for (let i = 0; i < 200; i++) await engine.write(engine.resolve('v').id, ((i * 37) % 2048) * B, pattern(i, B));
  await engine.close();
  const before = device.crash('clean');
  const counted = newestSuperblock(before).metaObjects;
  assert.ok(counted !== null && counted > 0);
  await rewriteCount(before, null);
  assert.equal(newestSuperblock(before).metaObjects, null);
  const reopened = await openPool(before, { commitIntervalMs: 0 });
  const walked = await walkedMetadataBytes(reopened, before);
  assert.equal(reopened.stats().metadataBytes, walked);
  assert.equal(newestSuperblock(before).metaObjects, counted, 'the check\'s commit stored the count again');
  await reopened.close();
});

test('the check reports a superblock whose metadata count disagrees with the pool', async () => {
  const device = new SimDevice(8192, new Prng(7));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 8 * MiB);
  await engine.write(engine.resolve('v').id, 0, pattern(1, 64 * B));
  await engine.close();
  const image = device.crash('clean');
  const sb = newestSuperblock(image);
  await rewriteCount(image, sb.metaObjects! + 5);
  const report = await checkPool(image);
  assert.equal(report.ok, false);
  assert.ok(report.problems.some((p) => p.kind === 'superblock' && /counts \d+ metadata blocks, the pool holds \d+/.test(p.message)), JSON.stringify(report.problems));
});
