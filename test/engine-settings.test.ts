// Settings (small named values in the catalog) and tenant-qualified volume names, through the
// engine's interface: a batch is durable and atomic at every power cut, survives reopen and check,
// bounds are refused with clear errors, and a pool moves to format 4 only when it first stores one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { CairnError } from '../src/engine/index.js';
import { FORMAT_VERSION_SETTINGS as FORMAT_VERSION, FORMAT_VERSION_LOGGED, SETTING_BYTES_MAX } from '../src/engine/constants.js';
import { MiB } from './engine-helpers.js';

const options = { commitIntervalMs: 0 };

function code(err: unknown): string { return err instanceof CairnError ? err.code : String(err); }

test('settings: put, get, list by prefix, replace, remove; durable across a power cut', async () => {
  const device = new SimDevice(8192, new Prng(7));
  const engine = await createPool(device, options);
  assert.equal(engine.core.sb.formatVersion, FORMAT_VERSION_LOGGED, 'a new pool stays readable by the previous release');
  assert.equal(engine.getSetting('tenant/acme'), null);
  await engine.putSettings([{ key: 'tenant/acme', value: Buffer.from('{"w":1}') }, { key: 'tenant/beta', value: Buffer.from('b') }, { key: 'token/1', value: Buffer.alloc(0) }]);
  assert.equal(engine.core.sb.formatVersion, FORMAT_VERSION, 'the first setting moves the pool to format 4');
  assert.deepEqual(engine.listSettings('tenant/').map((s) => s.key), ['tenant/acme', 'tenant/beta']);
  await engine.putSettings([{ key: 'tenant/acme', value: Buffer.from('{"w":2}') }, { key: 'tenant/beta', value: null }]);
  // A returned value is a copy: changing it does not change the pool.
  const got = engine.getSetting('tenant/acme')!;
  got.fill(0);
  const image = device.crash('clean');
  const e2 = await openPool(image, options);
  assert.equal(e2.getSetting('tenant/acme')?.toString(), '{"w":2}');
  assert.equal(e2.getSetting('tenant/beta'), null);
  assert.equal(e2.getSetting('token/1')?.length, 0);
  const report = await checkPool(image.crash('clean'));
  assert.ok(report.ok, JSON.stringify(report.problems));
  await e2.close();
  await engine.close();
});

test('settings: a batch is all or nothing at every power cut', async () => {
  // A power cut before each device call of a batch in turn: the pool then holds the old batch or the new one.
  for (let cut = 0; ; cut++) {
    const device = new SimDevice(8192, new Prng(cut));
    const engine = await createPool(device, options);
    await engine.putSettings([{ key: 'a', value: Buffer.from('old') }, { key: 'b', value: Buffer.from('old') }]);
    device.armCrash(cut, cut % 2 === 0 ? 'some' : 'clean');
    await engine.putSettings([{ key: 'a', value: Buffer.from('new') }, { key: 'b', value: null }, { key: 'c', value: Buffer.from('new') }]);
    const image = device.takeArmedImage();
    await engine.close();
    if (image === null) { assert.ok(cut > 3, 'a batch makes several device calls'); break; }
    const e2 = await openPool(image, options);
    const state = ['a', 'b', 'c'].map((k) => e2.getSetting(k)?.toString() ?? '-').join(',');
    assert.ok(state === 'old,old,-' || state === 'new,-,new', `cut ${cut}: half a batch: ${state}`);
    await e2.close();
  }
});

test('settings: bad keys and oversized values are refused with clear errors; nothing is stored', async () => {
  const engine = await createPool(new SimDevice(8192, new Prng(3)), options);
  await assert.rejects(engine.putSettings([{ key: 'has space', value: Buffer.from('x') }]), (e) => code(e) === 'invalid_argument');
  await assert.rejects(engine.putSettings([{ key: '', value: Buffer.from('x') }]), (e) => code(e) === 'invalid_argument');
  await assert.rejects(engine.putSettings([{ key: 'k'.repeat(121), value: Buffer.alloc(0) }]), (e) => code(e) === 'invalid_argument');
  await assert.rejects(engine.putSettings([{ key: 'ok', value: Buffer.from('x') }, { key: 'big', value: Buffer.alloc(SETTING_BYTES_MAX) }]),
    (e) => code(e) === 'invalid_argument' && /at most 248/.test((e as Error).message));
  assert.equal(engine.getSetting('ok'), null, 'a refused batch stores none of its changes');
  await engine.putSettings([{ key: 'max', value: Buffer.alloc(SETTING_BYTES_MAX - 3, 7) }]);
  assert.equal(engine.getSetting('max')?.length, SETTING_BYTES_MAX - 3);
  await engine.close();
});

test('settings: thousands of them survive reopen and check', async () => {
  const device = new SimDevice(16384, new Prng(5));
  const engine = await createPool(device, options);
  const batch = Array.from({ length: 3000 }, (_, i) => ({ key: `token/${i.toString(16).padStart(8, '0')}`, value: Buffer.from(`v${i}`) }));
  for (let i = 0; i < batch.length; i += 500) await engine.putSettings(batch.slice(i, i + 500));
  await engine.putSettings(batch.filter((_, i) => i % 3 === 0).map(({ key }) => ({ key, value: null })));
  const image = device.crash('clean');
  const e2 = await openPool(image, options);
  const kept = e2.listSettings('token/');
  assert.equal(kept.length, 2000);
  assert.ok(kept.every((s) => Number.parseInt(s.key.slice(6), 16) % 3 !== 0 && s.value.toString() === `v${Number.parseInt(s.key.slice(6), 16)}`));
  assert.ok((await e2.check()).ok);
  await e2.close();
  await engine.close();
});

test('volume names: TENANT/NAME is one name to the engine; bad forms are refused', async () => {
  const engine = await createPool(new SimDevice(8192, new Prng(9)), options);
  await engine.createVolume('db', MiB);
  await engine.createVolume('acme/db', MiB);
  await engine.createSnapshots(['acme/db@s1']);
  const clone = await engine.cloneVolume('acme/copy', 'acme/db@s1');
  assert.deepEqual(clone.origin, { volume: 'acme/db', snapshot: 's1' });
  assert.equal(engine.getSnapshot('acme/db@s1').fullName, 'acme/db@s1');
  assert.deepEqual(engine.listVolumes().map((v) => v.name).sort(), ['acme/copy', 'acme/db', 'db']);
  for (const bad of ['a/b/c', '/db', 'acme/', 'ac me/db', 'acme/.x', `${'t'.repeat(100)}/${'v'.repeat(100)}`]) {
    await assert.rejects(engine.createVolume(bad, MiB), (e) => code(e) === 'invalid_name', bad);
  }
  await assert.rejects(engine.createSnapshots(['acme/db@a/b']), (e) => code(e) === 'invalid_name');
  await engine.close();
});
