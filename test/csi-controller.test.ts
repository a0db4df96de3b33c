// Controller service end to end: a gRPC client over the plugin's unix socket, the plugin talking
// to a real `cairn serve` (temporary pool) over REST. Success paths, idempotency by name,
// ALREADY_EXISTS on different arguments, clones from snapshot and volume, paging and filters,
// expansion, capacity, volume condition, and the error codes the CSI spec gives.
import { encodeApiPageToken } from '../src/csi/names.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { csiClients, expectCode, removeDir, startDaemon, startPlugin, tempDir } from './csi-harness.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const mountCap = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const blockCap = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

test('controller service against a real cairn serve', async (t) => {
  const dir = tempDir('cairn-csi-ctl-');
  const daemon = await startDaemon(dir);
  const plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
  const c = csiClients(plugin.socketPath);
  t.after(async () => { c.close(); await plugin.kill(); await daemon.stop(); removeDir(dir); });
  const auth = { authorization: `Bearer ${readFileSync(join(dir, 'cairn.pool.admin-token'), 'utf8').trim()}` };
  const api = async (path: string): Promise<any> => (await fetch(daemon.apiUrl + path, { headers: auth })).json();

  await t.test('CreateVolume rounds the capacity up to 4 KiB and is idempotent by name', async () => {
    const req = { name: 'pvc-a', capacity_range: { required_bytes: 10 * MiB + 1 }, volume_capabilities: [mountCap] };
    const first = await c.controller.CreateVolume!(req);
    assert.equal(first.volume.volume_id, 'pvc-a');
    assert.equal(first.volume.capacity_bytes, 10 * MiB + 4096);
    assert.equal((await api('/v1/volumes/pvc-a')).size, 10 * MiB + 4096);
    const again = await c.controller.CreateVolume!(req);
    assert.deepEqual(again.volume, first.volume);
    // A range that the existing volume satisfies is "the same arguments" too.
    const wider = await c.controller.CreateVolume!({ ...req, capacity_range: { required_bytes: 5 * MiB, limit_bytes: 20 * MiB } });
    assert.equal(wider.volume.volume_id, 'pvc-a');
  });

  await t.test('same name with different arguments is ALREADY_EXISTS', async () => {
    await expectCode(c.controller.CreateVolume!({ name: 'pvc-a', capacity_range: { required_bytes: 20 * MiB }, volume_capabilities: [mountCap] }),
      status.ALREADY_EXISTS);
    await expectCode(c.controller.CreateVolume!({
      name: 'pvc-a', volume_capabilities: [mountCap], capacity_range: { required_bytes: 10 * MiB + 1 },
      volume_content_source: { volume: { volume_id: 'pvc-b' } },
    }), status.ALREADY_EXISTS);
  });

  await t.test('limit-only and no range pick a size within bounds', async () => {
    const limited = await c.controller.CreateVolume!({ name: 'pvc-limit', capacity_range: { limit_bytes: 8 * MiB + 100 }, volume_capabilities: [blockCap] });
    assert.equal(limited.volume.capacity_bytes, 8 * MiB);
    const dflt = await c.controller.CreateVolume!({ name: 'pvc-default', volume_capabilities: [blockCap] });
    assert.equal(dflt.volume.capacity_bytes, GiB);
  });

  await t.test('a name that is not a Cairn name maps to a stable hashed id', async () => {
    const name = 'PVC with spaces/and slashes';
    const one = await c.controller.CreateVolume!({ name, capacity_range: { required_bytes: MiB }, volume_capabilities: [mountCap] });
    const two = await c.controller.CreateVolume!({ name, capacity_range: { required_bytes: MiB }, volume_capabilities: [mountCap] });
    assert.match(one.volume.volume_id, /^csi-[0-9a-f]{40}$/);
    assert.equal(two.volume.volume_id, one.volume.volume_id);
    await c.controller.DeleteVolume!({ volume_id: one.volume.volume_id });
  });

  let snapId = '';
  await t.test('CreateSnapshot is ready at once, idempotent, ALREADY_EXISTS on another volume', async () => {
    const before = Date.now();
    const res = await c.controller.CreateSnapshot!({ source_volume_id: 'pvc-a', name: 'snapshot-1' });
    snapId = res.snapshot.snapshot_id;
    assert.equal(snapId, 'pvc-a@snapshot-1');
    assert.equal(res.snapshot.source_volume_id, 'pvc-a');
    assert.equal(res.snapshot.ready_to_use, true);
    assert.equal(res.snapshot.size_bytes, 10 * MiB + 4096);
    const createdMs = res.snapshot.creation_time.seconds * 1000 + res.snapshot.creation_time.nanos / 1e6;
    assert.ok(createdMs >= before - 2000 && createdMs <= Date.now() + 2000, `creation_time ${createdMs}`);
    const again = await c.controller.CreateSnapshot!({ source_volume_id: 'pvc-a', name: 'snapshot-1' });
    assert.deepEqual(again.snapshot, res.snapshot);
    await expectCode(c.controller.CreateSnapshot!({ source_volume_id: 'pvc-limit', name: 'snapshot-1' }), status.ALREADY_EXISTS);
    await expectCode(c.controller.CreateSnapshot!({ source_volume_id: 'no-such-volume', name: 'snapshot-9' }), status.NOT_FOUND);
  });

  await t.test('volumes from a snapshot and from a volume are clones that echo their source', async () => {
    const fromSnap = await c.controller.CreateVolume!({
      name: 'pvc-restore', volume_capabilities: [mountCap], volume_content_source: { snapshot: { snapshot_id: snapId } },
    });
    assert.equal(fromSnap.volume.content_source.snapshot.snapshot_id, snapId);
    assert.equal(fromSnap.volume.capacity_bytes, 10 * MiB + 4096);
    assert.equal((await api('/v1/volumes/pvc-restore')).origin, snapId);
    const fromVol = await c.controller.CreateVolume!({
      name: 'pvc-clone', volume_capabilities: [mountCap], capacity_range: { required_bytes: 32 * MiB },
      volume_content_source: { volume: { volume_id: 'pvc-a' } },
    });
    assert.equal(fromVol.volume.content_source.volume.volume_id, 'pvc-a');
    assert.equal(fromVol.volume.capacity_bytes, 32 * MiB, 'range honoured: the clone grew');
    assert.equal((await api('/v1/volumes/pvc-clone')).origin, 'pvc-a');
    const again = await c.controller.CreateVolume!({
      name: 'pvc-clone', volume_capabilities: [mountCap], capacity_range: { required_bytes: 32 * MiB },
      volume_content_source: { volume: { volume_id: 'pvc-a' } },
    });
    assert.deepEqual(again.volume, fromVol.volume);
    // A clone cannot be smaller than its source.
    await expectCode(c.controller.CreateVolume!({
      name: 'pvc-tiny', volume_capabilities: [mountCap], capacity_range: { limit_bytes: MiB },
      volume_content_source: { volume: { volume_id: 'pvc-a' } },
    }), status.OUT_OF_RANGE);
    await expectCode(c.controller.CreateVolume!({
      name: 'pvc-x', volume_capabilities: [mountCap], volume_content_source: { snapshot: { snapshot_id: 'pvc-a@nope' } },
    }), status.NOT_FOUND);
    await expectCode(c.controller.CreateVolume!({
      name: 'pvc-x', volume_capabilities: [mountCap], volume_content_source: { volume: { volume_id: 'nope' } },
    }), status.NOT_FOUND);
  });

  await t.test('ListVolumes pages with max_entries / starting_token and reports a condition', async () => {
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await c.controller.ListVolumes!({ max_entries: 2, starting_token: token });
      assert.ok(page.entries.length <= 2);
      for (const e of page.entries) {
        seen.push(e.volume.volume_id);
        assert.equal(e.status.volume_condition.abnormal, false);
      }
      token = page.next_token;
      pages++;
    } while (token !== '' && pages < 20);
    const all = (await c.controller.ListVolumes!({})).entries.map((e: any) => e.volume.volume_id);
    assert.deepEqual(seen, all);
    assert.deepEqual([...all].sort(), ['pvc-a', 'pvc-clone', 'pvc-default', 'pvc-limit', 'pvc-restore']);
    assert.ok(pages >= 3);
    const restore = (await c.controller.ListVolumes!({})).entries.find((e: any) => e.volume.volume_id === 'pvc-restore');
    assert.equal(restore.volume.content_source.snapshot.snapshot_id, snapId);
    await expectCode(c.controller.ListVolumes!({ starting_token: 'garbage!' }), status.ABORTED);
  });

  await t.test('ListSnapshots pages and filters; unknown ids give an empty list', async () => {
    await c.controller.CreateSnapshot!({ source_volume_id: 'pvc-a', name: 'snapshot-2' });
    await c.controller.CreateSnapshot!({ source_volume_id: 'pvc-clone', name: 'snapshot-3' });
    const all = (await c.controller.ListSnapshots!({})).entries.map((e: any) => e.snapshot.snapshot_id);
    assert.deepEqual(all, ['pvc-a@snapshot-1', 'pvc-a@snapshot-2', 'pvc-clone@snapshot-3']);
    const first = await c.controller.ListSnapshots!({ max_entries: 2 });
    assert.equal(first.entries.length, 2);
    assert.notEqual(first.next_token, '');
    const second = await c.controller.ListSnapshots!({ max_entries: 2, starting_token: first.next_token });
    assert.deepEqual(second.entries.map((e: any) => e.snapshot.snapshot_id), ['pvc-clone@snapshot-3']);
    assert.equal(second.next_token, '');
    const byVolume = await c.controller.ListSnapshots!({ source_volume_id: 'pvc-a' });
    assert.deepEqual(byVolume.entries.map((e: any) => e.snapshot.snapshot_id), ['pvc-a@snapshot-1', 'pvc-a@snapshot-2']);
    const byId = await c.controller.ListSnapshots!({ snapshot_id: 'pvc-clone@snapshot-3' });
    assert.equal(byId.entries.length, 1);
    assert.equal(byId.entries[0].snapshot.source_volume_id, 'pvc-clone');
    assert.equal((await c.controller.ListSnapshots!({ snapshot_id: 'pvc-a@missing' })).entries.length, 0);
    assert.equal((await c.controller.ListSnapshots!({ snapshot_id: 'not an id' })).entries.length, 0);
    assert.equal((await c.controller.ListSnapshots!({ source_volume_id: 'missing' })).entries.length, 0);
    await expectCode(c.controller.ListSnapshots!({ starting_token: 'xyz' }), status.ABORTED);
    // Well-formed for the CSI layer but not a position the daemon knows (a volume list's token here).
    const volumeToken = (await c.controller.ListVolumes!({ max_entries: 1 })).next_token;
    await expectCode(c.controller.ListSnapshots!({ starting_token: volumeToken }), status.ABORTED);
    await expectCode(c.controller.ListSnapshots!({ starting_token: encodeApiPageToken('bogus') }), status.ABORTED);
  });

  await t.test('ValidateVolumeCapabilities confirms what Cairn serves', async () => {
    const ok = await c.controller.ValidateVolumeCapabilities!({ volume_id: 'pvc-a', volume_capabilities: [mountCap, blockCap] });
    assert.equal(ok.confirmed.volume_capabilities.length, 2);
    const no = await c.controller.ValidateVolumeCapabilities!({
      volume_id: 'pvc-a', volume_capabilities: [{ mount: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }],
    });
    assert.equal(no.confirmed, null);
    assert.match(no.message, /MULTI_NODE_MULTI_WRITER/);
    await expectCode(c.controller.ValidateVolumeCapabilities!({ volume_id: 'nope', volume_capabilities: [mountCap] }), status.NOT_FOUND);
  });

  await t.test('GetCapacity reports the pool free space', async () => {
    const cap = await c.controller.GetCapacity!({ volume_capabilities: [mountCap] });
    const pool = await api('/v1/pool');
    assert.ok(cap.available_capacity > 0);
    assert.ok(Math.abs(cap.available_capacity - pool.freeBytes) < 64 * MiB);
    const none = await c.controller.GetCapacity!({ volume_capabilities: [{ mount: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }] });
    assert.equal(none.available_capacity, 0);
  });

  await t.test('ControllerExpandVolume grows, is idempotent, and NOT_FOUND for unknown ids', async () => {
    const grown = await c.controller.ControllerExpandVolume!({ volume_id: 'pvc-a', capacity_range: { required_bytes: 20 * MiB + 5 }, volume_capability: mountCap });
    assert.equal(grown.capacity_bytes, 20 * MiB + 4096);
    assert.equal(grown.node_expansion_required, true);
    assert.equal((await api('/v1/volumes/pvc-a')).size, 20 * MiB + 4096);
    const again = await c.controller.ControllerExpandVolume!({ volume_id: 'pvc-a', capacity_range: { required_bytes: 20 * MiB } });
    assert.equal(again.capacity_bytes, 20 * MiB + 4096);
    const block = await c.controller.ControllerExpandVolume!({ volume_id: 'pvc-limit', capacity_range: { required_bytes: 16 * MiB }, volume_capability: blockCap });
    assert.equal(block.node_expansion_required, false);
    await expectCode(c.controller.ControllerExpandVolume!({ volume_id: 'nope', capacity_range: { required_bytes: MiB } }), status.NOT_FOUND);
    await expectCode(c.controller.ControllerExpandVolume!({ volume_id: 'pvc-a', capacity_range: { required_bytes: 40 * MiB, limit_bytes: 30 * MiB } }),
      status.OUT_OF_RANGE);
  });

  await t.test('ControllerGetVolume returns the volume and its condition', async () => {
    const got = await c.controller.ControllerGetVolume!({ volume_id: 'pvc-restore' });
    assert.equal(got.volume.volume_id, 'pvc-restore');
    assert.equal(got.volume.content_source.snapshot.snapshot_id, snapId);
    assert.equal(got.status.volume_condition.abnormal, false);
    assert.ok(got.status.volume_condition.message.length > 0);
    await expectCode(c.controller.ControllerGetVolume!({ volume_id: 'nope' }), status.NOT_FOUND);
  });

  await t.test('DeleteVolume works while the volume has snapshots and clones; unknown ids succeed', async () => {
    await c.controller.DeleteVolume!({ volume_id: 'pvc-a' });
    assert.equal((await fetch(`${daemon.apiUrl}/v1/volumes/pvc-a`, { headers: auth })).status, 404);
    // Its snapshot and the clones still work.
    const snaps = (await c.controller.ListSnapshots!({ snapshot_id: 'pvc-a@snapshot-1' })).entries;
    assert.equal(snaps.length, 1);
    assert.equal((await api('/v1/volumes/pvc-clone')).name, 'pvc-clone');
    const restored = await c.controller.CreateVolume!({
      name: 'pvc-restore-2', volume_capabilities: [mountCap], volume_content_source: { snapshot: { snapshot_id: 'pvc-a@snapshot-1' } },
    });
    assert.equal(restored.volume.volume_id, 'pvc-restore-2');
    await c.controller.DeleteVolume!({ volume_id: 'pvc-a' });
    await c.controller.DeleteVolume!({ volume_id: 'never-existed' });
    await c.controller.DeleteVolume!({ volume_id: 'not a/valid name@all' });
    await expectCode(c.controller.ControllerGetVolume!({ volume_id: 'not a/valid name' }), status.NOT_FOUND);
    await c.controller.DeleteSnapshot!({ snapshot_id: 'pvc-a@snapshot-1' });
    await c.controller.DeleteSnapshot!({ snapshot_id: 'pvc-a@snapshot-1' });
    await c.controller.DeleteSnapshot!({ snapshot_id: 'garbage' });
    assert.equal((await c.controller.ListSnapshots!({ snapshot_id: 'pvc-a@snapshot-1' })).entries.length, 0);
  });

  await t.test('a second operation on a volume in flight is ABORTED', async () => {
    // Many concurrent creates of one name: exactly the overlapping ones are ABORTED, the
    // others succeed, and the volume exists once.
    const req = { name: 'pvc-race', capacity_range: { required_bytes: MiB }, volume_capabilities: [mountCap] };
    const results = await Promise.all(Array.from({ length: 8 }, () =>
      c.controller.CreateVolume!(req).then(() => 'ok', (err: any) => status[err.code])));
    assert.ok(results.includes('ok'), results.join());
    assert.ok(results.includes('ABORTED'), results.join());
    assert.ok(results.every((r) => r === 'ok' || r === 'ABORTED'), results.join());
    const vols = (await c.controller.ListVolumes!({})).entries.filter((e: any) => e.volume.volume_id === 'pvc-race');
    assert.equal(vols.length, 1);
  });
});

