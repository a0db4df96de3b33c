// QoS through the REST API (in process, real pool file): GET/PUT of a volume's and a tenant's limits,
// validation, `qos` in volume create and view, persistence across a reopen, clean-up on delete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApi } from './api-harness.js';
import { createPoolFile, openPoolFile } from '../src/engine/index.js';
import { QosEngine } from '../src/qos/qos-engine.js';
import { TenantStore } from '../src/tenancy/store.js';

const MiB = 1024 * 1024;

test('QoS API: volume and tenant limits, validation, create with qos, the volume view', async (t) => {
  const { call, engine } = await startApi(t, 256 * MiB);
  assert.equal((await call('POST', '/v1/volumes', { name: 'v', size: 16 * MiB })).status, 201);
  const none = await call('GET', '/v1/volumes/v/qos');
  assert.equal(none.status, 200);
  assert.deepEqual(none.body, { iopsMax: null, readIopsMax: null, writeIopsMax: null, bpsMax: null, readBpsMax: null, writeBpsMax: null, burstSeconds: 1 });
  assert.equal(((await call('GET', '/v1/volumes/v')).body as { qos: unknown }).qos, null);

  const put = await call('PUT', '/v1/volumes/v/qos', { iopsMax: 500, writeBpsMax: 8 * MiB, burstSeconds: 2 });
  assert.equal(put.status, 200);
  assert.deepEqual(put.body, { iopsMax: 500, readIopsMax: null, writeIopsMax: null, bpsMax: null, readBpsMax: null, writeBpsMax: 8 * MiB, burstSeconds: 2 });
  const partial = await call('PUT', '/v1/volumes/v/qos', { iopsMax: null, readIopsMax: 100 });
  assert.deepEqual(partial.body, { iopsMax: null, readIopsMax: 100, writeIopsMax: null, bpsMax: null, readBpsMax: null, writeBpsMax: 8 * MiB, burstSeconds: 2 });
  assert.equal(((await call('GET', '/v1/volumes/v')).body as { qos: { readIopsMax: number } }).qos.readIopsMax, 100);
  assert.equal((await call('PUT', '/v1/volumes/v/qos', { readIopsMax: 0, writeBpsMax: 0, burstSeconds: 0 })).status, 200);
  assert.equal(((await call('GET', '/v1/volumes/v')).body as { qos: unknown }).qos, null, 'all removed: no limits');

  for (const bad of [{ iopsMax: -1 }, { iopsMax: 1.5 }, { bpsMax: 'fast' }, { burstSeconds: 61 }, { weight: 5 }, { nope: 1 }]) {
    const r = await call('PUT', '/v1/volumes/v/qos', bad);
    assert.equal(r.status, 400, JSON.stringify(bad));
    assert.match(r.type, /problem\+json/);
  }
  assert.equal((await call('PUT', '/v1/volumes/v/qos', { burstSeconds: 0.0001 })).status, 400);
  assert.equal((await call('GET', '/v1/volumes/nope/qos')).status, 404);
  assert.equal((await call('PUT', '/v1/volumes/nope/qos', { iopsMax: 5 })).status, 404);

  const created = await call('POST', '/v1/volumes', { name: 'q', size: 16 * MiB, qos: { iopsMax: 2000, bpsMax: 64 * MiB } });
  assert.equal(created.status, 201);
  assert.deepEqual((created.body as { qos: { iopsMax: number; bpsMax: number } }).qos.iopsMax, 2000);
  const again = await call('POST', '/v1/volumes', { name: 'q', size: 16 * MiB, qos: { iopsMax: 3000 } });
  assert.equal(again.status, 200, 'idempotent create');
  assert.equal((again.body as { qos: { iopsMax: number; bpsMax: number } }).qos.iopsMax, 3000);
  assert.equal((again.body as { qos: { iopsMax: number; bpsMax: number } }).qos.bpsMax, 64 * MiB);
  assert.equal((await call('POST', '/v1/volumes', { name: 'bad', size: 16 * MiB, qos: { iopsMax: -5 } })).status, 400);

  const tenant = await call('GET', '/v1/tenants/default/qos');
  assert.equal(tenant.status, 200);
  assert.equal((tenant.body as { weight: number }).weight, 100);
  const tput = await call('PUT', '/v1/tenants/default/qos', { iopsMax: 10_000, weight: 300 });
  assert.equal(tput.status, 200);
  assert.deepEqual(tput.body, { tenant: 'default', iopsMax: 10_000, readIopsMax: null, writeIopsMax: null, bpsMax: null, readBpsMax: null, writeBpsMax: null, burstSeconds: 1, weight: 300 });
  assert.equal((await call('GET', '/v1/tenants/acme/qos')).status, 404, 'no such tenant');
  assert.equal((await call('PUT', '/v1/tenants/acme/qos', { iopsMax: 5 })).status, 404);
  assert.equal((await call('GET', '/v1/tenants/Bad_Name/qos')).status, 404);
  await new TenantStore(engine).createTenant('acme');
  assert.equal((await call('PUT', '/v1/tenants/acme/qos', { bpsMax: MiB, weight: 50 })).status, 200);
  assert.equal(((await call('GET', '/v1/tenants/acme/qos')).body as { weight: number }).weight, 50);
  assert.equal((await call('PUT', '/v1/tenants/acme/qos', { weight: 0 })).status, 200);
  assert.equal(((await call('GET', '/v1/tenants/acme/qos')).body as { weight: number }).weight, 100, 'weight 0: back to the default');
});

test('QoS limits are kept in the pool: loaded after a reopen, removed with their volume', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-qos-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'pool');
  let raw = await createPoolFile(path, 128 * MiB);
  let qos = new QosEngine(raw);
  await qos.createVolume('keep', 8 * MiB);
  const gone = await qos.createVolume('gone', 8 * MiB);
  const keep = qos.getVolume('keep');
  await qos.control.setVolumeLimits(keep.id, { iopsMax: 700, readBpsMax: 3 * MiB });
  await qos.control.setVolumeLimits(gone.id, { iopsMax: 5 });
  await qos.control.setTenantLimits('default', { writeIopsMax: 900, weight: 250 });
  await qos.deleteVolume('gone');
  await new Promise((r) => setTimeout(r, 50)); // the deleted event's clean-up is asynchronous
  assert.equal(raw.getSetting(`qos/v/${gone.id}`), null, 'the deleted volume\'s record is gone');
  // A record left behind (as if the daemon stopped before removing it) is removed at the next load.
  await raw.putSettings([{ key: `qos/v/${gone.id}`, value: Buffer.from('{"i":5}') }]);
  await qos.close();

  raw = await openPoolFile(path);
  qos = new QosEngine(raw);
  await qos.control.load();
  assert.equal(qos.control.volumeLimits(keep.id)?.iopsMax, 700);
  assert.equal(qos.control.volumeLimits(keep.id)?.readBpsMax, 3 * MiB);
  assert.equal(qos.control.volumeLimits(gone.id), null);
  assert.equal(raw.getSetting(`qos/v/${gone.id}`), null, 'stale record removed at load');
  assert.equal(qos.control.tenantLimits('default').writeIopsMax, 900);
  assert.equal(qos.control.tenantLimits('default').weight, 250);
  for (const s of raw.listSettings('qos/')) assert.ok(s.key.length + s.value.length <= 248);
  await qos.close();
});
