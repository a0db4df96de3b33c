// Unit tests of the space map and allocator, the commit protocol and recovery, on a simulated device:
// counts and free summaries persist, freed blocks are not reused before their commit is durable, a
// crash at any point of a commit recovers the previous or the new state and nothing in between.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { MetaStore } from '../src/engine/meta-store.js';
import { SpaceMap, LARGE_RUN_BLOCKS, WHOLE_RUN_BLOCKS_MAX, WHOLE_RUN_WANTED_BLOCKS_MIN, type Run } from '../src/engine/space-map.js';
import { REFCOUNTS_PER_PAGE } from '../src/engine/constants.js';


/**
 * A space map of `totalBlocks` on a fresh simulated device, its metadata lock held: these tests change
 * the space map directly, as a mutation would, under the lock.
 */
async function lockedSpaceMap(totalBlocks: number, seed: number): Promise<{ store: MetaStore; space: SpaceMap }> {
  const store = new MetaStore(new SimDevice(totalBlocks, new Prng(seed)), 1, 1 << 20);
  await store.mutex.lock();
  const space = new SpaceMap(store, 0, totalBlocks, 100);
  await space.init();
  return { store, space };
}

test('space map: counts, free summary, reservation and deferred reuse', async () => {
  const { store, space } = await lockedSpaceMap(20000, 1);
  assert.equal(space.freeBlocks, 20000);
  await space.incref(0);
  await space.incref(1);
  const runs = await space.reserve(3000, false);
  assert.equal(runs.reduce((n, r) => n + r.lengthBlocks, 0), 3000);
  assert.ok(runs.every((r) => r.pba >= 2), 'superblock slots are never handed out');
  for (const r of runs) await space.addRange(r.pba, r.lengthBlocks, 1);
  assert.equal(space.freeBlocks, 20000 - 3002);
  assert.equal(await space.array.freeTotal(), 20000 - 3002, 'radix summary agrees');
  const victim = runs[0]!.pba;
  await space.decref(victim);
  assert.equal(await space.get(victim), 0);
  assert.ok(space.isPendingFree(victim));
  const more = await space.reserve(16950, false).catch((e: unknown) => e);
  assert.ok(more instanceof Error, 'the metadata reserve is kept from data');
  const some = await space.reserve(100, false);
  assert.ok(some.every((r) => victim < r.pba || victim >= r.pba + r.lengthBlocks), 'a block freed in this transaction is not reused');
  space.unreserve(some);
  // Pages span REFCOUNTS_PER_PAGE blocks; a range across a page boundary updates both.
  const edge = REFCOUNTS_PER_PAGE * 5 - 2;
  await space.addRange(edge, 4, 1);
  for (let b = edge; b < edge + 4; b++) assert.equal(await space.get(b), (b >= runs[0]!.pba && b < 3002) ? 2 : 1);
});

test('commit protocol: a crash at any write of a commit recovers old or new state, never a mix', async () => {
  const history = async (device: SimDevice): Promise<void> => {
    const engine = await createPool(device, { commitIntervalMs: 0 });
    await engine.createVolume('v', 1 << 20);
    await engine.write(engine.resolve('v').id, 0, Buffer.alloc(65536, 1), { fua: true });
    await engine.write(engine.resolve('v').id, 0, Buffer.alloc(65536, 2));
    await engine.write(engine.resolve('v').id, 200000, Buffer.alloc(300000, 3));
    await engine.createSnapshots(['v@s']);
  };
  // Count the writes of the whole history, then cut power after each one in turn.
  const probe = new SimDevice(4096, new Prng(9));
  await history(probe);
  const total = probe.counters.writes;
  assert.ok(total > 5);
  let sawOld = 0, sawNew = 0;
  // Cut total + 1 is after the last write and its flush: the history's end, which must be the new state.
  for (let cut = 1; cut <= total + 1; cut++) {
    const device = new SimDevice(4096, new Prng(9));
    let image: SimDevice | null = null;
    const write = device.write.bind(device);
    device.write = async (block: number, data: Buffer): Promise<void> => {
      await write(block, data);
      // ">=": with writes in flight together the count can pass `cut` before this one completes.
      if (image === null && device.counters.writes >= cut) image = device.crash('clean');
    };
    await history(device);
    const crashed = image ?? device.crash('clean');
    const report = await checkPool(crashed).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    // Create writes the zeroed slots (blocks 0-1, 128, 129), its metadata, then the first primary (write 6).
    if (report instanceof Error) { assert.ok(cut <= 6, `only a pool still being created may be unopenable (cut ${cut})`); continue; }
    assert.deepEqual(report.problems, [], `check after a cut at write ${cut}`);
    const reopened = await openPool(crashed);
    if (reopened.listVolumes().length === 0) continue;
    const data = await reopened.read(reopened.resolve('v').id, 0, 65536);
    if (reopened.listSnapshots('v').length === 1) {
      sawNew++;
      assert.deepEqual(data, Buffer.alloc(65536, 2), `new state complete (cut ${cut})`);
      assert.deepEqual(await reopened.read(reopened.resolve('v@s').id, 200000, 300000), Buffer.alloc(300000, 3));
    } else if (data[0] !== 0) {
      sawOld++;
      assert.ok(data.equals(Buffer.alloc(65536, 1)) || data.equals(Buffer.alloc(65536, 2)), `a flushed state, not a mix (cut ${cut})`);
    }
  }
  assert.ok(sawOld > 0 && sawNew > 0, 'the cuts cover both sides of the last commit');
});

