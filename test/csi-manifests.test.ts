// Every manifest under deploy/kubernetes parses, and the names in them agree with the code:
// driver name, socket paths, sidecar arguments, plugin flags (parsed by the plugin's own
// commander definition), StorageClass parameters (checked by the controller's validator),
// and the examples refer to each other correctly. Also checks the Dockerfile ships the tools.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import {
  controllerSocketDir, controllerSocketPath, driverName, kubeletDir, nodeSocketDir, nodeSocketPath, registrationDir, stateDirDefault,
} from '../src/csi/constants.js';
import { csiCommand } from '../src/csi/main.js';
import { checkParameters, mutableQosOf, volumeParametersOf, volumeQosOf } from '../src/csi/parameters.js';
import { tokenSecretKey } from '../src/csi/sessions.js';
import { nbdKeyOf, nbdPskSecretKey } from '../src/csi/nbd-keys.js';
import { repoRoot } from './csi-harness.js';

type Doc = Record<string, any>;
const deployDir = join(repoRoot, 'deploy', 'kubernetes');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    (e.isDirectory() ? yamlFiles(join(dir, e.name)) : e.name.endsWith('.yaml') ? [join(dir, e.name)] : []));
}

function loadAll(): Doc[] {
  const docs: Doc[] = [];
  for (const file of yamlFiles(deployDir)) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file} parses`);
      const value = doc.toJS() as Doc | null;
      if (value === null) continue;
      assert.ok(value.apiVersion && value.kind && value.metadata?.name, `${file}: apiVersion, kind and metadata.name`);
      docs.push(value);
    }
  }
  return docs;
}

const find = (docs: Doc[], kind: string, name?: string): Doc => {
  const doc = docs.find((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
  assert.ok(doc, `${kind} ${name ?? ''} exists`);
  return doc!;
};
const containers = (workload: Doc): Doc[] => workload.spec.template.spec.containers;
const container = (workload: Doc, name: string): Doc => {
  const c = containers(workload).find((x) => x.name === name);
  assert.ok(c, `container ${name}`);
  return c!;
};
const flag = (args: string[], name: string): string | undefined =>
  args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const volumeOf = (workload: Doc, name: string): Doc => workload.spec.template.spec.volumes.find((v: Doc) => v.name === name);

/** The plugin's own argv parser accepts the manifest's arguments; returns the parsed options. */
function parsePluginArgs(args: string[]): Record<string, string> {
  const cmd = csiCommand().exitOverride();
  cmd.parse(['node', 'main.js', ...args]);
  return cmd.opts();
}

test('deploy/kubernetes manifests parse and agree with the code', () => {
  const docs = loadAll();
  assert.equal(find(docs, 'CSIDriver').metadata.name, driverName);
  assert.equal(find(docs, 'CSIDriver').spec.attachRequired, false, 'no ControllerPublishVolume');
  for (const sc of docs.filter((d) => d.kind === 'StorageClass')) {
    assert.equal(sc.provisioner, driverName);
    assert.equal(sc.allowVolumeExpansion, true);
    volumeQosOf(sc.parameters, undefined, `StorageClass ${sc.metadata.name}`); // throws on a parameter the controller refuses
  }
  for (const kind of ['VolumeSnapshotClass', 'VolumeGroupSnapshotClass']) {
    for (const cls of docs.filter((d) => d.kind === kind)) {
      assert.equal(cls.driver, driverName);
      checkParameters(cls.parameters, `${kind} ${cls.metadata.name}`);
    }
  }
  for (const vac of docs.filter((d) => d.kind === 'VolumeAttributesClass')) {
    assert.equal(vac.driverName, driverName);
    mutableQosOf(vac.parameters, `VolumeAttributesClass ${vac.metadata.name}`);
  }
  assert.ok(docs.some((d) => d.kind === 'VolumeGroupSnapshotClass' && d.metadata.name === 'cairn'));
  const encrypted = find(docs, 'StorageClass', 'cairn-encrypted');
  assert.equal(volumeParametersOf(encrypted.parameters, undefined, 'x').encrypted, true, 'the encrypted class asks for encryption');
  assert.equal(volumeParametersOf(find(docs, 'StorageClass', 'cairn').parameters, undefined, 'x').encrypted, false);

  const ctl = find(docs, 'Deployment', 'cairn-csi-controller');
  const plugin = container(ctl, 'cairn-csi');
  const opts = parsePluginArgs(plugin.args);
  assert.equal(opts.endpoint, `unix://${controllerSocketPath}`);
  assert.equal(opts.mode, 'controller');
  assert.equal(opts.driverName, driverName);
  assert.ok(plugin.volumeMounts.some((m: Doc) => m.name === 'socket-dir' && m.mountPath === controllerSocketDir));
  const gates = (name: string): string | undefined => flag(container(ctl, name).args, 'feature-gates');
  assert.equal(gates('csi-provisioner'), 'VolumeAttributesClass=true');
  assert.equal(gates('csi-resizer'), 'VolumeAttributesClass=true', 'ControllerModifyVolume');
  assert.equal(gates('csi-snapshotter'), 'CSIVolumeGroupSnapshot=true', 'the GroupController service');
  const tokenEnv = plugin.env.find((e: Doc) => e.name === 'CAIRN_TOKEN');
  assert.equal(tokenEnv.valueFrom.secretKeyRef.key, tokenSecretKey, 'the plugin\'s own token');
  assert.ok(find(docs, 'ClusterRole', 'cairn-csi-controller').rules.some((r: Doc) => r.resources.includes('secrets')),
    'the sidecars read the secrets classes name');
  for (const sidecar of ['csi-provisioner', 'csi-snapshotter', 'csi-resizer']) {
    const c = container(ctl, sidecar);
    assert.equal(flag(c.args, 'csi-address'), controllerSocketPath, `${sidecar} --csi-address`);
    assert.ok(c.volumeMounts.some((m: Doc) => m.name === 'socket-dir' && m.mountPath === controllerSocketDir), `${sidecar} socket mount`);
  }
  assert.equal(ctl.spec.template.spec.serviceAccountName, find(docs, 'ServiceAccount', 'cairn-csi-controller').metadata.name);

  const ds = find(docs, 'DaemonSet', 'cairn-csi-node');
  const node = container(ds, 'cairn-csi');
  const nodeOpts = parsePluginArgs(node.args);
  assert.equal(nodeOpts.mode, 'node');
  assert.equal(nodeOpts.driverName, driverName);
  assert.equal(nodeOpts.stateDir, stateDirDefault);
  assert.equal(nodeOpts.api, opts.api, 'the node asks the same API as the controller');
  assert.equal(nodeOpts.nbd, undefined, 'the node takes each volume\'s NBD address from the API');
  const inPodSocket = nodeOpts.endpoint!.replace('unix://', '');
  assert.equal(node.securityContext.privileged, true);
  const kubelet = node.volumeMounts.find((m: Doc) => m.name === 'kubelet-dir');
  assert.equal(kubelet.mountPath, kubeletDir);
  assert.equal(kubelet.mountPropagation, 'Bidirectional');
  assert.equal(volumeOf(ds, 'kubelet-dir').hostPath.path, kubeletDir);
  assert.ok(node.volumeMounts.some((m: Doc) => m.mountPath === '/dev'));
  assert.equal(volumeOf(ds, 'dev').hostPath.path, '/dev');
  assert.equal(volumeOf(ds, 'state-dir').hostPath.path, stateDirDefault);
  // The plugin socket: its dir in the pod is the host's kubelet plugin dir for our driver name.
  const socketMount = node.volumeMounts.find((m: Doc) => m.name === 'socket-dir');
  assert.equal(`${socketMount.mountPath}/csi.sock`, inPodSocket);
  assert.equal(volumeOf(ds, 'socket-dir').hostPath.path, nodeSocketDir);
  const registrar = container(ds, 'node-driver-registrar');
  assert.equal(flag(registrar.args, 'csi-address'), inPodSocket);
  assert.equal(flag(registrar.args, 'kubelet-registration-path'), nodeSocketPath);
  assert.ok(registrar.volumeMounts.some((m: Doc) => m.name === 'registration-dir'));
  assert.equal(volumeOf(ds, 'registration-dir').hostPath.path, registrationDir);
  const liveness = container(ds, 'liveness-probe');
  assert.equal(flag(liveness.args, 'csi-address'), inPodSocket);
  assert.equal(String(node.livenessProbe.httpGet.path), '/healthz');
  assert.equal(flag(liveness.args, 'health-port'), String(node.ports.find((p: Doc) => p.name === 'healthz').containerPort));

  // One image for every Cairn container.
  const images = new Set([plugin.image, node.image, container(find(docs, 'StatefulSet'), 'cairn').image]);
  assert.equal(images.size, 1);
});

