// Invariants checked where they can break (issue 17, section 2): the metadata lock knows its holder,
// each metadata block type has one validator used before a write and after a read (a failure is a
// typed error naming its cause), every tree descent is bounded, and the figures ARCHITECTURE.md quotes
// are the constants'.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mutex } from '../src/engine/mutex.js';
import { MetaStore } from '../src/engine/meta-store.js';
import { SpaceMap } from '../src/engine/space-map.js';
import { Trees } from '../src/engine/btree.js';
import { diffTrees } from '../src/engine/diff.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import {
  branchOf, countPageOf, decodeMeta, encodeMeta, leafOf, radixOf, setU64, viewOf, MetaType, type MetaObject,
} from '../src/engine/format.js';
import { LeafExtents } from '../src/engine/leaf-extents.js';
import { blockChecksum } from '../src/engine/checksum.js';
import {
  AssertionError, CairnError, MetaCorrupt, MetaTooDeep, META_CORRUPT_CODES,
} from '../src/engine/errors.js';
import * as C from '../src/engine/constants.js';
import { statusForCode } from '../src/api/problem.js';
import { nbdErrnoOf } from '../src/nbd/errno.js';
import { NBD_EIO } from '../src/nbd/constants.js';
import { tempPool, pattern, MiB } from './engine-helpers.js';
import { root } from './cli-helpers.js';

// ---- the lock knows its holder ----

test('the metadata lock: held only between lock() and release, released once, by its holder', async () => {
  const mutex = new Mutex();
  assert.throws(() => mutex.assertHeld(), AssertionError, 'not held before lock()');
  const release = await mutex.lock();
  mutex.assertHeld();
  assert.equal(mutex.held, true);
  release();
  assert.throws(() => mutex.assertHeld(), AssertionError, 'not held after release');
  assert.throws(() => release(), /released twice/, 'a double release is an assertion failure');
  // A stale release after another caller took the lock: a release by a non-holder.
  const first = await mutex.lock();
  first();
  const second = await mutex.lock();
  assert.throws(() => first(), AssertionError);
  second();
  // runNow holds it for the synchronous run only, and only when nobody holds or waits for it.
  assert.equal(mutex.runNow(() => { mutex.assertHeld(); return 7; }), 7);
  assert.equal(mutex.held, false);
  const third = await mutex.lock();
  assert.throws(() => mutex.runNow(() => 1), AssertionError);
  third();
});

test('metadata changed without the lock is an assertion failure; under it, it is not', async () => {
  const device = new SimDevice(4096, new Prng(7));
  const store = new MetaStore(device, 1, 1 << 20);
  const space = new SpaceMap(store, 0, 4096, 0);
  await space.init();
  await assert.rejects(space.incref(5), AssertionError, 'a count changed without the lock');
  assert.throws(() => space.tryAddRange(5, 1, 1), AssertionError);
  await assert.rejects(space.allocMeta(), AssertionError);
  assert.throws(() => store.markDirty(countPageOf(9, 0, new Uint32Array(C.REFCOUNTS_PER_PAGE))), AssertionError);
  const release = await store.mutex.lock();
  await space.incref(5);
  assert.equal(await space.get(5), 1);
  release();
});

test('the pool takes the lock for every mutation, also the lock-free fast path', async (t) => {
  const { engine, cleanup } = await tempPool(32 * MiB);
  t.after(cleanup);
  const core = engine.core;
  await engine.createVolume('v', MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(1, 4096));
  await engine.write(id, 4096, pattern(2, 4096)); // mutateNow's path: its mutation ran as the holder
  assert.equal(core.mutex.held, false, 'released after each mutation');
  await assert.rejects(core.freeSomeNodes(1), AssertionError, 'a PoolCore mutation outside the lock');
  assert.equal(core.mutateNow(() => { core.assertHeld(); return 1; }), 1);
  assert.equal(await core.mutate(async () => { core.assertHeld(); return 2; }), 2);
});

// ---- one validator per block type ----

function reChecksum(buf: Buffer): Buffer {
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(blockChecksum(buf), 8);
  return buf;
}

function codeOf(fn: () => unknown): { code: string; block: number; expected: string; found: string } {
  try { fn(); } catch (err) {
    assert.ok(err instanceof MetaCorrupt, `a typed corruption error, got ${String(err)}`);
    assert.equal(err.errno, 'EIO');
    return { code: err.code, block: err.physicalBlock, expected: err.expected, found: err.found };
  }
  return assert.fail('decode accepted a damaged block');
}

const limits = { totalBlocks: 1000, generationMax: 10 };
const leaf = (): MetaObject => leafOf(9, 3, LeafExtents.of([
  { lba: 0, pba: 100, lengthBlocks: 2, crcs: Uint32Array.of(1, 2) },
  { lba: 10, pba: 200, lengthBlocks: 1, crcs: Uint32Array.of(3) },
]));