test('blocks freed in a commit are not reused by a write racing that commit', async () => {
  const device = new SimDevice(8192, new Prng(5));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('a', 4 << 20);
  await engine.createVolume('b', 4 << 20);
  const a = engine.resolve('a').id, b = engine.resolve('b').id;
  await engine.write(a, 0, Buffer.alloc(64 * 4096, 1));
  await engine.checkpoint();
  await engine.write(a, 0, Buffer.alloc(64 * 4096, 2)); // frees the 64 blocks of the first write
  // Hold the commit between writing its metadata and its superblock.
  const realFlush = device.flush.bind(device);
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let entered!: () => void;
  const inCommit = new Promise<void>((r) => { entered = r; });
  let armed = true;
  device.flush = async (): Promise<void> => {
    if (armed) { armed = false; entered(); await gate; }
    return realFlush();
  };
  const commit = engine.checkpoint();
  await inCommit;
  // Point the allocator back at the start of the pool, where the freed blocks are.
  (engine.core.space as unknown as { cursor: number }).cursor = 2;
  await engine.write(b, 0, Buffer.alloc(64 * 4096, 3)); // races the commit
  await realFlush(); // everything written so far reaches the disk, but not the new superblock
  const image = device.crash('clean');
  release();
  await commit;
  const report = await checkPool(image);
  assert.deepEqual(report.problems, [], 'the last durable state is intact');
  const reopened = await openPool(image);
  assert.deepEqual(await reopened.read(reopened.resolve('a').id, 0, 64 * 4096), Buffer.alloc(64 * 4096, 1));
});

test('lock-free reservation spans loaded pages, skips used and held blocks, and gives up cleanly', async () => {
  // 40 count pages: more than a large reservation may scan without the lock.
  const { store, space } = await lockedSpaceMap(40000, 2);
  // Load (dirty) the first three count pages and use a few blocks near the first page's end.
  const edge = REFCOUNTS_PER_PAGE - 10;
  await space.addRange(0, 2, 1);
  await space.addRange(edge, 3, 1);
  await space.addRange(REFCOUNTS_PER_PAGE + 5, 1, 1);
  await space.addRange(2 * REFCOUNTS_PER_PAGE + 5, 1, 1);
  const first = await space.reserve(edge - 2, false); // fills the first page up to the used blocks
  assert.equal(first.reduce((n, r) => n + r.lengthBlocks, 0), edge - 2);
  const runs = space.tryReserveSync(15); // below LARGE_RUN_BLOCKS: first fit
  assert.ok(runs, 'the next pages are in memory: no lock needed');
  const blocks = runs.flatMap((r) => Array.from({ length: r.lengthBlocks }, (_, i) => r.pba + i));
  assert.equal(blocks.length, 15);
  assert.deepEqual(blocks.slice(0, 7), [edge + 3, edge + 4, edge + 5, edge + 6, edge + 7, edge + 8, edge + 9], 'rest of page 0 first');
  assert.ok(!blocks.includes(REFCOUNTS_PER_PAGE + 5), 'a used block is skipped');
  assert.equal(new Set(blocks).size, 15, 'no block twice');
  const again = space.tryReserveSync(5);
  assert.ok(again && again.every((r) => blocks.every((b) => b < r.pba || b >= r.pba + r.lengthBlocks)), 'reserved blocks are not handed out again');
  // A reservation reaching past the pages it may scan reserves nothing and leaves the cursor alone.
  const availableBefore = space.availableBlocks;
  assert.equal(space.tryReserveSync(35 * REFCOUNTS_PER_PAGE), null);
  assert.equal(space.availableBlocks, availableBefore, 'nothing was reserved');
  const next = space.tryReserveSync(1);
  assert.ok(next && next[0]!.pba > blocks[blocks.length - 1]!, 'the cursor did not move on failure');
});

