// Data operations of the simulator: write, read, trim, write-zeroes, flush, and concurrent writes
// racing a snapshot. Each checks the engine's answer against the model and updates the model.

import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { adoptPlan, commitPlan, planWrite, planZero, type Plan, type ZeroMode } from './apply.js';
import { blockOf, fingerprint, matchRead, type ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import { compareRead } from './verify.js';
import { relieveSpace } from './ops-catalog.js';
import { opConcurrentSectors } from './ops-sectors.js';

const B = BLOCK_SIZE_BYTES;

export interface Range { offsetBytes: number; lengthBytes: number }

/** A random range inside `t`, mostly in its hot area; block-aligned or not. */
export function pickRange(sim: Simulator, t: ModelTarget, aligned: boolean): Range {
  const p = sim.prng;
  const sizeBlocks = t.sizeBytes / B;
  const hotBlocks = Math.max(1, Math.min(sizeBlocks, sim.params.hotBytes / B));
  const startBlock = p.chance(0.85) ? p.int(0, hotBlocks - 1) : p.int(0, sizeBlocks - 1);
  const lengthBlocksMax = p.weighted({ one: 5, few: 3, many: 1.5, huge: 0.3 });
  const wantBlocks = { one: 1, few: p.int(2, 8), many: p.int(9, 64), huge: p.int(65, 300) }[lengthBlocksMax];
  const lengthBlocks = Math.max(1, Math.min(wantBlocks, sizeBlocks - startBlock));
  if (aligned) return { offsetBytes: startBlock * B, lengthBytes: lengthBlocks * B };
  const offsetBytes = startBlock * B + p.int(0, B - 1);
  const lengthBytes = Math.max(1, Math.min(p.int(1, lengthBlocks * B + B), t.sizeBytes - offsetBytes));
  return { offsetBytes, lengthBytes };
}

/** Random content: mostly random bytes, sometimes all zero or a mix of zero and data blocks. */
export function makeData(sim: Simulator, lengthBytes: number): Buffer {
  const p = sim.prng;
  const kind = p.weighted({ random: 7, zero: 1, mixed: 1.5 });
  const data = Buffer.alloc(lengthBytes);
  if (kind === 'random') return p.fill(data);
  if (kind === 'mixed') {
    for (let off = 0; off < lengthBytes; off += B) {
      if (p.chance(0.5)) p.fill(data.subarray(off, Math.min(lengthBytes, off + B)));
    }
  }
  return data;
}

export async function opWrite(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null || t.sizeBytes === 0) return;
  const range = pickRange(sim, t, sim.prng.chance(0.75));
  const data = makeData(sim, range.lengthBytes);
  const fua = sim.prng.chance(0.15);
  sim.note(`write ${t.name} @${range.offsetBytes} +${range.lengthBytes}${fua ? ' fua' : ''}`);
  const plan = planWrite(sim, t, range.offsetBytes, data);
  const o = await sim.attempt(() => sim.e.write(t.id, range.offsetBytes, data, { fua }));
  await finishDataOp(sim, t, plan, o, fua, 'write');
}

export async function opZero(sim: Simulator, trim: boolean): Promise<void> {
  const t = sim.pickVolume();
  if (t === null || t.sizeBytes === 0) return;
  // Trim is advisory for partial blocks, so the sim trims whole blocks only; zeroes may be unaligned.
  const range = pickRange(sim, t, trim || sim.prng.chance(0.6));
  const fua = sim.prng.chance(0.15);
  const noHole = !trim && sim.prng.chance(0.3);
  const mode: ZeroMode = trim ? 'trim' : noHole ? 'zeroNoHole' : 'zero';
  sim.note(`${mode} ${t.name} @${range.offsetBytes} +${range.lengthBytes}${fua ? ' fua' : ''}`);
  const plan = planZero(sim, t, range.offsetBytes, range.lengthBytes, mode);
  const o = await sim.attempt(() => (trim
    ? sim.e.trim(t.id, range.offsetBytes, range.lengthBytes, { fua })
    : sim.e.writeZeroes(t.id, range.offsetBytes, range.lengthBytes, { fua, noHole })));
  await finishDataOp(sim, t, plan, o, fua, mode);
}

async function finishDataOp(
  sim: Simulator, t: ModelTarget, plan: Plan, o: Awaited<ReturnType<Simulator['attempt']>>, fua: boolean, what: string,
): Promise<void> {
  if (o.ok) {
    commitPlan(sim, t, plan, fua);
    sim.count(what);
    return;
  }
  sim.expectError(o, ['pool_full'], `${what} ${t.name}`);
  sim.note(`  -> pool_full`);
  sim.count('poolFull');
  await adoptPlan(sim, t, plan, `${what} that hit pool_full`);
  await relieveSpace(sim);
}

export async function opRead(sim: Simulator): Promise<void> {
  const t = sim.pickTarget();
  if (t === null || t.sizeBytes === 0) return;
  const range = pickRange(sim, t, sim.prng.chance(0.6));
  sim.note(`read ${t.name} @${range.offsetBytes} +${range.lengthBytes}`);
  const got = sim.must(await sim.attempt(() => sim.e.read(t.id, range.offsetBytes, range.lengthBytes)), `read ${t.name}`);
  compareRead(sim, t, range.offsetBytes, got, 'read');
  sim.count('read');
}

