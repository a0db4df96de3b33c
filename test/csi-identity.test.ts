// Identity service, argument validation and a daemon that is down, through the real unix
// socket with a @grpc/grpc-js client built from src/csi/csi.proto. No daemon is needed here:
// the API address points at a closed port, which must give UNAVAILABLE while the plugin lives.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { status } from '@grpc/grpc-js';
import { driverName } from '../src/csi/constants.js';
import { csiClients, expectCode, removeDir, startPlugin, tempDir } from './csi-harness.js';

/** A loopback port with nothing listening (bound, read back, closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('identity, validation and daemon-down behaviour over the unix socket', async (t) => {
  const dir = tempDir('cairn-csi-id-');
  const api = `http://127.0.0.1:${await closedPort()}`;
  const plugin = await startPlugin({ dir, api });
  const c = csiClients(plugin.socketPath);
  t.after(async () => { c.close(); await plugin.kill(); removeDir(dir); });

  await t.test('GetPluginInfo names the driver', async () => {
    const info = await c.identity.GetPluginInfo!({});
    assert.equal(info.name, driverName);
    assert.match(info.vendor_version, /^\d+\.\d+\.\d+/);
  });

  await t.test('GetPluginCapabilities: controller service and online expansion', async () => {
    const caps = await c.identity.GetPluginCapabilities!({});
    const types = caps.capabilities.map((cap: any) => cap.service?.type ?? `expansion:${cap.volume_expansion?.type}`);
    assert.ok(types.includes('CONTROLLER_SERVICE'), JSON.stringify(types));
    assert.ok(types.includes('GROUP_CONTROLLER_SERVICE'), JSON.stringify(types));
    assert.ok(types.includes('expansion:ONLINE'), JSON.stringify(types));
  });

  await t.test('Probe is ready', async () => {
    const probe = await c.identity.Probe!({});
    assert.equal(probe.ready?.value, true);
  });

  await t.test('ControllerGetCapabilities and NodeGetCapabilities list what is implemented', async () => {
    const ctrl = (await c.controller.ControllerGetCapabilities!({})).capabilities.map((x: any) => x.rpc.type);
    for (const want of ['CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'CREATE_DELETE_SNAPSHOT',
      'LIST_SNAPSHOTS', 'CLONE_VOLUME', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'GET_VOLUME', 'MODIFY_VOLUME']) {
      assert.ok(ctrl.includes(want), `controller capability ${want}`);
    }
    assert.ok(!ctrl.includes('PUBLISH_UNPUBLISH_VOLUME'));
    const group = (await c.group.GroupControllerGetCapabilities!({})).capabilities.map((x: any) => x.rpc.type);
    assert.deepEqual(group, ['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);
    const node = (await c.node.NodeGetCapabilities!({})).capabilities.map((x: any) => x.rpc.type);
    for (const want of ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION']) {
      assert.ok(node.includes(want), `node capability ${want}`);
    }
    const info = await c.node.NodeGetInfo!({});
    assert.equal(info.node_id, 'node-1');
    assert.ok(info.max_volumes_per_node > 0);
  });

  const mount = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

  await t.test('missing required fields are INVALID_ARGUMENT', async () => {
    await expectCode(c.controller.CreateVolume!({ name: '', volume_capabilities: [mount] }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ name: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [{ mount: {} }] }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }] }),
      status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [mount], parameters: { colour: 'blue' } }),
      status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({
      name: 'v1', volume_capabilities: [{ mount: { fs_type: 'btrfs' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({
      name: 'v1', volume_capabilities: [{ mount: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }],
    }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.DeleteVolume!({ volume_id: '' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateSnapshot!({ source_volume_id: 'v1', name: '' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateSnapshot!({ source_volume_id: '', name: 's1' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.DeleteSnapshot!({ snapshot_id: '' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.ControllerExpandVolume!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.ValidateVolumeCapabilities!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeStageVolume!({ volume_id: 'v1', volume_capability: mount }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeStageVolume!({ volume_id: 'v1', staging_target_path: `${dir}/s` }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodePublishVolume!({ volume_id: 'v1', staging_target_path: `${dir}/s`, volume_capability: mount }),
      status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeUnpublishVolume!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeUnstageVolume!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeGetVolumeStats!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
    await expectCode(c.node.NodeExpandVolume!({ volume_id: 'v1' }), status.INVALID_ARGUMENT);
  });

  await t.test('capacity ranges that cannot be met are OUT_OF_RANGE', async () => {
    await expectCode(c.controller.CreateVolume!({
      name: 'v1', volume_capabilities: [mount], capacity_range: { required_bytes: 8192, limit_bytes: 4096 },
    }), status.OUT_OF_RANGE);
    // 5000 bytes rounds up to 8192, above the 6000-byte limit.
    await expectCode(c.controller.CreateVolume!({
      name: 'v1', volume_capabilities: [mount], capacity_range: { required_bytes: 5000, limit_bytes: 6000 },
    }), status.OUT_OF_RANGE);
  });

  await t.test('a bad paging token is ABORTED, negative max_entries INVALID_ARGUMENT', async () => {
    // Arguments are checked before the daemon is asked (it is down here).
    await expectCode(c.controller.ListVolumes!({ starting_token: 'not-a-token' }), status.ABORTED);
    await expectCode(c.controller.ListSnapshots!({ starting_token: 'bm9wZQ' }), status.ABORTED);
    await expectCode(c.controller.ListSnapshots!({ max_entries: -1 }), status.INVALID_ARGUMENT);
    await expectCode(c.controller.ListVolumes!({ max_entries: -1 }), status.INVALID_ARGUMENT);
  });

  await t.test('controller-publish is UNIMPLEMENTED', async () => {
    await expectCode(c.controller.ControllerPublishVolume!({ volume_id: 'v1', node_id: 'n' }), status.UNIMPLEMENTED);
  });

  await t.test('ModifyVolume, QoS parameters and group snapshots refuse bad arguments before asking the daemon', async () => {
    const modify = (mutable_parameters: Record<string, string>, volume_id = 'v1') =>
      expectCode(c.controller.ControllerModifyVolume!({ volume_id, mutable_parameters }), status.INVALID_ARGUMENT);
    await modify({ iopsMax: '100' }, '');
    await modify({ colour: 'blue' });
    await modify({ 'csi.storage.k8s.io/fstype': 'xfs' }); // known but not changeable: immutable
    await modify({ iopsMax: 'fast' });
    await modify({ iopsMax: '1.5' });
    await modify({ iopsMax: '10000001' });
    await modify({ bpsMax: '100Xi' });
    await modify({ bpsMax: '-1' });
    await modify({ burstSeconds: '61' });
    // QoS in a StorageClass: the same validation at CreateVolume.
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [mount], parameters: { bpsMax: 'lots' } }),
      status.INVALID_ARGUMENT);
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [mount], mutable_parameters: { colour: 'red' } }),
      status.INVALID_ARGUMENT);
    const group = (req: object) => expectCode(c.group.CreateVolumeGroupSnapshot!(req), status.INVALID_ARGUMENT);
    await group({ name: '', source_volume_ids: ['a'] });
    await group({ name: 'g', source_volume_ids: [] });
    await group({ name: 'g', source_volume_ids: ['a', 'a'] });
    await group({ name: 'g', source_volume_ids: ['acme/a', 'other/b'] });
    await group({ name: 'g', source_volume_ids: ['a'], parameters: { colour: 'blue' } });
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: '' }), status.INVALID_ARGUMENT);
    await expectCode(c.group.GetVolumeGroupSnapshot!({ group_snapshot_id: 'not-a-group' }), status.NOT_FOUND);
    await c.group.DeleteVolumeGroupSnapshot!({ group_snapshot_id: 'not-a-group' }); // cannot exist: success
    // The secrets' token is asked for before anything else is looked up: secrets without one are refused.
    await expectCode(c.controller.DeleteVolume!({ volume_id: 'v1', secrets: { nbdPsk: 'x:00' } }), status.INVALID_ARGUMENT);
  });

  await t.test('a daemon that is down gives UNAVAILABLE and the plugin keeps running', async () => {
    await expectCode(c.controller.CreateVolume!({ name: 'v1', volume_capabilities: [mount] }), status.UNAVAILABLE);
    await expectCode(c.controller.ListVolumes!({}), status.UNAVAILABLE);
    await expectCode(c.controller.GetCapacity!({}), status.UNAVAILABLE);
    await expectCode(c.controller.DeleteVolume!({ volume_id: 'v1' }), status.UNAVAILABLE);
    const probe = await c.identity.Probe!({});
    assert.equal(probe.ready?.value, true);
    assert.equal(plugin.process.exitCode, null);
  });

  await t.test('unstage/unpublish of something never staged succeed (idempotent)', async () => {
    await c.node.NodeUnpublishVolume!({ volume_id: 'v1', target_path: `${dir}/never-published` });
    await c.node.NodeUnstageVolume!({ volume_id: 'v1', staging_target_path: `${dir}/never-staged` });
    await expectCode(c.node.NodeGetVolumeStats!({ volume_id: 'v1', volume_path: `${dir}/nope` }), status.NOT_FOUND);
  });

  await t.test('every RPC logs one JSON line with rpc, volume id and outcome', async () => {
    const lines = plugin.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const create = lines.find((l) => l.rpc === 'CreateVolume' && l.outcome === 'UNAVAILABLE');
    assert.ok(create, 'a CreateVolume UNAVAILABLE line');
    assert.equal(create!.volumeId, 'v1');
    assert.ok(lines.some((l) => l.rpc === 'GetPluginInfo' && l.outcome === 'ok'));
  });
});
