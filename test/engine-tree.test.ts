// The mapping tree under random edits (splits, shadowing under snapshots, trims that empty leaves and
// collapse the root), compared block by block with a plain map, then checked; trims that leave nodes
// under-full merge them with their neighbours, so the tree shrinks back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempPool, assertClean, MiB } from './engine-helpers.js';
import type { Engine } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { MetaType } from '../src/engine/format.js';
import { META_PAYLOAD_BYTES } from '../src/engine/constants.js';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

test('random writes, trims and snapshots match a reference map', async (t) => {
  const { engine, cleanup } = await tempPool(512 * MiB);
  t.after(cleanup);
  const blocks = 16384;
  await engine.createVolume('v', blocks * 4096);
  const id = engine.resolve('v').id;
  const model = new Map<number, number>();
  const snaps: { name: string; model: Map<number, number> }[] = [];
  const rand = rng(7);
  const blockOf = (tag: number): Buffer => Buffer.alloc(4096, tag);
  for (let step = 0; step < 6000; step++) {
    const r = rand();
    const lba = Math.floor(rand() * blocks);
    if (r < 0.8) {
      const n = 1 + Math.floor(rand() * 8);
      const tag = 1 + Math.floor(rand() * 254);
      const count = Math.min(n, blocks - lba);
      await engine.write(id, lba * 4096, Buffer.concat(Array.from({ length: count }, () => blockOf(tag))));
      for (let i = 0; i < count; i++) model.set(lba + i, tag);
    } else if (r < 0.95) {
      const count = Math.min(1 + Math.floor(rand() * 600), blocks - lba);
      await engine.trim(id, lba * 4096, count * 4096);
      for (let i = 0; i < count; i++) model.delete(lba + i);
    } else if (snaps.length < 20) {
      const name = `s${step}`;
      await engine.createSnapshots([`v@${name}`]);
      snaps.push({ name, model: new Map(model) });
    }
  }
  const verify = async (targetId: number, m: Map<number, number>): Promise<void> => {
    const chunk = 4096;
    for (let base = 0; base < blocks; base += chunk) {
      const data = await engine.read(targetId, base * 4096, chunk * 4096);
      for (let i = 0; i < chunk; i++) {
        const want = m.get(base + i) ?? 0;
        if (data[i * 4096] !== want || data[i * 4096 + 4095] !== want) assert.fail(`lba ${base + i}: want ${want}, got ${data[i * 4096]}`);
      }
    }
  };
  await verify(id, model);
  for (const s of snaps) await verify(engine.resolve(`v@${s.name}`).id, s.model);
  await assertClean(engine);
  await engine.trim(id, 0, blocks * 4096);
  for (const s of snaps) await engine.deleteSnapshot(`v@${s.name}`);
  await engine.drainDeletes();
  assert.equal(engine.getVolume('v').mappedBytes, 0);
  await assertClean(engine);
});

test('a tiny metadata cache evicts without losing nodes of a commit in flight', async (t) => {
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { createPoolFile } = await import('../src/engine/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'cairn-cache-'));
  const engine = await createPoolFile(join(dir, 'pool'), 256 * MiB, { cacheBytesMax: 64 * 1024, commitIntervalMs: 0 });
  t.after(async () => { await engine.close().catch(() => undefined); rmSync(dir, { recursive: true, force: true }); });
  await engine.createVolume('v', 64 * MiB);
  const id = engine.resolve('v').id;
  const rand = rng(11);
  const model = new Map<number, number>();
  // 32 writers with flushes among them: commits are always in flight while mutations evict.
  // Concurrent writes to one block may land in any order (as in NBD), so no two overlap in flight.
  let op = 0;
  const inFlight = new Set<number>();
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (op < 6000) {
      const n = op++;
      if (n % 50 === 0) { await engine.flush(); continue; }
      let lba = Math.floor(rand() * 16384);
      while (inFlight.has(lba)) lba = (lba + 1) % 16384;
      const tag = 1 + Math.floor(rand() * 250);
      model.set(lba, tag);
      inFlight.add(lba);
      await engine.write(id, lba * 4096, Buffer.alloc(4096, tag));
      inFlight.delete(lba);
    }
  }));
  for (const [lba, tag] of model) assert.equal((await engine.read(id, lba * 4096, 4096))[100], tag, `lba ${lba}`);
  await assertClean(engine);
});

