// The StorageClass `replicas` parameter: checked by the controller's validator, fixed at creation,
// carried to the daemon's create call; and the cluster manifests agree with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { mutableQosOf, volumeParametersOf } from '../src/csi/parameters.js';
import { status } from '@grpc/grpc-js';
import { csiClients, expectCode, removeDir, repoRoot, startDaemon, startPlugin, tempDir } from './csi-harness.js';

const MiB = 1024 * 1024;
const blockCap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

test('replicas: 1..3 as a StorageClass writes it, absent is the daemon default', () => {
  assert.equal(volumeParametersOf({}, undefined, 'x').replicas, null);
  for (const n of [1, 2, 3]) assert.equal(volumeParametersOf({ replicas: String(n) }, undefined, 'x').replicas, n);
  assert.equal(volumeParametersOf({ replicas: '2', iopsMax: '100', encrypted: 'false' }, undefined, 'x').replicas, 2);
  for (const bad of ['0', '4', 'two', '1.5', '-1', '']) {
    assert.throws(() => volumeParametersOf({ replicas: bad }, undefined, 'CreateVolume'),
      (err: Error & { code?: number }) => /replicas=.*expected a whole number from 1 to 3/.test(err.message), `replicas=${JSON.stringify(bad)}`);
  }
});

test('replicas cannot be changed by a VolumeAttributesClass', () => {
  assert.throws(() => mutableQosOf({ replicas: '3' }, 'ControllerModifyVolume'), /replicas cannot be changed after creation/);
});

test('the cluster manifests: the replicated class passes the validator, storage nodes run serve --cluster', () => {
  const dir = join(repoRoot, 'deploy', 'kubernetes', 'cluster');
  const docs = ['storageclass-replicated.yaml', 'storage-nodes.yaml', 'etcd.yaml']
    .flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS() as Record<string, any>));
  const sc = docs.find((d) => d.kind === 'StorageClass')!;
  assert.equal(sc.provisioner, 'csi.cairn.dev');
  assert.equal(volumeParametersOf(sc.parameters, undefined, 'x').replicas, 2);
  const ds = docs.find((d) => d.kind === 'DaemonSet')!;
  const args: string[] = ds.spec.template.spec.containers[0].args;
  assert.equal(args[0], 'serve');
  for (const flag of ['--cluster=', '--node=', '--advertise=', '--cluster-secret-file=']) assert.ok(args.some((a) => a.startsWith(flag)), flag);
  // The secret file is the mounted Secret's key.
  const secretPath = args.find((a) => a.startsWith('--cluster-secret-file='))!.slice('--cluster-secret-file='.length);
  const mount = ds.spec.template.spec.containers[0].volumeMounts.find((m: { mountPath: string }) => secretPath.startsWith(`${m.mountPath}/`));
  const volume = ds.spec.template.spec.volumes.find((v: { name: string }) => v.name === mount?.name);
  assert.equal(volume?.secret?.secretName, 'cairn-cluster-secret');
  const etcd = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === 'cairn-etcd')!;
  assert.equal(etcd.spec.replicas, 3);
  const endpoints = args.find((a) => a.startsWith('--cluster='))!.slice('--cluster='.length).split(',');
  assert.equal(endpoints.length, 3, 'every etcd member is named');
});

test('CreateVolume carries replicas to the daemon: 1 on a single node is made, 2 is INVALID_ARGUMENT naming the cluster', { timeout: 300_000 }, async (t) => {
  const dir = tempDir('cairn-csi-replicas-');
  const daemon = await startDaemon(dir);
  const plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
  const c = csiClients(plugin.socketPath);
  t.after(async () => { c.close(); await plugin.kill(); await daemon.stop(); removeDir(dir); });
  const create = (name: string, replicas: string) => c.controller.CreateVolume!({
    name, volume_capabilities: [blockCap], capacity_range: { required_bytes: 8 * MiB }, parameters: { replicas },
  });
  const one = await create('pvc-one', '1');
  assert.equal(Number(one.volume.capacity_bytes), 8 * MiB);
  const err = await expectCode(create('pvc-two', '2'), status.INVALID_ARGUMENT);
  assert.match(err.details, /not part of a cluster.*2 replicas need storage nodes/);
  await expectCode(create('pvc-bad', 'many'), status.INVALID_ARGUMENT);
});
