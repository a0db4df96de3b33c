// `cairn tenant nvme-host add|list|remove` end to end: a real `cairn serve` child and the real CLI. The
// list is kept in the pool (it survives a restart), errors are one line with their code (bad NQN,
// unknown tenant, duplicate, not listed), a tenant token manages only its own tenant, a reader only
// lists, and deleting a tenant forgets its hosts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, startServe, tempDir } from './cli-helpers.js';
import { createPoolFile } from '../src/engine/index.js';
import { TenantStore } from '../src/tenancy/store.js';

const MiB = 1024 * 1024;
const HOST_A = 'nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const HOST_B = 'nqn.2024-06.com.example.hosts:worker-7';

async function makePool(dir: string): Promise<string> {
  const pool = join(dir, 'pool');
  const engine = await createPoolFile(pool, 1024 * MiB);
  const tenancy = new TenantStore(engine);
  await tenancy.createTenant('acme');
  await tenancy.createTenant('beta');
  await engine.createVolume('acme/db', 4 * MiB);
  await engine.close();
  return pool;
}

test('cairn tenant nvme-host add/list/remove against a daemon; kept across a restart; tenant delete forgets', async (t) => {
  assertBuilt();
  const dir = await tempDir(t);
  const pool = await makePool(dir);
  let d = await startServe(t, pool);

  const empty = await cairn(d.api, ['tenant', 'nvme-host', 'list', 'default']);
  assert.equal(empty.code, 0, empty.stderr);
  assert.equal(empty.stdout, '');
  assert.match(empty.stderr, /default tenant admits every host until one is added/);
  const closed = await cairn(d.api, ['tenant', 'nvme-host', 'list', 'acme']);
  assert.match(closed.stderr, /tenant acme's subsystem admits no host/);

  const added = await cairn(d.api, ['tenant', 'nvme-host', 'add', 'acme', HOST_A]);
  assert.equal(added.code, 0, added.stderr);
  assert.equal(added.stdout.trim(), `added NVMe host ${HOST_A} to tenant acme`);
  const asJson = await cairnJson<{ nqn: string; tenant: string; createdMs: number }>(d.api, ['tenant', 'nvme-host', 'add', 'acme', HOST_B]);
  assert.equal(asJson.nqn, HOST_B);
  assert.equal(asJson.tenant, 'acme');
  assert.ok(asJson.createdMs > 0);
  const listed = await cairnJson<Array<{ nqn: string }>>(d.api, ['tenant', 'nvme-host', 'list', 'acme']);
  assert.deepEqual(listed.map((h) => h.nqn), [HOST_A, HOST_B]);
  const tableOut = await cairn(d.api, ['tenant', 'nvme-host', 'list', 'acme']);
  assert.match(tableOut.stdout, /^NQN\s+CREATED/);
  assert.ok(tableOut.stdout.includes(HOST_A) && tableOut.stdout.includes(HOST_B));
  assert.deepEqual(await cairnJson(d.api, ['tenant', 'nvme-host', 'list', 'beta']), [], 'per tenant');

  // Errors: one line each, with the code.
  const bad = await cairn(d.api, ['tenant', 'nvme-host', 'add', 'acme', 'iqn.2001-04.com.example:disk']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /invalid host NQN .*\(invalid_argument\)/);
  const dup = await cairn(d.api, ['tenant', 'nvme-host', 'add', 'acme', HOST_A]);
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /already on tenant acme's NVMe host list \(name_taken\)/);
  const unknown = await cairn(d.api, ['tenant', 'nvme-host', 'add', 'nosuch', HOST_A]);
  assert.match(unknown.stderr, /tenant not found: nosuch \(tenant_not_found\)/);
  const notListed = await cairn(d.api, ['tenant', 'nvme-host', 'remove', 'beta', HOST_A]);
  assert.equal(notListed.code, 1);
  assert.match(notListed.stderr, /\(nvme_host_not_found\)/);

  // A tenant token manages its own tenant only; a reader lists but changes nothing.
  const tenantToken = (await cairnJson<{ token: string }>(d.api, ['token', 'create', '--role', 'tenant', '--tenant', 'beta'])).token;
  const readerToken = (await cairnJson<{ token: string }>(d.api, ['token', 'create', '--role', 'reader', '--tenant', 'acme'])).token;
  const asBeta = (args: string[]) => cairn(d.api, args, { env: { CAIRN_TOKEN: tenantToken } });
  const asReader = (args: string[]) => cairn(d.api, args, { env: { CAIRN_TOKEN: readerToken } });
  assert.equal((await asBeta(['tenant', 'nvme-host', 'add', 'beta', HOST_A])).code, 0);
  assert.match((await asBeta(['tenant', 'nvme-host', 'list', 'acme'])).stderr, /\(tenant_not_found\)/, 'another tenant: not found');
  assert.match((await asBeta(['tenant', 'nvme-host', 'remove', 'acme', HOST_A])).stderr, /\(tenant_not_found\)/);
  assert.equal((await asReader(['tenant', 'nvme-host', 'list', 'acme'])).code, 0);
  assert.match((await asReader(['tenant', 'nvme-host', 'add', 'acme', 'nqn.2024-06.com.example:x'])).stderr, /\(forbidden\)/);

  // Kept in the pool: a restarted daemon has the same lists.
  assert.equal(await d.stop(), 0);
  d = await startServe(t, pool);
  assert.deepEqual((await cairnJson<Array<{ nqn: string }>>(d.api, ['tenant', 'nvme-host', 'list', 'acme'])).map((h) => h.nqn), [HOST_A, HOST_B]);

  const removed = await cairn(d.api, ['tenant', 'nvme-host', 'remove', 'acme', HOST_B]);
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal(removed.stdout.trim(), `removed NVMe host ${HOST_B} from tenant acme`);
  assert.deepEqual((await cairnJson<Array<{ nqn: string }>>(d.api, ['tenant', 'nvme-host', 'list', 'acme'])).map((h) => h.nqn), [HOST_A]);

  // Deleting a tenant forgets its hosts: re-created, it starts with none.
  assert.equal((await cairn(d.api, ['tenant', 'delete', 'acme', '--force'])).code, 0);
  assert.equal((await cairn(d.api, ['tenant', 'create', 'acme'])).code, 0);
  assert.deepEqual(await cairnJson(d.api, ['tenant', 'nvme-host', 'list', 'acme']), []);
  assert.deepEqual((await cairnJson<Array<{ nqn: string }>>(d.api, ['tenant', 'nvme-host', 'list', 'beta'])).map((h) => h.nqn), [HOST_A], 'another tenant keeps its own');
  assert.equal(await d.stop(), 0);
});
