// Raw export streams of encrypted snapshots through the real `cairn` binary between two real daemons:
// the stream holds no plaintext; a daemon whose tenant holds the same KEK imports it (full, then
// incremental) and serves the same bytes over NBD (qemu-img compare); one holding another KEK refuses it
// and keeps nothing; the plain export of the same snapshot imports anywhere as a plain volume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, run, startServe, tempDir, qemuIo, compare } from './cli-helpers.js';

test('raw streams of encrypted snapshots between daemons', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-rawstream-');
  const kek = join(dir, 'kek'), otherKek = join(dir, 'other.kek');
  await writeFile(kek, randomBytes(32), { mode: 0o600 });
  await writeFile(otherKek, randomBytes(32), { mode: 0o600 });
  const a = await startServe(t, join(dir, 'a.pool'), ['--pool-size', '512M']);
  const b = await startServe(t, join(dir, 'b.pool'), ['--pool-size', '512M']);
  const c = await startServe(t, join(dir, 'c.pool'), ['--pool-size', '512M']);
  for (const [d, k] of [[a, kek], [b, kek], [c, otherKek]] as const) {
    const set = await cairn(d.api, ['tenant', 'set', 'default', '--kek', `file:${k}`]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /available/);
  }
  const created = await cairnJson<{ encrypted: boolean }>(a.api, ['volume', 'create', 'vol', '--size', '16M', '--encrypt']);
  assert.equal(created.encrypted, true);
  const shown = await cairn(a.api, ['volume', 'show', 'vol']);
  assert.match(shown.stdout, /encryption:\s+encrypted/);
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x5a 0 2M');
  await cairnJson(a.api, ['snapshot', 'create', 'vol@s1']);
  await qemuIo(`${a.nbd}/vol`, 'write -P 0x6b 4M 1M');
  await cairnJson(a.api, ['snapshot', 'create', 'vol@s2']);

  const raw1 = join(dir, 's1.raw'), raw12 = join(dir, 's12.raw'), plain1 = join(dir, 's1.plain');
  const exported = await cairn(a.api, ['export', 'vol@s1', '--raw', '-o', raw1]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal((await cairn(a.api, ['export', 'vol@s2', '--since', 's1', '--raw', '-o', raw12])).code, 0);
  assert.equal((await cairn(a.api, ['export', 'vol@s1', '-o', plain1])).code, 0);
  const rawBytes = await readFile(raw1);
  assert.equal(rawBytes.indexOf(Buffer.alloc(4096, 0x5a)), -1, 'the raw stream holds no plaintext block');
  assert.ok((await readFile(plain1)).indexOf(Buffer.alloc(4096, 0x5a)) >= 0, 'the plain export does (the control)');

  const full = await cairn(b.api, ['import', raw1, 'copy']);
  assert.equal(full.code, 0, full.stderr);
  assert.equal((await cairn(b.api, ['import', raw12, 'copy'])).code, 0);
  const copy = await cairnJson<{ encrypted: boolean }>(b.api, ['volume', 'show', 'copy']);
  assert.equal(copy.encrypted, true, 'a raw import is encrypted');
  await compare(`${a.nbd}/vol@s1`, `${b.nbd}/copy@s1`);
  await compare(`${a.nbd}/vol@s2`, `${b.nbd}/copy@s2`);

  const refused = await cairn(c.api, ['import', raw1, 'copy']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /does not hold/);
  const list = await cairnJson<unknown[]>(c.api, ['volume', 'list']);
  assert.equal(list.length, 0, 'a refused import leaves nothing');
  assert.equal((await cairn(c.api, ['import', plain1, 'plaincopy'])).code, 0, 'a plain stream imports anywhere');
  const plainCopy = await cairnJson<{ encrypted: boolean }>(c.api, ['volume', 'show', 'plaincopy']);
  assert.equal(plainCopy.encrypted, false);
  await compare(`${a.nbd}/vol@s1`, `${c.nbd}/plaincopy`);
});
