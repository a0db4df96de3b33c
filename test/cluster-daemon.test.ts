// The cluster wired into `cairn serve` (issue 22), with real processes: a real etcd, two `cairn serve
// --cluster` nodes, the CLI and qemu-io. A volume created with --replicas 2 is placed on both, `volume
// show` lists its replicas, `node list` and `cluster status` show both nodes, an NBD client connected
// to the node that is not the primary writes through it (forwarded), the data is on both replicas, and
// a SIGTERM'd primary hands the volume to the other node (its lease revoked), where I/O goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, startServe, tempDir } from './cli-helpers.js';
import { etcdAvailable, freePort, startEtcd } from './etcd-harness.js';
import { runOk } from './nbd-harness.js';

const MiB = 1024 * 1024;

interface VolumeView { name: string; epoch?: number; replicas?: Array<{ node: string; state: string; primary: boolean }> }

async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs; // a hang bound, not a speed
  for (;;) {
    const got = await probe();
    if (got !== null) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('cairn serve --cluster: two nodes, replicas, CLI, NBD through the non-primary, failover on SIGTERM', {
  timeout: 300_000, skip: etcdAvailable() ? false : '/usr/bin/etcd is missing (apt-get install etcd-server)',
}, async (t) => {
  assertBuilt();
  const etcd = await startEtcd();
  t.after(() => etcd.close());
  const dir = await tempDir(t, 'cairn-cluster-');
  const endpoints = etcd.endpoints.join(',');
  const node = async (name: string, zone: string) => startServe(t, join(dir, `${name}.pool`), [
    '--pool-size', '1G', '--cluster', endpoints, '--node', name, '--advertise', '127.0.0.1', '--zone', zone,
    '--repl-port', String(await freePort()),
  ]);
  const n1 = await node('n1', 'a');
  const n2 = await node('n2', 'b');

  const nodes = await until('both nodes registered', async () => {
    const list = await cairnJson<Array<{ name: string; alive: boolean }>>(n1.api, ['node', 'list']);
    return list.filter((n) => n.alive).length === 2 ? list : null;
  });
  assert.deepEqual(nodes.map((n) => n.name), ['n1', 'n2']);

  const created = await cairn(n1.api, ['volume', 'create', 'db', '--size', '16M', '--replicas', '2']);
  assert.equal(created.code, 0, created.stderr);
  const v = await cairnJson<VolumeView>(n1.api, ['volume', 'show', 'db']);
  assert.equal(v.replicas?.length, 2);
  assert.deepEqual(v.replicas.map((r) => r.node).sort(), ['n1', 'n2']);
  assert.ok(v.replicas.every((r) => r.state === 'in-sync'), JSON.stringify(v.replicas));
  const primary = v.replicas.find((r) => r.primary)!.node;
  const [onPrimary, other] = primary === 'n1' ? [n1, n2] : [n2, n1];
  const shown = await cairn(other.api, ['volume', 'show', 'db']);
  assert.match(shown.stdout, /replicas \(epoch \d+\):/);

  const status = await cairn(n1.api, ['cluster', 'status']);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /etcd:\s+healthy/);
  assert.match(status.stdout, /nodes:\s+2 \(2 up, 0 down, 0 draining\)/);

  // NBD through the node that is not the primary: forwarded to the primary, replicated to both.
  await runOk('qemu-io', ['-f', 'raw', `${other.nbd}/db`, '-c', 'write -P 0x5a 0 1M', '-c', 'flush']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${onPrimary.nbd}/db`, '-c', 'read -P 0x5a 0 1M']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${other.nbd}/db`, '-c', 'read -P 0x5a 0 1M']);

  const metrics = await fetch(`${onPrimary.api}/metrics`, { headers: { authorization: `Bearer ${(await import('./cli-helpers.js')).adminToken(onPrimary.api)}` } });
  const text = await metrics.text();
  assert.match(text, /^cairn_cluster_degraded_volumes 0$/m);
  assert.match(text, /^cairn_cluster_failovers_total \d+$/m);

  // The primary leaves (SIGTERM: its lease is revoked); the other node takes the volume over.
  assert.equal(await onPrimary.stop(), 0);
  const after = await until('the takeover', async () => {
    const view = await cairnJson<VolumeView>(other.api, ['volume', 'show', 'db']);
    return view.replicas?.find((r) => r.primary)?.node === (primary === 'n1' ? 'n2' : 'n1') ? view : null;
  });
  assert.ok((after.epoch ?? 0) > (v.epoch ?? 0), 'the takeover bumped the epoch');
  await runOk('qemu-io', ['-f', 'raw', `${other.nbd}/db`, '-c', 'read -P 0x5a 0 1M', '-c', 'write -P 0x6b 1M 64k', '-c', 'flush']);
  assert.equal(await other.stop(), 0);
});
