// The write path's moving parts: gather-list payloads (socket chunks taken without a copy), the
// inline-vs-thread-pool I/O policy, allocation that reuses freed blocks from the pool's start, and
// failed I/O that settles only after all of a request's device I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { PayloadBlocks, dataLength, concatData } from '../src/engine/gather.js';
import { InlineIoPolicy, INLINE_IO_BYTES_MAX, READ_SLOW_FIXED_NS } from '../src/engine/device/inline-io.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool } from '../src/engine/pool.js';
import { openPoolFile } from '../src/engine/index.js';
import { AssertionError } from '../src/engine/errors.js';
import { tempPool, assertClean, pattern, MiB } from './engine-helpers.js';

const K4 = 4096;

/** Splits `buf` into chunks at the given cut points (as a socket would deliver it). */
function cut(buf: Buffer, points: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, buf.length]) { out.push(buf.subarray(at, p)); at = p; }
  return out;
}

test('PayloadBlocks: every block located in its chunk; only a block straddling chunks is copied', () => {
  const data = pattern(7, 4 * K4);
  const chunks = cut(data, [100, K4 + 100, 3 * K4]).map((c) => Buffer.from(c)); // separate buffers
  const blocks = new PayloadBlocks(chunks);
  assert.equal(blocks.count, 4);
  for (let i = 0; i < 4; i++) assert.deepEqual(blocks.block(i), data.subarray(i * K4, (i + 1) * K4), `block ${i}`);
  // Block 3 lies wholly inside the last chunk: a view of it, not a copy.
  assert.equal(blocks.block(3).buffer, chunks[3]!.buffer);
  assert.equal(blocks.pieces(3, 4)[0], chunks[3]);
  assert.equal(dataLength(chunks), data.length);
  assert.deepEqual(concatData(chunks), data);
  assert.throws(() => new PayloadBlocks([Buffer.alloc(K4 + 1)]), /whole blocks/);
  const zeros = new PayloadBlocks([Buffer.alloc(K4), Buffer.concat([Buffer.alloc(100), Buffer.from([1]), Buffer.alloc(K4 - 101)])]);
  assert.deepEqual([zeros.isZero(0), zeros.isZero(1)], [true, false]);
});

test('PayloadBlocks: blocks side by side in memory go out as one iovec, also across chunks', () => {
  const a = Buffer.alloc(3 * K4, 1), b = Buffer.alloc(K4, 2);
  const blocks = new PayloadBlocks([a, b]);
  const joined = blocks.pieces(0, 4);
  assert.equal(joined.length, 2);
  assert.equal(joined[0]!.length, 3 * K4);
  assert.deepEqual(Buffer.concat(joined), Buffer.concat([a, b]));
  assert.deepEqual(blocks.pieces(1, 3).map((v) => v.length), [2 * K4]);
  // Chunks that are neighbours in one buffer (successive socket reads into a slab) are one stretch,
  // even where a chunk boundary falls inside a block: nothing is copied then.
  const slab = pattern(9, 4 * K4);
  const adjacent = new PayloadBlocks(cut(slab, [100, 2 * K4 + 7]));
  assert.deepEqual(adjacent.pieces(0, 4).map((v) => v.length), [4 * K4]);
  assert.equal(adjacent.pieces(0, 4)[0]!.buffer, slab.buffer);
});

test('engine.write takes a gather list at any chunking and reads back the same bytes', async (t) => {
  const { engine, cleanup } = await tempPool();
  t.after(cleanup);
  await engine.createVolume('g', 8 * MiB);
  const id = engine.resolve('g').id;
  const data = pattern(3, 256 * K4);
  // Chunk sizes like a socket's (64 KiB), shifted by a 28-byte request header.
  const points: number[] = [];
  for (let p = 65536 - 28; p < data.length; p += 65536) points.push(p);
  await engine.write(id, MiB, cut(data, points));
  assert.deepEqual(await engine.read(id, MiB, data.length), data);
  // Unaligned write given as a gather list goes through read-modify-write.
  const small = pattern(4, 5000);
  await engine.write(id, 100, cut(small, [1, 4097]));
  assert.deepEqual(await engine.read(id, 100, small.length), small);
  // All-zero blocks inside a gather list become holes.
  await engine.write(id, 4 * MiB, [Buffer.alloc(K4 - 10), Buffer.alloc(K4 + 10)]);
  const holes = await engine.extents(id, 4 * MiB, 2 * K4);
  assert.deepEqual(holes.map((e) => e.hole), [true]);
  await assertClean(engine);
});

