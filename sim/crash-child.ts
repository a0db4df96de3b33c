// The child process of the kill -9 crash test (test/crash-kill9.test.ts): opens or creates a pool
// file, then writes batches of disjoint blocks (sim/crash-schedule.ts) concurrently, makes each durable
// (a flush after it, FUA writes, a flush after every write, or one write at a time, each flushed), and prints "durable <batch>" once that
// resolved. It runs until it is killed.
// Usage: node crash-child.js <pool-file> <seed>

import { openOrCreatePoolFile, CairnError, type Engine } from '../src/engine/index.js';
import {
  batchWrites, crashPoolBytes, crashSnapshotEveryBatches, crashSnapshotsKept, crashVolumeBytes, crashVolumeName, writeData,
} from './crash-schedule.js';

/** A short commit interval so that timer commits also race the kill. */
const childCommitIntervalMs = 25;

async function ensureVolume(engine: Engine): Promise<number> {
  try {
    return engine.resolve(crashVolumeName).id;
  } catch (err) {
    if (!(err instanceof CairnError) || err.code !== 'volume_not_found') throw err;
  }
  await engine.createVolume(crashVolumeName, crashVolumeBytes);
  return engine.resolve(crashVolumeName).id;
}

async function snapshotTurn(engine: Engine, seed: number, batch: number): Promise<void> {
  await engine.createSnapshots([`${crashVolumeName}@r${seed}b${batch}`]);
  const snaps = engine.listSnapshots(crashVolumeName);
  for (const s of snaps.slice(0, Math.max(0, snaps.length - crashSnapshotsKept))) await engine.deleteSnapshot(s.fullName);
}

async function main(): Promise<void> {
  const [poolPath, seedText] = process.argv.slice(2);
  if (poolPath === undefined || seedText === undefined) throw new Error('usage: crash-child <pool-file> <seed>');
  const seed = Number(seedText);
  const engine = await openOrCreatePoolFile(poolPath, crashPoolBytes, { commitIntervalMs: childCommitIntervalMs });
  const id = await ensureVolume(engine);
  process.stdout.write('ready\n');
  for (let batch = 0; ; batch++) {
    const writes = batchWrites(seed, batch);
    // Four ways to make a batch durable, in turn: one flush after it, a FUA write each, a flush after
    // each of its concurrent writes (what a database does per commit), and one write at a time, each
    // flushed a turn later as over a network (the pattern that starts eager log rounds), all through
    // the intent log.
    const way = batch % 4;
    if (way === 3) {
      for (const w of writes) {
        await engine.write(id, w.blockNumber * 4096, writeData(seed, batch, w));
        await new Promise((resolve) => setImmediate(resolve));
        await engine.flush();
      }
    } else {
      await Promise.all(writes.map(async (w) => {
        await engine.write(id, w.blockNumber * 4096, writeData(seed, batch, w), { fua: way === 1 });
        if (way === 2) await engine.flush();
      }));
    }
    if (way === 0) await engine.flush();
    // stdout to a pipe is synchronous on Linux: once this returns the parent can read the line.
    process.stdout.write(`durable ${batch}\n`);
    if (batch % crashSnapshotEveryBatches === crashSnapshotEveryBatches - 1) await snapshotTurn(engine, seed, batch);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`crash-child: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(3);
});