test('a large reservation takes long free runs and leaves short holes to small writes, with first fit as fallback', async () => {
  const { store, space } = await lockedSpaceMap(20000, 3);
  const blocksOf = (runs: Run[]): number[] => runs.flatMap((r) => Array.from({ length: r.lengthBlocks }, (_, i) => r.pba + i));
  // Page 0 as random overwrites leave it: every other block used, up to 600; free from 600 on.
  await space.addRange(0, 2, 1);
  for (let b = 2; b < 600; b += 2) await space.addRange(b, 1, 1);
  const large = space.tryReserveSync(64);
  assert.ok(large, 'found without the lock');
  assert.deepEqual(large, [{ pba: 599, lengthBlocks: 64 }], 'one run past the holes, not 64 single blocks');
  const small = space.tryReserveSync(3);
  assert.deepEqual(small && blocksOf(small), [3, 5, 7], 'small writes still fill the holes first');
  const next = space.tryReserveSync(LARGE_RUN_BLOCKS);
  assert.deepEqual(next, [{ pba: 663, lengthBlocks: LARGE_RUN_BLOCKS }], 'large writes continue where the last one ended');
  // Free: 679..695 (17 blocks), 697..699 (3), then used 700..999. A run shorter than LARGE_RUN_BLOCKS
  // is taken when it completes the request exactly.
  await space.addRange(696, 1, 1);
  await space.addRange(700, 300, 1);
  const exact = space.tryReserveSync(20);
  assert.deepEqual(exact, [{ pba: 679, lengthBlocks: 17 }, { pba: 697, lengthBlocks: 3 }]);
  // Only short holes left anywhere: the large reservation falls back to first fit and still succeeds.
  for (let b = 1000; b < 20000; b += 2) await space.addRange(b, 1, 1);
  const held = space.availableBlocks;
  const fallback = space.tryReserveSync(32);
  assert.ok(fallback, 'first fit over the holes when no long run is in reach');
  const got = blocksOf(fallback);
  assert.equal(got.length, 32);
  assert.ok(got.every((b) => b % 2 === 1 && b < 600 || b >= 1000), 'holes only');
  assert.equal(new Set([...got, ...blocksOf(small!)]).size, 35, 'nothing handed out twice');
  assert.equal(space.availableBlocks, held - 32);
});

test('a large reservation takes whole runs past free space cut into long runs, and long runs when no whole run is in reach', async () => {
  const pages = 30;
  const total = pages * REFCOUNTS_PER_PAGE;
  const { store, space } = await lockedSpaceMap(total, 4);
  // The first 10 pages as random overwrites leave them after some frees: one block in 20 used, free
  // runs of 19 (long runs, no whole one); free from the last of them on.
  await space.addRange(0, 2, 1);
  let lastUsed = 0;
  for (let b = 2; b < 10 * REFCOUNTS_PER_PAGE; b += 20) { await space.addRange(b, 1, 1); lastUsed = b; }
  const free = lastUsed + 1;
  const whole = space.tryReserveSync(WHOLE_RUN_BLOCKS_MAX);
  assert.deepEqual(whole, [{ pba: free, lengthBlocks: WHOLE_RUN_BLOCKS_MAX }], 'one run for a 1 MiB request, not 14 runs of 19 blocks');
  const next = space.tryReserveSync(WHOLE_RUN_WANTED_BLOCKS_MIN);
  assert.deepEqual(next, [{ pba: free + WHOLE_RUN_BLOCKS_MAX, lengthBlocks: WHOLE_RUN_WANTED_BLOCKS_MIN }], 'whole runs continue where the last one ended');
  const longer = space.tryReserveSync(3 * WHOLE_RUN_BLOCKS_MAX);
  assert.deepEqual(longer, [{ pba: free + WHOLE_RUN_BLOCKS_MAX + WHOLE_RUN_WANTED_BLOCKS_MIN, lengthBlocks: 3 * WHOLE_RUN_BLOCKS_MAX }], 'a longer request is one run too where one is free');
  // Below the whole-run size, a request still takes the long runs among the used blocks.
  const belowWhole = space.tryReserveSync(WHOLE_RUN_WANTED_BLOCKS_MIN - 1);
  assert.ok(belowWhole && belowWhole[0]!.pba < free && belowWhole.every((r, i) => r.lengthBlocks >= LARGE_RUN_BLOCKS || i === belowWhole.length - 1));
  // No whole run left anywhere: one block in 20 used up to the pool's end.
  for (let b = free + 4 * WHOLE_RUN_BLOCKS_MAX + WHOLE_RUN_WANTED_BLOCKS_MIN; b < total; b += 20) await space.addRange(b, 1, 1);
  const available = space.availableBlocks;
  const fallback = space.tryReserveSync(WHOLE_RUN_BLOCKS_MAX);
  assert.ok(fallback, 'long runs when no whole run is in reach');
  assert.equal(fallback.reduce((n, r) => n + r.lengthBlocks, 0), WHOLE_RUN_BLOCKS_MAX);
  assert.ok(fallback.every((r, i) => r.lengthBlocks >= LARGE_RUN_BLOCKS || i === fallback.length - 1), 'runs of at least LARGE_RUN_BLOCKS but the last');
  assert.equal(space.availableBlocks, available - WHOLE_RUN_BLOCKS_MAX);
  const reserved = [...whole!, ...next!, ...longer!, ...belowWhole, ...fallback];
  const blocks = reserved.flatMap((r) => Array.from({ length: r.lengthBlocks }, (_, i) => r.pba + i));
  assert.equal(new Set(blocks).size, blocks.length, 'nothing handed out twice');
  for (const r of reserved) for (let b = r.pba; b < r.pba + r.lengthBlocks; b++) assert.equal(await space.get(b), 0, `block ${b} was free`);
});