test('inline I/O: allowed up to its size bound, sent to the thread pool for a while after a slow call', () => {
  let now = 0;
  const policy = new InlineIoPolicy(READ_SLOW_FIXED_NS, () => now);
  assert.equal(policy.allows(K4), true);
  assert.equal(policy.allows(INLINE_IO_BYTES_MAX + 1), false);
  // A fast call keeps inline I/O on.
  policy.run(K4, () => { now += 0.005; });
  assert.equal(policy.allows(K4), true);
  // A 5 ms call (a cache miss) turns it off for the backoff period, which doubles while calls stay slow.
  policy.run(K4, () => { now += 5; });
  assert.equal(policy.slowCalls, 1);
  assert.equal(policy.allows(K4), false);
  now += 49;
  assert.equal(policy.allows(K4), false);
  now += 2;
  assert.equal(policy.allows(K4), true);
  policy.run(K4, () => { now += 5; });
  now += 60;
  assert.equal(policy.allows(K4), false, 'second backoff is longer');
  now += 50;
  assert.equal(policy.allows(K4), true);
  // The result of the operation is passed through, and errors propagate.
  assert.equal(policy.run(K4, () => 42), 42);
  assert.throws(() => policy.run(K4, () => { throw new Error('eio'); }), /eio/);
});

test('overwrites reuse freed blocks from the pool start: the pool file stays near the data size', async (t) => {
  const { engine, path, cleanup } = await tempPool(256 * MiB);
  t.after(cleanup);
  await engine.createVolume('o', 16 * MiB);
  const id = engine.resolve('o').id;
  for (let pass = 0; pass < 8; pass++) {
    for (let off = 0; off < 16 * MiB; off += MiB) await engine.write(id, off, pattern(pass * 100 + off / MiB, MiB));
    await engine.checkpoint();
  }
  for (let off = 0; off < 16 * MiB; off += MiB) assert.deepEqual(await engine.read(id, off, MiB), pattern(700 + off / MiB, MiB));
  // 8 passes wrote 128 MiB; with a rotating cursor the sparse file would have grown to ~128 MiB.
  const allocated = statSync(path).blocks * 512;
  assert.ok(allocated < 48 * MiB, `pool file allocates ${(allocated / MiB).toFixed(1)} MiB for 16 MiB of data`);
  await assertClean(engine);
});

/**
 * A pool on a simulated device whose reads or writes, once armed, go wrong in one pattern: the first
 * call fails at once, every later one lands 30 ms later. `slowInFlight` counts the late ones running.
 */
async function poolFailingFirst(kind: 'read' | 'write', seed: number) {
  const sim = new SimDevice(20000, new Prng(seed));
  const state = { armed: false, calls: 0, slowInFlight: 0 };
  const faulty = async (real: () => Promise<void>): Promise<void> => {
    if (!state.armed) return real();
    if (++state.calls === 1) throw new Error('injected EIO');
    state.slowInFlight++;
    await new Promise((r) => setTimeout(r, 30));
    await real();
    state.slowInFlight--;
  };
  const device = {
    get sizeBlocks() { return sim.sizeBlocks; },
    read: (block: number, into: Buffer) => (kind === 'read' ? faulty(() => sim.read(block, into)) : sim.read(block, into)),
    write: (block: number, data: Buffer) => (kind === 'write' ? faulty(() => sim.write(block, data)) : sim.write(block, data)),
    flush: () => sim.flush(),
    resize: (n: number) => sim.resize(n),
    refreshSize: () => sim.refreshSize(),
    close: () => sim.close(),
  };
  return { engine: await createPool(device, { commitIntervalMs: 0 }), state };
}

