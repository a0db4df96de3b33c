// Unit tests of the held-block flags: random range operations against a plain per-block model, and
// the space map's release of a sealed commit, which must free exactly the blocks that commit sealed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeldBlocks, RESERVED, PENDING_FREE, QUARANTINED, pushRun } from '../src/engine/held-blocks.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { MetaStore } from '../src/engine/meta-store.js';
import { SpaceMap } from '../src/engine/space-map.js';

const PAGE = 64;
const BLOCKS = PAGE * 5;
const FLAGS = [RESERVED, PENDING_FREE, QUARANTINED];

function expand(runs: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < runs.length; i += 2) for (let b = runs[i]!; b < runs[i]! + runs[i + 1]!; b++) out.push(b);
  return out;
}

test('held blocks: random range operations agree with a per-block model', () => {
  for (let seed = 1; seed <= 30; seed++) {
    const prng = new Prng(seed);
    const below = (n: number): number => prng.int(0, n - 1);
    let held = new HeldBlocks(PAGE);
    const model = new Uint8Array(BLOCKS);
    // A broken invariant throws part way (the engine stops on it); the test goes on from the model.
    const rebuild = (): void => {
      held = new HeldBlocks(PAGE);
      for (let b = 0; b < BLOCKS; b++) for (const f of FLAGS) if ((model[b]! & f) !== 0) held.addRange(b, b + 1, f);
    };
    for (let step = 0; step < 400; step++) {
      const from = below(BLOCKS);
      const to = Math.min(BLOCKS, from + 1 + below(below(2) === 0 ? 8 : 3 * PAGE));
      const flag = FLAGS[below(3)]!;
      const where = `seed ${seed} step ${step} [${from}, ${to})`;
      switch (below(4)) {
        case 0: {
          const clash = model.subarray(from, to).some((f) => (f & flag) !== 0);
          if (clash) { assert.throws(() => held.addRange(from, to, flag), /already has flag/, where); rebuild(); continue; }
          held.addRange(from, to, flag);
          for (let b = from; b < to; b++) model[b]! |= flag;
          break;
        }
        case 1: {
          let expected = 0;
          for (let b = from; b < to; b++) if ((model[b]! & flag) !== 0) { expected++; model[b]! &= ~flag; }
          assert.equal(held.removeRange(from, to, flag), expected, where);
          break;
        }
        case 2: {
          const other = FLAGS.find((f) => f !== flag)!;
          if (model.subarray(from, to).some((f) => (f & flag) !== 0 && (f & other) !== 0)) continue;
          const moved: number[] = [];
          for (let b = from; b < to; b++) if ((model[b]! & flag) !== 0) { moved.push(b); model[b] = (model[b]! & ~flag) | other; }
          const runs: number[] = [];
          held.moveRange(from, to, flag, other, runs);
          assert.deepEqual(expand(runs), moved, `${where}: the runs name exactly the moved blocks`);
          for (let i = 2; i < runs.length; i += 2) assert.ok(runs[i]! > runs[i - 2]! + runs[i - 1]!, `${where}: adjacent runs are merged`);
          break;
        }
        default: {
          if (model.subarray(from, to).some((f) => (f & QUARANTINED) !== 0)) {
            assert.throws(() => held.claimRange(from, to), /quarantined/, where);
            rebuild();
            continue;
          }
          for (let b = from; b < to; b++) {
            if ((model[b]! & RESERVED) !== 0) model[b]! &= ~RESERVED;
            else model[b]! &= ~PENDING_FREE;
          }
          held.claimRange(from, to);
        }
      }
      for (let b = 0; b < BLOCKS; b++) assert.equal(held.flags(b), model[b], `${where}: block ${b}`);
      const countOf = (flag: number): number => model.reduce((n, f) => n + ((f & flag) !== 0 ? 1 : 0), 0);
      assert.deepEqual([held.reserved, held.pendingFree, held.quarantined], FLAGS.map(countOf), `${where}: counters`);
      for (let p = 0; p < BLOCKS / PAGE; p++) {
        const page = held.pageFlags(p);
        const any = model.subarray(p * PAGE, (p + 1) * PAGE).some((f) => f !== 0);
        assert.equal(page !== undefined, any, `${where}: page ${p} exists only while a block of it is held`);
      }
    }
  }
});

test('pushRun merges a run that continues the last one', () => {
  const runs: number[] = [];
  pushRun(runs, 10, 2);
  pushRun(runs, 12, 3);
  pushRun(runs, 20, 1);
  pushRun(runs, 5, 1);
  assert.deepEqual(runs, [10, 5, 20, 1, 5, 1]);
});

test('releasing a sealed commit frees only its own blocks, not one freed again by a later commit', async () => {
  const device = new SimDevice(4096, new Prng(4));
  const store = new MetaStore(device, 1, 1 << 20);
  await store.mutex.lock(); // these tests change the space map directly, as a mutation would: under the lock
  const space = new SpaceMap(store, 0, 4096, 0);
  await space.init();
  await space.addRange(0, 200, 1);
  // Transaction 1 frees 100..102, then references 101 again: it seals 100 and 102 only.
  await space.addRange(100, 3, -1);
  await space.incref(101);
  const first = space.sealPendingFrees();
  assert.deepEqual(first.runs, [100, 1, 102, 1]);
  assert.equal(first.blocks, 2);
  // Transaction 2 frees 101 for good; its commit is not durable yet.
  await space.decref(101);
  const second = space.sealPendingFrees();
  assert.deepEqual(second.runs, [101, 1]);
  space.committed(first, 1);
  space.releaseQuarantine(1);
  const all = await space.reserve(space.availableBlocks, false);
  const handedOut = all.flatMap((r) => Array.from({ length: r.lengthBlocks }, (_, i) => r.pba + i));
  assert.ok(handedOut.includes(100) && handedOut.includes(102), 'the first commit\'s blocks are reusable');
  assert.ok(!handedOut.includes(101), 'a block sealed by the later, undurable commit is not handed out');
  space.unreserve(all);
  space.committed(second, 2);
  space.releaseQuarantine(2);
  const rest = await space.reserve(1, false);
  assert.deepEqual(rest, [{ pba: 101, lengthBlocks: 1 }], 'released with its own commit; the cursor rewinds to it');
});
