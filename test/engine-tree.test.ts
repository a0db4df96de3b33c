// The mapping tree under random edits (splits, shadowing under snapshots, trims that empty leaves and
// collapse the root), compared block by block with a plain map, then checked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempPool, assertClean, MiB } from './engine-helpers.js';
import type { Engine } from '../src/engine/index.js';

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
