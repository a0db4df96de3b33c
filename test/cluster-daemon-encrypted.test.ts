// Encrypted volumes across two real `cairn serve --cluster` nodes (issues 22 and 20): each node holds
// its own KEK file for the tenant (KEK references name one machine's files and HSM slots), a volume
// created with --encrypt --replicas 2 is placed only once both nodes hold one, each copy is encrypted
// under its node's own data key, neither pool file holds a plaintext block, and after a kill -9 of the
// primary the survivor serves the data. A plain volume beside it is the control for the search. The
// nodes share a cluster secret, so the replication link between them runs in TLS-PSK (as in production).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { open, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { assertBuilt, cairn, cairnJson, startServePickingPorts, tempDir, until } from './cli-helpers.js';
import { etcdAvailable, freePort, startEtcd } from './etcd-harness.js';
import { runOk } from './nbd-harness.js';
import { writeKekFile } from './encryption-e2e.js';

interface VolumeView { name: string; encrypted?: boolean; replicas?: Array<{ node: string; state: string; primary: boolean }> }

/** Whether the file holds a 4 KiB-aligned block of nothing but `byte` (a plaintext block qemu-io wrote). */
async function holdsBlockOf(path: string, byte: number): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(4 << 20);
    const want = Buffer.alloc(4096, byte);
    for (let at = 0; ; at += chunk.length) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, at);
      for (let b = 0; b + 4096 <= bytesRead; b += 4096) if (chunk[b] === byte && chunk.subarray(b, b + 4096).equals(want)) return true;
      if (bytesRead < chunk.length) return false;
    }
  } finally {
    await fh.close();
  }
}

test('cairn serve --cluster: an encrypted volume with 2 replicas, each node under its own KEK; no plaintext in either pool; kill -9 failover', {
  timeout: 300_000, skip: etcdAvailable() ? false : '/usr/bin/etcd is missing (apt-get install etcd-server)',
}, async (t) => {
  assertBuilt();
  const etcd = await startEtcd();
  t.after(() => etcd.close());
  const dir = await tempDir(t, 'cairn-cluster-enc-');
  const endpoints = etcd.endpoints.join(',');
  const secretFile = join(dir, 'cluster.secret');
  await writeFile(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const node = async (name: string) => startServePickingPorts(t, join(dir, `${name}.pool`), async () => [
    '--pool-size', '256M', '--cluster', endpoints, '--node', name, '--advertise', '127.0.0.1', '--repl-port', String(await freePort()),
    '--cluster-secret-file', secretFile,
  ]);
  const n1 = await node('n1');
  const n2 = await node('n2');
  await until('both nodes registered', async () => {
    const list = await cairnJson<Array<{ name: string; alive: boolean }>>(n1.api, ['node', 'list']);
    return list.filter((n) => n.alive).length === 2 ? list : null;
  });
  const create = (name: string, ...extra: string[]) => cairn(n1.api, ['volume', 'create', name, '--size', '16M', '--replicas', '2', ...extra]);

  // Only n1 holds the tenant's KEK: two copies cannot be placed, and the error says where it is missing.
  assert.equal((await cairn(n1.api, ['tenant', 'set', 'default', '--kek', await writeKekFile(join(dir, 'n1.kek'))])).code, 0);
  const refused = await create('secret', '--encrypt');
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /2 replicas of an encrypted volume need 2 alive nodes holding its tenant's key-encryption key; 1 does \(n2: tenant default has no key-encryption key on this node\)/);
  // n2 gets a KEK of its own (another machine, another key file): now both copies can be placed.
  assert.equal((await cairn(n2.api, ['tenant', 'set', 'default', '--kek', await writeKekFile(join(dir, 'n2.kek'))])).code, 0);
  const made = await create('secret', '--encrypt');
  assert.equal(made.code, 0, made.stderr);
  assert.equal((await create('plain')).code, 0);

  const view = await until('both copies in sync', async () => {
    const v = await cairnJson<VolumeView>(n1.api, ['volume', 'show', 'secret']);
    return v.replicas?.length === 2 && v.replicas.every((r) => r.state === 'in-sync') ? v : null;
  });
  assert.equal(view.encrypted, true);
  const primary = view.replicas!.find((r) => r.primary)!.node;
  const [onPrimary, survivor] = primary === 'n1' ? [n1, n2] : [n2, n1];
  for (const d of [n1, n2]) {
    const e = await cairnJson<{ encryptedLineages: number }>(d.api, ['tenant', 'show', 'default']);
    assert.ok(JSON.stringify(e).includes('"encryptedLineages":1'), `each node holds one encrypted lineage of its own: ${JSON.stringify(e)}`);
  }

  // Through the node that is not the primary (relayed), then read back from both.
  await runOk('qemu-io', ['-f', 'raw', `${survivor.nbd}/secret`, '-c', 'write -P 0x5a 0 1M', '-c', 'flush']);
  await runOk('qemu-io', ['-f', 'raw', `${survivor.nbd}/plain`, '-c', 'write -P 0x5b 0 1M', '-c', 'flush']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${onPrimary.nbd}/secret`, '-c', 'read -P 0x5a 0 1M']);
  for (const name of ['n1', 'n2']) {
    const pool = join(dir, `${name}.pool`);
    assert.equal(await holdsBlockOf(pool, 0x5b), true, `the plain volume's blocks are in ${name}'s pool (the search works)`);
    assert.equal(await holdsBlockOf(pool, 0x5a), false, `no plaintext block of the encrypted volume in ${name}'s pool`);
  }

  // kill -9 of the primary: the survivor takes over and serves the data from its own ciphertext.
  onPrimary.child.kill('SIGKILL');
  await until('the takeover', async () => {
    const v = await cairnJson<VolumeView>(survivor.api, ['volume', 'show', 'secret']);
    return v.replicas?.find((r) => r.primary)?.node !== primary ? v : null;
  });
  await runOk('qemu-io', ['-f', 'raw', `${survivor.nbd}/secret`, '-c', 'read -P 0x5a 0 1M', '-c', 'write -P 0x5c 1M 64k', '-c', 'flush']);
  await runOk('qemu-io', ['-f', 'raw', '-r', `${survivor.nbd}/secret`, '-c', 'read -P 0x5c 1M 64k']);
  assert.equal(await holdsBlockOf(join(dir, `${survivor === n1 ? 'n1' : 'n2'}.pool`), 0x5c), false, 'the write after the takeover is encrypted too');
  assert.equal(await survivor.stop(), 0);
});
