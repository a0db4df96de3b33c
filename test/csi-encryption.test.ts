// Encryption at rest through the CSI controller (issue 20): the plugin's real socket against a real
// `cairn serve`. A StorageClass with encrypted: "true" makes volumes encrypted with their tenant's
// KEK (a file KEK set in Cairn, never a class parameter); snapshots and clones keep the data key and
// must be restored into an encrypted class (a plain class is INVALID_ARGUMENT, and so is a plain
// source in an encrypted class); a retry with other encryption is ALREADY_EXISTS; a KEK that went
// missing makes new encrypted volumes UNAVAILABLE until it is back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { ApiProblem, problemToCsi } from '../src/csi/api-client.js';
import { volumeParametersOf } from '../src/csi/parameters.js';
import { csiClients, expectCode, removeDir, startDaemon, startPlugin, tempDir, type CsiClients, type Daemon, type Plugin } from './csi-harness.js';

const MiB = 1024 ** 2;
const blockCap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const encryptedClass = { 'csi.storage.k8s.io/fstype': 'ext4', encrypted: 'true' };
const plainClass = { 'csi.storage.k8s.io/fstype': 'ext4' };

test('the encrypted parameter, and API problems of encryption as CSI codes', () => {
  assert.equal(volumeParametersOf(encryptedClass, undefined, 'x').encrypted, true);
  assert.equal(volumeParametersOf({ encrypted: 'false' }, undefined, 'x').encrypted, false);
  assert.equal(volumeParametersOf(plainClass, undefined, 'x').encrypted, false, 'absent is plain');
  assert.equal(volumeParametersOf({ encrypted: 'true', iopsMax: '10' }, undefined, 'x').qos?.iopsMax, 10);
  for (const bad of ['True', 'yes', '1', '', ' true']) {
    assert.throws(() => volumeParametersOf({ encrypted: bad }, undefined, 'x'),
      (e: { code: number; message: string }) => e.code === status.INVALID_ARGUMENT && /"true" or "false"/.test(e.message), bad);
  }
  assert.throws(() => volumeParametersOf({ encrypted: 'true', kek: 'file:/k' }, undefined, 'x'),
    (e: { code: number; message: string }) => e.code === status.INVALID_ARGUMENT && /cairn tenant set/.test(e.message));
  assert.throws(() => volumeParametersOf({}, { encrypted: 'true' }, 'x'),
    (e: { code: number; message: string }) => e.code === status.INVALID_ARGUMENT && /cannot be changed/.test(e.message));

  const code = (httpStatus: number, apiCode: string): number => problemToCsi(new ApiProblem(httpStatus, apiCode, 'why'), 'ctx').code;
  assert.equal(code(423, 'volume_locked'), status.UNAVAILABLE, 'a locked volume unlocks on its own: retry the same call');
  assert.equal(code(503, 'kek_unavailable'), status.UNAVAILABLE);
  assert.equal(code(409, 'tenant_busy'), status.UNAVAILABLE, 'a KEK rotation under way is not ALREADY_EXISTS');
  assert.equal(code(400, 'invalid_argument'), status.INVALID_ARGUMENT);
});

