// Export/import round trips through the real `cairn` binary between two real daemons: full and
// incremental streams compared with qemu-img compare over NBD, a wrong base refused, a truncated or
// corrupt stream rejected without changing the target, and stdout→stdin piping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { adminToken, assertBuilt, cairn, cairnBin, cairnJson, hashExportPy, python, run, startServe, tempDir, qemuIo, compare } from './cli-helpers.js';

const MiB = 1024 * 1024;

async function hashOf(uri: string): Promise<string> {
  const r = await python(hashExportPy, [uri]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

test('export/import streams between two daemons', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-stream-');
  const a = await startServe(t, join(dir, 'a.pool'), ['--pool-size', '1G']);
  const b = await startServe(t, join(dir, 'b.pool'), ['--pool-size', '1G']);

  await cairnJson(a.api, ['volume', 'create', 'vol', '--size', '32M']);
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x11 0 3M');
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x12 20M 1M');
  await cairnJson(a.api, ['snapshot', 'create', 'vol@s1']);
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x21 1M 512k');
  await qemuIo(`${a.nbd}/vol`, 'write -z 20M 1M'); // zeroes where s1 had data: must propagate
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x22 30M 8k');
  await cairnJson(a.api, ['snapshot', 'create', 'vol@s2']);
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x31 5M 1M');
  await cairnJson(a.api, ['snapshot', 'create', 'vol@s3']);

  const full = join(dir, 'full.cairn');
  const inc12 = join(dir, 'inc12.cairn');
  const inc13 = join(dir, 'inc13.cairn');
  const inc23 = join(dir, 'inc23.cairn');

  await t.test('full stream round trip', async () => {
    const out = await cairnJson<{ bytes: number; records: number; base: string | null }>(a.api, ['export', 'vol@s1', '-o', full]);
    assert.equal(out.base, null);
    assert.ok(out.bytes > 4 * MiB && out.bytes < 5 * MiB, `a full stream carries the mapped data only (${out.bytes})`);
    const imported = await cairnJson<{ volume: string; incremental: boolean; snapshot: { name: string } }>(b.api, ['import', full, 'copy']);
    assert.equal(imported.incremental, false);
    assert.equal(imported.snapshot.name, 'copy@s1');
    await compare(`${a.nbd}/vol@s1`, `${b.nbd}/copy@s1`);
    await compare(`${a.nbd}/vol@s1`, `${b.nbd}/copy`);
    const again = await cairn(b.api, ['import', full, 'copy']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /\(name_taken\)/);
  });

  await t.test('incremental stream advances the copy', async () => {
    const text = await cairn(a.api, ['export', 'vol@s2', '--since', 's1', '-o', inc12]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /exported vol@s2 since vol@s1 to /);
    const r = await cairnJson<{ incremental: boolean; snapshot: { name: string } }>(b.api, ['import', inc12, 'copy']);
    assert.equal(r.incremental, true);
    assert.equal(r.snapshot.name, 'copy@s2');
    await compare(`${a.nbd}/vol@s2`, `${b.nbd}/copy@s2`);
    await compare(`${a.nbd}/vol@s1`, `${b.nbd}/copy@s1`);
  });

  await t.test('a stream for another base is refused; the target is unchanged', async () => {
    await cairnJson(a.api, ['export', 'vol@s3', '--since', 'vol@s1', '-o', inc13]);
    const before = await hashOf(`${b.nbd}/copy`);
    const r = await cairn(b.api, ['import', inc13, 'copy']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\(stream_base_mismatch\)\n$/);
    const snaps = await cairnJson<Array<{ name: string }>>(b.api, ['snapshot', 'list', 'copy']);
    assert.deepEqual(snaps.map((s) => s.name), ['copy@s1', 'copy@s2']);
    assert.equal(await hashOf(`${b.nbd}/copy`), before);
    const fresh = await cairn(b.api, ['import', inc13, 'nosuch']);
    assert.equal(fresh.code, 1);
    assert.match(fresh.stderr, /\(volume_not_found\)/);
  });

  await t.test('truncated and corrupt streams are rejected without changing the target', async () => {
    await cairnJson(a.api, ['export', 'vol@s3', '--since', 's2', '-o', inc23]);
    const bytes = await readFile(inc23);
    const before = await hashOf(`${b.nbd}/copy`);
    const broken: Array<[string, Buffer]> = [
      ['truncated', bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['no trailer', bytes.subarray(0, bytes.length - 24)],
      ['flipped data byte', Buffer.from(bytes)],
      ['not a stream', Buffer.from('hello, not a cairn stream at all')],
    ];
    broken[2]![1][Math.floor(bytes.length / 2)]! ^= 0x40;
    for (const [what, content] of broken) {
      const path = join(dir, `broken-${what.replace(/ /g, '-')}`);
      await writeFile(path, content);
      const r = await cairn(b.api, ['import', path, 'copy']);
      assert.equal(r.code, 1, what);
      assert.match(r.stderr, /^cairn: invalid stream: .*\(stream_corrupt\)\n$/, what);
      const snaps = await cairnJson<Array<{ name: string }>>(b.api, ['snapshot', 'list', 'copy']);
      assert.deepEqual(snaps.map((s) => s.name), ['copy@s1', 'copy@s2'], what);
      assert.equal(await hashOf(`${b.nbd}/copy`), before, what);
    }
    const full2 = await cairn(b.api, ['import', join(dir, 'broken-truncated'), 'other']);
    assert.equal(full2.code, 1);
    const vols = await cairnJson<Array<{ name: string }>>(b.api, ['volume', 'list']);
    assert.deepEqual(vols.map((v) => v.name), ['copy'], 'a rejected full stream creates nothing');
    const ok = await cairnJson<{ snapshot: { name: string } }>(b.api, ['import', inc23, 'copy']);
    assert.equal(ok.snapshot.name, 'copy@s3');
    await compare(`${a.nbd}/vol@s3`, `${b.nbd}/copy@s3`);
  });

  await t.test('a volume written after its latest snapshot refuses an incremental stream', async () => {
    await qemuIo(`${a.nbd}/vol`, 'write -P 0x41 0 4k');
    await cairnJson(a.api, ['snapshot', 'create', 'vol@s4']);
    const inc34 = join(dir, 'inc34.cairn');
    await cairnJson(a.api, ['export', 'vol@s4', '--since', 's3', '-o', inc34]);
    await qemuIo(`${b.nbd}/copy`, 'write -P 0x99 8M 4k');
    const r = await cairn(b.api, ['import', inc34, 'copy']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\(target_modified\)/);
    await cairnJson(b.api, ['volume', 'revert', 'copy', '--to', 's3']);
    await cairnJson(b.api, ['import', inc34, 'copy']);
    await compare(`${a.nbd}/vol@s4`, `${b.nbd}/copy@s4`);
  });

  await t.test('export to stdout, import from stdin', async () => {
    const raw = await run('sh', ['-c', 'node "$0" --api "$1" --token "$3" export vol@s4 -o - | node "$0" --api "$2" --token "$4" --json import - piped',
      cairnBin, a.api, b.api, adminToken(a.api), adminToken(b.api)]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal((JSON.parse(raw.stdout) as { snapshot: { name: string } }).snapshot.name, 'piped@s4');
    await compare(`${a.nbd}/vol@s4`, `${b.nbd}/piped`);
  });

  await t.test('an incremental import that fills the pool is rolled back; the pool stays consistent', async (t) => {
    await cairnJson(a.api, ['volume', 'create', 'grow', '--size', '128M']);
    await qemuIo(`${a.nbd}/grow`, 'write -P 0x51 0 1M');
    await cairnJson(a.api, ['snapshot', 'create', 'grow@g1']);
    await qemuIo(`${a.nbd}/grow`, 'write -P 0x52 8M 100M');
    await qemuIo(`${a.nbd}/grow`, 'write -P 0x53 512k 4k');
    await cairnJson(a.api, ['snapshot', 'create', 'grow@g2']);
    const g1 = join(dir, 'g1.cairn');
    const g12 = join(dir, 'g12.cairn');
    await cairnJson(a.api, ['export', 'grow@g1', '-o', g1]);
    await cairnJson(a.api, ['export', 'grow@g2', '--since', 'g1', '-o', g12]);
    const tinyPool = join(dir, 'tiny.pool');
    const c = await startServe(t, tinyPool, ['--pool-size', '64M']);
    await cairnJson(c.api, ['import', g1, 'grow']);
    const before = await hashOf(`${c.nbd}/grow`);
    const r = await cairn(c.api, ['import', g12, 'grow']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\(pool_full\)\n$/);
    const snaps = await cairnJson<Array<{ name: string }>>(c.api, ['snapshot', 'list', 'grow']);
    assert.deepEqual(snaps.map((x) => x.name), ['grow@g1']);
    assert.equal(await hashOf(`${c.nbd}/grow`), before, 'the volume is back to its base snapshot');
    await compare(`${a.nbd}/grow@g1`, `${c.nbd}/grow`);
    assert.equal(await c.stop(), 0);
    const check = await cairn(null, ['check', '--pool', tinyPool]);
    assert.equal(check.code, 0, `no leaked blocks after the rollback: ${check.stdout}`);
  });

  assert.equal(await a.stop(), 0);
  assert.equal(await b.stop(), 0);
});
