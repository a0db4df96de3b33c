// Snapshot scale (issue 17 section 8): one volume grown to 1 000, 10 000 and 100 000 snapshots through
// the Engine interface; at each size, the latency (p50/p99) of creating one more snapshot and of
// deleting one (each durable: a commit), the time to open the pool, the process RSS after the open,
// and the time of one full paged listing. The counts are reached by group creates of 1 000 names (one
// commit each), which is not what is timed. Nothing is asserted: the point is that create, delete and
// open do not grow with the count (open reads the catalog once, O(count), by design).
// Run alone: node dist/bench/snapshot-scale.js [--counts=1000,10000,100000] [--samples=200]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { createPoolFile, openPoolFile, type Engine } from '../src/engine/index.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const poolBytes = 4 * GiB;
const volumeBytes = 1 * GiB;
/** Names per group create while filling (one commit each). */
const fillGroupNames = 1000;

export interface SnapshotScaleOptions {
  counts?: number[];
  /** Timed creates (and then deletes) at each size. */
  samples?: number;
  log?: (line: string) => void;
}

export interface SnapshotScaleRow {
  snapshots: number;
  createP50Ms: number; createP99Ms: number;
  deleteP50Ms: number; deleteP99Ms: number;
  openMs: number; rssMiB: number; listAllMs: number;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

async function timeMs(fn: () => unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Creates snapshots s<from>..s<to-1> of `v` in groups (the fill, not timed). */
async function fill(engine: Engine, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += fillGroupNames) {
    const names: string[] = [];
    for (let j = i; j < Math.min(to, i + fillGroupNames); j++) names.push(`v@s${j}`);
    await engine.createSnapshots(names);
  }
}

/** Every snapshot of `v` through the paged list (what an API or NBD listing walks). */
function listAll(engine: Engine): number {
  let count = 0, afterId = 0;
  for (;;) {
    const page = engine.listSnapshotsPage({ volume: 'v', afterId, limit: 1000 });
    count += page.snapshots.length;
    if (!page.more) return count;
    afterId = page.snapshots[page.snapshots.length - 1]!.id;
  }
}

export async function runSnapshotScaleBench(opts: SnapshotScaleOptions = {}): Promise<SnapshotScaleRow[]> {
  const counts = opts.counts ?? [1_000, 10_000, 100_000];
  const samples = opts.samples ?? 200;
  const log = opts.log ?? ((line: string) => console.log(line));
  const dir = await mkdtemp(join(tmpdir(), 'cairn-snapscale-'));
  const path = join(dir, 'pool');
  const rows: SnapshotScaleRow[] = [];
  let engine: Engine | null = null;
  try {
    const created = await createPoolFile(path, poolBytes);
    engine = created;
    await created.createVolume('v', volumeBytes);
    // Some data, so every snapshot shares a real tree with the volume.
    const id = created.resolve('v').id;
    const chunk = Buffer.alloc(MiB, 0x5a);
    for (let i = 0; i < 16; i++) await created.write(id, i * 64 * MiB, chunk);
    await created.flush();
    let have = 0;
    for (const count of counts) {
      const fillMs = await timeMs(() => fill(engine!, have, count));
      have = count;
      const creates: number[] = [], deletes: number[] = [];
      for (let i = 0; i < samples; i++) creates.push(await timeMs(() => engine!.createSnapshots([`v@t${count}-${i}`])));
      for (let i = 0; i < samples; i++) deletes.push(await timeMs(() => engine!.deleteSnapshot(`v@t${count}-${i}`)));
      let listed = 0;
      const listAllMs = await timeMs(() => { listed = listAll(engine!); });
      if (listed !== count) throw new Error(`listed ${listed} snapshots, expected ${count}`);
      await engine!.close();
      engine = null;
      const openMs = await timeMs(async () => { engine = await openPoolFile(path); });
      const rssMiB = process.memoryUsage().rss / MiB;
      const row: SnapshotScaleRow = {
        snapshots: count, createP50Ms: percentile(creates, 50), createP99Ms: percentile(creates, 99),
        deleteP50Ms: percentile(deletes, 50), deleteP99Ms: percentile(deletes, 99), openMs, rssMiB, listAllMs,
      };
      rows.push(row);
      log(`  ${count} snapshots reached (fill ${(fillMs / 1000).toFixed(1)} s)`);
    }
  } finally {
    // A close failing after a failed run would hide the run's own error, which is the one to see.
    if (engine !== null) await (engine as Engine).close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
  printTable(rows, samples, log);
  return rows;
}

function printTable(rows: SnapshotScaleRow[], samples: number, log: (line: string) => void): void {
  log('');
  log(`snapshots  create p50/p99 ms  delete p50/p99 ms  open ms   RSS MiB  list all ms   (${samples} creates, then deletes, per size)`);
  for (const r of rows) {
    const pair = (a: number, b: number) => `${a.toFixed(2)} / ${b.toFixed(2)}`.padStart(17);
    log(`${String(r.snapshots).padStart(9)}  ${pair(r.createP50Ms, r.createP99Ms)}  ${pair(r.deleteP50Ms, r.deleteP99Ms)}  ${r.openMs.toFixed(0).padStart(7)}  ${r.rssMiB.toFixed(0).padStart(8)}  ${r.listAllMs.toFixed(0).padStart(11)}`);
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const { values } = parseArgs({ options: { counts: { type: 'string' }, samples: { type: 'string' } }, strict: false });
  const counts = typeof values.counts === 'string' ? values.counts.split(',').map(Number) : undefined;
  const samples = typeof values.samples === 'string' ? Number(values.samples) : undefined;
  runSnapshotScaleBench({ ...(counts ? { counts } : {}), ...(samples ? { samples } : {}) }).catch((err: unknown) => {
    process.stderr.write(`snapshot-scale bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