test('whole runs freed by a commit are found again once released, also after a search found none to the pool end', async () => {
  const pages = 12;
  const total = pages * REFCOUNTS_PER_PAGE;
  const { store, space } = await lockedSpaceMap(total, 8);
  // Every block used but one in 20: no whole run anywhere.
  await space.addRange(0, 2, 1);
  for (let b = 2; b < total; b++) if (b % 20 !== 0) await space.addRange(b, 1, 1);
  const cut = space.tryReserveSync(WHOLE_RUN_WANTED_BLOCKS_MIN);
  assert.ok(cut === null || cut.length > 1, 'no whole run: holes or nothing');
  if (cut) space.unreserve(cut);
  // An overwrite frees a whole run low in the pool: unusable while its transaction is open.
  const freed = 5 * REFCOUNTS_PER_PAGE;
  for (let b = freed; b < freed + WHOLE_RUN_BLOCKS_MAX; b++) if (b % 20 === 0) await space.addRange(b, 1, 1);
  await space.addRange(freed, WHOLE_RUN_BLOCKS_MAX, -1);
  const early = space.tryReserveSync(WHOLE_RUN_BLOCKS_MAX);
  assert.ok(early === null || early.every((r) => r.pba + r.lengthBlocks <= freed || r.pba >= freed + WHOLE_RUN_BLOCKS_MAX), 'a pending free is not handed out');
  if (early) space.unreserve(early);
  // Its commit is durable and no older read runs: the run is released and found again.
  const entry = space.sealPendingFrees();
  space.committed(entry, 1);
  space.releaseQuarantine(1);
  assert.deepEqual(space.tryReserveSync(WHOLE_RUN_BLOCKS_MAX), [{ pba: freed, lengthBlocks: WHOLE_RUN_BLOCKS_MAX }]);
});

test('metadata blocks come from a reserved run: a commit after scattered writes is a few device writes', async () => {
  const device = new SimDevice(32768, new Prng(6));
  const commits: Array<{ metaBlocks: number }> = [];
  const engine = await createPool(device, {
    commitIntervalMs: 0,
    log: (event, fields) => { if (event === 'commit') commits.push(fields as { metaBlocks: number }); },
  });
  await engine.createVolume('v', 64 * 1024 * 1024);
  const id = engine.resolve('v').id;
  await engine.checkpoint();
  // Scattered 4 KiB writes: each reserves a data block, and many shadow or split a tree node, so data
  // and metadata allocations interleave.
  const prng = new Prng(7);
  for (let i = 0; i < 3000; i++) await engine.write(id, prng.int(0, 16383) * 4096, Buffer.alloc(4096, 1 + (i % 250)));
  const writesBefore = device.counters.writes;
  const committed = commits.length;
  await engine.checkpoint();
  const commitWrites = device.counters.writes - writesBefore;
  const metaBlocks = commits.slice(committed).reduce((n, c) => n + c.metaBlocks, 0);
  // (35 since a leaf just over full splits in halves; 41+ when it split into two halves and a sliver.)
  assert.ok(metaBlocks > 30, `the commit wrote a good number of metadata blocks (${metaBlocks})`);
  // One write per run of up to 256 blocks, plus the superblock; taken one by one between the data
  // blocks, each metadata block was its own run.
  assert.ok(commitWrites <= Math.ceil(metaBlocks / 256) + 4, `${metaBlocks} metadata blocks in ${commitWrites} device writes`);
  const check = await checkPool(device.crash('clean'));
  assert.deepEqual(check.problems, []);
});

