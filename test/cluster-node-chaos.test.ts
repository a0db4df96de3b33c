// A few seeded schedules against ClusterNode with a lossy network (drops, duplicates, reorder),
// node kills and restarts and partitions, checked after each quiesce: every acknowledged write is
// there (or a later one), and every in-sync member holds the primary's bytes. The full simulator
// (sim/cluster) runs many more; this one keeps the core's own tests honest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, block } from './cluster-harness.js';
import type { Engine } from '../src/engine/index.js';

const NODES = ['n1', 'n2', 'n3'];
const BLOCKS = 16;
const OPS = 60;

async function chaos(seed: number): Promise<void> {
  const h = new Harness(seed);
  for (const n of NODES) await h.add(n);
  h.net.dropProbability = 0.01;
  h.net.duplicateProbability = 0.05;
  const prng = h.clock.prng.fork();
  const down = new Set<string>();
  let cut: string | null = null;
  try {
    await h.advance(50);
    await h.run(h.get('n1').node.createVolume('v', BLOCKS * 4096, 3));
    // Per block: the values it may hold (the last acknowledged write, or later unacknowledged ones).
    const may: Array<Set<number>> = Array.from({ length: BLOCKS }, () => new Set([0]));
    let valueNext = 1;
    const primaryEngine = (): Engine | null => {
      for (const n of NODES) {
        if (down.has(n)) continue;
        const p = h.get(n).node.primaryOf('v');
        if (p !== null && !down.has(p.node.name)) return h.get(p.node.name).node.engine;
      }
      return null;
    };
    for (let op = 0; op < OPS; op++) {
      const r = prng.float();
      if (r < 0.08 && down.size === 0 && cut === null) {
        const victim = NODES[prng.int(0, NODES.length - 1)]!;
        await h.kill(victim);
        down.add(victim);
      } else if (r < 0.16 && down.size > 0) {
        const back = [...down][0]!;
        down.delete(back);
        await h.restart(back);
      } else if (r < 0.2 && down.size === 0 && !cut) {
        cut = NODES[prng.int(0, NODES.length - 1)]!;
        h.net.isolate(cut, NODES);
        h.get(cut).kv.setAvailable(false);
      } else if (r < 0.26 && cut) {
        h.net.heal();
        h.get(cut).kv.setAvailable(true);
        cut = null;
      } else if (r < 0.3) {
        const e = primaryEngine();
        if (e !== null) await h.run(e.createSnapshots([`v@s${op}`])).catch(() => undefined);
      } else {
        // A few writes in flight at once, to distinct blocks.
        const e = primaryEngine();
        if (e === null) { await h.advance(500); continue; }
        const picked = [...new Set([prng.int(0, BLOCKS - 1), prng.int(0, BLOCKS - 1), prng.int(0, BLOCKS - 1)])];
        await h.run(Promise.all(picked.map(async (b) => {
          const value = valueNext++;
          try {
            await e.write(e.resolve('v').id, b * 4096, block(value));
            may[b] = new Set([value]);
          } catch {
            // Not acknowledged: it may have landed or not.
            may[b]!.add(value);
          }
        })));
      }
      await h.advance(prng.int(1, 300));
    }
    // Quiesce: everyone back, the network whole, rebuilds done.
    h.net.dropProbability = 0;
    h.net.duplicateProbability = 0;
    h.net.heal();
    if (cut !== null) h.get(cut).kv.setAvailable(true);
    for (const n of [...down]) await h.restart(n);
    await h.clock.runUntil(() => {
      const rec = h.get('n1').node.volume('v');
      return rec !== null && rec.members.every((m) => m.state === 'in-sync') && h.get(rec.primary).node.primaryOf('v')?.local === true;
    }, 60_000, `quiesce (seed ${seed})`);
    await h.advance(2000);
    const rec = h.get('n1').node.volume('v')!;
    const want = await h.readLocal(rec.primary, 'v', 0, BLOCKS * 4096);
    for (let b = 0; b < BLOCKS; b++) {
      const got = want.subarray(b * 4096, (b + 1) * 4096);
      const ok = [...may[b]!].some((v) => v === 0 ? got.equals(Buffer.alloc(4096)) : got.equals(block(v)));
      assert.ok(ok, `seed ${seed}: block ${b} holds none of ${[...may[b]!].join(',')}`);
    }
    for (const m of rec.members) assert.ok((await h.readLocal(m.node, 'v', 0, BLOCKS * 4096)).equals(want), `seed ${seed}: ${m.node} identical to the primary`);
  } finally {
    await h.close();
  }
}

// CLUSTER_CHAOS_SEEDS=N runs N seeds from 101 (a longer run on demand).
const SEEDS = Number(process.env['CLUSTER_CHAOS_SEEDS'] ?? 6);
for (let seed = 101; seed < 101 + SEEDS; seed++) {
  test(`chaos seed ${seed}`, () => chaos(seed));
}