test('32 MiB writes over scattered blocks and past them split leaves, and reopen intact', async (t) => {
  const { engine, path, cleanup } = await tempPool(512 * MiB);
  t.after(cleanup);
  await engine.createVolume('v', 128 * MiB);
  const id = engine.resolve('v').id;
  // Every third block written on its own: leaves of single-block extents (nothing merges).
  for (let lba = 0; lba < 12288; lba += 3) await engine.write(id, lba * 4096, Buffer.alloc(4096, 1 + (lba % 251)));
  await engine.createSnapshots(['v@before']);
  // One write, 8192 blocks in 128 extents: the edit overfills a leaf many times over before it splits.
  const big = Buffer.alloc(32 * MiB);
  for (let i = 0; i < 8192; i++) big.fill(1 + ((i * 7) % 253), i * 4096, (i + 1) * 4096);
  await engine.write(id, 1000 * 4096, big);
  // Past every mapping: all 128 extents land in the rightmost leaf at once (its arrays grow, then split).
  await engine.write(id, 20000 * 4096, big);
  const readAll = async (e: Engine, name: string): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for (let lba = 0; lba < 12288; lba += 2048) parts.push(await e.read(e.resolve(name).id, lba * 4096, 2048 * 4096));
    return Buffer.concat(parts);
  };
  const check = async (e: Engine): Promise<void> => {
    const got = await readAll(e, 'v');
    for (let lba = 0; lba < 12288; lba++) {
      const inBig = lba >= 1000 && lba < 9192;
      const want = inBig ? 1 + (((lba - 1000) * 7) % 253) : lba % 3 === 0 ? 1 + (lba % 251) : 0;
      if (got[lba * 4096] !== want || got[lba * 4096 + 4095] !== want) assert.fail(`lba ${lba}: want ${want}, got ${got[lba * 4096]}`);
    }
    const tail = await e.read(e.resolve('v').id, 20000 * 4096, 32 * MiB);
    assert.ok(tail.equals(big), 'the appended 32 MiB reads back');
    const old = await readAll(e, 'v@before');
    for (let lba = 0; lba < 12288; lba++) {
      const want = lba % 3 === 0 ? 1 + (lba % 251) : 0;
      if (old[lba * 4096] !== want) assert.fail(`snapshot lba ${lba}: want ${want}, got ${old[lba * 4096]}`);
    }
  };
  await check(engine);
  await assertClean(engine);
  await engine.close();
  const { openPoolFile } = await import('../src/engine/index.js');
  const reopened = await openPoolFile(path);
  t.after(() => reopened.close().catch(() => undefined));
  await check(reopened);
  await assertClean(reopened);
});

/** Nodes, leaves, height and leaf payload bytes of the tree of `name` ("VOL" or "VOL@SNAP"). */
async function treeShape(engine: CairnEngine, name: string): Promise<{ nodes: number; leaves: number; height: number; leafBytes: number }> {
  const root = engine.core.catalog.byId.get(engine.resolve(name).id)!.root;
  const shape = { nodes: 0, leaves: 0, height: 0, leafBytes: 0 };
  const walk = async (block: number, depth: number): Promise<void> => {
    const node = await engine.core.trees.load(block);
    shape.nodes++;
    shape.height = Math.max(shape.height, depth);
    if (node.type === MetaType.Leaf) { shape.leaves++; shape.leafBytes += node.ext.bytes; return; }
    for (const child of node.children) await walk(child, depth + 1);
  };
  if (root !== 0) await walk(root, 1);
  return shape;
}