test('a referenced range on a dirty count page gains a reference without awaiting; otherwise nothing changes', async () => {
  const { store, space } = await lockedSpaceMap(20000, 3);
  const page = REFCOUNTS_PER_PAGE * 2;
  await space.addRange(page + 10, 5, 1);
  const free = space.freeBlocks;
  assert.equal(space.tryIncrefReferenced(page + 10, 5), true, 'one dirty page, every block referenced');
  for (let b = page + 10; b < page + 15; b++) assert.equal(await space.get(b), 2);
  assert.equal(space.freeBlocks, free, 'no count crossed 0: the free total stays');
  // A range reaching onto a page never written (not dirty) is declined, unchanged.
  const edge = REFCOUNTS_PER_PAGE * 4 - 2;
  await space.addRange(edge, 2, 1);
  assert.equal(space.tryIncrefReferenced(edge, 4), false, 'a range across pages takes addRange');
  assert.equal(await space.get(edge), 1);
  assert.equal(space.tryIncrefReferenced(REFCOUNTS_PER_PAGE * 9, 1), false, 'a page not dirty takes addRange');
  space.fastPaths = false;
  assert.equal(space.tryIncrefReferenced(page + 10, 5), false, 'fastPaths off');
  assert.equal(await space.get(page + 10), 2);
  space.fastPaths = true;
  // A block no node references has count 0: counting it "again" is an accounting bug, not a claim.
  assert.throws(() => space.tryIncrefReferenced(page + 20, 1), /has count 0/);
});

test('a shadowed leaf\'s extents gain a reference all at once, or none does', async () => {
  const { space } = await lockedSpaceMap(20000, 4);
  const page = REFCOUNTS_PER_PAGE * 2;
  await space.addRange(page + 10, 5, 1);
  await space.addRange(page + 40, 1, 1);
  await space.addRange(REFCOUNTS_PER_PAGE * 3 + 7, 2, 1);
  const pbas = new Float64Array([page + 40, page + 10, REFCOUNTS_PER_PAGE * 3 + 7, 0]);
  const lens = new Uint8Array([1, 5, 2, 0]);
  const free = space.freeBlocks;
  assert.equal(space.tryIncrefReferencedExtents(pbas, lens, 3), true, 'every extent on a dirty page');
  for (const [b, want] of [[page + 40, 2], [page + 10, 2], [page + 14, 2], [page + 15, 0], [REFCOUNTS_PER_PAGE * 3 + 8, 2]] as const) {
    assert.equal(await space.get(b), want, `count of block ${b}`);
  }
  assert.equal(space.freeBlocks, free, 'no count crossed 0');
  // The first pass finds a later extent's page not dirty: nothing at all has changed.
  const edge = REFCOUNTS_PER_PAGE * 6 - 1;
  await space.addRange(edge, 2, 1);
  const across = new Float64Array([page + 10, edge]), acrossLens = new Uint8Array([5, 2]);
  assert.equal(space.tryIncrefReferencedExtents(across, acrossLens, 2), false, 'an extent across two pages');
  const clean = new Float64Array([page + 10, REFCOUNTS_PER_PAGE * 9]);
  assert.equal(space.tryIncrefReferencedExtents(clean, new Uint8Array([5, 1]), 2), false, 'an extent on a page not dirty');
  assert.equal(await space.get(page + 10), 2, 'declined calls changed nothing');
  space.fastPaths = false;
  assert.equal(space.tryIncrefReferencedExtents(pbas, lens, 3), false, 'fastPaths off');
  space.fastPaths = true;
  assert.equal(await space.get(page + 40), 2);
  // An extent nothing references (count 0) stops the pool: an accounting bug, not a claim.
  assert.throws(() => space.tryIncrefReferencedExtents(new Float64Array([page + 41]), new Uint8Array([1]), 1), /has count 0/);
  assert.throws(() => space.tryIncrefReferencedExtents(new Float64Array([20000 - 1]), new Uint8Array([2]), 1), /inside the pool/);
});