test('a failed read returns only after every other device read of that request has finished', async () => {
  const { engine, state } = await poolFailingFirst('read', 3);
  await engine.createVolume('r', 4 * MiB);
  const id = engine.resolve('r').id;
  await engine.write(id, 0, pattern(1, K4));
  await engine.write(id, 8 * K4, pattern(2, K4)); // a second extent, not logically adjacent: its own run
  // A caller that reuses its buffer when the read rejects (the NBD server's pooled buffers) must not
  // see a late read arrive after.
  state.armed = true;
  await assert.rejects(engine.read(id, 0, 9 * K4), /injected EIO|io_error|failed/);
  assert.equal(state.calls, 2, 'both runs were read');
  assert.equal(state.slowInFlight, 0, 'the other read had finished when the failure was reported');
  state.armed = false;
  assert.deepEqual(await engine.read(id, 8 * K4, K4), pattern(2, K4));
  await engine.close();
});

test('a failed write returns only after its other device writes have finished (its blocks are then free to reuse)', async () => {
  const { engine, state } = await poolFailingFirst('write', 4);
  await engine.createVolume('w', 16 * MiB);
  const id = engine.resolve('w').id;
  state.armed = true;
  // 5 MiB: more than one device write (at most 4 MiB each).
  await assert.rejects(engine.write(id, 0, pattern(5, 5 * MiB)), /injected EIO|io_error|failed/);
  assert.ok(state.calls >= 2, `more than one device write was issued (${state.calls})`);
  assert.equal(state.slowInFlight, 0, 'the other writes had finished when the failure was reported');
  state.armed = false;
  await engine.write(id, 0, pattern(6, MiB));
  assert.deepEqual(await engine.read(id, 0, MiB), pattern(6, MiB));
  await engine.close();
});

test('writes and snapshots racing commits: every write lands intact (a commit encodes its tree nodes after the lock)', async (t) => {
  const { engine, path, cleanup } = await tempPool(256 * MiB);
  t.after(cleanup);
  await engine.createVolume('r', 64 * MiB);
  const id = engine.resolve('r').id;
  const blocks = (64 * MiB) / K4;
  const latest = new Map<number, number>(); // block -> seed of its last write
  // Every other block written: single-block extents spread over ~100 leaves, so a round's random
  // writes dirty enough nodes that a commit awaits (and yields) while it writes them.
  for (let b = 0; b < blocks; b += 2) { await engine.write(id, b * K4, pattern(b, K4)); latest.set(b, b); }
  await engine.flush();
  const rng = new Prng(7);
  for (let round = 0; round < 24; round++) {
    // Distinct blocks per round: writes in flight together have no defined order.
    const picked = new Set<number>();
    while (picked.size < 96) picked.add(rng.int(0, blocks - 1));
    const ops: Promise<unknown>[] = [];
    let i = 0;
    for (const block of picked) {
      const seed = blocks + round * 1000 + i;
      ops.push(engine.write(id, block * K4, pattern(seed, K4)).then(() => latest.set(block, seed)));
      // Commits start while the round's other writes wait for the lock, then edit the tree
      // while the commit writes (and encodes) the nodes it took.
      if (++i % 32 === 0) ops.push(engine.flush());
    }
    if (round % 6 === 5) ops.push(engine.createSnapshots([`r@s${round}`]));
    await Promise.all(ops);
  }
  await engine.close();
  const again = await openPoolFile(path);
  const rid = again.resolve('r').id;
  for (const [block, seed] of latest) assert.deepEqual(await again.read(rid, block * K4, K4), pattern(seed, K4), `block ${block}`);
  await assertClean(again);
  await again.close();
});