export async function opFlush(sim: Simulator): Promise<void> {
  sim.note('flush');
  sim.must(await sim.attempt(() => sim.e.flush()), 'flush');
  sim.model.durablePoint();
  sim.count('flush');
}

/**
 * Writes to disjoint ranges of one volume in flight together, with reads of untouched blocks and,
 * sometimes, a snapshot of the volume racing them: the snapshot must hold, per block, the old or
 * the new content (issue 2: writes acknowledged before it are in it, ones issued after it are not).
 */
export async function opConcurrentWrites(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null || t.sizeBytes === 0) return;
  // Sometimes sector-sized pieces sharing blocks instead (ops-sectors.ts).
  if (sim.prng.chance(0.3)) return opConcurrentSectors(sim, t);
  const ranges: Range[] = [];
  const touched = new Set<number>();
  const want = sim.prng.int(2, 8);
  for (let i = 0; i < want * 2 && ranges.length < want; i++) {
    const r = pickRange(sim, t, sim.prng.chance(0.8));
    const blocks = blockSpan(r);
    if (blocks.some((b) => touched.has(b))) continue;
    blocks.forEach((b) => touched.add(b));
    ranges.push(r);
  }
  const snapName = sim.prng.chance(0.35) ? `${t.name}@${sim.newName('s')}` : null;
  sim.note(`concurrent writes ${t.name} ${ranges.map((r) => `@${r.offsetBytes}+${r.lengthBytes}`).join(' ')}${snapName ? ` racing snapshot ${snapName}` : ''}`);
  const before = new Map([...touched].map((b) => [b, blockOf(t, b)]));
  const datas = ranges.map((r) => makeData(sim, r.lengthBytes));
  const plans = ranges.map((r, i) => planWrite(sim, t, r.offsetBytes, datas[i] as Buffer));
  const untouched = sim.prng.int(0, Math.max(0, t.sizeBytes / B - 1));
  const readBlock = touched.has(untouched) ? null : untouched;
  const expectedRead = readBlock === null ? null : Buffer.from(blockOf(t, readBlock).content ?? Buffer.alloc(B));
  const writes = ranges.map((r, i) => sim.attempt(() => sim.e.write(t.id, r.offsetBytes, datas[i] as Buffer)));
  const read = readBlock === null ? null : sim.attempt(() => sim.e.read(t.id, readBlock * B, B));
  const snap = snapName === null ? null : sim.attempt(() => sim.e.createSnapshots([snapName]));
  const results = await Promise.all(writes);
  const readResult = read === null ? null : await read;
  const snapResult = snap === null ? null : await snap;
  let poolFull = false;
  for (let i = 0; i < ranges.length; i++) {
    const o = results[i];
    const plan = plans[i] as Plan;
    if (o?.ok) commitPlan(sim, t, plan, false);
    else if (o) { sim.expectError(o, ['pool_full'], 'concurrent write'); poolFull = true; await adoptPlan(sim, t, plan, 'concurrent write that hit pool_full'); }
  }
  if (readResult !== null && expectedRead !== null && readBlock !== null) {
    const got = sim.must(readResult, `concurrent read ${t.name}:${readBlock}`);
    if (!got.equals(expectedRead)) sim.fail(`concurrent read of untouched block ${t.name}:${readBlock}: want ${fingerprint(expectedRead)} got ${fingerprint(got)}`);
  }
  if (snapResult !== null && snapName !== null) {
    if (snapResult.ok) await adoptRacingSnapshot(sim, t, snapName, snapResult.value[0]?.id ?? -1, before);
    else { sim.expectError(snapResult, ['pool_full'], `racing snapshot ${snapName}`); poolFull = true; }
  }
  sim.count('concurrentWrites');
  if (poolFull) await relieveSpace(sim);
}

function blockSpan(r: Range): number[] {
  const out: number[] = [];
  for (let b = Math.floor(r.offsetBytes / B); b * B < r.offsetBytes + r.lengthBytes; b++) out.push(b);
  return out;
}

/**
 * The racing snapshot is durable itself; each raced block must read old or new in it, and is adopted.
 * The volume's raced writes stay uncertain (they may have completed after the snapshot's commit).
 */
async function adoptRacingSnapshot(
  sim: Simulator, t: ModelTarget, snapName: string, id: number, before: Map<number, ReturnType<typeof blockOf>>,
): Promise<void> {
  const snap = sim.model.addCopy(t, snapName, 'snapshot', id);
  for (const [b, old] of before) {
    if (b * B >= snap.sizeBytes) continue;
    const next = blockOf(t, b);
    const o = await sim.attempt(() => sim.e.read(id, b * B, B));
    const got = sim.must(o, `read racing snapshot ${snapName}:${b}`);
    const match = matchRead([old, next], got);
    if (match !== null) snap.blocks.set(b, match);
    else sim.fail(`racing snapshot ${snapName} block ${b} holds ${fingerprint(got)}: neither old ${fingerprint(old.content)} nor new ${fingerprint(next.content)}`);
  }
}