test('encrypted StorageClass, snapshots, restores and clones', { timeout: 600_000 }, async (t) => {
  const dir = tempDir('cairn-csi-enc-');
  let daemon: Daemon = await startDaemon(dir);
  let plugin: Plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
  let c: CsiClients = csiClients(plugin.socketPath);
  t.after(async () => { c.close(); await plugin.kill(); await daemon.stop(); removeDir(dir); });
  const adminToken = readFileSync(join(dir, 'cairn.pool.admin-token'), 'utf8').trim();
  const admin = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await fetch(daemon.apiUrl + path, {
      method, headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? null : JSON.parse(text) };
  };
  const view = async (name: string) => admin('GET', `/v1/volumes/${encodeURIComponent(name)}`);

  // Tenant acme with a file KEK (32 random bytes), set in Cairn by the administrator.
  const kekPath = join(dir, 'acme.kek');
  writeFileSync(kekPath, randomBytes(32), { mode: 0o600 });
  assert.equal((await admin('POST', '/v1/tenants', { name: 'acme' })).status, 201);
  const kekSet = await admin('PUT', '/v1/tenants/acme/encryption', { kek: `file:${kekPath}` });
  assert.equal(kekSet.status, 200, JSON.stringify(kekSet.body));
  const made = await admin('POST', '/v1/tokens', { role: 'tenant', tenant: 'acme', name: 'acme-csi' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const acme = { token: made.body.token as string };
  const create = (name: string, parameters: Record<string, string>, extra: object = {}) => c.controller.CreateVolume!({
    name, volume_capabilities: [blockCap], capacity_range: { required_bytes: 8 * MiB }, parameters, secrets: acme, ...extra,
  });
  const fromSnapshot = (id: string) => ({ volume_content_source: { snapshot: { snapshot_id: id } } });
  const fromVolume = (id: string) => ({ volume_content_source: { volume: { volume_id: id } } });

  await t.test('an encrypted class makes an encrypted volume; the context says so', async () => {
    const res = await create('pvc-enc', encryptedClass);
    assert.equal(res.volume.volume_id, 'acme/pvc-enc');
    assert.deepEqual(res.volume.volume_context, { encrypted: 'true' });
    const v = await view('acme/pvc-enc');
    assert.equal(v.status, 200);
    assert.equal(v.body.encrypted, true, 'the API view: encrypted');
    assert.equal(v.body.locked, false);
    const plain = await create('pvc-plain', plainClass);
    assert.deepEqual(plain.volume.volume_context, { encrypted: 'false' });
    assert.equal((await view('acme/pvc-plain')).body.encrypted, false);
    const explicit = await create('pvc-plain2', { encrypted: 'false' });
    assert.equal((await view(explicit.volume.volume_id)).body.encrypted, false);
  });

  await t.test('bad parameter values and a KEK in the class are refused before anything is made', async () => {
    for (const value of ['yes', 'TRUE', '']) {
      const err = await expectCode(create('pvc-bad', { encrypted: value }), status.INVALID_ARGUMENT);
      assert.match(err.details, /encrypted/);
    }
    const err = await expectCode(create('pvc-bad', { encrypted: 'true', kek: `file:${kekPath}` }), status.INVALID_ARGUMENT);
    assert.match(err.details, /tenant's own/);
    await expectCode(create('pvc-bad', encryptedClass, { mutable_parameters: { encrypted: 'false' } }), status.INVALID_ARGUMENT);
    assert.equal((await view('acme/pvc-bad')).status, 404);
  });

  await t.test('idempotent retries: same encryption is the same volume, other encryption ALREADY_EXISTS', async () => {
    const first = await create('pvc-enc', encryptedClass);
    assert.deepEqual((await create('pvc-enc', encryptedClass)).volume, first.volume);
    const err = await expectCode(create('pvc-enc', plainClass), status.ALREADY_EXISTS);
    assert.match(err.details, /exists encrypted/);
    await expectCode(create('pvc-plain', encryptedClass), status.ALREADY_EXISTS);
    assert.equal((await view('acme/pvc-plain')).body.encrypted, false, 'unchanged');
  });

  let encSnap = '';
  let plainSnap = '';
  await t.test('snapshots of an encrypted volume: created, listed, and encrypted in the API', async () => {
    const res = await c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-enc', name: 'snap-enc', secrets: acme });
    encSnap = res.snapshot.snapshot_id;
    assert.equal(encSnap, 'acme/pvc-enc@snap-enc');
    assert.equal(res.snapshot.ready_to_use, true);
    assert.equal(res.snapshot.size_bytes, 8 * MiB);
    assert.deepEqual((await c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-enc', name: 'snap-enc', secrets: acme })).snapshot, res.snapshot);
    const api = await admin('GET', '/v1/volumes/acme%2Fpvc-enc/snapshots/snap-enc');
    assert.equal(api.body.encrypted, true, 'the snapshot shares the data key');
    const byId = (await c.controller.ListSnapshots!({ snapshot_id: encSnap, secrets: acme })).entries.map((e: any) => e.snapshot);
    assert.deepEqual(byId, [res.snapshot]);
    const byVolume = (await c.controller.ListSnapshots!({ source_volume_id: 'acme/pvc-enc', secrets: acme })).entries.map((e: any) => e.snapshot);
    assert.deepEqual(byVolume, [res.snapshot]);
    plainSnap = (await c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-plain', name: 'snap-plain', secrets: acme })).snapshot.snapshot_id;
  });

  await t.test('a restore into an encrypted class is encrypted; into a plain class it is refused', async () => {
    const restored = await create('pvc-restore', encryptedClass, fromSnapshot(encSnap));
    assert.equal(restored.volume.content_source.snapshot.snapshot_id, encSnap);
    assert.deepEqual(restored.volume.volume_context, { encrypted: 'true' });
    const v = await view('acme/pvc-restore');
    assert.equal(v.body.encrypted, true);
    assert.equal(v.body.origin, 'acme/pvc-enc@snap-enc', 'a clone of the snapshot');
    assert.deepEqual((await create('pvc-restore', encryptedClass, fromSnapshot(encSnap))).volume, restored.volume, 'idempotent');
    const err = await expectCode(create('pvc-restore-plain', plainClass, fromSnapshot(encSnap)), status.INVALID_ARGUMENT);
    assert.match(err.details, /source snapshot acme\/pvc-enc@snap-enc is encrypted/);
    assert.match(err.details, /encrypted: "true"/);
    assert.equal((await view('acme/pvc-restore-plain')).status, 404, 'nothing made');
    // An existing restore asked for again by a plain class is another request: ALREADY_EXISTS.
    await expectCode(create('pvc-restore', plainClass, fromSnapshot(encSnap)), status.ALREADY_EXISTS);
  });

  await t.test('a clone of an encrypted volume likewise; a plain source into an encrypted class is refused', async () => {
    const clone = await create('pvc-clone', encryptedClass, fromVolume('acme/pvc-enc'));
    assert.equal(clone.volume.content_source.volume.volume_id, 'acme/pvc-enc');
    assert.equal((await view('acme/pvc-clone')).body.encrypted, true);
    const err = await expectCode(create('pvc-clone-plain', plainClass, fromVolume('acme/pvc-enc')), status.INVALID_ARGUMENT);
    assert.match(err.details, /source volume acme\/pvc-enc is encrypted/);
    assert.equal((await view('acme/pvc-clone-plain')).status, 404);
    for (const [name, source] of [['pvc-up1', fromVolume('acme/pvc-plain')], ['pvc-up2', fromSnapshot(plainSnap)]] as const) {
      const up = await expectCode(create(name, encryptedClass, source), status.INVALID_ARGUMENT);
      assert.match(up.details, /is not encrypted/);
      assert.equal((await view(`acme/${name}`)).status, 404);
    }
    const plainClone = await create('pvc-plain-clone', plainClass, fromSnapshot(plainSnap));
    assert.equal((await view(plainClone.volume.volume_id)).body.encrypted, false, 'plain into plain still works');
  });

  await t.test('ValidateVolumeCapabilities confirms only the encryption a volume has', async () => {
    const ask = (parameters: Record<string, string>) => c.controller.ValidateVolumeCapabilities!({
      volume_id: 'acme/pvc-enc', volume_capabilities: [blockCap], parameters, secrets: acme,
    });
    assert.ok((await ask(encryptedClass)).confirmed, 'encrypted: confirmed');
    assert.ok((await ask({})).confirmed, 'no encrypted key: not asked');
    const refused = await ask({ encrypted: 'false' });
    assert.equal(refused.confirmed, null);
    assert.match(refused.message, /is encrypted/);
  });

  await t.test('a tenant without a KEK cannot make encrypted volumes (the default tenant here)', async () => {
    const err = await expectCode(c.controller.CreateVolume!({
      name: 'pvc-nokek', volume_capabilities: [blockCap], capacity_range: { required_bytes: MiB }, parameters: encryptedClass,
    }), status.INVALID_ARGUMENT);
    assert.match(err.details, /key-encryption key/);
    assert.equal((await view('pvc-nokek')).status, 404);
  });

  await t.test('a KEK gone at daemon start: volumes locked, new encrypted ones UNAVAILABLE, until it is back', async () => {
    c.close();
    await plugin.kill();
    await daemon.stop();
    renameSync(kekPath, `${kekPath}.away`);
    daemon = await startDaemon(dir);
    plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
    c = csiClients(plugin.socketPath);
    const locked = await view('acme/pvc-enc');
    assert.equal(locked.body.locked, true, JSON.stringify(locked.body));
    assert.equal((await view('acme/pvc-plain')).body.locked, false);
    const got = await c.controller.ControllerGetVolume!({ volume_id: 'acme/pvc-enc' });
    assert.deepEqual(got.volume.volume_context, { encrypted: 'true' }, 'a locked volume is still listed');
    const err = await expectCode(create('pvc-enc-later', encryptedClass), status.UNAVAILABLE);
    assert.match(err.details, /kek_unavailable/);
    assert.equal((await view('acme/pvc-enc-later')).status, 404);
    renameSync(`${kekPath}.away`, kekPath);
    assert.equal((await admin('POST', '/v1/tenants/acme/encryption/unlock')).status, 200);
    assert.equal((await view('acme/pvc-enc')).body.locked, false);
    await create('pvc-enc-later', encryptedClass);
    assert.equal((await view('acme/pvc-enc-later')).body.encrypted, true);
  });
});
