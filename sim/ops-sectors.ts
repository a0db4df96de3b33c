// Sector writes in flight together: a run of neighbouring blocks cut into pieces of whole 512-byte
// sectors, every piece its own write, all issued at once, as a client writing sectors at queue depth
// > 1 does. Pieces share blocks (each a read-modify-write of its block) and neighbour blocks whose
// writes may split a leaf meanwhile: every acknowledged piece must be there afterwards. The engine
// once lost such pieces (its read-modify-write read a block as a hole while a neighbour's split had
// the leaf truncated across an await); the other concurrent op keeps writes a block apart.

import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { commitPlan, planWrite } from './apply.js';
import { blockOf, fingerprint, type ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import { makeData } from './ops-data.js';
import { relieveSpace } from './ops-catalog.js';

const B = BLOCK_SIZE_BYTES;
const SECTOR = 512;

interface Piece { offsetBytes: number; data: Buffer }

export async function opConcurrentSectors(sim: Simulator, t: ModelTarget): Promise<void> {
  const p = sim.prng;
  const sizeBlocks = t.sizeBytes / B;
  // Mostly a few blocks; sometimes a long run, whose many small writes fill leaves until they split.
  const blocks = Math.min(sizeBlocks, p.chance(0.3) ? p.int(32, 96) : p.int(1, 6));
  const hotBlocks = Math.max(1, Math.min(sizeBlocks, sim.params.hotBytes / B));
  const first = p.int(0, Math.max(0, Math.min(hotBlocks, sizeBlocks - blocks)));
  // Cut [first, first + blocks) into pieces of 1..12 sectors; some pieces are left out (not written).
  const pieces: Piece[] = [];
  for (let at = first * B; at < (first + blocks) * B;) {
    const len = Math.min(p.int(1, 12) * SECTOR, (first + blocks) * B - at);
    if (p.chance(0.85)) pieces.push({ offsetBytes: at, data: makeData(sim, len) });
    at += len;
  }
  if (pieces.length === 0) return;
  sim.note(`concurrent sectors ${t.name} blocks [${first}, ${first + blocks}): ${pieces.map((x) => `@${x.offsetBytes}+${x.data.length}`).join(' ')}`);
  const results = await Promise.all(pieces.map((x) => sim.attempt(() => sim.e.write(t.id, x.offsetBytes, x.data))));
  // Disjoint bytes: the pieces commute, so the model applies the acknowledged ones in any order.
  const failed: Piece[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const o = results[i]!, x = pieces[i]!;
    if (o.ok) commitPlan(sim, t, planWrite(sim, t, x.offsetBytes, x.data), false);
    else { sim.expectError(o, ['pool_full'], 'concurrent sector write'); failed.push(x); }
  }
  // A piece that failed left its bytes old or new, all of them; the model takes what is there.
  for (const x of failed) {
    const o = await sim.attempt(() => sim.e.read(t.id, x.offsetBytes, x.data.length));
    const got = sim.must(o, `read back the failed sector write @${x.offsetBytes}+${x.data.length} of ${t.name}`);
    if (got.equals(x.data)) { commitPlan(sim, t, planWrite(sim, t, x.offsetBytes, x.data), false); continue; }
    const old = Buffer.alloc(x.data.length);
    for (let b = Math.floor(x.offsetBytes / B); b * B < x.offsetBytes + x.data.length; b++) {
      const content = blockOf(t, b).content ?? Buffer.alloc(B);
      const from = Math.max(x.offsetBytes, b * B), to = Math.min(x.offsetBytes + x.data.length, (b + 1) * B);
      content.copy(old, from - x.offsetBytes, from - b * B, to - b * B);
    }
    if (!got.equals(old)) sim.fail(`failed sector write @${x.offsetBytes}+${x.data.length} of ${t.name} left ${fingerprint(got)}, neither old ${fingerprint(old)} nor new ${fingerprint(x.data)}`);
  }
  // Every piece, acknowledged or not, reads back as the model says.
  const o = await sim.attempt(() => sim.e.read(t.id, first * B, blocks * B));
  const got = sim.must(o, `read back concurrent sectors of ${t.name}`);
  for (let b = first; b < first + blocks; b++) {
    const want = blockOf(t, b).content ?? Buffer.alloc(B);
    const have = got.subarray((b - first) * B, (b - first + 1) * B);
    if (!have.equals(want)) sim.fail(`after concurrent sector writes ${t.name} block ${b} holds ${fingerprint(have)}, want ${fingerprint(want)} (an acknowledged piece lost?)`);
  }
  sim.count('concurrentSectors');
  if (failed.length > 0) await relieveSpace(sim);
}
