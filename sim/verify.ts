// Comparing the engine with the reference model: reads block by block, the catalog, and, after a
// crash, resolving each uncertain block to one of the states the model allows (then adopting it).

import { BLOCK_SIZE_BYTES, type CheckReport, type PoolStats, type Setting } from '../src/engine/types.js';
import { blockOf, fingerprint, merge, sameContent, type Model, type ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import type { PoolCore } from '../src/engine/pool.js';
import { checkShredded, verifyKeys } from './keys.js';

const B = BLOCK_SIZE_BYTES;
/** Blocks per read when verifying a whole target. */
const verifyRunBlocksMax = 64;

/** Expected bytes of `t` in [offsetBytes, offsetBytes + lengthBytes). */
export function expectedBytes(t: ModelTarget, offsetBytes: number, lengthBytes: number): Buffer {
  const out = Buffer.alloc(lengthBytes);
  const first = Math.floor(offsetBytes / B);
  const last = Math.floor((offsetBytes + lengthBytes - 1) / B);
  for (let b = first; b <= last; b++) {
    const content = blockOf(t, b).content;
    if (content === null) continue;
    const from = Math.max(offsetBytes, b * B);
    const to = Math.min(offsetBytes + lengthBytes, (b + 1) * B);
    content.copy(out, from - offsetBytes, from - b * B, to - b * B);
  }
  return out;
}

/** Fails with a precise message if `got` differs from the model. */
export function compareRead(sim: Simulator, t: ModelTarget, offsetBytes: number, got: Buffer, what: string): void {
  const want = expectedBytes(t, offsetBytes, got.length);
  if (got.length === want.length && got.equals(want)) return;
  if (got.length !== want.length) sim.fail(`${what}: ${t.name} read returned ${got.length} bytes, asked ${want.length}`);
  let at = 0;
  while (got[at] === want[at]) at++;
  const blockNumber = Math.floor((offsetBytes + at) / B);
  const gotBlock = got.subarray(Math.max(0, blockNumber * B - offsetBytes), Math.min(got.length, (blockNumber + 1) * B - offsetBytes));
  sim.fail(`${what}: ${t.name} (id ${t.id}) differs from the model at byte ${offsetBytes + at} (block ${blockNumber}): ` +
    `want ${fingerprint(blockOf(t, blockNumber).content)} got ${fingerprint(Buffer.from(gotBlock))}` +
    `${whereElse(sim, blockNumber, gotBlock)}`);
}

/** A hint for a wrong read: which other target or crash candidate holds what was returned. */
function whereElse(sim: Simulator, blockNumber: number, gotBlock: Buffer): string {
  if (gotBlock.length !== B) return '';
  const hits: string[] = [];
  for (const other of sim.model.targets.values()) {
    for (const [b, s] of other.blocks) {
      if (s.content !== null && s.content.equals(gotBlock)) hits.push(`${other.name}:${b}`);
    }
    const candidates = other.pending.get(blockNumber);
    if (candidates?.some((c) => sameContent(c.content, gotBlock))) hits.push(`${other.name}:${blockNumber}(uncommitted)`);
  }
  return hits.length > 0 ? ` (that content is in ${hits.slice(0, 6).join(', ')})` : '';
}

/** Reads and compares blocks of a target: every written block ('full') or a sample. */
export async function verifyTarget(sim: Simulator, t: ModelTarget, mode: 'full' | 'sample'): Promise<void> {
  const sizeBlocks = t.sizeBytes / B;
  if (sizeBlocks === 0) return;
  let blocks = [...t.blocks.keys()].filter((b) => b < sizeBlocks);
  if (mode === 'sample') {
    blocks = Array.from({ length: Math.min(24, blocks.length) }, () => sim.prng.pick(blocks));
  }
  for (let i = 0; i < (mode === 'full' ? 16 : 4); i++) blocks.push(sim.prng.int(0, sizeBlocks - 1));
  const sorted = [...new Set(blocks)].sort((x, y) => x - y);
  let i = 0;
  while (i < sorted.length) {
    const start = sorted[i] as number;
    let end = start + 1;
    i++;
    while (i < sorted.length && sorted[i] === end && end - start < verifyRunBlocksMax) { end++; i++; }
    const o = await sim.attempt(() => sim.e.read(t.id, start * B, (end - start) * B));
    const got = sim.must(o, `verify ${mode} read ${t.name} blocks [${start}, ${end})`);
    compareRead(sim, t, start * B, got, `verify ${mode}`);
  }
}

/** Settings as one comparable line (listSettings is sorted by key). */
export function describeSettings(settings: Setting[]): string {
  return settings.map((s) => `${s.key}=${s.value.toString('hex')}`).join(',');
}

export function describeModelSettings(model: Model): string {
  return [...model.settings].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${k}=${Buffer.from(v, 'latin1').toString('hex')}`).join(',');
}

/** The catalog the engine lists must be the model's: names, sizes, ids, counts. */
export function verifyCatalog(sim: Simulator, what: string): void {
  const e = sim.e;
  const volumes = e.listVolumes();
  const snapshots = e.listSnapshots();
  const gotNames = [...volumes.map((v) => v.name), ...snapshots.map((s) => s.fullName)].sort();
  const wantNames = [...sim.model.targets.keys()].sort();
  if (gotNames.join(',') !== wantNames.join(',')) {
    sim.fail(`catalog ${what}: engine (generation ${e.stats().generation}) lists [${gotNames.join(',')}], model has [${wantNames.join(',')}]`);
  }
  for (const v of volumes) {
    const t = sim.model.get(v.name);
    if (v.sizeBytes !== t.sizeBytes) sim.fail(`catalog ${what}: ${v.name} size ${v.sizeBytes}, model ${t.sizeBytes}`);
    if (v.id !== t.id) sim.fail(`catalog ${what}: ${v.name} id ${v.id}, model ${t.id}`);
    const wantSnaps = sim.model.snapshots(v.name).map((s) => s.name);
    const gotSnaps = v.snapshots.map((s) => (s.includes('@') ? s : `${v.name}@${s}`));
    if (gotSnaps.join(',') !== wantSnaps.join(',')) {
      sim.fail(`catalog ${what}: ${v.name} lists snapshots [${gotSnaps.join(',')}], model [${wantSnaps.join(',')}]`);
    }
  }
  for (const s of snapshots) {
    const t = sim.model.get(s.fullName);
    if (s.sizeBytes !== t.sizeBytes) sim.fail(`catalog ${what}: ${s.fullName} size ${s.sizeBytes}, model ${t.sizeBytes}`);
    if (s.id !== t.id) sim.fail(`catalog ${what}: ${s.fullName} id ${s.id}, model ${t.id}`);
    if (s.volume !== t.volume) sim.fail(`catalog ${what}: ${s.fullName} volume ${s.volume}, model ${t.volume}`);
  }
  const settings = describeSettings(e.listSettings(''));
  if (settings !== describeModelSettings(sim.model)) sim.fail(`settings ${what}: engine has [${settings}], model [${describeModelSettings(sim.model)}]`);
  const stats = e.stats();
  if (stats.volumes !== volumes.length || stats.snapshots !== snapshots.length) {
    sim.fail(`stats ${what}: ${stats.volumes} volumes/${stats.snapshots} snapshots, lists have ${volumes.length}/${snapshots.length}`);
  }
  if (stats.allocatedBytes + stats.freeBytes > stats.sizeBytes || stats.allocatedBytes < 0 || stats.freeBytes < 0) {
    sim.fail(`stats ${what}: allocated ${stats.allocatedBytes} + free ${stats.freeBytes} > size ${stats.sizeBytes}`);
  }
  verifyKeys(sim, what);
}

/** After a crash: each uncertain block must hold one of its allowed states; the model adopts it. */
export async function resolvePending(sim: Simulator): Promise<void> {
  for (const t of sim.model.targets.values()) {
    for (const [blockNumber, candidates] of t.pending) {
      if (blockNumber * B >= t.sizeBytes) continue;
      const o = await sim.attempt(() => sim.e.read(t.id, blockNumber * B, B));
      const got = sim.must(o, `read of uncertain block ${t.name}:${blockNumber} after crash`);
      const matches = candidates.filter((c) => sameContent(c.content, got));
      if (matches.length === 0) {
        sim.fail(`after crash ${t.name} block ${blockNumber} holds ${fingerprint(got)}, allowed only ` +
          `[${candidates.map((c) => fingerprint(c.content)).join(', ')}] (oldest = last durable)${whereElse(sim, blockNumber, got)}`);
      }
      t.blocks.set(blockNumber, merge(matches));
    }
    t.pending.clear();
  }
}

/**
 * Blocks in use that are neither tree nodes nor data: the superblocks and whatever else is fixed,
 * beside the radix arrays' own blocks (space map, catalog) that check() reads as nodes. Taken from a
 * new pool, it must be the same once every target is deleted and the dropped trees are freed.
 */
export function blocksBesideMetadata(stats: PoolStats, report: CheckReport): number {
  return stats.allocatedBytes / B - report.nodesChecked;
}

/** Polls of the background freeing before the drop queue is taken to be stuck. */
const drainPollsMax = 10_000;

/**
 * Deletes every target, lets the background freeing drain the dropped trees, and checks that every
 * tree node and data block came back: what is left in use is the new pool's (`emptyBesideMetadata`)
 * plus the radix arrays' own blocks. A tree node or data block still counted after its last owner
 * went (a count raised once too often, a drop never queued, a queue that stalls) shows here.
 */
export async function verifyEverythingReturns(sim: Simulator, emptyBesideMetadata: number): Promise<void> {
  const e = sim.e;
  for (const s of e.listSnapshots()) sim.must(await sim.attempt(() => e.deleteSnapshot(s.fullName)), `delete ${s.fullName} at the end`);
  for (const v of e.listVolumes()) sim.must(await sim.attempt(() => e.deleteVolume(v.name)), `delete ${v.name} at the end`);
  for (let polls = 0; e.stats().pendingDeleteNodes > 0; polls++) {
    if (polls >= drainPollsMax) sim.fail(`the drop queue never drained: ${e.stats().pendingDeleteNodes} nodes left`);
    sim.must(await sim.attempt(() => e.flush()), 'flush while the drop queue drains');
    await new Promise((resolve) => setImmediate(resolve));
  }
  const report = sim.must(await sim.attempt(() => e.check()), 'check with every target deleted');
  sim.checkReport(report, 'check with every target deleted');
  const stats = e.stats();
  const beside = blocksBesideMetadata(stats, report);
  // The keyring, made with the first encrypted volume, stays (both copies of its region).
  const keyringBlocks = 2 * ((e as unknown as { core: PoolCore }).core.keyring?.region.blocks ?? 0);
  if (stats.volumes !== 0 || stats.snapshots !== 0 || beside !== emptyBesideMetadata + keyringBlocks) {
    sim.fail(`with every target deleted: ${stats.volumes} volumes, ${stats.snapshots} snapshots, ${stats.allocatedBytes / B} blocks in use, ` +
      `${beside} of them beside the ${report.nodesChecked} metadata blocks (the new pool had ${emptyBesideMetadata}, the keyring takes ${keyringBlocks})`);
  }
  const keys = e.listKeys();
  if (keys.length > 0) sim.fail(`with every target deleted, listKeys still has slots [${keys.map((k) => k.keyId).join(',')}]`);
  // Every lineage is deleted now: none of their wrapped keys may be left anywhere on the device.
  sim.model.targets.clear();
  checkShredded(sim, sim.device, 'with every target deleted', false);
}
