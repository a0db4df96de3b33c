// Snapshot stream identities live in the catalog record: they survive a restart with no side file
// beside the pool, a received snapshot keeps its sender's guid in the same commit, and a pool from
// before (guids in POOL.streams.json, none in the records) is migrated once at open, its side file
// removed, the guids the old registry handed out kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createPoolFile, openPoolFile, InvalidArgument } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { RecordKind } from '../src/engine/catalog.js';
import { readStream } from '../src/stream/reader.js';
import { assertBuilt, cairnJson, run, startServe, tempDir } from './cli-helpers.js';

const MiB = 1024 * 1024;

async function streamGuid(path: string): Promise<{ snapshot: string; base: string | null }> {
  for await (const item of readStream(createReadStream(path))) {
    if (item.type === 'header') return { snapshot: item.header.snapshot.guid, base: item.header.base?.guid ?? null };
  }
  throw new Error(`no header in ${path}`);
}

function oldDerivedGuid(poolUuid: string, id: number, createdMs: number): string {
  return createHash('sha256').update(`${poolUuid}:${id}:${createdMs}`).digest('hex').slice(0, 32);
}

async function sideFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.includes('.streams.json'));
}

test('engine: a stream guid is stored with its snapshot and survives reopen', async (t) => {
  const dir = await tempDir(t, 'cairn-guid-');
  const path = join(dir, 'pool');
  const engine = await createPoolFile(path, 64 * MiB);
  await engine.createVolume('v', MiB);
  await engine.createSnapshots(['v@mine']);
  const received = 'ab'.repeat(16);
  await engine.createSnapshots(['v@theirs'], { streamGuid: received });
  await assert.rejects(engine.createSnapshots(['v@x'], { streamGuid: 'nothex' }), InvalidArgument);
  await assert.rejects(engine.createSnapshots(['v@x'], { streamGuid: '0'.repeat(32) }), InvalidArgument);
  await assert.rejects(engine.createSnapshots(['v@x', 'v@y'], { streamGuid: received }), InvalidArgument);
  const mine = engine.snapshotStreamGuid('v@mine');
  assert.match(mine, /^[0-9a-f]{32}$/);
  assert.equal(engine.snapshotStreamGuid('v@theirs'), received);
  await engine.close();
  const again = await openPoolFile(path);
  t.after(() => again.close());
  assert.equal(again.snapshotStreamGuid('v@mine'), mine);
  assert.equal(again.snapshotStreamGuid('v@theirs'), received);
  assert.equal((await again.check()).ok, true);
  assert.deepEqual(await sideFiles(dir), []);
});

test('stream identities: restart without a side file, and migration of an old one', { timeout: 100_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-ident-');
  const aPool = join(dir, 'a.pool');
  const bPool = join(dir, 'b.pool');

  await t.test('a received snapshot keeps its guid across a restart, with no side file', async (t) => {
    const a = await startServe(t, aPool, ['--pool-size', '256M']);
    let b = await startServe(t, bPool, ['--pool-size', '256M']);
    await cairnJson(a.api, ['volume', 'create', 'vol', '--size', '8M']);
    await cairnJson(a.api, ['snapshot', 'create', 'vol@s1']);
    const full = join(dir, 'full.cairn');
    await cairnJson(a.api, ['export', 'vol@s1', '-o', full]);
    await cairnJson(b.api, ['import', full, 'copy']);
    assert.equal(await b.stop(), 0);
    b = await startServe(t, bPool);
    assert.deepEqual(await sideFiles(dir), [], 'the pool is one file');
    // copy@s1 must still carry vol@s1's guid for B to accept an incremental stream based on it.
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 1M 64k', `${a.nbd}/vol`]);
    await cairnJson(a.api, ['snapshot', 'create', 'vol@s2']);
    const inc = join(dir, 'inc.cairn');
    await cairnJson(a.api, ['export', 'vol@s2', '--since', 's1', '-o', inc]);
    const r = await cairnJson<{ incremental: boolean }>(b.api, ['import', inc, 'copy']);
    assert.equal(r.incremental, true);
    const back = join(dir, 'back.cairn');
    await cairnJson(b.api, ['export', 'copy@s2', '--since', 's1', '-o', back]);
    assert.deepEqual(await streamGuid(back), await streamGuid(inc), 'B exports the guids it received');
    assert.equal(await a.stop(), 0);
    assert.equal(await b.stop(), 0);
    assert.deepEqual(await sideFiles(dir), []);
  });

  await t.test('an old pool with a side file is migrated once', async (t) => {
    // Make an old pool: snapshots whose records hold no guid, and the side file that held them.
    const oldPool = join(dir, 'old.pool');
    const engine = await createPoolFile(oldPool, 256 * MiB) as CairnEngine;
    await engine.createVolume('v', 4 * MiB);
    const [s1, s2] = await engine.createSnapshots(['v@s1', 'v@s2']);
    await engine.core.mutate(async () => {
      for (const rec of engine.core.catalog.byId.values()) {
        if (rec.kind !== RecordKind.Snapshot) continue;
        delete rec.streamGuid;
        await engine.core.catalog.save(rec);
      }
    });
    await engine.close();
    const sideFile = `${oldPool}.streams.json`;
    const oldUuid = '6b1f0c57-0f4e-4d3a-9b7a-4f3c2f0e9d11';
    const received = 'cd'.repeat(16);
    await writeFile(sideFile, JSON.stringify({ poolUuid: oldUuid, received: { [String(s2!.id)]: received, 999: 'ef'.repeat(16) } }));

    let d = await startServe(t, oldPool);
    assert.equal(existsSync(sideFile), false, 'the side file is removed once migrated');
    const migrated = d.logs.map((l) => JSON.parse(l) as { event?: string; snapshots?: number })
      .find((e) => e.event === 'stream_identities_migrated');
    assert.equal(migrated?.snapshots, 2);
    const e1 = join(dir, 'old-s1.cairn');
    const e2 = join(dir, 'old-s2.cairn');
    await cairnJson(d.api, ['export', 'v@s1', '-o', e1]);
    await cairnJson(d.api, ['export', 'v@s2', '--since', 's1', '-o', e2]);
    const derived = oldDerivedGuid(oldUuid, s1!.id, s1!.createdMs);
    assert.deepEqual(await streamGuid(e1), { snapshot: derived, base: null }, 'a derived guid keeps its old value');
    assert.deepEqual(await streamGuid(e2), { snapshot: received, base: derived }, 'a received guid keeps its value');
    assert.equal(await d.stop(), 0);
    d = await startServe(t, oldPool);
    assert.equal(existsSync(sideFile), false, 'no side file comes back');
    await cairnJson(d.api, ['export', 'v@s2', '--since', 's1', '-o', e2]);
    assert.deepEqual(await streamGuid(e2), { snapshot: received, base: derived }, 'the migrated guids are in the catalog');
    assert.equal(await d.stop(), 0);
  });
});
