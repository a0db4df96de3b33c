// The cluster's REST surface (issue 22) over a fake ClusterHandle (test/cluster-fake.ts): volume
// `replicas` on create and in views, /v1/nodes, drain as a job, /v1/cluster, the metrics it feeds; and
// on a single node the same routes answer 404 not_clustered while volume views carry no cluster fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Validator } from '@seriousme/openapi-schema-validator';
import { startApi } from './api-harness.js';
import { FakeCluster } from './cluster-fake.js';
import { Metrics } from '../src/daemon/metrics.js';

const MiB = 1024 * 1024;

interface VolumeBody { name: string; size: number; replicas?: Array<{ node: string; state: string; rebuildProgress: number | null; primary: boolean }>; epoch?: number }

test('API on a clustered node: replicas, nodes, drain, status, metrics', { timeout: 120_000 }, async (t) => {
  let cluster: FakeCluster | null = null;
  const f = await startApi(t, 256 * MiB, 'cairn-api-cluster-', {}, (engine) => {
    cluster = new FakeCluster('n1', engine, [{ name: 'n1', zone: 'a' }, { name: 'n2', zone: 'b' }, { name: 'n3', zone: 'c' }]);
    return cluster;
  });
  const c = cluster! as FakeCluster;

  await t.test('create with replicas places the volume and the view lists them with the epoch', async () => {
    const r = await f.call('POST', '/v1/volumes', { name: 'db', size: 16 * MiB, replicas: 2 });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const v = r.body as VolumeBody;
    assert.equal(v.epoch, 1);
    assert.deepEqual(v.replicas, [
      { node: 'n1', state: 'in-sync', rebuildProgress: null, primary: true },
      { node: 'n2', state: 'in-sync', rebuildProgress: null, primary: false },
    ]);
    assert.equal(c.volume('db')?.replicas, 2);
    const again = await f.call('POST', '/v1/volumes', { name: 'db', size: 16 * MiB, replicas: 2 });
    assert.equal(again.status, 200, 'the same create again is idempotent');
    assert.equal((await f.call('POST', '/v1/volumes', { name: 'db', size: 16 * MiB, replicas: 3 })).status, 409, 'another replica count is another volume');
    assert.equal((await f.call('POST', '/v1/volumes', { name: 'x', size: 16 * MiB, replicas: 4 })).status, 400, 'at most 3');
    assert.equal((await f.call('POST', '/v1/volumes', { name: 'x', from: 'db', replicas: 2 })).status, 400, 'a clone follows its source');
  });

  await t.test('a rebuilding replica shows its progress; a volume held elsewhere shows from its record', async () => {
    const r = c.volume('db')!;
    c.setRecord({ ...r, epoch: r.epoch + 1, members: r.members.map((m) => (m.node === 'n2' ? { ...m, state: 'rebuilding' as const } : m)) });
    c.progress.set('db/n2', 0.25);
    const v = (await f.call('GET', '/v1/volumes/db')).body as VolumeBody;
    assert.equal(v.epoch, 2);
    assert.deepEqual(v.replicas?.[1], { node: 'n2', state: 'rebuilding', rebuildProgress: 0.25, primary: false });
    c.setRecord({ name: 'far', sizeBytes: 8 * MiB, replicas: 2, minInSync: 1, epoch: 3, primary: 'n2',
      members: [{ node: 'n2', state: 'in-sync', incarnation: 'i2' }, { node: 'n3', state: 'in-sync', incarnation: 'i3' }], createdMs: 1 });
    const far = await f.call('GET', '/v1/volumes/far');
    assert.equal(far.status, 200, JSON.stringify(far.body));
    assert.equal((far.body as VolumeBody).size, 8 * MiB);
    assert.equal((far.body as VolumeBody).replicas?.[0]?.primary, true);
    const list = (await f.call('GET', '/v1/volumes')).body as VolumeBody[];
    assert.deepEqual(list.map((x) => x.name), ['db', 'far'], 'the list holds volumes held only by other nodes too');
  });

  await t.test('a replicated volume\'s QoS limits live in its record (also for a volume held elsewhere), not in this pool', async () => {
    const put = await f.call('PUT', '/v1/volumes/far/qos', { iopsMax: 500, bpsMax: 2 * MiB });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal((put.body as { iopsMax: number }).iopsMax, 500);
    assert.deepEqual(JSON.parse(c.volume('far')!.qos!), { i: 500, b: 2 * MiB });
    const shown = (await f.call('GET', '/v1/volumes/far')).body as { qos: { iopsMax: number; bpsMax: number } | null };
    assert.equal(shown.qos?.bpsMax, 2 * MiB);
    assert.equal(((await f.call('GET', '/v1/volumes/far/qos')).body as { iopsMax: number }).iopsMax, 500);
    const cleared = await f.call('PUT', '/v1/volumes/far/qos', { iopsMax: 0, bpsMax: 0 });
    assert.equal((cleared.body as { iopsMax: number | null }).iopsMax, null);
    assert.equal(c.volume('far')!.qos, undefined, 'no limits left: the record carries none');
    assert.equal((await f.call('PUT', '/v1/volumes/far/qos', { iopsMax: -1 })).status, 400);
  });

  await t.test('nodes: list, show, 404 for an unknown one', async () => {
    const list = (await f.call('GET', '/v1/nodes')).body as Array<{ name: string; replicas: number; primaries: number; self: boolean; zone: string }>;
    assert.deepEqual(list.map((n) => n.name), ['n1', 'n2', 'n3']);
    assert.equal(list[0]!.self, true);
    assert.equal(list[1]!.replicas, 2);
    assert.equal(list[1]!.primaries, 1);
    const one = await f.call('GET', '/v1/nodes/n3');
    assert.equal((one.body as { zone: string }).zone, 'c');
    const none = await f.call('GET', '/v1/nodes/zz');
    assert.equal(none.status, 404);
    assert.equal((none.body as { code: string }).code, 'node_not_found');
  });

  await t.test('drain is a job that ends when the node holds no replica', async () => {
    const r = await f.call('POST', '/v1/nodes/n2/drain', {});
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const id = (r.body as { id: string; kind: string }).id;
    assert.equal((r.body as { kind: string }).kind, 'drain');
    let job = r.body as { state: string; progress: number };
    for (let i = 0; i < 100 && job.state === 'running'; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      job = (await f.call('GET', `/v1/jobs/${id}`)).body as typeof job;
    }
    assert.equal(job.state, 'succeeded');
    assert.equal(job.progress, 1);
    assert.deepEqual(c.drained, ['n2']);
    const n2 = (await f.call('GET', '/v1/nodes/n2')).body as { draining: boolean; replicas: number };
    assert.equal(n2.draining, true);
    assert.equal(n2.replicas, 0);
  });

  await t.test('cluster status lists degraded volumes; admin only', async () => {
    const r = await f.call('GET', '/v1/cluster');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const s = r.body as { self: string; volumes: number; degraded: Array<{ name: string; inSync: number }>; controlPlane: { healthy: boolean } };
    assert.equal(s.self, 'n1');
    assert.equal(s.controlPlane.healthy, true);
    assert.deepEqual(s.degraded.map((d) => d.name).sort(), ['db', 'far'], 'both lost n2 to the drain');
    await f.tenancy.createTenant('acme');
    const reader = (await f.tenancy.createToken({ role: 'reader', tenant: 'acme' })).token;
    assert.equal((await f.as(reader)('GET', '/v1/cluster')).status, 403);
  });

  await t.test('metrics: the cluster counters and degraded volumes', async () => {
    const metrics = new Metrics();
    c.counterValues = { failovers: 2, membersDropped: 3, rebuildBytes: 4096, rebuildsCompleted: 1, inflightReplicaWrites: 5 };
    metrics.attachCluster(c);
    const text = (await metrics.render()).body;
    for (const line of ['cairn_cluster_failovers_total 2', 'cairn_cluster_members_dropped_total 3', 'cairn_cluster_rebuild_bytes_total 4096',
      'cairn_cluster_replica_writes_inflight 5', 'cairn_cluster_degraded_volumes 2']) {
      assert.ok(text.split('\n').includes(line), `${line} in\n${text.split('\n').filter((l) => l.startsWith('cairn_cluster')).join('\n')}`);
    }
  });

  await t.test('openapi.json stays valid with the cluster routes', async () => {
    const doc = (await f.call('GET', '/v1/openapi.json')).body as Record<string, unknown> & { paths: Record<string, unknown> };
    const validation = await new Validator().validate(doc);
    assert.equal(validation.valid, true, JSON.stringify(validation.errors));
    for (const path of ['/v1/nodes', '/v1/nodes/{name}', '/v1/nodes/{name}/drain', '/v1/cluster']) assert.ok(path in doc.paths, path);
  });
});