test('examples refer to the StorageClass, the snapshot class and each other', () => {
  const docs = loadAll();
  const sc = find(docs, 'StorageClass', 'cairn').metadata.name;
  const pvcs = docs.filter((d) => d.kind === 'PersistentVolumeClaim' && d.spec.storageClassName === sc);
  assert.equal(pvcs.length, 3);
  const snap = find(docs, 'VolumeSnapshot');
  assert.equal(snap.spec.volumeSnapshotClassName, find(docs, 'VolumeSnapshotClass', 'cairn').metadata.name);
  const source = snap.spec.source.persistentVolumeClaimName;
  assert.ok(pvcs.some((p) => p.metadata.name === source && !p.spec.dataSource));
  const restored = pvcs.find((p) => p.spec.dataSource?.kind === 'VolumeSnapshot');
  assert.equal(restored?.spec.dataSource.name, snap.metadata.name);
  assert.equal(restored?.spec.dataSource.apiGroup, 'snapshot.storage.k8s.io');
  const clone = pvcs.find((p) => p.spec.dataSource?.kind === 'PersistentVolumeClaim');
  assert.equal(clone?.spec.dataSource.name, source);
});

test('the tenant example: classes name secrets that exist and hold the keys the plugin reads', () => {
  const docs = loadAll();
  const secret = (params: Doc, prefix: string): Doc => {
    const name = params[`csi.storage.k8s.io/${prefix}-secret-name`];
    const namespace = params[`csi.storage.k8s.io/${prefix}-secret-namespace`];
    const doc = docs.find((d) => d.kind === 'Secret' && d.metadata.name === name && d.metadata.namespace === namespace);
    assert.ok(doc, `${prefix} secret ${namespace}/${name}`);
    return doc!.stringData as Doc;
  };
  const sc = find(docs, 'StorageClass', 'cairn-acme');
  for (const prefix of ['provisioner', 'controller-expand']) assert.ok(tokenSecretKey in secret(sc.parameters, prefix), prefix);
  const nbd = secret(sc.parameters, 'node-stage');
  assert.ok(nbdPskSecretKey in nbd && !(tokenSecretKey in nbd), 'the node gets the NBD key, not the API token');
  assert.equal(nbdKeyOf({ [nbdPskSecretKey]: 'acme-0a1b2c3d:00ff' }, 'x')?.identity, 'acme-0a1b2c3d');
  assert.ok(volumeQosOf(sc.parameters, undefined, 'x') !== null, 'the class sets QoS');
  assert.ok(tokenSecretKey in secret(find(docs, 'VolumeSnapshotClass', 'cairn-acme').parameters, 'snapshotter'));
  assert.ok(tokenSecretKey in secret(find(docs, 'VolumeGroupSnapshotClass', 'cairn-acme').parameters, 'group-snapshotter'));
  const tenantPvcs = docs.filter((d) => d.kind === 'PersistentVolumeClaim' && d.spec.storageClassName === 'cairn-acme');
  assert.equal(tenantPvcs.length, 2);
  for (const pvc of tenantPvcs) find(docs, 'VolumeAttributesClass', pvc.spec.volumeAttributesClassName);
  const group = find(docs, 'VolumeGroupSnapshot');
  find(docs, 'VolumeGroupSnapshotClass', group.spec.volumeGroupSnapshotClassName);
  const selected = tenantPvcs.filter((p) => Object.entries(group.spec.source.selector.matchLabels).every(([k, v]) => p.metadata.labels?.[k] === v));
  assert.equal(selected.length, 2, 'the group selects both tenant volumes');
});

test('the Dockerfile ships the node tools and the proto the driver loads', () => {
  const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
  for (const pkg of ['nbd-client', 'nbdfuse', 'fuse3', 'util-linux', 'e2fsprogs', 'xfsprogs', 'qemu-utils']) {
    assert.match(dockerfile, new RegExp(`\\b${pkg}\\b`), pkg);
  }
  assert.match(dockerfile, /FROM node:20-bookworm-slim/);
  assert.match(dockerfile, /src\/csi\/csi\.proto/);
  assert.match(dockerfile, /npm ci/);
});
