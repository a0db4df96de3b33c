// The cluster wired into `cairn serve` (issue 22), with real processes: a real etcd, two `cairn serve
// --cluster` nodes, the CLI and qemu-io. A volume created with --replicas 2 is placed on both, `volume
// show` lists its replicas, `node list` and `cluster status` show both nodes, an NBD client connected
// to the node that is not the primary writes through it (forwarded), the data is on both replicas, and
// a SIGTERM'd primary hands the volume to the other node (its lease revoked), where I/O goes on.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { assertBuilt, cairn, cairnJson, startServePickingPorts, tempDir, until } from './cli-helpers.js';
import { etcdAvailable, freePort, startEtcd } from './etcd-harness.js';
import { runOk } from './nbd-harness.js';
import { NvmfSession } from './nvmf-client.js';
import { NbdClient } from '../src/nbd/client.js';
import type { DaemonProcess } from './cli-helpers.js';

const NQN = 'nqn.2026-12.io.cairn:default';

function nvmfPort(d: DaemonProcess): number {
  for (const line of d.logs) {
    const ev = JSON.parse(line) as { event?: string; nvmf?: { port: number } };
    if (ev.event === 'ready' && ev.nvmf !== undefined) return ev.nvmf.port;
  }
  throw new Error('no nvmf port in the ready line');
}

/** The ANA log as {group → nsids} read through the TS initiator from a node's NVMe/TCP port. */
async function anaGroups(d: DaemonProcess): Promise<Map<number, number[]>> {
  const s = await NvmfSession.open(nvmfPort(d), NQN);
  try {
    const log = (await s.getLogPage(0x0c, 4096)).data;
    const out = new Map<number, number[]>();
    let off = 16;
    for (let g = 0; g < log.readUInt16LE(8); g++) {
      const n = log.readUInt32LE(off + 4);
      const nsids: number[] = [];
      for (let k = 0; k < n; k++) nsids.push(log.readUInt32LE(off + 32 + 4 * k));
      out.set(log.readUInt32LE(off), nsids);
      off += 32 + 4 * n;
    }
    return out;
  } finally {
    s.close();
  }
}

const MiB = 1024 * 1024;

interface VolumeView { name: string; epoch?: number; replicas?: Array<{ node: string; state: string; primary: boolean }> }

