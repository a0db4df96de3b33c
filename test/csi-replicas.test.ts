// The StorageClass `replicas` parameter: checked by the controller's validator, fixed at creation,
// carried to the daemon's create call; and the cluster manifests agree with it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { mutableQosOf, volumeParametersOf } from '../src/csi/parameters.js';
import { repoRoot } from './csi-harness.js';

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
  for (const flag of ['--cluster=', '--node=', '--advertise=']) assert.ok(args.some((a) => a.startsWith(flag)), flag);
  const etcd = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === 'cairn-etcd')!;
  assert.equal(etcd.spec.replicas, 3);
  const endpoints = args.find((a) => a.startsWith('--cluster='))!.slice('--cluster='.length).split(',');
  assert.equal(endpoints.length, 3, 'every etcd member is named');
});