test('each header failure is its own error: bad magic, bad checksum, wrong location, wrong type', () => {
  const good = encodeMeta(leaf(), limits);
  assert.equal(decodeMeta(Buffer.from(good), 9, MetaType.Leaf, limits).type, MetaType.Leaf);
  assert.deepEqual(codeOf(() => decodeMeta(Buffer.alloc(4096), 9, MetaType.Leaf, limits)), { code: 'meta_bad_magic', block: 9, expected: '0x434e5231', found: '0x0' });
  const flipped = Buffer.from(good); flipped[200]! ^= 1;
  assert.equal(codeOf(() => decodeMeta(flipped, 9, MetaType.Leaf, limits)).code, 'meta_bad_checksum');
  const moved = codeOf(() => decodeMeta(Buffer.from(good), 12, MetaType.Leaf, limits));
  assert.deepEqual(moved, { code: 'meta_wrong_location', block: 12, expected: 'block number 12', found: 'block number 9' });
  assert.equal(codeOf(() => decodeMeta(Buffer.from(good), 9, MetaType.Radix, limits)).code, 'meta_wrong_type');
  const future = encodeMeta(leafOf(9, 11, LeafExtents.of([])), { ...limits, generationMax: 11 });
  assert.equal(codeOf(() => decodeMeta(future, 9, MetaType.Leaf, limits)).code, 'meta_bad_structure', 'a block from a later generation');
});

test('a checksum-valid but malformed block of each type is refused on read, and never encoded', () => {
  const branch = (keys: number[], children: number[]): MetaObject => branchOf(50, 1, keys, children);
  const bad: [string, MetaObject][] = [
    ['branch keys out of order', branch([0, 20, 10], [60, 61, 62])],
    ['branch child outside the pool', branch([0, 20], [60, 5000])],
    ['branch child is itself', branch([0, 20], [60, 50])],
    ['branch children repeated', branch([0, 20], [60, 60])],
    ['leaf extent outside the pool', leafOf(9, 1, LeafExtents.of([{ lba: 0, pba: 999, lengthBlocks: 2, crcs: Uint32Array.of(1, 2) }]))],
    ['radix pointer outside the pool', radixOf(70, 1, Float64Array.from({ length: C.RADIX_FANOUT }, (_, i) => (i === 3 ? 4000 : 0)), new Float64Array(C.RADIX_FANOUT))],
  ];
  for (const [what, obj] of bad) {
    // Before a write: an engine bug, never written.
    assert.throws(() => encodeMeta(obj, limits), AssertionError, `${what}: refused before the write`);
  }
  // The same bytes written for a larger pool (or by something else) and read in this one: damage, named.
  for (const [what, obj] of bad.filter(([w]) => w.includes('outside the pool'))) {
    const bytes = encodeMeta(obj, { totalBlocks: 1 << 20, generationMax: 10 });
    const err = codeOf(() => decodeMeta(bytes, obj.block, undefined, limits));
    assert.equal(err.code, 'meta_bad_structure', what);
    assert.equal(err.block, obj.block, what);
  }
});

test('malformed branches that no limits allow are refused on read (keys out of order, self child, repeats)', () => {
  const good = encodeMeta(branchOf(50, 1, [0, 20, 30], [60, 61, 62]), limits);
  const cases: [string, (v: DataView) => void][] = [
    ['keys out of order', (v) => setU64(v, 32 + 16, 40)],
    ['a child pointing at itself', (v) => setU64(v, 32 + 8, 50)],
    ['a child twice', (v) => setU64(v, 32 + 24, 60)],
    ['a child outside the pool', (v) => setU64(v, 32 + 40, 1000)],
  ];
  for (const [what, change] of cases) {
    const buf = Buffer.from(good);
    change(viewOf(buf));
    const err = codeOf(() => decodeMeta(reChecksum(buf), 50, MetaType.Leaf, limits));
    assert.equal(err.code, 'meta_bad_structure', what);
    assert.equal(err.block, 50);
  }
});

// ---- every descent is bounded ----

test('a tree whose branches point at each other fails with meta_too_deep, in lookups, edits and diffs', async () => {
  const device = new SimDevice(4096, new Prng(8));
  const store = new MetaStore(device, 5, 1 << 20);
  const space = new SpaceMap(store, 0, 4096, 0);
  await space.init();
  const trees = new Trees(store, space);
  // Two valid branches (each passes its validator), each the other's child: a cycle on a damaged pool.
  store.put(branchOf(100, 1, [0], [101]));
  store.put(branchOf(101, 1, [0], [100]));
  assert.throws(() => trees.lookupCached(100, 0, 10), MetaTooDeep);
  await assert.rejects(trees.lookup(100, 0, 10), MetaTooDeep);
  await assert.rejects(trees.lookupLoading(100, 0, 10), (err: unknown) => err instanceof CairnError && err.code === 'meta_too_deep' && err.errno === 'EIO');
  await assert.rejects(diffTrees(trees, 100, 0, 0, 10), MetaTooDeep);
  const release = await store.mutex.lock();
  await assert.rejects(trees.edit(100, 0, 1, [], {}), MetaTooDeep);
  release();
  assert.ok(C.TREE_DEPTH_MAX >= 7 && C.TREE_DEPTH_MAX <= 64);
});

