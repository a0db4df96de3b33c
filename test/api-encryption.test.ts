// Encryption through the REST API: a tenant's KEK, encrypted creates and clones (with the clear errors
// for what cannot be), raw export streams that carry ciphertext and the wrapped key and import only where
// the same KEK is held (full and incremental), plaintext export by default, and KEK rotation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApi, type ApiFixture } from './api-harness.js';
import { pattern } from './engine-helpers.js';

const MiB = 1024 * 1024;

async function kekFile(t: { after(fn: () => Promise<void>): void }, bytes = randomBytes(32)): Promise<{ path: string; bytes: Buffer }> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-kek-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'kek');
  await writeFile(path, bytes, { mode: 0o600 });
  return { path, bytes };
}

async function exportBytes(api: ApiFixture, path: string): Promise<Buffer> {
  const r = await fetch(`${api.base}${path}`, { headers: { authorization: `Bearer ${api.adminToken}` } });
  assert.equal(r.status, 200, `export ${path}: ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

async function importBytes(api: ApiFixture, volume: string, stream: Buffer): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${api.base}/v1/volumes/${encodeURIComponent(volume)}/import`, {
    method: 'POST', body: new Uint8Array(stream), headers: { authorization: `Bearer ${api.adminToken}`, 'content-type': 'application/octet-stream' },
  });
  return { status: r.status, body: await r.json() as Record<string, unknown> };
}

test('api encryption: KEK, encrypted volumes, clones, and the errors for what cannot be', async (t) => {
  const api = await startApi(t, 128 * MiB);
  const noKek = await api.call('POST', '/v1/volumes', { name: 'e', size: MiB, encrypted: true });
  assert.equal(noKek.status, 400);
  assert.match(JSON.stringify(noKek.body), /no key-encryption key/);
  const bad = await api.call('PUT', '/v1/tenants/default/encryption', { kek: 'file:/no/such/kek' });
  assert.equal(bad.status, 503, 'a KEK that does not open is refused now');
  assert.equal((await api.call('PUT', '/v1/tenants/default/encryption', { kek: 'pkcs11:token=x;object=y?pin-value=1234' })).status, 400, 'a PIN in the reference is refused');
  const kek = await kekFile(t);
  const set = await api.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${kek.path}` });
  assert.equal(set.status, 200);
  assert.deepEqual((set.body as { state: string }).state, 'available');
  const created = await api.call('POST', '/v1/volumes', { name: 'e', size: MiB, encrypted: true });
  assert.equal(created.status, 201);
  assert.equal((created.body as { encrypted: boolean }).encrypted, true);
  assert.equal((created.body as { locked: boolean }).locked, false);
  assert.equal((await api.call('POST', '/v1/volumes', { name: 'e', size: MiB, encrypted: true })).status, 200, 'an identical retry answers 200');
  assert.equal((await api.call('POST', '/v1/volumes', { name: 'e', size: MiB })).status, 409, 'a plain create of an encrypted name is another create');
  assert.equal((await api.call('POST', '/v1/volumes/e/snapshots', { name: 's' })).status, 201);
  const clone = await api.call('POST', '/v1/volumes', { name: 'c', from: 'e@s' });
  assert.equal((clone.body as { encrypted: boolean }).encrypted, true, 'a clone of an encrypted snapshot is encrypted');
  const plainClone = await api.call('POST', '/v1/volumes', { name: 'c2', from: 'e@s', encrypted: false });
  assert.equal(plainClone.status, 400);
  assert.match(JSON.stringify(plainClone.body), /encrypted with the same key/);
  await api.call('POST', '/v1/volumes', { name: 'p', size: MiB });
  assert.equal((await api.call('POST', '/v1/volumes', { name: 'c3', from: 'p', encrypted: true })).status, 400, 'a clone of a plain volume cannot be encrypted');
  // A tenant's volume may not be cloned into another tenant when its key is the first tenant's.
  assert.equal((await api.call('POST', '/v1/tenants', { name: 'other' })).status, 201);
  const cross = await api.call('POST', '/v1/volumes', { name: 'other/x', from: 'e' });
  assert.equal(cross.status, 400);
  const status = await api.call('GET', '/v1/tenants/default/encryption');
  assert.equal((status.body as { encryptedLineages: number }).encryptedLineages, 1);
  const snap = await api.call('GET', '/v1/volumes/e/snapshots/s');
  assert.equal((snap.body as { encrypted: boolean }).encrypted, true);
});

test('api encryption: raw streams carry ciphertext and import only where the KEK is held; plain export is plaintext', async (t) => {
  const kek = await kekFile(t);
  const a = await startApi(t, 128 * MiB);
  await a.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${kek.path}` });
  await a.call('POST', '/v1/volumes', { name: 'v', size: 4 * MiB, encrypted: true });
  const id = a.engine.resolve('v').id;
  const marker = Buffer.alloc(4096, 'RAW-STREAM-PLAINTEXT-');
  await a.engine.write(id, 0, marker);
  await a.engine.write(id, MiB, pattern(4, 256 * 1024));
  await a.call('POST', '/v1/volumes/v/snapshots', { name: 's1' });
  await a.engine.write(id, 2 * MiB, pattern(5, 64 * 1024));
  await a.call('POST', '/v1/volumes/v/snapshots', { name: 's2' });

  const plain = await exportBytes(a, '/v1/volumes/v/snapshots/s1/export');
  assert.ok(plain.indexOf(Buffer.from('RAW-STREAM-PLAINTEXT-')) >= 0, 'the default export is plaintext (the caller is authorised)');
  const raw = await exportBytes(a, '/v1/volumes/v/snapshots/s1/export?raw=true');
  assert.equal(raw.indexOf(Buffer.from('RAW-STREAM-PLAINTEXT-')), -1, 'a raw stream holds no plaintext');
  assert.equal(raw.indexOf(pattern(4, 256 * 1024).subarray(0, 32)), -1);
  const rawInc = await exportBytes(a, '/v1/volumes/v/snapshots/s2/export?raw=true&since=s1');
  await a.call('POST', '/v1/volumes', { name: 'pv', size: MiB });
  await a.call('POST', '/v1/volumes/pv/snapshots', { name: 's' });
  const notEncrypted = await fetch(`${a.base}/v1/volumes/pv/snapshots/s/export?raw=true`, { headers: { authorization: `Bearer ${a.adminToken}` } });
  assert.equal(notEncrypted.status, 400, 'a raw stream of a plain snapshot is refused');

  // Another pool whose tenant holds the same KEK: full then incremental raw import.
  const b = await startApi(t, 128 * MiB);
  await b.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${kek.path}` });
  const full = await importBytes(b, 'v', raw);
  assert.equal(full.status, 201, JSON.stringify(full.body));
  const inc = await importBytes(b, 'v', rawInc);
  assert.equal(inc.status, 201, JSON.stringify(inc.body));
  const bv = b.engine.getVolume('v');
  assert.ok(bv.encryption !== null, 'a raw import makes an encrypted volume');
  const bid = b.engine.resolve('v').id;
  assert.ok((await b.engine.read(bid, 0, 4096)).equals(marker));
  assert.ok((await b.engine.read(bid, MiB, 256 * 1024)).equals(pattern(4, 256 * 1024)));
  assert.ok((await b.engine.read(bid, 2 * MiB, 64 * 1024)).equals(pattern(5, 64 * 1024)));

  // A pool whose tenant holds another KEK cannot open the stream's key; one without any KEK neither.
  const other = await kekFile(t);
  const c = await startApi(t, 128 * MiB);
  const none = await importBytes(c, 'v', raw);
  assert.equal(none.status, 400);
  await c.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${other.path}` });
  const wrong = await importBytes(c, 'v', raw);
  assert.equal(wrong.status, 422, JSON.stringify(wrong.body));
  assert.match(String(wrong.body.detail), /does not hold/);
  assert.equal(c.engine.listVolumes().length, 0, 'a refused import leaves nothing behind');
  // A raw incremental stream applies only to the lineage of its key.
  await c.call('POST', '/v1/volumes', { name: 'w', size: 4 * MiB, encrypted: true });
  const plainFull = await importBytes(c, 'p', plain);
  assert.equal(plainFull.status, 201, 'a plain stream imports anywhere');
  assert.equal(c.engine.getVolume('p').encryption, null);
});