test('a full pool is RESOURCE_EXHAUSTED for new volumes and snapshots, and recovers', { timeout: 600_000 }, async (t) => {
  const dir = tempDir('cairn-csi-full-');
  const daemon = await startDaemon(dir, '64M');
  const plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, mode: 'controller' });
  const c = csiClients(plugin.socketPath);
  t.after(async () => { c.close(); await plugin.kill(); await daemon.stop(); removeDir(dir); });
  const big = { name: 'pvc-big', capacity_range: { required_bytes: 256 * MiB }, volume_capabilities: [blockCap] };
  await c.controller.CreateVolume!(big);
  // Fill the pool through NBD with a real client until the daemon answers ENOSPC.
  const fill = join(dir, 'fill.bin');
  writeFileSync(fill, randomBytes(100 * MiB));
  const copy = spawnSync('nbdcopy', [fill, `nbd://${daemon.nbdAddress}/pvc-big`], { encoding: 'utf8' });
  assert.notEqual(copy.status, 0);
  assert.match(copy.stderr, /No space left on device/);
  await expectCode(c.controller.CreateVolume!({ name: 'pvc-new', volume_capabilities: [blockCap] }), status.RESOURCE_EXHAUSTED);
  await expectCode(c.controller.CreateVolume!({ name: 'pvc-new', volume_capabilities: [blockCap],
    volume_content_source: { volume: { volume_id: 'pvc-big' } } }), status.RESOURCE_EXHAUSTED);
  await expectCode(c.controller.CreateSnapshot!({ source_volume_id: 'pvc-big', name: 'snap' }), status.RESOURCE_EXHAUSTED);
  assert.equal((await c.controller.CreateVolume!(big)).volume.volume_id, 'pvc-big', 'an existing volume is still returned');
  assert.ok((await c.controller.GetCapacity!({})).available_capacity < 16 * MiB);
  await c.controller.DeleteVolume!({ volume_id: 'pvc-big' });
  // Freed blocks return in the background; wait for the space to come back, however long a busy
  // machine takes (the test's timeout bounds a hang).
  while ((await c.controller.GetCapacity!({})).available_capacity < 32 * MiB) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.equal((await c.controller.CreateVolume!({ name: 'pvc-new', volume_capabilities: [blockCap] })).volume.volume_id, 'pvc-new');
});
