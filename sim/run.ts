// The simulator's command line: `npm run sim -- --seed N --ops M [--seeds K] [--verbose] [--skip op,op] [--paranoid [--paranoid-from N]] [--engine-log] [--no-fast-paths]`.
// Runs seeds N..N+K-1 (N random if omitted, and printed), prints every failure with its seed,
// and exits 1 if any seed failed. A failing seed replays exactly with `--seed N --ops M`.
// `--sweep [--sweep-op a,b] [--sweep-start warm|cold] [--sweep-fault eio|crashWrite|crashFlush]
// [--sweep-mode clean|some|torn] [--sweep-n N] [--sweep-stride K] [--no-fast-paths]`: the fault sweep (sweep.ts).

import { parseArgs } from 'node:util';
import { runSimulation } from './simulator.js';
import type { OpKind } from './params.js';
import { crashModes, faultKinds, runSweep, sweepStarts, type FaultKind, type SweepStart } from './sweep.js';
import type { CrashMode } from '../src/engine/device/sim-device.js';
import { parseCount } from './cli-args.js';

/** Bounds on a single invocation, so a typo cannot run for a day. */
const seedsMax = 1_000_000;
const opsMax = 10_000_000;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      ops: { type: 'string' },
      seeds: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      skip: { type: 'string' },
      paranoid: { type: 'boolean', default: false },
      'engine-log': { type: 'boolean', default: false },
      'paranoid-from': { type: 'string' },
      'no-fast-paths': { type: 'boolean', default: false },
      sweep: { type: 'boolean', default: false },
      'sweep-op': { type: 'string' },
      'sweep-start': { type: 'string' },
      'sweep-fault': { type: 'string' },
      'sweep-mode': { type: 'string' },
      'sweep-n': { type: 'string' },
      'sweep-stride': { type: 'string' },
    },
  });
  if (values.sweep) return sweep(values);
  const seedFirst = parseCount(values.seed, Math.floor(Math.random() * 0xffffffff), 0xffffffff, 'seed');
  const ops = parseCount(values.ops, 200, opsMax, 'ops');
  const seeds = parseCount(values.seeds, 1, seedsMax, 'seeds');
  const failed: number[] = [];
  let opsEffective = 0;
  const startedMs = Date.now();
  for (let i = 0; i < seeds; i++) {
    const seed = (seedFirst + i) >>> 0;
    const result = await runSimulation({
      seed,
      ops,
      paranoid: values.paranoid,
      fastPaths: !values['no-fast-paths'],
      engineLog: values['engine-log'] ? (event, fields) => process.stdout.write(`  engine ${event} ${JSON.stringify(fields)}\n`) : undefined,
      paranoidFromOp: parseCount(values['paranoid-from'], 0, opsMax, 'paranoid-from'),
      skipOps: (values.skip ?? '').split(',').filter((k) => k !== '') as OpKind[],
      trace: values.verbose ? (line) => process.stdout.write(`${line}\n`) : undefined,
    });
    opsEffective += result.opsEffective;
    if (!result.ok) {
      failed.push(seed);
      process.stdout.write(`FAIL ${result.failure ?? ''}\n  replay: npm run sim -- --seed ${seed} --ops ${ops}${values['no-fast-paths'] ? ' --no-fast-paths' : ''}\n`);
    } else if (seeds === 1 || values.verbose) {
      process.stdout.write(`ok SEED=${seed} ops=${result.opsEffective} (of ${result.opsRun} drawn; the rest found nothing to act on) ${JSON.stringify(result.opCounts)}\n`);
    }
    // The simulated device answers in microtasks, so a seed never yields to the event loop; engines
    // it abandoned at crashes keep background steps (setImmediate) queued. Let them run and be freed.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const seconds = ((Date.now() - startedMs) / 1000).toFixed(1);
  process.stdout.write(`${seeds - failed.length}/${seeds} seeds passed (seeds ${seedFirst}..${seedFirst + seeds - 1}, ${ops} ops each, ${opsEffective} ops run in all` +
    `${values['no-fast-paths'] ? ', fast paths off' : ''}, ${seconds} s)` +
    `${failed.length > 0 ? `; failing seeds: ${failed.join(' ')}` : ''}\n`);
  return failed.length > 0 ? 1 : 0;
}

/** `--sweep`: the deterministic fault sweep (sweep.ts); the filters replay one case or a subset. */
async function sweep(values: Record<string, string | boolean | undefined>): Promise<number> {
  const list = (v: string | boolean | undefined): string[] | undefined => (typeof v === 'string' ? v.split(',') : undefined);
  const kinds = list(values['sweep-fault']) as FaultKind[] | undefined;
  for (const k of kinds ?? []) if (!faultKinds.includes(k)) throw new Error(`--sweep-fault must be among ${faultKinds.join(',')}, got ${k}`);
  const modes = list(values['sweep-mode']) as CrashMode[] | undefined;
  for (const m of modes ?? []) if (!crashModes.includes(m)) throw new Error(`--sweep-mode must be among ${crashModes.join(',')}, got ${m}`);
  const starts = list(values['sweep-start']) as SweepStart[] | undefined;
  for (const st of starts ?? []) if (!sweepStarts.includes(st)) throw new Error(`--sweep-start must be among ${sweepStarts.join(',')}, got ${st}`);
  const n = typeof values['sweep-n'] === 'string' ? parseCount(values['sweep-n'], 1, opsMax, 'sweep-n') : undefined;
  const startedMs = Date.now();
  const result = await runSweep({
    ops: list(values['sweep-op']), starts, kinds, modes, n, fastPaths: values['no-fast-paths'] !== true,
    nStride: parseCount(typeof values['sweep-stride'] === 'string' ? values['sweep-stride'] : undefined, 1, opsMax, 'sweep-stride') || 1,
    onFailure: (failure) => process.stdout.write(`FAIL ${failure}\n`),
  });
  for (const [key, count] of Object.entries(result.counts)) process.stdout.write(`  ${key}: ${count} cases\n`);
  const seconds = ((Date.now() - startedMs) / 1000).toFixed(1);
  process.stdout.write(`sweep: ${result.cases} cases, ${result.failures.length} failed` +
    `${values['no-fast-paths'] === true ? ' (fast paths off)' : ''}, ${seconds} s\n`);
  return result.failures.length > 0 ? 1 : 0;
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`sim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
});
