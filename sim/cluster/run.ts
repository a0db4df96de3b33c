// The cluster simulator's command line:
//   node dist/sim/cluster/run.js --seed N [--steps S] [--seeds K] [--verbose] [--node-log] [--no-converge] [--tolerate F1,F2]
// Runs seeds N..N+K-1 (N random if omitted, and printed), prints each failure with its seed and
// step, and exits 1 if any failed. A failing seed replays exactly with the same --seed and --steps.
import { parseArgs } from 'node:util';
import { runClusterSimulation } from './cluster-sim.js';
import { parseCount } from '../cli-args.js';

/** Bounds on one invocation, so a typo cannot run for a day. */
const SEEDS_MAX = 100_000;
const STEPS_MAX = 1_000_000;
const STEPS_DEFAULT = 300;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      steps: { type: 'string' },
      seeds: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      'node-log': { type: 'boolean', default: false },
      'no-converge': { type: 'boolean', default: false },
      tolerate: { type: 'string' },
    },
  });
  // Seed chosen at random only when none is given; it is printed, so the run replays.
  const first = parseCount(values.seed, Math.floor(Math.random() * 1_000_000), 0xffff_ffff, 'seed');
  const steps = parseCount(values.steps, STEPS_DEFAULT, STEPS_MAX, 'steps');
  const seeds = parseCount(values.seeds, 1, SEEDS_MAX, 'seeds');
  let failed = 0;
  for (let seed = first; seed < first + seeds; seed++) {
    const result = await runClusterSimulation({
      seed, steps, ...(values.verbose ? { trace: (line: string) => console.log(line) } : {}), nodeLog: values['node-log'],
      requireConvergence: !values['no-converge'],
      tolerate: values.tolerate === undefined ? [] : values.tolerate.split(','),
    });
    const s = result.stats;
    const summary = `seed ${seed}: ${result.ok ? 'ok' : 'FAILED'} steps=${s.steps} writes=${s.writesAcked}/${s.writesAcked + s.writesFailed} ` +
      `reads=${s.reads} flushes=${s.flushes} snapshots=${s.snapshots} checkpoints=${s.checkpoints} crashes=${s.crashes} ` +
      `partitions=${s.partitions} kvCuts=${s.kvCuts} quiesces=${s.quiesces} virtual=${(s.virtualMs / 1000).toFixed(1)}s ` +
      `msgs=${result.network.requests} dropped=${result.network.dropped}`;
    console.log(summary);
    for (const f of result.findings) console.log(`  finding: ${f}`);
    if (!result.ok) {
      failed++;
      console.log(result.failure);
      console.log(`  replay: node dist/sim/cluster/run.js --seed ${seed} --steps ${steps} --verbose`);
    }
  }
  console.log(`${seeds - failed}/${seeds} seeds passed (first seed ${first}, ${steps} steps each)`);
  return failed === 0 ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  console.error(err);
  process.exitCode = 2;
});
