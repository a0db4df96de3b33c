// Pure pieces of the CSI driver: name mapping, paging tokens, REST problem → gRPC code
// mapping, the attachment state file, and the per-volume operation locks.
import { keyFitsTenant } from '../src/csi/node.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { csiProtoPath, loadCsi, protoLoaderOptions } from '../src/csi/proto.js';
import { ApiProblem, parseSnapshot, parseVolume, problemToCsi } from '../src/csi/api-client.js';
import { OperationLocks } from '../src/csi/locks.js';
import {
  cairnNameFor, decodeApiPageToken, encodeApiPageToken, groupSnapshotNameFor, parseGroupSnapshotId, parseSnapshotId, parseVolumeId,
} from '../src/csi/names.js';
import { mutableQosOf, volumeQosOf } from '../src/csi/parameters.js';
import { nbdKeyOf, removePskFile, writePskFile } from '../src/csi/nbd-keys.js';
import { apiNameOf, idFromApi, type Session } from '../src/csi/sessions.js';
import { statSync } from 'node:fs';
import { AttachmentState, type Attachment } from '../src/csi/state.js';
import { removeDir, tempDir } from './csi-harness.js';

test('CSI names map to Cairn names deterministically', () => {
  assert.equal(cairnNameFor('pvc-0f1e2d3c-aaaa-bbbb-cccc-123456789abc', 'csi'), 'pvc-0f1e2d3c-aaaa-bbbb-cccc-123456789abc');
  const hashed = cairnNameFor('has space', 'csi');
  assert.match(hashed, /^csi-[0-9a-f]{40}$/);
  assert.equal(cairnNameFor('has space', 'csi'), hashed);
  assert.notEqual(cairnNameFor('has space!', 'csi'), hashed);
  assert.match(cairnNameFor('x'.repeat(100), 'snap'), /^snap-/);
  assert.throws(() => cairnNameFor('', 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.throws(() => cairnNameFor('bad\u0001name', 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.throws(() => cairnNameFor('y'.repeat(129), 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.deepEqual(parseSnapshotId('vol@snap'), { tenant: 'default', volume: 'vol', snapshot: 'snap' });
  assert.deepEqual(parseSnapshotId('acme/vol@g+snap'), { tenant: 'acme', volume: 'vol', snapshot: 'g+snap' });
  assert.equal(parseSnapshotId('default/vol@snap'), null, 'the default tenant keeps plain names');
  assert.equal(parseSnapshotId('Acme/vol@snap'), null, 'not a tenant name');
  assert.equal(parseSnapshotId('a/b/c@snap'), null);
  assert.equal(parseSnapshotId('vol'), null);
  assert.equal(parseSnapshotId('@snap'), null);
  assert.equal(parseSnapshotId('a b@c'), null);
});

test('paging tokens carry the API\'s token and round-trip; bad ones are ABORTED', () => {
  assert.equal(decodeApiPageToken(encodeApiPageToken('c25hcHNob3Q6Nw')), 'c25hcHNob3Q6Nw');
  assert.equal(decodeApiPageToken(''), null);
  for (const bad of ['%%%', 'e30', Buffer.from('{"v":1,"after":"x"}').toString('base64url'), Buffer.from('{"v":2,"api":""}').toString('base64url')]) {
    assert.throws(() => decodeApiPageToken(bad), (e: { code: number }) => e.code === status.ABORTED, bad);
  }
});

test('REST problems map to the gRPC codes the CSI spec names', () => {
  const cases: Array<[number, string, status]> = [
    [404, 'volume_not_found', status.NOT_FOUND], [404, 'snapshot_not_found', status.NOT_FOUND],
    [409, 'name_taken', status.ALREADY_EXISTS], [507, 'pool_full', status.RESOURCE_EXHAUSTED],
    [400, 'invalid_size', status.INVALID_ARGUMENT], [400, 'invalid_name', status.INVALID_ARGUMENT],
    [416, 'out_of_range', status.OUT_OF_RANGE], [409, 'shrink_refused', status.OUT_OF_RANGE],
    [503, 'pool_closed', status.UNAVAILABLE], [500, 'io_error', status.INTERNAL],
  ];
  for (const [http, code, want] of cases) {
    assert.equal(problemToCsi(new ApiProblem(http, code, 'x'), 'ctx').code, want, code);
  }
  assert.equal(problemToCsi(new Error('boom'), 'ctx').code, status.INTERNAL);
});

test('API objects parse with the REST field names', () => {
  const v = parseVolume({ name: 'v', id: 3, size: 8192, mappedBytes: 0, createdMs: 5, origin: 'src@s1', snapshots: ['s1'] });
  assert.deepEqual(v.origin, { volume: 'src', snapshot: 's1' });
  assert.equal(v.sizeBytes, 8192);
  assert.deepEqual(parseVolume({ name: 'c', origin: 'src' }).origin, { volume: 'src', snapshot: null });
  const s = parseSnapshot({ name: 'v@s1', volume: 'v', snapshot: 's1', size: 4096, createdMs: 7 });
  assert.deepEqual(s, { fullName: 'v@s1', volume: 'v', name: 's1', sizeBytes: 4096, createdMs: 7, encrypted: false, locked: false });
  // Encryption (issue 20): the views' booleans; a daemon that does not send them has plain volumes.
  assert.equal(v.encrypted, false);
  const e = parseVolume({ name: 'e', size: 4096, encrypted: true, locked: true });
  assert.deepEqual([e.encrypted, e.locked], [true, true]);
  assert.equal(parseSnapshot({ name: 'e@s', encrypted: true, locked: false }).encrypted, true);
});

test('the attachment state file survives a reload and is written atomically', () => {
  const dir = tempDir('cairn-csi-state-');
  try {
    const att: Attachment = {
      volumeId: 'v1', uri: 'nbd://127.0.0.1:10809/v1', method: 'fuse', device: '/dev/loop9', fuseDir: join(dir, 'fuse', 'v1'),
      nbdfusePid: 1234, stagingPath: '/staging/v1', accessType: 'mount', fsType: 'ext4', mountFlags: [], published: [],
    };
    const a = new AttachmentState(dir);
    a.put(att);
    a.put({ ...att, volumeId: 'v2' });
    a.remove('v2');
    const b = new AttachmentState(dir);
    assert.deepEqual(b.all(), [att]);
    const onDisk = JSON.parse(readFileSync(join(dir, 'attachments.json'), 'utf8')) as { version: number };
    assert.equal(onDisk.version, 1);
  } finally {
    removeDir(dir);
  }
});

test('operation locks refuse a second operation on the same id with ABORTED', async () => {
  const locks = new OperationLocks();
  let release!: () => void;
  const first = locks.run(['v1'], () => new Promise<void>((resolve) => { release = resolve; }));
  await assert.rejects(locks.run(['v1'], async () => undefined), (e: { code: number }) => e.code === status.ABORTED);
  await locks.run(['v2'], async () => undefined); // other ids are free
  release();
  await first;
  await locks.run(['v1'], async () => undefined); // free again
});

test('csi.proto: services and the field numbers of the spec (v1.9.0) for the messages we use', () => {
  const definition = protoLoader.loadSync(csiProtoPath(), protoLoaderOptions);
  const fields = (message: string): Record<string, number> => {
    const type = (definition[`csi.v1.${message}`] as { type: { field: Array<{ name: string; number: number }> } }).type;
    return Object.fromEntries(type.field.map((f) => [f.name, f.number]));
  };
  // Transcribed from the spec's csi.proto: a wire format, so any drift here breaks real COs.
  const spec: Record<string, Record<string, number>> = {
    CreateVolumeRequest: { name: 1, capacity_range: 2, volume_capabilities: 3, parameters: 4, secrets: 5, volume_content_source: 6, accessibility_requirements: 7, mutable_parameters: 8 },
    Volume: { capacity_bytes: 1, volume_id: 2, volume_context: 3, content_source: 4, accessible_topology: 5 },
    VolumeCapability: { block: 1, mount: 2, access_mode: 3 },
    CapacityRange: { required_bytes: 1, limit_bytes: 2 },
    Snapshot: { size_bytes: 1, snapshot_id: 2, source_volume_id: 3, creation_time: 4, ready_to_use: 5, group_snapshot_id: 6 },
    ListSnapshotsRequest: { max_entries: 1, starting_token: 2, source_volume_id: 3, snapshot_id: 4, secrets: 5 },
    ListVolumesResponse: { entries: 1, next_token: 2 },
    ControllerExpandVolumeRequest: { volume_id: 1, capacity_range: 2, secrets: 3, volume_capability: 4 },
    ControllerExpandVolumeResponse: { capacity_bytes: 1, node_expansion_required: 2 },
    NodeStageVolumeRequest: { volume_id: 1, publish_context: 2, staging_target_path: 3, volume_capability: 4, secrets: 5, volume_context: 6 },
    NodePublishVolumeRequest: { volume_id: 1, publish_context: 2, staging_target_path: 3, target_path: 4, volume_capability: 5, readonly: 6, secrets: 7, volume_context: 8 },
    NodeGetVolumeStatsResponse: { usage: 1, volume_condition: 2 },
    NodeExpandVolumeRequest: { volume_id: 1, volume_path: 2, capacity_range: 3, staging_target_path: 4, volume_capability: 5, secrets: 6 },
    GetCapacityResponse: { available_capacity: 1, maximum_volume_size: 2, minimum_volume_size: 3 },
    ControllerModifyVolumeRequest: { volume_id: 1, secrets: 2, mutable_parameters: 3 },
  };
  for (const [message, want] of Object.entries(spec)) assert.deepEqual(fields(message), want, message);
  const csi = loadCsi();
  for (const rpc of ['CreateVolume', 'DeleteVolume', 'ValidateVolumeCapabilities', 'ListVolumes', 'GetCapacity',
    'ControllerGetCapabilities', 'CreateSnapshot', 'DeleteSnapshot', 'ListSnapshots', 'ControllerExpandVolume',
    'ControllerGetVolume', 'ControllerModifyVolume']) assert.ok(rpc in csi.Controller.service, rpc);
  for (const rpc of ['NodeStageVolume', 'NodeUnstageVolume', 'NodePublishVolume', 'NodeUnpublishVolume',
    'NodeGetVolumeStats', 'NodeExpandVolume', 'NodeGetCapabilities', 'NodeGetInfo']) assert.ok(rpc in csi.Node.service, rpc);
  assert.equal(csi.Identity.service.GetPluginInfo!.path, '/csi.v1.Identity/GetPluginInfo', 'the package is csi.v1');
});

test('the endpoint comes from CSI_ENDPOINT (the CSI spec has the CO set it) unless --endpoint is given', async () => {
  const { csiCommand } = await import('../src/csi/main.js');
  const saved = process.env.CSI_ENDPOINT;
  try {
    process.env.CSI_ENDPOINT = 'unix:///run/csi/from-env.sock';
    assert.equal(csiCommand().exitOverride().parse([], { from: 'user' }).opts().endpoint, 'unix:///run/csi/from-env.sock');
    assert.equal(csiCommand().exitOverride().parse(['--endpoint', 'unix:///x.sock'], { from: 'user' }).opts().endpoint, 'unix:///x.sock');
    delete process.env.CSI_ENDPOINT;
    assert.throws(() => csiCommand().exitOverride().configureOutput({ writeErr: () => undefined }).parse([], { from: 'user' }), /endpoint/);
  } finally {
    if (saved === undefined) delete process.env.CSI_ENDPOINT; else process.env.CSI_ENDPOINT = saved;
  }
});

test('volume ids carry the tenant; a session addresses only its own tenant\'s', () => {
  assert.deepEqual(parseVolumeId('db'), { tenant: 'default', name: 'db' });
  assert.deepEqual(parseVolumeId('acme/db'), { tenant: 'acme', name: 'db' });
  assert.deepEqual(parseVolumeId('legacy:v+1'), { tenant: 'default', name: 'legacy:v+1' }, 'engine names made outside CSI');
  for (const bad of ['', 'default/db', 'ACME/db', 'acme/', '/db', 'a/b/c', 'db@snap', 'has space']) assert.equal(parseVolumeId(bad), null, bad);
  const admin = { role: 'admin', tenant: null } as Session;
  const acme = { role: 'tenant', tenant: 'acme' } as Session;
  assert.equal(apiNameOf(admin, { tenant: 'acme', name: 'db' }), 'acme/db');
  assert.equal(apiNameOf(acme, { tenant: 'acme', name: 'db' }), 'db');
  assert.throws(() => apiNameOf(acme, { tenant: 'default', name: 'db' }), (e: { code: number }) => e.code === status.PERMISSION_DENIED);
  assert.throws(() => apiNameOf(acme, { tenant: 'other', name: 'db' }), (e: { code: number; message: string }) =>
    e.code === status.PERMISSION_DENIED && /other\/db/.test(e.message));
  assert.equal(idFromApi(admin, 'acme/db@s'), 'acme/db@s');
  assert.equal(idFromApi(acme, 'db@s'), 'acme/db@s');
  const group = groupSnapshotNameFor('groupsnapshot-0f1e2d3c-aaaa-bbbb-cccc-123456789abc');
  assert.equal(group, 'g+groupsnapshot-0f1e2d3c-aaaa-bbbb-cccc-123456789abc');
  assert.match(groupSnapshotNameFor('x'.repeat(62)), /^g\+group-[0-9a-f]{40}$/, 'too long with its prefix: hashed');
  assert.match(groupSnapshotNameFor('has space'), /^g\+group-[0-9a-f]{40}$/);
  assert.notEqual(cairnNameFor(group, 'snap'), group, 'a single snapshot never gets a group\'s name');
  assert.deepEqual(parseGroupSnapshotId(`acme/${group}`), { tenant: 'acme', snapshot: group });
  assert.equal(parseGroupSnapshotId('acme/plain'), null);
  assert.equal(parseGroupSnapshotId('g+'), null);
});

test('QoS parameters: names, units, bounds; mutable ones win; unknown and immutable are INVALID_ARGUMENT', () => {
  const bad = (fn: () => unknown) => assert.throws(fn, (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.equal(volumeQosOf({ 'csi.storage.k8s.io/fstype': 'ext4' }, {}, 'x'), null, 'no QoS key: no qos in the create');
  assert.deepEqual(volumeQosOf({ iopsMax: '500', bpsMax: '100Mi', readBpsMax: '1G', writeBpsMax: '4096', burstSeconds: '2.5' }, undefined, 'x'),
    { iopsMax: 500, bpsMax: 100 * 2 ** 20, readBpsMax: 1e9, writeBpsMax: 4096, burstSeconds: 2.5 });
  assert.deepEqual(volumeQosOf({ iopsMax: '500', readIopsMax: '10' }, { iopsMax: '800' }, 'x'), { iopsMax: 800, readIopsMax: 10 });
  assert.deepEqual(mutableQosOf({ writeIopsMax: 'none', bpsMax: '0', readBpsMax: '1.5Ki' }, 'x'), { writeIopsMax: 0, bpsMax: 0, readBpsMax: 1536 });
  bad(() => volumeQosOf({ colour: 'blue' }, undefined, 'x'));
  bad(() => volumeQosOf({}, { 'csi.storage.k8s.io/fstype': 'xfs' }, 'x'));
  bad(() => mutableQosOf({}, 'x'));
  bad(() => mutableQosOf({ iopsMax: '' }, 'x'));
  bad(() => mutableQosOf({ iopsMax: '1e3' }, 'x'));
  bad(() => mutableQosOf({ bpsMax: '17Ti' }, 'x'));
  bad(() => mutableQosOf({ burstSeconds: '-1' }, 'x'));
});

test('node stage secrets: the NBD key as a psk line or two halves, written 0600 and removed', () => {
  const bad = (secrets: Record<string, string>) => assert.throws(() => nbdKeyOf(secrets, 'x'), (e: { code: number; message: string }) =>
    e.code === status.INVALID_ARGUMENT && !e.message.includes('deadbeef'), JSON.stringify(secrets));
  assert.equal(nbdKeyOf({}, 'x'), null);
  assert.equal(nbdKeyOf({ token: 't' }, 'x'), null);
  assert.deepEqual(nbdKeyOf({ nbdPsk: 'acme-0a1b2c3d:DEADBEEF\n' }, 'x'), { identity: 'acme-0a1b2c3d', keyHex: 'deadbeef' });
  assert.deepEqual(nbdKeyOf({ nbdPskIdentity: 'acme-1', nbdPskKey: 'deadbeef' }, 'x'), { identity: 'acme-1', keyHex: 'deadbeef' });
  bad({ nbdPsk: 'deadbeef' });
  bad({ nbdPsk: 'id:deadbeefx' });
  bad({ nbdPsk: 'id:deadbee' });
  bad({ nbdPsk: 'has space:deadbeef' });
  bad({ nbdPskIdentity: 'acme-1' });
  const dir = tempDir('cairn-csi-psk-');
  try {
    const psk = writePskFile(dir, 'acme/db', { identity: 'acme-1', keyHex: 'deadbeef' });
    assert.equal(psk.file, join(dir, 'psk', 'acme~db', 'keys.psk'));
    assert.equal(readFileSync(psk.file, 'utf8'), 'acme-1:deadbeef\n');
    assert.equal(statSync(psk.file).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'psk', 'acme~db')).mode & 0o777, 0o700);
    removePskFile(dir, 'acme/db');
    assert.throws(() => statSync(join(dir, 'psk', 'acme~db')));
  } finally {
    removeDir(dir);
  }
});

test('a node stage key must be the volume\'s tenant\'s (the export name alone would reach another tenant\'s same-named volume)', () => {
  assert.equal(keyFitsTenant('acme-0a1b2c3d', 'acme'), true);
  assert.equal(keyFitsTenant('beta-0a1b2c3d', 'acme'), false);
  assert.equal(keyFitsTenant('acme-0a1b2c3d', 'default'), false, 'a tenant key would open the tenant\'s db, not default\'s');
  assert.equal(keyFitsTenant('default-0a1b2c3d', 'default'), true);
  assert.equal(keyFitsTenant('client1', 'default'), true, 'a psk file identity is the default tenant\'s');
  assert.equal(keyFitsTenant('client1', 'acme'), false);
});
