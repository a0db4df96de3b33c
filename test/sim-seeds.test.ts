// The simulator as a test: seeds 1..SIM_SEEDS (default 300) with ~200 operations each, every read
// checked against the model, check after every reopen. A failure prints its seed; replay it with
// `npm run sim -- --seed N --ops 200`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSimulation } from '../sim/simulator.js';
import type { OpKind } from '../sim/params.js';

const seedFirst = 1;
const seedsDefault = 300;
const opsPerSeed = 200;
/**
 * Op kinds left out until the engine bug each finds is fixed (replay with `--skip` the same way).
 * None now: lockRace (lockKey during an encrypted write) was fixed by the keyring keeping a cipher an
 * in-flight request still uses.
 */
const skipOps: OpKind[] = [];

function seedCount(): number {
  const fromEnv = Number(process.env['SIM_SEEDS']);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : seedsDefault;
}

test(`simulator: ${seedCount()} seeds x ${opsPerSeed} ops`, { timeout: 15 * 60 * 1000 }, async (t) => {
  const failures: string[] = [];
  const totals: Record<string, number> = {};
  const seeds = seedCount();
  for (let seed = seedFirst; seed < seedFirst + seeds; seed++) {
    const result = await runSimulation({ seed, ops: opsPerSeed, skipOps });
    await new Promise<void>((resolve) => setImmediate(resolve)); // let abandoned engines' background steps finish
    for (const [k, v] of Object.entries(result.opCounts)) totals[k] = (totals[k] ?? 0) + v;
    if (!result.ok) {
      failures.push(result.failure ?? `SEED=${seed} failed`);
      t.diagnostic(`FAIL SEED=${seed}: ${(result.failure ?? '').split('\n')[0]}`);
    }
  }
  t.diagnostic(`op counts over all seeds: ${JSON.stringify(totals)}`);
  // Every kind of operation must actually have run, or the test proves less than it claims.
  for (const kind of ['write', 'read', 'flush', 'snapshot', 'cloneOfSnapshot', 'cloneOfVolume', 'revert', 'flatten',
    'diff', 'extents', 'crash-torn', 'crash-some', 'bitFlipData', 'bitFlipMeta', 'eio-writePath', 'eio-snapshotFail',
    'trim', 'zero', 'zeroNoHole', 'shrink', 'midCrash-snapshot', 'midCrash-flatten', 'concurrentWrites', 'concurrentMixed',
    'createEncrypted', 'rewrap', 'lockUnlock', 'lockRace', 'midCrash-rewrap', 'bitFlipKeySlot', 'bitFlipEncryptedData', 'bitFlipDataCold']) {
    assert.ok((totals[kind] ?? 0) > 0 || seeds < 50, `op kind ${kind} never ran`);
  }
  assert.equal(failures.length, 0, `failing seeds:\n${failures.map((f) => f.split('\n').slice(0, 12).join('\n')).join('\n\n')}`);
});

// Issue 17: once every live volume was deleted while snapshots held the targets at targetsMax, every
// later op did nothing, yet the run reported all its ops (seed 1051 stopped after 68 of 600). The
// simulator now makes room, counts only the ops that reached the engine, and fails a run that stalls.
for (const fastPaths of [true, false]) {
  test(`simulator: seed 1051 x 600 ops keeps exercising the engine (fast paths ${fastPaths ? 'on' : 'off'})`, async () => {
    const result = await runSimulation({ seed: 1051, ops: 600, fastPaths, skipOps });
    assert.ok(result.ok, result.failure);
    assert.equal(result.opsRun, 600);
    assert.ok(result.opsEffective >= 500, `only ${result.opsEffective} of 600 ops reached the engine`);
  });
}

/**
 * Seeds that once found a bug outside the range above, replayed exactly as they failed.
 * 5009 x 1000 ops: flatten reserved each copy's block after tree edits had taken the room it checked
 * for, failed with pool_full after changing the tree, and stopped the pool.
 * 5136 x 800 ops: a bit flip in the newest generation's mirror stayed until the next commit of its
 * parity; a power cut in that commit before its mirror write left the generation one copy.
 * 12053 x 800 ops: a flush waiting on a commit whose sync failed under injected EIO got the device's
 * own error, not io_error (intent-log.ts commitSettled).
 * 19003 x 800 ops: once a flatten gave the loop a turn between steps, the flatten resumed at open and
 * the one asked for (same volume) interleaved; one read the cursor the other had just finished (0) and
 * failed its step check. The cursor is now read under the lock.
 */
const regressionSeeds: Array<{ seed: number; ops: number; fastPaths: boolean }> = [
  { seed: 5009, ops: 1000, fastPaths: true },
  { seed: 5136, ops: 800, fastPaths: true },
  { seed: 12053, ops: 800, fastPaths: true },
  { seed: 19003, ops: 800, fastPaths: true },
];

for (const { seed, ops, fastPaths } of regressionSeeds) {
  test(`simulator: regression seed ${seed} x ${ops} ops (fast paths ${fastPaths ? 'on' : 'off'})`, async () => {
    const result = await runSimulation({ seed, ops, fastPaths, skipOps });
    assert.ok(result.ok, result.failure);
  });
}