// ---- error codes reach the protocols ----

test('every corruption code maps to EIO on NBD and a server error in the API', () => {
  for (const code of META_CORRUPT_CODES) {
    const err = new MetaCorrupt(code, 9, 'test', 'x', 'y');
    assert.equal(nbdErrnoOf(err), NBD_EIO, code);
    assert.equal(statusForCode(code), 500, code);
  }
});

// ---- the figures ARCHITECTURE.md quotes are the constants ----

test('the figures ARCHITECTURE.md quotes match the constants', () => {
  const doc = readFileSync(join(root, 'ARCHITECTURE.md'), 'utf8').replace(/\s+/g, ' ');
  const figure = (re: RegExp, what: string): number[] => {
    const m = re.exec(doc);
    assert.ok(m, `ARCHITECTURE.md states ${what} (${re})`);
    return m.slice(1).map(Number);
  };
  const [reserveDivisor, reserveMin, reserveMaxMiB] = figure(/metadata reserve \(1\/(\d+) of the pool, at least (\d+) blocks or 1\/\d+ of a smaller pool, at most (\d+) MiB\)/, 'the metadata reserve');
  assert.equal(reserveDivisor, C.METADATA_RESERVE_DIVISOR);
  assert.equal(reserveMin, C.METADATA_RESERVE_BLOCKS_MIN);
  assert.equal(reserveMaxMiB! * MiB, C.METADATA_RESERVE_BLOCKS_MAX * C.BLOCK_SIZE_BYTES);
  assert.equal(C.metaReserveBlocks(1 << 30), C.METADATA_RESERVE_BLOCKS_MAX, 'the reserve stops at its maximum');
  assert.equal(C.metaReserveBlocks(64 * 256), Math.min(C.METADATA_RESERVE_BLOCKS_MIN, 64 * 256 / 8));
  assert.deepEqual(figure(/length ≤ (\d+) blocks/, 'the extent bound'), [C.EXTENT_BLOCKS_MAX]);
  assert.deepEqual(figure(/\| branch \| up to (\d+) ×/, 'the branch fan-out'), [C.BRANCH_FANOUT_MAX]);
  assert.deepEqual(figure(/\| radix \| (\d+) ×/, 'the radix fan-out'), [C.RADIX_FANOUT]);
  assert.deepEqual(figure(/\| refcount page \| (\d+) × u32/, 'counts per page'), [C.REFCOUNTS_PER_PAGE]);
  assert.deepEqual(figure(/\| catalog page \| (\d+) × (\d+)-byte records/, 'the catalog page'), [C.CATALOG_RECORDS_PER_PAGE, C.CATALOG_RECORD_BYTES]);
  assert.deepEqual(figure(/(\d+) nodes per step/, 'the delete step'), [C.DELETE_NODES_PER_STEP]);
  assert.deepEqual(figure(/every (\d+) s with dirty state/, 'the commit interval'), [C.COMMIT_INTERVAL_MS_DEFAULT / 1000]);
  assert.deepEqual(figure(/`cacheBytesMax` \(default (\d+) MiB\)/, 'the cache bound'), [C.CACHE_BYTES_DEFAULT / MiB]);
  assert.deepEqual(figure(/yielding to the event loop every (\d+) blocks/, 'the commit encode slice'), [C.COMMIT_ENCODE_YIELD_BLOCKS]);
  assert.deepEqual(figure(/a reserved run of (\d+) blocks/, 'the metadata run'), [C.META_ARENA_BLOCKS]);
  assert.deepEqual(figure(/A reservation of (\d+) blocks or more first takes whole runs: one free run for the request, or runs of at least (\d+) blocks for a longer one \(from a cursor of its own, (\d+) in-memory count pages at most/, 'the whole-run search'),
    [C.WHOLE_RUN_WANTED_BLOCKS_MIN, C.WHOLE_RUN_BLOCKS_MAX, C.WHOLE_SCAN_PAGES_MAX]);
  assert.deepEqual(figure(/a reservation of (\d+) blocks or more takes only free runs of \d+\+ blocks while it finds them \(from another cursor, (\d+) in-memory count pages at most/, 'the long-run search'),
    [C.LARGE_RUN_BLOCKS, C.LARGE_SCAN_PAGES_MAX]);
  assert.deepEqual(figure(/walks the clone in (\d+)-block steps/, 'the flatten step'), [C.FLATTEN_CHUNK_BLOCKS]);
  assert.deepEqual(figure(/name \(UTF-8, ≤ (\d+) bytes\)/, 'the name bound'), [C.NAME_BYTES_MAX]);
  assert.deepEqual(figure(/Volume size ≤ (\d+) TiB/, 'the volume bound'), [C.VOLUME_BYTES_MAX / 1024 ** 4]);
  assert.deepEqual(figure(/deeper than (\d+) levels/, 'the tree depth bound'), [C.TREE_DEPTH_MAX]);
});