test('API on a single node: cluster routes are 404 not_clustered; views carry no cluster fields', { timeout: 60_000 }, async (t) => {
  const f = await startApi(t, 64 * MiB, 'cairn-api-single-');
  for (const [method, path] of [['GET', '/v1/nodes'], ['GET', '/v1/nodes/n1'], ['POST', '/v1/nodes/n1/drain'], ['GET', '/v1/cluster']] as const) {
    const r = await f.call(method, path, method === 'POST' ? {} : undefined);
    assert.equal(r.status, 404, `${method} ${path}`);
    assert.equal((r.body as { code: string }).code, 'not_clustered');
  }
  const v = await f.call('POST', '/v1/volumes', { name: 'a', size: 4 * MiB });
  assert.equal(v.status, 201);
  assert.ok(!('replicas' in (v.body as object)) && !('epoch' in (v.body as object)));
  assert.equal((await f.call('POST', '/v1/volumes', { name: 'b', size: 4 * MiB, replicas: 1 })).status, 201, 'one replica is what a single node has');
  const two = await f.call('POST', '/v1/volumes', { name: 'c', size: 4 * MiB, replicas: 2 });
  // A request this daemon cannot meet (not a missing thing): 400, and CSI's INVALID_ARGUMENT.
  assert.equal(two.status, 400);
  assert.equal((two.body as { code: string }).code, 'invalid_argument');
  assert.match((two.body as { detail: string }).detail, /not part of a cluster.*2 replicas need storage nodes/);
});
