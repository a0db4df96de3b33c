// The deterministic fault sweep (sim/sweep.ts) as a test: a bounded subset in CI, both with the
// engine's synchronous fast paths and without them; the full sweep is `npm run sim -- --sweep`
// (and `--no-fast-paths`). A failure prints its case; replay it with the command it names.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSweep, runSweepCase, type SweepCase } from '../sim/sweep.js';
import { sweepOps } from '../sim/sweep-ops.js';

/** Every 3rd N: a third of the cases of each op, fault kind and start, still ending where the op completes. */
const nStride = 3;
/** Crash images per power cut (the full sweep draws 4). */
const images = 2;

for (const [fastPaths, start, mode] of [[true, 'warm', 'torn'], [false, 'cold', 'some']] as const) {
  test(`fault sweep: every op, EIO and power cuts (${mode}) at every ${nStride}rd device call, ${start} start, fast paths ${fastPaths ? 'on' : 'off'}`, { timeout: 10 * 60 * 1000 }, async (t) => {
    const result = await runSweep({ fastPaths, starts: [start], modes: [mode], nStride, images });
    t.diagnostic(`${result.cases} cases: ${JSON.stringify(result.counts)}`);
    for (const op of sweepOps) {
      for (const kind of ['eio', 'eioPersistent', `crashWrite/${mode}`, `crashFlush/${mode}`]) {
        assert.ok((result.counts[`${op.name} ${start} ${kind}`] ?? 0) > 0, `${op.name} ${kind} never ran`);
      }
    }
    // Every op but a cached trim (no device call at all) met at least one fault.
    assert.ok(result.cases > sweepOps.length * 3 * 2, `only ${result.cases} cases`);
    assert.deepEqual(result.failures, []);
  });
}

// Cases the sweep once failed, replayed as they were found (each failed before its fix).
const regressions: SweepCase[] = [
  // flatten's copy read a data block straight from the device: its EIO escaped as a raw Error, not io_error.
  { op: 'flatten', start: 'warm', fault: { kind: 'eio', n: 5 }, fastPaths: true },
  { op: 'flatten', start: 'cold', fault: { kind: 'eio', n: 5 }, fastPaths: false },
  // pool grow's enlarging of the device (its size made durable by a flush) let a raw EIO out.
  { op: 'poolGrow', start: 'warm', fault: { kind: 'eio', n: 1 }, fastPaths: true },
  { op: 'poolGrowLevel', start: 'cold', fault: { kind: 'eioPersistent', n: 1 }, fastPaths: false },
];

test('fault sweep: cases that once failed pass', async () => {
  for (const c of regressions) {
    const r = await runSweepCase(c);
    assert.equal(r.reached, true, `${JSON.stringify(c)} no longer reaches its fault: pick the case again`);
    assert.equal(r.failure, null);
  }
});
