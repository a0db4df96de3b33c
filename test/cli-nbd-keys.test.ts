// `cairn tenant nbd-key` end to end: a real `cairn serve --nbd-tls psk` child, the real CLI, nbdinfo and
// qemu-io with the printed psk line. The key appears in the create answer and nowhere else (list,
// --json, daemon log, /metrics). `--nbd-tls-required` refuses plain clients; TLS flags without a way
// to authenticate are a configuration error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { assertBuilt, authHeaders, cairn, cairnJson, run, startServe, tempDir } from './cli-helpers.js';
import { createPoolFile } from '../src/engine/index.js';
import { TenantStore } from '../src/tenancy/store.js';
import { ConfigError, loadConfig } from '../src/daemon/config.js';

const MiB = 1024 * 1024;

/** A pool with tenant acme (volume db) and the default tenant's volume pub, made before the daemon starts. */
async function makePool(dir: string): Promise<string> {
  const pool = join(dir, 'pool');
  const engine = await createPoolFile(pool, 1024 * MiB);
  await new TenantStore(engine).createTenant('acme');
  await engine.createVolume('acme/db', 4 * MiB);
  await engine.createVolume('pub', 4 * MiB);
  await engine.close();
  return pool;
}

async function listExports(uri: string): Promise<string[]> {
  const r = await run('nbdinfo', ['--list', '--json', uri]);
  if (r.code !== 0) throw new Error(`nbdinfo --list ${uri}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort();
}

test('cairn tenant nbd-key create/list/delete against a daemon serving TLS-PSK with tenant keys', async (t) => {
  assertBuilt();
  const dir = await tempDir(t);
  const d = await startServe(t, await makePool(dir), ['--nbd-tls', 'psk']);
  const port = new URL(d.nbd).port;

  const created = await cairn(d.api, ['tenant', 'nbd-key', 'create', 'acme']);
  assert.equal(created.code, 0, created.stderr);
  const line = created.stdout.trim();
  const m = /^(acme-[0-9a-f]{8}):([0-9a-f]{64})$/.exec(line);
  assert.ok(m !== null, `one psk file line: ${line}`);
  const [, identity, key] = m as unknown as [string, string, string];
  assert.match(created.stderr, /not shown again/);
  const keyDir = join(dir, 'keys');
  await mkdir(keyDir);
  await writeFile(join(keyDir, 'keys.psk'), `${line}\n`);
  const pskUri = (id: string, name = ''): string => `nbds://${id}@localhost:${port}/${name}?tls-psk-file=${join(keyDir, 'keys.psk')}`;

  assert.deepEqual(await listExports(pskUri(identity)), ['db']);
  assert.deepEqual(await listExports(`nbd://localhost:${port}`), ['pub'], 'plain clients reach the default tenant only');
  // The URI the API reports is the one the tenant's client opens: its own name, over TLS, as its key.
  const shownUri = (await cairnJson<{ nbdUri: string | null }>(d.api, ['volume', 'show', 'acme/db'])).nbdUri;
  assert.equal(shownUri, `nbds://${identity}@127.0.0.1:${port}/db`);
  assert.equal((await run('nbdinfo', ['--size', `${shownUri}?tls-psk-file=${join(keyDir, 'keys.psk')}`])).stdout.trim(), String(4 * MiB));
  assert.equal((await cairnJson<{ nbdUri: string | null }>(d.api, ['volume', 'show', 'pub'])).nbdUri, `nbd://127.0.0.1:${port}/pub`);
  const io = await run('qemu-io', ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${keyDir},username=${identity}`,
    '--image-opts', `driver=nbd,host=localhost,port=${port},export=db,tls-creds=tls0`, '-c', 'write -P 0x7e 0 1M', '-c', 'read -P 0x7e 0 1M']);
  assert.equal(io.code, 0, io.stderr);

  const asJson = await cairnJson<{ identity: string; tenant: string; key: string; psk: string; createdMs: number }>(d.api, ['tenant', 'nbd-key', 'create', 'acme']);
  assert.equal(asJson.psk, `${asJson.identity}:${asJson.key}`);
  assert.equal(asJson.tenant, 'acme');
  assert.equal((await cairnJson<{ nbdUri: string | null }>(d.api, ['volume', 'show', 'acme/db'])).nbdUri,
    `nbds://127.0.0.1:${port}/db`, 'two keys: the client names its own identity');
  const listed = await cairnJson<Array<Record<string, unknown>>>(d.api, ['tenant', 'nbd-key', 'list', 'acme']);
  assert.deepEqual(listed.map((k) => k.identity).sort(), [identity, asJson.identity].sort());
  for (const k of listed) assert.deepEqual(Object.keys(k).sort(), ['createdMs', 'identity', 'tenant'], 'a listed key carries no secret');
  const table = await cairn(d.api, ['tenant', 'nbd-key', 'list', 'acme']);
  assert.match(table.stdout, new RegExp(identity));

  // Errors: an unknown tenant; a key asked for under another tenant is as missing as an unknown one.
  const unknown = await cairn(d.api, ['tenant', 'nbd-key', 'create', 'nosuch']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /tenant not found: nosuch \(tenant_not_found\)/);
  const elsewhere = await cairn(d.api, ['tenant', 'nbd-key', 'delete', 'default', identity]);
  const missing = await cairn(d.api, ['tenant', 'nbd-key', 'delete', 'default', 'default-00000000']);
  assert.equal(elsewhere.code, 1);
  assert.equal(elsewhere.stderr.replace(identity, 'ID'), missing.stderr.replace('default-00000000', 'ID'));
  assert.match(missing.stderr, /\(nbd_key_not_found\)/);

  // Deleted: new connections with it are refused at once, the other key goes on working.
  const deleted = await cairn(d.api, ['tenant', 'nbd-key', 'delete', 'acme', identity]);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.notEqual((await run('nbdinfo', ['--list', pskUri(identity)])).code, 0);
  await writeFile(join(keyDir, 'keys.psk'), `${asJson.psk}\n`);
  assert.deepEqual(await listExports(pskUri(asJson.identity)), ['db']);

  const metrics = await (await fetch(`${d.api}/metrics`, { headers: authHeaders(d.api) })).text();
  for (const secret of [key, asJson.key]) {
    assert.ok(!d.logs.join('\n').includes(secret), 'no key in the daemon log');
    assert.ok(!metrics.includes(secret), 'no key in /metrics');
  }
  assert.equal(await d.stop(), 0);
});

test('--nbd-tls-required with tenant keys refuses plain NBD clients; TLS needs a way to authenticate', async (t) => {
  assertBuilt();
  const dir = await tempDir(t);
  const d = await startServe(t, await makePool(dir), ['--nbd-tls', 'psk', '--nbd-tls-required']);
  const port = new URL(d.nbd).port;
  assert.notEqual((await run('nbdinfo', ['--list', `nbd://localhost:${port}`])).code, 0);
  assert.notEqual((await run('nbdinfo', [`nbd://localhost:${port}/pub`])).code, 0);
  const key = await cairnJson<{ identity: string; psk: string }>(d.api, ['tenant', 'nbd-key', 'create', 'acme']);
  const file = join(dir, 'k.psk');
  await writeFile(file, `${key.psk}\n`);
  assert.deepEqual(await listExports(`nbds://${key.identity}@localhost:${port}?tls-psk-file=${file}`), ['db']);
  assert.equal((await cairnJson<{ nbdUri: string | null }>(d.api, ['volume', 'show', 'pub'])).nbdUri, `nbds://127.0.0.1:${port}/pub`,
    'TLS required: the default tenant is reached over TLS too');
  assert.equal(await d.stop(), 0);

  const refused = await cairn(null, ['serve', '--pool', join(dir, 'pool'), '--nbd-tls-required']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /TLS needs a way to authenticate/);
  assert.throws(() => loadConfig({}, { CAIRN_NBD_TLS: 'x509' }, undefined), ConfigError);
  assert.deepEqual(loadConfig({}, { CAIRN_NBD_TLS: 'psk', CAIRN_NBD_TLS_REQUIRED: '1' }, undefined).nbdTls, { tenantKeys: true, required: true });
  assert.equal(loadConfig({}, { CAIRN_NBD_TLS_REQUIRED: '0' }, undefined).nbdTls, null, 'nothing asked of TLS: off');
  assert.equal(loadConfig({ nbdTls: false }, { CAIRN_NBD_TLS: 'psk' }, undefined).nbdTls, null, 'a later layer turns it off');
});