test('api encryption: rotate-kek re-wraps every key; volumes stay readable and reopen under the new KEK', async (t) => {
  const k1 = await kekFile(t), k2 = await kekFile(t);
  const api = await startApi(t, 128 * MiB);
  await api.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${k1.path}` });
  for (const n of ['a', 'b', 'c']) await api.call('POST', '/v1/volumes', { name: n, size: MiB, encrypted: true });
  await api.engine.write(api.engine.resolve('b').id, 0, pattern(8, 4096));
  const before = api.engine.listKeys().map((k) => k.wrapped[0]!.toString('hex'));
  const changed = await api.call('PUT', '/v1/tenants/default/encryption', { kek: `file:${k2.path}` });
  assert.equal(changed.status, 400, 'a tenant with encrypted volumes changes its KEK by rotation only');
  const rotated = await api.call('POST', '/v1/tenants/default/encryption/rotate', { kek: `file:${k2.path}` });
  assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
  assert.equal((rotated.body as { kek: string }).kek, `file:${k2.path}`);
  assert.equal((rotated.body as { rotatingTo: string | null }).rotatingTo, null);
  const after = api.engine.listKeys().map((k) => k.wrapped[0]!.toString('hex'));
  assert.equal(after.length, 3);
  for (const w of after) assert.ok(!before.includes(w), 'every key was re-wrapped');
  assert.ok((await api.engine.read(api.engine.resolve('b').id, 0, 4096)).equals(pattern(8, 4096)));
  // Lock everything, then unlock through the API: only the new KEK is needed now.
  for (const k of api.engine.listKeys()) api.engine.lockKey(k.keyId);
  await rm(k1.path);
  const unlocked = await api.call('POST', '/v1/tenants/default/encryption/unlock');
  assert.equal((unlocked.body as { lockedLineages: number }).lockedLineages, 0, JSON.stringify(unlocked.body));
  assert.ok((await api.engine.read(api.engine.resolve('b').id, 0, 4096)).equals(pattern(8, 4096)));
});
