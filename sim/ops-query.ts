// Query operations of the simulator: diff and changedSince (every changed block covered, no
// untouched block reported), extents (holes read as zeroes), space usage, the catalog listing, and
// requests that must fail with a precise error code.

import { BLOCK_SIZE_BYTES, type ByteRange } from '../src/engine/types.js';
import { blockOf, sameContent, type ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import { verifyCatalog } from './verify.js';

const B = BLOCK_SIZE_BYTES;

/** Blocks covered by the ranges, after checking they are sorted, disjoint and inside [lo, hi). */
function coveredBlocks(sim: Simulator, ranges: ByteRange[], loBytes: number, hiBytes: number, what: string): Set<number> {
  const out = new Set<number>();
  let prevEnd = -1;
  for (const r of ranges) {
    if (r.lengthBytes <= 0 || r.offsetBytes < prevEnd || r.offsetBytes < loBytes || r.offsetBytes + r.lengthBytes > hiBytes) {
      sim.fail(`${what}: bad range ${JSON.stringify(r)} (previous end ${prevEnd}, bounds [${loBytes}, ${hiBytes}))`);
    }
    prevEnd = r.offsetBytes + r.lengthBytes;
    for (let b = Math.floor(r.offsetBytes / B); b * B < prevEnd; b++) out.add(b);
  }
  return out;
}

/** Checks a change report of `to` against `from` over blocks [firstBlock, endBlock). */
function checkChanges(
  sim: Simulator, from: ModelTarget, to: ModelTarget, reported: Set<number>, firstBlock: number, endBlock: number, what: string,
): void {
  const common = Math.min(from.sizeBytes, to.sizeBytes) / B;
  const blocks = new Set<number>([...from.blocks.keys(), ...to.blocks.keys(), ...reported]);
  for (const b of blocks) {
    if (b < firstBlock || b >= endBlock || b >= common) continue;
    const a = blockOf(from, b);
    const z = blockOf(to, b);
    const differs = !sameContent(a.content, z.content);
    if (differs && !reported.has(b)) sim.fail(`${what}: block ${b} changed (${from.name} vs ${to.name}) but is not reported`);
    const untouched = a.identity === z.identity && a.identity !== -1 && a.mapped === z.mapped && !from.flattening && !to.flattening;
    if (!differs && untouched && reported.has(b)) sim.fail(`${what}: block ${b} was never rewritten between ${from.name} and ${to.name} but is reported`);
  }
}

function pickLineagePair(sim: Simulator): [ModelTarget, ModelTarget] | null {
  const from = sim.pickSnapshot();
  if (from === null) return null;
  const siblings = sim.model.snapshots(from.volume).filter((s) => s !== from);
  const live = sim.model.targets.get(from.volume);
  const choices = [...siblings, ...(live ? [live, live] : [])];
  if (choices.length === 0) return null;
  return [from, sim.prng.pick(choices)];
}

export async function opDiff(sim: Simulator): Promise<void> {
  const pair = pickLineagePair(sim);
  if (pair === null) return;
  const [from, to] = pair;
  sim.note(`diff ${from.name} -> ${to.name}`);
  const ranges = sim.must(await sim.attempt(() => sim.e.diff(from.name, to.name)), `diff ${from.name} ${to.name}`);
  const reported = coveredBlocks(sim, ranges, 0, Math.max(from.sizeBytes, to.sizeBytes), `diff ${from.name} ${to.name}`);
  checkChanges(sim, from, to, reported, 0, Number.MAX_SAFE_INTEGER, `diff ${from.name} -> ${to.name}`);
  sim.count('diff');
}

export async function opChangedSince(sim: Simulator): Promise<void> {
  const v = sim.pickVolume((t) => sim.model.snapshots(t.name).length > 0 && t.sizeBytes > 0);
  if (v === null) return;
  const since = sim.prng.pick(sim.model.snapshots(v.name));
  const firstBlock = sim.prng.int(0, v.sizeBytes / B - 1);
  const endBlock = sim.prng.int(firstBlock + 1, v.sizeBytes / B);
  sim.note(`changedSince ${v.name} since ${since.name} blocks [${firstBlock}, ${endBlock})`);
  const o = await sim.attempt(() => sim.e.changedSince(v.id, since.name, firstBlock * B, (endBlock - firstBlock) * B));
  const ranges = sim.must(o, `changedSince ${v.name} ${since.name}`);
  const reported = coveredBlocks(sim, ranges, firstBlock * B, endBlock * B, `changedSince ${v.name} ${since.name}`);
  checkChanges(sim, since, v, reported, firstBlock, endBlock, `changedSince ${v.name} since ${since.name}`);
  sim.count('changedSince');
}

export async function opExtents(sim: Simulator): Promise<void> {
  const t = sim.pickTarget();
  if (t === null || t.sizeBytes === 0) return;
  const firstBlock = sim.prng.int(0, t.sizeBytes / B - 1);
  const endBlock = sim.prng.chance(0.5) ? t.sizeBytes / B : sim.prng.int(firstBlock + 1, t.sizeBytes / B);
  sim.note(`extents ${t.name} blocks [${firstBlock}, ${endBlock})`);
  const o = await sim.attempt(() => sim.e.extents(t.id, firstBlock * B, (endBlock - firstBlock) * B));
  const extents = sim.must(o, `extents ${t.name}`);
  let at = firstBlock * B;
  for (const x of extents) {
    if (x.offsetBytes !== at || x.lengthBytes <= 0 || x.offsetBytes + x.lengthBytes > endBlock * B) {
      sim.fail(`extents ${t.name}: extent ${JSON.stringify(x)} does not continue at ${at} inside [${firstBlock * B}, ${endBlock * B})`);
    }
    for (let b = Math.floor(x.offsetBytes / B); b * B < x.offsetBytes + x.lengthBytes; b++) {
      const s = blockOf(t, b);
      // A hole must read as zeroes (NBD base:allocation: NBD_STATE_HOLE|NBD_STATE_ZERO are promises).
      if (x.hole && (s.content !== null || s.mapped === 'yes')) sim.fail(`extents ${t.name}: block ${b} reported as a hole but the model has ${s.content ? 'data' : 'a mapped zero block'}`);
      if (!x.hole && s.mapped === 'no') sim.fail(`extents ${t.name}: block ${b} reported as data but was never mapped (thin provisioning leak)`);
    }
    at = x.offsetBytes + x.lengthBytes;
  }
  if (at !== endBlock * B) sim.fail(`extents ${t.name}: cover up to ${at}, asked up to ${endBlock * B}`);
  sim.count('extents');
}

export async function opSpaceUsage(sim: Simulator): Promise<void> {
  const t = sim.pickTarget();
  if (t === null) return;
  sim.note(`spaceUsage ${t.name}`);
  await checkSpaceUsage(sim, t);
  sim.count('spaceUsage');
}

/** Triage aid (--paranoid): check, the catalog and every target's space usage after every op. */
export async function paranoidCheck(sim: Simulator): Promise<void> {
  if (sim.engine === null) return;
  verifyCatalog(sim, 'paranoid');
  sim.checkReport(sim.must(await sim.attempt(() => sim.e.check()), 'paranoid check'), 'paranoid check');
  for (const t of sim.model.targets.values()) await checkSpaceUsage(sim, t);
}

async function checkSpaceUsage(sim: Simulator, t: ModelTarget): Promise<void> {
  const u = sim.must(await sim.attempt(() => sim.e.spaceUsage(t.name)), `spaceUsage ${t.name}`);
  const [mappedLo, mappedHi] = sim.model.mappedBlocks(t);
  const inSize = [...t.blocks.keys()].every((b) => b * B < t.sizeBytes);
  if (u.provisionedBytes !== t.sizeBytes) sim.fail(`spaceUsage ${t.name}: provisioned ${u.provisionedBytes}, size ${t.sizeBytes}`);
  if (inSize && (u.mappedBytes < mappedLo * B || u.mappedBytes > mappedHi * B)) {
    const extents = t.sizeBytes > 0 ? await sim.e.extents(t.id, 0, t.sizeBytes) : [];
    const dataBytes = extents.filter((x) => !x.hole).reduce((sum, x) => sum + x.lengthBytes, 0);
    sim.fail(`spaceUsage ${t.name}: mapped ${u.mappedBytes} bytes, model allows [${mappedLo * B}, ${mappedHi * B}]; ` +
      `the engine's own extents show ${dataBytes} bytes of data`);
  }
  // With nothing uncertain and no dropped tree waiting to be freed, exclusive is exact.
  const exclusiveBlocks = sim.model.exclusiveBlocks(t);
  if (inSize && exclusiveBlocks !== null && sim.e.stats().pendingDeleteNodes === 0) {
    if (u.exclusiveBytes !== exclusiveBlocks * B) sim.fail(`spaceUsage ${t.name}: exclusive ${u.exclusiveBytes} bytes, model ${exclusiveBlocks * B}`);
    sim.count('exclusiveExact');
  }
  // Exclusive counts data blocks only (space-usage.ts), so it never exceeds what is mapped.
  if (u.exclusiveBytes < 0 || u.exclusiveBytes > u.mappedBytes) {
    sim.fail(`spaceUsage ${t.name}: exclusive ${u.exclusiveBytes} outside [0, mapped ${u.mappedBytes}]`);
  }
}

export function opCatalog(sim: Simulator): void {
  sim.note('catalog listing');
  verifyCatalog(sim, 'listing');
  for (const t of sim.model.targets.values()) {
    const target = sim.e.resolve(t.name);
    if (target.id !== t.id || target.sizeBytes !== t.sizeBytes || target.readOnly !== (t.kind === 'snapshot')) {
      sim.fail(`resolve ${t.name} gave ${JSON.stringify(target)}, model id ${t.id} size ${t.sizeBytes} kind ${t.kind}`);
    }
  }
  sim.count('catalog');
}
