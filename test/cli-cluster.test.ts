// The cluster's CLI (issue 22) through the real `cairn` binary against an in-process API over a fake
// ClusterHandle (test/cluster-fake.ts): `volume create --replicas`, replica states in `volume show`,
// `node list|show|drain`, `cluster status`, and the one-line error of a single node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startApi } from './api-harness.js';
import { FakeCluster } from './cluster-fake.js';
import { assertBuilt, cairnBin, run } from './cli-helpers.js';

const MiB = 1024 * 1024;

test('cairn volume --replicas, node list|show|drain, cluster status', { timeout: 120_000 }, async (t) => {
  assertBuilt();
  let cluster: FakeCluster | null = null;
  const f = await startApi(t, 256 * MiB, 'cairn-cli-cluster-', {}, (engine) => {
    cluster = new FakeCluster('n1', engine, [{ name: 'n1', zone: 'a' }, { name: 'n2', zone: 'b' }, { name: 'n3', zone: 'b' }]);
    return cluster;
  });
  const c = cluster! as FakeCluster;
  const cairn = (...args: string[]) => run(process.execPath, [cairnBin, ...args], { env: { CAIRN_API: f.base, CAIRN_TOKEN: f.adminToken } });

  const created = await cairn('volume', 'create', 'db', '--size', '16M', '--replicas', '2');
  assert.equal(created.code, 0, created.stderr);
  assert.equal(c.volume('db')?.replicas, 2);
  const bad = await cairn('volume', 'create', 'x', '--size', '16M', '--replicas', '5');
  assert.equal(bad.code, 2, 'a replica count outside 1..3 is a usage error');
  assert.match(bad.stderr, /expected 1, 2 or 3/);

  const r = c.volume('db')!;
  c.setRecord({ ...r, epoch: 2, members: r.members.map((m) => (m.node === 'n2' ? { ...m, state: 'rebuilding' as const } : m)) });
  c.progress.set('db/n2', 0.42);
  const shown = await cairn('volume', 'show', 'db');
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /replicas \(epoch 2\):/);
  assert.match(shown.stdout, /NODE\s+ROLE\s+STATE\s+REBUILD/);
  assert.match(shown.stdout, /n1\s+primary\s+in-sync\s+-/);
  assert.match(shown.stdout, /n2\s+replica\s+rebuilding 42%\s+42%/);

  const list = await cairn('node', 'list');
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME\s+STATE\s+ZONE\s+REPLICAS\s+PRIMARIES/m);
  assert.match(list.stdout, /^n1 \*\s+up\s+a\s+1\s+1/m);
  assert.match(list.stdout, /^n2\s+up\s+b\s+1\s+0/m);
  const json = JSON.parse((await cairn('--json', 'node', 'list')).stdout) as Array<{ name: string }>;
  assert.deepEqual(json.map((n) => n.name), ['n1', 'n2', 'n3']);
  const one = await cairn('node', 'show', 'n3');
  assert.match(one.stdout, /zone:\s+b/);
  const missing = await cairn('node', 'show', 'nope');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /node not found: nope/);

  const drained = await cairn('node', 'drain', 'n2');
  assert.equal(drained.code, 0, drained.stderr);
  assert.match(drained.stdout, /drained node n2/);
  assert.equal(c.volume('db')?.members.some((m) => m.node === 'n2'), false);

  const status = await cairn('cluster', 'status');
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /etcd:\s+healthy: http:\/\/127\.0\.0\.1:2379/);
  assert.match(status.stdout, /nodes:\s+3 \(3 up, 0 down, 1 draining\)/);
  assert.match(status.stdout, /volumes:\s+1 \(1 degraded\)/);
  assert.match(status.stdout, /db\s+1\/2\s+n1/);
});

test('cairn node list on a single node: one line saying it is not clustered', { timeout: 60_000 }, async (t) => {
  assertBuilt();
  const f = await startApi(t, 64 * MiB, 'cairn-cli-single-');
  const r = await run(process.execPath, [cairnBin, 'node', 'list'], { env: { CAIRN_API: f.base, CAIRN_TOKEN: f.adminToken } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^cairn: this daemon is not part of a cluster .*\(not_clustered\)\n$/);
});
