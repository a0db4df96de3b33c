// GET /v1/stats scoping (a tenant sees its own volumes' totals, by its own names) and the lineage
// tree of a clone whose source volume was deleted (the deleted volume heads the tree, marked).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startApi } from './api-harness.js';

const MiB = 1024 * 1024;
const totals = (name: string, writeOps: number) => ({ name, readOps: 0, writeOps, readBytes: 0, writeBytes: writeOps * 4096, latencyCounts: [writeOps, writeOps] });

test('GET /v1/stats: an admin sees every volume, a tenant only its own under its own names', async (t) => {
  const f = await startApi(t, 256 * MiB, 'cairn-api-stats-', {
    ioTotals: async () => ({ bucketsSeconds: [0.001], volumes: [totals('db', 1), totals('acme/db', 2), totals('beta/x', 3)] }),
  });
  const all = (await f.call('GET', '/v1/stats')).body as { timeMs: number; bucketsSeconds: number[]; volumes: Array<{ name: string; writeOps: number }> };
  assert.deepEqual(all.volumes.map((v) => v.name), ['db', 'acme/db', 'beta/x']);
  assert.deepEqual(all.bucketsSeconds, [0.001]);
  assert.ok(all.timeMs > 0);
  assert.equal((await f.call('POST', '/v1/tenants', { name: 'acme' })).status, 201);
  const token = ((await f.call('POST', '/v1/tokens', { role: 'tenant', tenant: 'acme' })).body as { token: string }).token;
  const mine = (await f.as(token)('GET', '/v1/stats')).body as { volumes: Array<{ name: string; writeOps: number }> };
  assert.deepEqual(mine.volumes.map((v) => [v.name, v.writeOps]), [['db', 2]]);
  assert.equal((await f.as(null)('GET', '/v1/stats')).status, 401);
});

test('lineage tree: a clone of a deleted volume hangs under it, marked deleted, with the kept snapshot', async (t) => {
  const f = await startApi(t, 256 * MiB, 'cairn-api-tree-');
  assert.equal((await f.call('POST', '/v1/volumes', { name: 'db', size: 4 * MiB })).status, 201);
  assert.equal((await f.call('POST', '/v1/volumes/db/snapshots', { name: 's1' })).status, 201);
  assert.equal((await f.call('POST', '/v1/volumes', { name: 'copy', from: 'db@s1' })).status, 201);
  type Node = { name: string; kind: string; deleted: boolean; current: boolean; createdMs: number | null; children: Node[] };
  const before = (await f.call('GET', '/v1/volumes/copy/tree')).body as Node;
  assert.equal(before.name, 'db');
  assert.equal(before.deleted, false);
  assert.ok(typeof before.createdMs === 'number');
  assert.equal((await f.call('DELETE', '/v1/volumes/db')).status, 204);
  const after = (await f.call('GET', '/v1/volumes/copy/tree')).body as Node;
  assert.equal(after.name, 'db');
  assert.equal(after.deleted, true);
  assert.equal(after.createdMs, null);
  assert.deepEqual(after.children.map((c) => [c.name, c.kind, c.deleted]), [['db@s1', 'snapshot', false]]);
  assert.deepEqual(after.children[0]!.children.map((c) => [c.name, c.current]), [['copy', true]]);
  assert.equal((await f.call('GET', '/v1/volumes/db/tree')).status, 404, 'the deleted volume itself has no tree of its own');
});
