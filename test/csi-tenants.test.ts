// The controller with tenants, through the plugin's real socket against a real `cairn serve`: a
// request's secrets carry a tenant's token, volumes land in that tenant (TENANT/NAME to the admin),
// another tenant's token can neither see nor change them, bad and revoked tokens are refused, QoS
// parameters and ControllerModifyVolume reach the QoS API (skipped while the daemon has none), and
// group snapshots are created, found and deleted with the spec's idempotency and error codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { csiClients, expectCode, removeDir, startDaemon, startPlugin, tempDir } from './csi-harness.js';

const MiB = 1024 ** 2;
const blockCap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

test('controller with tenant tokens in the secrets', { timeout: 600_000 }, async (t) => {
  const dir = tempDir('cairn-csi-tenants-');
  const daemon = await startDaemon(dir);
  const plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
  const c = csiClients(plugin.socketPath);
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
  const token = async (role: string, tenant: string, name: string): Promise<string> => {
    const res = await admin('POST', '/v1/tokens', { role, tenant, name });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.token as string;
  };
  for (const tenant of ['acme', 'beta']) assert.equal((await admin('POST', '/v1/tenants', { name: tenant })).status, 201);
  const acme = { token: await token('tenant', 'acme', 'acme-csi') };
  const beta = { token: await token('tenant', 'beta', 'beta-csi') };
  const acmeReader = { token: await token('reader', 'acme', 'acme-reader') };
  const engineVolume = async (name: string) => admin('GET', `/v1/volumes/${encodeURIComponent(name)}`);

  await t.test('GET /v1/whoami names a token\'s role and tenant (how the plugin learns the tenant)', async () => {
    const whoami = async (tok: string | null) => {
      const res = await fetch(`${daemon.apiUrl}/v1/whoami`, { headers: tok === null ? {} : { authorization: `Bearer ${tok}` } });
      return { status: res.status, body: await res.json() as any };
    };
    assert.deepEqual((await whoami(acme.token)).body, { role: 'tenant', tenant: 'acme', tokenName: 'acme-csi' });
    assert.deepEqual((await whoami(acmeReader.token)).body, { role: 'reader', tenant: 'acme', tokenName: 'acme-reader' });
    assert.equal((await whoami(adminToken)).body.role, 'admin');
    assert.equal((await whoami(adminToken)).body.tenant, null);
    assert.equal((await whoami(null)).status, 401);
  });

  await t.test('CreateVolume with a tenant token creates TENANT/NAME, idempotently; names are per tenant', async () => {
    const req = { name: 'pvc-1', capacity_range: { required_bytes: 8 * MiB }, volume_capabilities: [blockCap] };
    const made = await c.controller.CreateVolume!({ ...req, secrets: acme });
    assert.equal(made.volume.volume_id, 'acme/pvc-1');
    assert.equal((await engineVolume('acme/pvc-1')).body.name, 'acme/pvc-1', 'the admin sees the engine name');
    assert.equal((await engineVolume('pvc-1')).status, 404, 'nothing in the default tenant');
    assert.deepEqual((await c.controller.CreateVolume!({ ...req, secrets: acme })).volume, made.volume);
    const theirs = await c.controller.CreateVolume!({ ...req, secrets: beta });
    assert.equal(theirs.volume.volume_id, 'beta/pvc-1');
    const plain = await c.controller.CreateVolume!(req); // no secrets: the plugin's own (admin) token, default tenant
    assert.equal(plain.volume.volume_id, 'pvc-1');
    const ids = (await c.controller.ListVolumes!({})).entries.map((e: any) => e.volume.volume_id).sort();
    assert.deepEqual(ids, ['acme/pvc-1', 'beta/pvc-1', 'pvc-1']);
  });

  await t.test('another tenant\'s token cannot see, change or delete the volume', async () => {
    await expectCode(c.controller.DeleteVolume!({ volume_id: 'acme/pvc-1', secrets: beta }), status.PERMISSION_DENIED);
    await expectCode(c.controller.DeleteVolume!({ volume_id: 'pvc-1', secrets: beta }), status.PERMISSION_DENIED);
    await expectCode(c.controller.ControllerExpandVolume!({ volume_id: 'acme/pvc-1', capacity_range: { required_bytes: 16 * MiB }, secrets: beta }),
      status.PERMISSION_DENIED);
    await expectCode(c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-1', name: 'steal', secrets: beta }), status.PERMISSION_DENIED);
    await expectCode(c.controller.CreateVolume!({
      name: 'pvc-copy', volume_capabilities: [blockCap], secrets: beta, volume_content_source: { volume: { volume_id: 'acme/pvc-1' } },
    }), status.PERMISSION_DENIED);
    await expectCode(c.controller.ControllerModifyVolume!({ volume_id: 'acme/pvc-1', mutable_parameters: { iopsMax: '1' }, secrets: beta }),
      status.PERMISSION_DENIED);
    assert.equal((await engineVolume('acme/pvc-1')).status, 200, 'still there');
    assert.equal((await engineVolume('acme/pvc-1')).body.size, 8 * MiB, 'not grown');
  });

  await t.test('snapshots and clones stay inside the tenant', async () => {
    const snap = await c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-1', name: 'snapshot-1', secrets: acme });
    assert.equal(snap.snapshot.snapshot_id, 'acme/pvc-1@snapshot-1');
    assert.equal(snap.snapshot.source_volume_id, 'acme/pvc-1');
    assert.equal(snap.snapshot.group_snapshot_id, '');
    assert.deepEqual((await c.controller.CreateSnapshot!({ source_volume_id: 'acme/pvc-1', name: 'snapshot-1', secrets: acme })).snapshot, snap.snapshot);
    const clone = await c.controller.CreateVolume!({
      name: 'pvc-restore', volume_capabilities: [blockCap], secrets: acme,
      volume_content_source: { snapshot: { snapshot_id: 'acme/pvc-1@snapshot-1' } },
    });
    assert.equal(clone.volume.volume_id, 'acme/pvc-restore');
    assert.equal(clone.volume.content_source.snapshot.snapshot_id, 'acme/pvc-1@snapshot-1');
    const listed = (secrets: object, filter: object = {}) => c.controller.ListSnapshots!({ secrets, ...filter })
      .then((r) => r.entries.map((e: any) => e.snapshot.snapshot_id));
    assert.deepEqual(await listed(acme), ['acme/pvc-1@snapshot-1']);
    assert.deepEqual(await listed(beta), []);
    assert.deepEqual(await listed(beta, { source_volume_id: 'acme/pvc-1' }), []);
    assert.deepEqual(await listed(beta, { snapshot_id: 'acme/pvc-1@snapshot-1' }), []);
    assert.deepEqual(await listed({}), ['acme/pvc-1@snapshot-1'], 'the plugin\'s admin token sees every tenant');
    await expectCode(c.controller.DeleteSnapshot!({ snapshot_id: 'acme/pvc-1@snapshot-1', secrets: beta }), status.PERMISSION_DENIED);
    await c.controller.DeleteSnapshot!({ snapshot_id: 'acme/pvc-1@snapshot-1', secrets: acme });
    assert.deepEqual(await listed(acme), []);
  });

  await t.test('bad, missing, reader and revoked tokens are refused with the gRPC codes for them', async () => {
    const req = { name: 'pvc-x', volume_capabilities: [blockCap], capacity_range: { required_bytes: MiB } };
    const wrong = 'cairn_' + 'x'.repeat(40);
    const err = await expectCode(c.controller.CreateVolume!({ ...req, secrets: { token: wrong } }), status.UNAUTHENTICATED);
    assert.ok(!err.details.includes(wrong), 'the token is not echoed');
    await expectCode(c.controller.CreateVolume!({ ...req, secrets: { nbdPsk: 'a:00' } }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ ...req, secrets: acmeReader }), status.PERMISSION_DENIED);
    const doomed = { token: await token('tenant', 'acme', 'doomed') };
    await c.controller.CreateVolume!({ ...req, secrets: doomed });
    assert.equal((await admin('DELETE', '/v1/tokens/doomed')).status, 204);
    await expectCode(c.controller.DeleteVolume!({ volume_id: 'acme/pvc-x', secrets: doomed }), status.UNAUTHENTICATED);
    assert.equal((await engineVolume('acme/pvc-x')).status, 200);
    await c.controller.DeleteVolume!({ volume_id: 'acme/pvc-x', secrets: acme });
    assert.equal((await engineVolume('acme/pvc-x')).status, 404);
    await c.controller.DeleteVolume!({ volume_id: 'acme/pvc-x', secrets: acme }); // gone already: success
    for (const secret of [wrong, acme.token, beta.token, acmeReader.token, doomed.token]) {
      assert.ok(!plugin.logs().includes(secret), 'no token in the plugin\'s log');
      assert.ok(!daemon.logs().includes(secret), 'no token in the daemon\'s log');
    }
  });

  await t.test('QoS from StorageClass parameters and ControllerModifyVolume', async () => {
    const qos = async (name: string) => (await admin('GET', `/v1/volumes/${encodeURIComponent(name)}/qos`)).body;
    const made = await c.controller.CreateVolume!({
      name: 'pvc-qos', volume_capabilities: [blockCap], capacity_range: { required_bytes: MiB }, secrets: acme,
      parameters: { 'csi.storage.k8s.io/fstype': 'ext4', iopsMax: '500', bpsMax: '100Mi' }, mutable_parameters: { readIopsMax: '200' },
    });
    assert.equal(made.volume.volume_id, 'acme/pvc-qos');
    let limits = await qos('acme/pvc-qos');
    assert.equal(limits.iopsMax, 500);
    assert.equal(limits.bpsMax, 100 * MiB);
    assert.equal(limits.readIopsMax, 200);
    await c.controller.ControllerModifyVolume!({ volume_id: 'acme/pvc-qos', secrets: acme, mutable_parameters: { iopsMax: '800', bpsMax: 'none', writeBpsMax: '10Mi' } });
    limits = await qos('acme/pvc-qos');
    assert.equal(limits.iopsMax, 800);
    assert.equal(limits.bpsMax, null);
    assert.equal(limits.writeBpsMax, 10 * MiB);
    assert.equal(limits.readIopsMax, 200, 'a key left out stays as it is');
    await expectCode(c.controller.ControllerModifyVolume!({ volume_id: 'acme/missing', mutable_parameters: { iopsMax: '1' }, secrets: acme }),
      status.NOT_FOUND);
    await expectCode(c.controller.ControllerModifyVolume!({ volume_id: 'acme/pvc-qos', mutable_parameters: { weight: '5' }, secrets: acme }),
      status.INVALID_ARGUMENT);
  });

  await t.test('group snapshots: create, idempotency, get, mismatches, other tenants, delete', async () => {
    for (const name of ['db', 'wal']) {
      await c.controller.CreateVolume!({ name, volume_capabilities: [blockCap], capacity_range: { required_bytes: 4 * MiB }, secrets: acme });
    }
    const req = { name: 'groupsnapshot-1', source_volume_ids: ['acme/db', 'acme/wal'], secrets: acme };
    const made = (await c.group.CreateVolumeGroupSnapshot!(req)).group_snapshot;
    assert.equal(made.group_snapshot_id, 'acme/g+groupsnapshot-1');
    assert.equal(made.ready_to_use, true);
    const ids = made.snapshots.map((s: any) => s.snapshot_id);
    assert.deepEqual(ids, ['acme/db@g+groupsnapshot-1', 'acme/wal@g+groupsnapshot-1']);
    for (const s of made.snapshots) {
      assert.equal(s.group_snapshot_id, made.group_snapshot_id);
      assert.equal(s.ready_to_use, true);
      assert.equal(s.size_bytes, 4 * MiB);
    }
    assert.equal((await admin('GET', '/v1/volumes/acme%2Fdb/snapshots/g%2Bgroupsnapshot-1')).status, 200, 'a real Cairn snapshot');
    // Same name, same volumes (in any order): the same group. Same name, other volumes: ALREADY_EXISTS.
    assert.deepEqual((await c.group.CreateVolumeGroupSnapshot!({ ...req, source_volume_ids: ['acme/wal', 'acme/db'] })).group_snapshot, made);
    await expectCode(c.group.CreateVolumeGroupSnapshot!({ ...req, source_volume_ids: ['acme/db'] }), status.ALREADY_EXISTS);
    await expectCode(c.group.CreateVolumeGroupSnapshot!({ ...req, source_volume_ids: ['acme/db', 'acme/wal', 'acme/pvc-1'] }), status.ALREADY_EXISTS);
    await expectCode(c.group.CreateVolumeGroupSnapshot!({ ...req, name: 'groupsnapshot-2', source_volume_ids: ['acme/db', 'acme/nope'] }),
      status.NOT_FOUND);
    assert.equal((await admin('GET', '/v1/volumes/acme%2Fdb/snapshots/g%2Bgroupsnapshot-2')).status, 404, 'atomic: no member of a failed group');
    await expectCode(c.group.CreateVolumeGroupSnapshot!({ ...req, name: 'groupsnapshot-3', secrets: beta }), status.PERMISSION_DENIED);

    const got = (await c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: ids, secrets: acme })).group_snapshot;
    assert.deepEqual(got, made);
    assert.deepEqual((await c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, secrets: acme })).group_snapshot, made);
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [ids[0]], secrets: acme }),
      status.INVALID_ARGUMENT);
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, secrets: beta }), status.PERMISSION_DENIED);
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: 'acme/g+nothing', secrets: acme }), status.NOT_FOUND);

    // Members are ordinary snapshots too: listed with their group, and a volume can be restored from one.
    const listed = (await c.controller.ListSnapshots!({ source_volume_id: 'acme/db', secrets: acme })).entries.map((e: any) => e.snapshot);
    assert.deepEqual(listed.map((s: any) => [s.snapshot_id, s.group_snapshot_id]), [[ids[0], made.group_snapshot_id]]);
    const restored = await c.controller.CreateVolume!({
      name: 'db-restore', volume_capabilities: [blockCap], secrets: acme, volume_content_source: { snapshot: { snapshot_id: ids[0] } },
    });
    assert.equal(restored.volume.content_source.snapshot.snapshot_id, ids[0]);

    // The plugin's admin token (no secrets) groups default-tenant volumes: ids without a tenant.
    for (const name of ['d1', 'd2']) await c.controller.CreateVolume!({ name, volume_capabilities: [blockCap], capacity_range: { required_bytes: MiB } });
    const plain = (await c.group.CreateVolumeGroupSnapshot!({ name: 'groupsnapshot-1', source_volume_ids: ['d1', 'd2'] })).group_snapshot;
    assert.equal(plain.group_snapshot_id, 'g+groupsnapshot-1', 'a group name is per tenant');
    assert.deepEqual(plain.snapshots.map((s: any) => s.snapshot_id), ['d1@g+groupsnapshot-1', 'd2@g+groupsnapshot-1']);
    assert.deepEqual((await c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id })).group_snapshot.snapshots.map(
      (s: any) => s.snapshot_id), ids, 'the admin finds a tenant\'s group, and only that tenant\'s members');

    await expectCode(c.group.DeleteVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [ids[0]], secrets: acme }),
      status.INVALID_ARGUMENT);
    await expectCode(c.group.DeleteVolumeGroupSnapshot!({
      group_snapshot_id: made.group_snapshot_id, snapshot_ids: [...ids, 'acme/pvc-1@other'], secrets: acme,
    }), status.INVALID_ARGUMENT);
    await expectCode(c.group.DeleteVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: ids, secrets: beta }),
      status.PERMISSION_DENIED);
    await c.group.DeleteVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: ids, secrets: acme });
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, secrets: acme }), status.NOT_FOUND);
    await c.group.DeleteVolumeGroupSnapshot!({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: ids, secrets: acme });
    assert.equal((await admin('GET', '/v1/volumes/d1/snapshots/g%2Bgroupsnapshot-1')).status, 200, 'the default tenant\'s group is untouched');
    assert.equal((await engineVolume('acme/db-restore')).status, 200, 'a volume restored from a member outlives the group');
  });
});