test('trims that empty most of every leaf merge leaves and branches back to near the fewest nodes, under a snapshot sharing them', async (t) => {
  const { engine, cleanup } = await tempPool(1024 * MiB);
  t.after(cleanup);
  const lbaEnd = 92160; // 46,080 single-block extents: leaves under two levels of branches
  await engine.createVolume('v', 512 * MiB);
  const id = engine.resolve('v').id;
  const tagOf = (lba: number): number => 1 + ((lba >> 1) % 250);
  // Every other block written, the others all zero (holes): 1 MiB writes of 128 extents, in order,
  // so appends pack the leaves full.
  for (let base = 0; base < lbaEnd; base += 256) {
    const buf = Buffer.alloc(MiB);
    for (let i = 0; i < 256; i += 2) buf.fill(tagOf(base + i), i * 4096, (i + 1) * 4096);
    await engine.write(id, base * 4096, buf);
  }
  await engine.createSnapshots(['v@full']);
  const full = await treeShape(engine, 'v');
  assert.ok(full.height >= 3, `two levels of branches (height ${full.height})`);
  // Keep one block in 64: each trim empties 31 of 32 extents of its stretch, in random order; half
  // the stretches first, then a second snapshot, then the rest: the merges then meet neighbours the
  // new snapshot shares (kept for it, their children counted once more) and neighbours that are not
  // writable in this transaction on the left (the merged node is then the right one).
  const rand = rng(21);
  const shuffled = (ks: number[]): number[] => {
    for (let i = ks.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [ks[i], ks[j]] = [ks[j]!, ks[i]!]; }
    return ks;
  };
  const stretches = Array.from({ length: lbaEnd / 64 }, (_, k) => k);
  for (const k of shuffled(stretches.filter((k) => k % 3 === 0))) await engine.trim(id, (k * 64 + 1) * 4096, 63 * 4096);
  await engine.flush();
  await engine.createSnapshots(['v@third']);
  for (const k of shuffled(stretches.filter((k) => k % 3 !== 0))) await engine.trim(id, (k * 64 + 1) * 4096, 63 * 4096);
  const trimmed = await treeShape(engine, 'v');
  const leavesMin = Math.ceil(trimmed.leafBytes / META_PAYLOAD_BYTES);
  // Under-full nodes whose neighbours have no room for them can stay: about half full on average.
  assert.ok(trimmed.leaves <= 2 * leavesMin + 2, `${trimmed.leaves} leaves hold what ${leavesMin} could (${full.leaves} before the trims)`);
  assert.ok(trimmed.nodes <= trimmed.leaves + 2, `${trimmed.nodes} nodes for ${trimmed.leaves} leaves: the branches merged too`);
  assert.ok(trimmed.height < full.height, `the root collapsed (height ${full.height} -> ${trimmed.height})`);
  // The snapshot still holds the full tree; both read as the model says.
  assert.deepEqual(await treeShape(engine, 'v@full'), full);
  const verify = async (name: string, kept: (lba: number) => boolean): Promise<void> => {
    for (let base = 0; base < lbaEnd; base += 2048) {
      const got = await engine.read(engine.resolve(name).id, base * 4096, 2048 * 4096);
      for (let i = 0; i < 2048; i++) {
        const lba = base + i, want = kept(lba) ? tagOf(lba) : 0;
        if (got[i * 4096] !== want || got[i * 4096 + 4095] !== want) assert.fail(`${name} lba ${lba}: want ${want}, got ${got[i * 4096]}`);
      }
    }
  };
  await verify('v', (lba) => lba % 64 === 0);
  await verify('v@full', (lba) => lba % 2 === 0);
  await verify('v@third', (lba) => lba % 2 === 0 && (Math.floor(lba / 64) % 3 !== 0 || lba % 64 === 0));
  await assertClean(engine);
  // Writes between the kept blocks split the merged leaves again, and trims merge them back.
  for (let base = 0; base < lbaEnd; base += 4096) await engine.write(id, (base + 2) * 4096, Buffer.alloc(4096, 7));
  await engine.deleteSnapshot('v@full');
  await engine.deleteSnapshot('v@third');
  await engine.drainDeletes();
  for (let base = 0; base < lbaEnd; base += 4096) await engine.trim(id, (base + 2) * 4096, 4096);
  await verify('v', (lba) => lba % 64 === 0);
  assert.ok((await treeShape(engine, 'v')).leaves <= 2 * leavesMin + 2);
  await assertClean(engine);
});