test('commits asked for while one waits for the lock join it: a burst of writes past the dirty bound makes one commit, not two', async (t) => {
  const events: string[] = [];
  const { engine, cleanup } = await tempPool(64 * MiB, { log: (event) => { events.push(event); } });
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(1, K4));
  let open!: () => void;
  const gate = new Promise<void>((resolve) => { open = resolve; });
  const held = engine.core.mutate(() => gate); // a mutation still running, as writes are when one crosses the bound
  const before = events.filter((e) => e === 'commit').length;
  const first = engine.core.commit();
  await new Promise((resolve) => setImmediate(resolve)); // the commit now waits for the lock
  const second = engine.core.commit();
  open(); // before asserting: a failed assertion must not leave the lock held (cleanup closes the pool)
  assert.equal(second, first, 'the second request joins the commit that has not taken the dirty set yet');
  await held;
  await Promise.all([first, second]);
  assert.equal(events.filter((e) => e === 'commit').length - before, 1);
  // Once a commit has taken the dirty set, a new request queues a commit of its own.
  await engine.write(id, K4, pattern(2, K4));
  await engine.core.commit();
  assert.equal(events.filter((e) => e === 'commit').length - before, 2);
  assert.deepEqual(await engine.read(id, K4, K4), pattern(2, K4));
});

test('the commit interval counts from the last commit: a timer armed before a commit does not fire a second one right after it', async (t) => {
  const events: string[] = [];
  const intervalMs = 1000;
  const { engine, cleanup } = await tempPool(64 * MiB, { log: (event) => { events.push(event); }, commitIntervalMs: intervalMs });
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  const id = engine.resolve('v').id;
  await engine.checkpoint();
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
  const started = performance.now();
  await engine.write(id, 0, pattern(1, K4)); // dirty: the interval timer is armed now
  await sleep(intervalMs * 0.7);
  await engine.checkpoint(); // a commit before the timer is due takes everything dirty
  await engine.write(id, K4, pattern(2, K4)); // dirty again: a new timer, due a whole interval later
  const commits = events.filter((e) => e === 'commit').length;
  await sleep(Math.max(0, started + intervalMs * 1.3 - performance.now()));
  // Only the old timer could have fired by now (it was due at 1.0 intervals; the new one is due at
  // 1.7 or later, and timers never fire early).
  assert.equal(events.filter((e) => e === 'commit').length, commits, 'no commit from the timer armed before the flush');
  assert.deepEqual(await engine.read(id, K4, K4), pattern(2, K4));
});

test('a write switches its mapping at once only while the metadata lock is free; with the lock held it waits for it', async (t) => {
  const { engine, cleanup } = await tempPool(64 * MiB);
  t.after(cleanup);
  await engine.createVolume('v', 8 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(1, K4)); // the path to block 1 is now in memory and writable
  const core = engine.core;
  // mutateNow itself: refused (fn not run) while the lock is held, run at once when it is free.
  let open!: () => void;
  const gate = new Promise<void>((resolve) => { open = resolve; });
  const held = core.mutate(() => gate);
  let ran = false;
  assert.equal(core.mutateNow(() => { ran = true; return 1; }), undefined);
  assert.equal(ran, false, 'nothing runs beside a holder');
  // A write meanwhile: its data goes out, but its mapping waits for the lock.
  let written = false;
  const write = engine.write(id, K4, pattern(2, K4)).then(() => { written = true; });
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(written, false, 'the write waits for the lock');
  assert.deepEqual(await engine.read(id, K4, K4), Buffer.alloc(K4), 'its mapping is not switched yet');
  open();
  await held;
  await write;
  assert.deepEqual(await engine.read(id, K4, K4), pattern(2, K4));
  assert.equal(core.mutateNow(() => 2), 2);
  // With the lock free a write completes without waiting for it, and a failed invariant inside
  // mutateNow stops the pool as one inside mutate does.
  await engine.write(id, 2 * K4, pattern(3, K4));
  assert.deepEqual(await engine.read(id, 2 * K4, K4), pattern(3, K4));
  await engine.flush();
  await assertClean(engine);
  assert.throws(() => core.mutateNow(() => { throw new AssertionError('invariant broken on purpose'); }), AssertionError);
  await assert.rejects(engine.write(id, 3 * K4, pattern(4, K4)), /pool stopped/);
});