test('cairn serve --cluster: two nodes, replicas, CLI, NBD through the non-primary, failover on SIGTERM', {
  timeout: 300_000, skip: etcdAvailable() ? false : '/usr/bin/etcd is missing (apt-get install etcd-server)',
}, async (t) => {
  assertBuilt();
  const etcd = await startEtcd();
  t.after(() => etcd.close());
  const dir = await tempDir(t, 'cairn-cluster-');
  const endpoints = etcd.endpoints.join(',');
  const node = async (name: string, zone: string) => startServePickingPorts(t, join(dir, `${name}.pool`), async () => [
    '--pool-size', '1G', '--cluster', endpoints, '--node', name, '--advertise', '127.0.0.1', '--zone', zone,
    '--repl-port', String(await freePort()), '--nvmf', '127.0.0.1:0', '--nvmf-discovery', 'off', '--nbd-tls', 'psk',
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

  // Tenants and tokens are the cluster's (etcd), not one node's: made through n1, used and revoked through n2.
  assert.equal((await cairn(n1.api, ['tenant', 'create', 'acme'])).code, 0);
  const made = await cairnJson<{ token: string }>(n1.api, ['token', 'create', '--role', 'tenant', '--tenant', 'acme', '--name', 'shared']);
  const asAcme = (api: string) => fetch(`${api}/v1/volumes`, { headers: { authorization: `Bearer ${made.token}` } });
  await until('the token reaches n2', async () => ((await asAcme(n2.api)).status === 200 ? true : null));
  assert.ok((await cairnJson<Array<{ name: string }>>(n2.api, ['tenant', 'list'])).some((x) => x.name === 'acme'), 'n2 lists the tenant made on n1');
  assert.equal((await cairn(n2.api, ['token', 'revoke', 'shared'])).code, 0);
  await until('the revocation reaches n1', async () => ((await asAcme(n1.api)).status === 401 ? true : null));

  // QoS is the cluster's too: a volume's limits in its record (set through its primary, shown by both
  // nodes, applied by the other one once it takes over below), a tenant's shared through etcd.
  assert.equal((await cairn(onPrimary.api, ['volume', 'set', 'db', '--bps-max', '1M'])).code, 0);
  for (const d of [n1, n2]) {
    const q = await until('the limits in both views', async () => {
      const view = await cairnJson<{ qos: { bpsMax: number | null } | null }>(d.api, ['volume', 'show', 'db']);
      return view.qos?.bpsMax === 1024 * 1024 ? view.qos : null;
    });
    assert.equal(q.bpsMax, 1024 * 1024);
  }
  assert.equal((await cairn(n1.api, ['tenant', 'set', 'acme', '--iops-max', '5000', '--weight', '3'])).code, 0);
  await until('the tenant limits reach n2', async () => {
    const r = await fetch(`${n2.api}/v1/tenants/acme/qos`, { headers: { authorization: `Bearer ${(await import('./cli-helpers.js')).adminToken(n2.api)}` } });
    const q = await r.json() as { iopsMax: number | null; weight: number };
    return q.iopsMax === 5000 && q.weight === 3 ? true : null;
  });

  // A tenant's volume over TLS-PSK through the node that is not its primary: the relay opens it on the
  // primary with one of the tenant's NBD keys (shared by both nodes through etcd).
  const key = await cairnJson<{ identity: string; psk: string }>(n1.api, ['tenant', 'nbd-key', 'create', 'acme']);
  const keyDir = join(dir, 'keys');
  await mkdir(keyDir);
  await writeFile(join(keyDir, 'keys.psk'), `${key.psk}\n`);
  assert.equal((await cairn(n1.api, ['volume', 'create', 'acme/vol', '--size', '8M', '--replicas', '2'])).code, 0);
  const acmePrimary = (await cairnJson<VolumeView>(n1.api, ['volume', 'show', 'acme/vol'])).replicas!.find((r) => r.primary)!.node;
  const [acmeOn, acmeOther] = acmePrimary === 'n1' ? [n1, n2] : [n2, n1];
  const pskIo = (d: DaemonProcess, ...commands: string[]) => runOk('qemu-io', [
    '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${keyDir},username=${key.identity}`,
    '--image-opts', `driver=nbd,host=127.0.0.1,port=${new URL(d.nbd).port},export=vol,tls-creds=tls0`, ...commands.flatMap((c) => ['-c', c])]);
  await until('the key reaches both nodes', async () => {
    try { await pskIo(acmeOther, 'read 0 4k'); return true; } catch { return null; }
  });
  await pskIo(acmeOther, 'write -P 0x3c 0 1M', 'flush');
  await pskIo(acmeOn, 'read -P 0x3c 0 1M');
  const listed = await runOk('nbdinfo', ['--list', '--json', `nbds://${key.identity}@127.0.0.1:${new URL(acmeOther.nbd).port}/?tls-psk-file=${join(keyDir, 'keys.psk')}`]);
  assert.ok(listed.includes('"vol"'), `the tenant's list on the other node holds its volume: ${listed}`);

  const status = await cairn(n1.api, ['cluster', 'status']);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /etcd:\s+healthy/);
  assert.match(status.stdout, /nodes:\s+2 \(2 up, 0 down, 0 draining\)/);

  // NBD through the node that is not the primary: forwarded to the primary, replicated to both.
  await runOk('qemu-io', ['-f', 'raw', `${other.nbd}/db`, '-c', 'write -P 0x5a 0 1M', '-c', 'flush']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${onPrimary.nbd}/db`, '-c', 'read -P 0x5a 0 1M']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${other.nbd}/db`, '-c', 'read -P 0x5a 0 1M']);

  // NVMe/TCP: both nodes expose the namespace, under one NSID; Optimized (group 1) on the primary only.
  const anaPrimary = await anaGroups(onPrimary);
  const anaOther = await anaGroups(other);
  assert.equal(anaPrimary.get(1)?.length, 1, JSON.stringify([...anaPrimary]));
  assert.deepEqual(anaOther.get(2), anaPrimary.get(1), 'the same NSID, inaccessible on the other node');

  const metrics = await fetch(`${onPrimary.api}/metrics`, { headers: { authorization: `Bearer ${(await import('./cli-helpers.js')).adminToken(onPrimary.api)}` } });
  const text = await metrics.text();
  assert.match(text, /^cairn_cluster_degraded_volumes 0$/m);
  assert.match(text, /^cairn_cluster_failovers_total \d+$/m);

  // One NBD client stays connected to the other node across the failover: its relay follows the primary.
  const nbdPort = Number(new URL(other.nbd).port);
  const client = await NbdClient.open('127.0.0.1', nbdPort, 'db');
  t.after(() => client.close());
  await client.write(2 * MiB, Buffer.alloc(65536, 0x71), true);

  // The primary leaves (SIGTERM: its lease is revoked); the other node takes the volume over.
  assert.equal(await onPrimary.stop(), 0);
  await client.write(3 * MiB, Buffer.alloc(65536, 0x72), false);
  await client.flush();
  assert.ok((await client.read(2 * MiB, 65536)).every((x) => x === 0x71), 'the write before the failover is there');
  assert.ok((await client.read(3 * MiB, 65536)).every((x) => x === 0x72), 'the connection kept working through the failover');
  const after = await until('the takeover', async () => {
    const view = await cairnJson<VolumeView>(other.api, ['volume', 'show', 'db']);
    return view.replicas?.find((r) => r.primary)?.node === (primary === 'n1' ? 'n2' : 'n1') ? view : null;
  });
  assert.ok((after.epoch ?? 0) > (v.epoch ?? 0), 'the takeover bumped the epoch');
  assert.deepEqual((await anaGroups(other)).get(1), anaPrimary.get(1), 'after the takeover the namespace is Optimized on the new primary');
  await runOk('qemu-io', ['-f', 'raw', `${other.nbd}/db`, '-c', 'read -P 0x5a 0 1M', '-c', 'write -P 0x6b 1M 64k', '-c', 'flush']);

  // The new primary applies the volume's limits from its record: 3 MiB at 1 MiB/s are held back.
  await runOk('qemu-io', ['-f', 'raw', `${other.nbd}/db`, '-c', 'write -P 0x6c 4M 3M', '-c', 'flush']);
  const token = (await import('./cli-helpers.js')).adminToken(other.api);
  const qosText = await (await fetch(`${other.api}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
  const delayed = /^cairn_qos_volume_delayed_requests_total\{volume="db"\} (\d+)$/m.exec(qosText);
  assert.ok(delayed !== null && Number(delayed[1]) > 0, `the new primary delayed writes over the volume's limit: ${delayed?.[0] ?? 'no metric line'}`);
  assert.equal(await other.stop(), 0);
});

test('cairn serve --cluster with etcd unreachable: one line naming etcd, exit 1, the pool released', { timeout: 120_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-cluster-down-');
  const { run, cairnBin } = await import('./cli-helpers.js');
  const r = await run(process.execPath, [cairnBin, 'serve', '--pool', join(dir, 'p.pool'), '--pool-size', '256M', '--api', '127.0.0.1:0', '--nbd', 'off',
    '--log-format', 'json', '--cluster', `http://127.0.0.1:${await freePort()}`, '--node', 'n1', '--advertise', '127.0.0.1', '--repl-port', String(await freePort())]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^cairn: etcd .*\(kv_unavailable\)\n$/);
  const { existsSync } = await import('node:fs');
  assert.equal(existsSync(join(dir, 'p.pool.lock')), false, 'the pool lock is released');
});

/** `cairn serve --cluster` on a pool in `dir` with etcd at `clientPort`; it may never become ready. */
async function serveWatched(t: TestContext, dir: string, clientPort: number) {
  const { spawnServe } = await import('./cli-helpers.js');
  return spawnServe(t, ['--pool', join(dir, 'n1.pool'), '--pool-size', '256M', '--api', '127.0.0.1:0', '--nbd', 'off', '--log-format', 'json',
    '--cluster', `http://127.0.0.1:${clientPort}`, '--node', 'n1', '--advertise', '127.0.0.1', '--repl-port', String(await freePort())]);
}

test('cairn serve --cluster started before etcd: waits for it, then joins and serves', {
  timeout: 180_000, skip: etcdAvailable() ? false : '/usr/bin/etcd is missing (apt-get install etcd-server)',
}, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-cluster-late-');
  const clientPort = await freePort();
  const { child, exited, seen, stderr } = await serveWatched(t, dir, clientPort);
  // etcd starts only once the node has been refused, as when both start at boot and the node wins.
  await until('the node waiting for etcd', seen('cluster.etcd_wait'), 60_000);
  const etcd = await startEtcd({ members: [{ clientPort }] });
  t.after(() => etcd.close());
  const ready = await until('the node ready once etcd is up', seen('ready'), 60_000);
  const listed = await cairn(String(ready.api), ['node', 'list', '--json'], { env: { ...process.env, CAIRN_TOKEN_FILE: join(dir, 'n1.pool.admin-token') } });
  assert.equal(listed.code, 0, listed.stderr);
  const nodes = JSON.parse(listed.stdout) as Array<{ name: string; alive: boolean }>;
  assert.deepEqual(nodes.map((n) => [n.name, n.alive]), [['n1', true]]);
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
});

test('cairn serve --cluster stopped while it waits for etcd: gives up the start, exits 0, the pool released', {
  timeout: 120_000,
}, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-cluster-abandon-');
  const { child, exited, events, seen, stderr } = await serveWatched(t, dir, await freePort());
  await until('the node waiting for etcd', seen('cluster.etcd_wait'), 60_000);
  const { existsSync } = await import('node:fs');
  assert.equal(existsSync(join(dir, 'n1.pool.lock')), true, 'the pool is locked while the node starts');
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr());
  const abandoned = events.find((e) => e.event === 'start_abandoned') as { signal?: string } | undefined;
  assert.equal(abandoned?.signal, 'SIGTERM', 'the log says the start was given up on SIGTERM');
  assert.equal(events.some((e) => e.event === 'ready'), false);
  assert.equal(existsSync(join(dir, 'n1.pool.lock')), false, 'the pool lock is released');
});
