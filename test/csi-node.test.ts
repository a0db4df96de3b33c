// Node service for real, as root: stage (nbdfuse + loop device + mkfs + mount), publish (bind
// mounts), files written through the mount, snapshot → clones from the snapshot and from the
// live volume staged beside their source (ext4 and xfs), online expansion, the block access
// type, and a plugin killed between stage and unstage. Afterwards no mount, loop device or
// process made by the suite may remain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, openSync, readSync, writeSync, closeSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import {
  csiClients, expectCode, loopDevicesUnder, mountsUnder, processesMentioning, removeDir, startDaemon, startPlugin, tempDir,
  type CsiClients, type Plugin,
} from './csi-harness.js';

const MiB = 1024 ** 2;
const ext4 = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const xfs = { mount: { fs_type: 'xfs' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const block = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

/** Runs `fn` with the file system at `mountPath` frozen (a consistent point for a snapshot or clone). */
async function whileFrozen<T>(mountPath: string, fn: () => Promise<T>): Promise<T> {
  sh('fsfreeze', ['-f', mountPath]);
  try {
    return await fn();
  } finally {
    sh('fsfreeze', ['-u', mountPath]);
  }
}
const mountCount = (path: string): number =>
  readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === path).length;
const dfBytes = (path: string): number => Number(sh('df', ['-B1', '--output=size', path]).split('\n')[1]!.trim());

// Mounting, loop devices and FUSE need root; the suite is meant to run as root (CI does).
const notRoot = process.getuid?.() !== 0 ? 'needs root (mount, losetup, FUSE)' : false;

test('node service: stage, publish, snapshot, clone, expand, block, restart', { timeout: 600_000, skip: notRoot }, async (t) => {
  const dir = tempDir('cairn-csi-node-');
  const daemon = await startDaemon(dir, '8G');
  const stateDir = join(dir, 'state');
  let plugin: Plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, stateDir });
  let c: CsiClients = csiClients(plugin.socketPath);
  const staged = new Map<string, string>(); // volume id → staging path, for cleanup on failure

  t.after(async () => {
    // Clean up through the plugin first (the code under test), then by force, then check.
    for (const [volumeId, stagingPath] of staged) {
      for (const target of mountsUnder(join(dir, 'pods'))) {
        await c.node.NodeUnpublishVolume!({ volume_id: volumeId, target_path: target }).catch(() => undefined);
      }
      await c.node.NodeUnstageVolume!({ volume_id: volumeId, staging_target_path: stagingPath }).catch(() => undefined);
    }
    c.close();
    await plugin.kill();
    const leftMounts = mountsUnder(dir);
    const leftLoops = loopDevicesUnder(dir);
    const leftProcs = processesMentioning(dir).filter((pid) => {
      try { return !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cairn.pool'); } catch { return false; }
    });
    for (const m of leftMounts.reverse()) try { sh('umount', ['-l', m]); } catch { /* best effort */ }
    for (const l of leftLoops) try { sh('losetup', ['-d', l]); } catch { /* best effort */ }
    for (const pid of leftProcs) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await daemon.stop();
    removeDir(dir);
    assert.deepEqual({ leftMounts, leftLoops, leftProcs }, { leftMounts: [], leftLoops: [], leftProcs: [] },
      'the suite left mounts, loop devices or processes behind');
  });

  const create = async (name: string, sizeBytes: number, cap: object, source?: object): Promise<string> => {
    const res = await c.controller.CreateVolume!({
      name, capacity_range: { required_bytes: sizeBytes }, volume_capabilities: [cap], volume_content_source: source,
    });
    return res.volume.volume_id;
  };
  const stagingOf = (id: string): string => join(dir, 'staging', id);
  const stage = async (id: string, cap: object): Promise<string> => {
    const stagingPath = stagingOf(id);
    mkdirSync(stagingPath, { recursive: true });
    staged.set(id, stagingPath);
    await c.node.NodeStageVolume!({ volume_id: id, staging_target_path: stagingPath, volume_capability: cap });
    return stagingPath;
  };
  const unstage = async (id: string): Promise<void> => {
    await c.node.NodeUnstageVolume!({ volume_id: id, staging_target_path: stagingOf(id) });
    staged.delete(id);
  };
  const publish = async (id: string, target: string, cap: object, readonly = false): Promise<void> => {
    await c.node.NodePublishVolume!({
      volume_id: id, staging_target_path: stagingOf(id), target_path: target, volume_capability: cap, readonly,
    });
  };

  await t.test('stage ext4, publish, write files, unpublish, unstage; all idempotent', async () => {
    const id = await create('vol-a', 256 * MiB, ext4);
    const stagingPath = await stage(id, ext4);
    await c.node.NodeStageVolume!({ volume_id: id, staging_target_path: stagingPath, volume_capability: ext4 });
    assert.equal(mountCount(stagingPath), 1, 'one staging mount after two stage calls');
    const elsewhere = join(dir, 'staging', 'elsewhere');
    mkdirSync(elsewhere, { recursive: true });
    await expectCode(c.node.NodeStageVolume!({ volume_id: id, staging_target_path: elsewhere, volume_capability: ext4 }),
      status.ALREADY_EXISTS);
    await expectCode(c.node.NodeStageVolume!({ volume_id: id, staging_target_path: stagingPath, volume_capability: block }),
      status.ALREADY_EXISTS);
    await c.node.NodeUnstageVolume!({ volume_id: id, staging_target_path: elsewhere }); // not staged there: no-op
    assert.equal(mountCount(stagingPath), 1, 'the real staging is untouched');
    assert.equal(sh('findmnt', ['-n', '-o', 'FSTYPE', stagingPath]).trim(), 'ext4');
    const target = join(dir, 'pods', 'p1', 'vol-a');
    await publish(id, target, ext4);
    await publish(id, target, ext4);
    assert.equal(mountCount(target), 1, 'one publish mount after two publish calls');
    writeFileSync(join(target, 'hello.txt'), 'hello from a pod\n');
    mkdirSync(join(target, 'dir'));
    writeFileSync(join(target, 'dir', 'data.bin'), Buffer.alloc(3 * MiB, 7));
    const roTarget = join(dir, 'pods', 'p2', 'vol-a');
    // CSI spec, NodePublishVolume: a second target on the node only for SINGLE_NODE_MULTI_WRITER and
    // the MULTI_NODE_* modes (Kubernetes asks for SINGLE_NODE_MULTI_WRITER for ReadWriteOnce once the
    // node advertises it); SINGLE_NODE_WRITER is FAILED_PRECONDITION, and nothing is mounted.
    await expectCode(c.node.NodePublishVolume!({
      volume_id: id, staging_target_path: stagingPath, target_path: roTarget, volume_capability: ext4, readonly: true,
    }), status.FAILED_PRECONDITION);
    assert.equal(mountCount(roTarget), 0);
    const ext4Shared = { ...ext4, access_mode: { mode: 'SINGLE_NODE_MULTI_WRITER' } };
    await publish(id, roTarget, ext4Shared, true);
    assert.equal(readFileSync(join(roTarget, 'hello.txt'), 'utf8'), 'hello from a pod\n');
    assert.throws(() => writeFileSync(join(roTarget, 'nope.txt'), 'x'), /EROFS/);
    await expectCode(c.node.NodePublishVolume!({
      volume_id: id, staging_target_path: stagingPath, target_path: roTarget, volume_capability: ext4, readonly: false,
    }), status.ALREADY_EXISTS);
    const stats = await c.node.NodeGetVolumeStats!({ volume_id: id, volume_path: target });
    const bytes = stats.usage.find((u: any) => u.unit === 'BYTES');
    const inodes = stats.usage.find((u: any) => u.unit === 'INODES');
    assert.ok(bytes.total > 200 * MiB && bytes.total <= 256 * MiB, `total ${bytes.total}`);
    assert.ok(bytes.used >= 3 * MiB, `used ${bytes.used}`);
    assert.ok(inodes.total > 0 && inodes.used > 0);
    assert.equal(stats.volume_condition.abnormal, false);
    // Calls naming another volume touch nothing of this one (CSI: unstage and unpublish undo only
    // their own volume's work; stats of a volume not on that path are NOT_FOUND).
    await expectCode(c.node.NodeGetVolumeStats!({ volume_id: 'other-vol', volume_path: target }), status.NOT_FOUND);
    await expectCode(c.node.NodeGetVolumeStats!({ volume_id: 'other-vol', volume_path: stagingPath }), status.NOT_FOUND);
    await c.node.NodeUnpublishVolume!({ volume_id: 'other-vol', target_path: target });
    assert.equal(mountCount(target), 1, 'another volume\'s unpublish leaves this target mounted');
    assert.equal(readFileSync(join(target, 'hello.txt'), 'utf8'), 'hello from a pod\n');
    await c.node.NodeUnstageVolume!({ volume_id: 'other-vol', staging_target_path: stagingPath });
    assert.equal(mountCount(stagingPath), 1, 'another volume\'s unstage leaves this staging mounted');
    await expectCode(c.node.NodeUnstageVolume!({ volume_id: id, staging_target_path: stagingPath }), status.FAILED_PRECONDITION);
    for (const tp of [target, roTarget]) {
      await c.node.NodeUnpublishVolume!({ volume_id: id, target_path: tp });
      await c.node.NodeUnpublishVolume!({ volume_id: id, target_path: tp });
      assert.equal(mountCount(tp), 0);
      assert.equal(existsSync(tp), false, 'the target directory is removed');
    }
    await unstage(id);
    await c.node.NodeUnstageVolume!({ volume_id: id, staging_target_path: stagingPath });
    assert.equal(mountCount(stagingPath), 0);
    assert.deepEqual(loopDevicesUnder(dir), []);
    // Staged again: the data is still there and was not reformatted.
    await stage(id, ext4);
    assert.equal(readFileSync(join(stagingPath, 'hello.txt'), 'utf8'), 'hello from a pod\n');
    assert.deepEqual(readFileSync(join(stagingPath, 'dir', 'data.bin')), Buffer.alloc(3 * MiB, 7));
  });

  await t.test('snapshot, then volumes from the snapshot and from the live volume hold the files', async () => {
    const stagingPath = stagingOf('vol-a');
    writeFileSync(join(stagingPath, 'before-snapshot.txt'), 'in the snapshot\n');
    sh('sync', ['-f', join(stagingPath, 'before-snapshot.txt')]); // crash-consistent point, as a CO would get
    const snapId = await whileFrozen(stagingPath, async () =>
      (await c.controller.CreateSnapshot!({ source_volume_id: 'vol-a', name: 'snap-1' })).snapshot.snapshot_id);
    writeFileSync(join(stagingPath, 'after-snapshot.txt'), 'only live\n');
    await whileFrozen(stagingPath, () => create('vol-from-live', 256 * MiB, ext4, { volume: { volume_id: 'vol-a' } }));
    await create('vol-from-snap', 256 * MiB, ext4, { snapshot: { snapshot_id: snapId } });
    const fromSnap = await stage('vol-from-snap', ext4);
    const fromLive = await stage('vol-from-live', ext4);
    assert.equal(readFileSync(join(fromSnap, 'hello.txt'), 'utf8'), 'hello from a pod\n');
    assert.equal(readFileSync(join(fromSnap, 'before-snapshot.txt'), 'utf8'), 'in the snapshot\n');
    assert.equal(existsSync(join(fromSnap, 'after-snapshot.txt')), false);
    assert.equal(readFileSync(join(fromLive, 'after-snapshot.txt'), 'utf8'), 'only live\n');
    // The clones are independent: writing one changes neither the source nor the other.
    writeFileSync(join(fromSnap, 'clone-only.txt'), 'x');
    assert.equal(existsSync(join(stagingPath, 'clone-only.txt')), false);
    assert.equal(existsSync(join(fromLive, 'clone-only.txt')), false);
    await unstage('vol-from-snap');
    await unstage('vol-from-live');
  });

  await t.test('reader-only access modes attach and mount read-only; a blank volume is not formatted', async () => {
    const reader = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } };
    const ro = await stage('vol-from-snap', reader);
    assert.equal(readFileSync(join(ro, 'before-snapshot.txt'), 'utf8'), 'in the snapshot\n');
    assert.throws(() => writeFileSync(join(ro, 'nope.txt'), 'x'), /EROFS/);
    assert.match(sh('findmnt', ['-n', '-o', 'OPTIONS', ro]), /(^|,)ro(,|$)/);
    await expectCode(c.node.NodeStageVolume!({ volume_id: 'vol-from-snap', staging_target_path: ro, volume_capability: ext4 }),
      status.ALREADY_EXISTS);
    await unstage('vol-from-snap');
    await create('vol-blank', 32 * MiB, reader);
    const blankStaging = stagingOf('vol-blank');
    mkdirSync(blankStaging, { recursive: true });
    await expectCode(c.node.NodeStageVolume!({ volume_id: 'vol-blank', staging_target_path: blankStaging, volume_capability: reader }),
      status.FAILED_PRECONDITION);
    assert.equal(mountCount(blankStaging), 0);
    assert.deepEqual(loopDevicesUnder(join(dir, 'state', 'fuse', 'vol-blank')), []);
  });

  await t.test('expand a staged, published volume and see the filesystem grow', async () => {
    const target = join(dir, 'pods', 'p3', 'vol-a');
    await publish('vol-a', target, ext4);
    const before = dfBytes(target);
    const grown = await c.controller.ControllerExpandVolume!({ volume_id: 'vol-a', capacity_range: { required_bytes: 512 * MiB }, volume_capability: ext4 });
    assert.equal(grown.capacity_bytes, 512 * MiB);
    assert.equal(grown.node_expansion_required, true);
    // A file held open in the published mount: the mount is busy → FAILED_PRECONDITION, and
    // every mount is left as it was.
    const held = openSync(join(target, 'hello.txt'), 'r');
    try {
      await expectCode(c.node.NodeExpandVolume!({
        volume_id: 'vol-a', volume_path: target, capacity_range: { required_bytes: 512 * MiB },
      }), status.FAILED_PRECONDITION);
    } finally {
      closeSync(held);
    }
    assert.equal(mountCount(target), 1);
    assert.equal(mountCount(stagingOf('vol-a')), 1);
    assert.equal(readFileSync(join(target, 'hello.txt'), 'utf8'), 'hello from a pod\n');
    const res = await c.node.NodeExpandVolume!({
      volume_id: 'vol-a', volume_path: target, staging_target_path: stagingOf('vol-a'),
      capacity_range: { required_bytes: 512 * MiB }, volume_capability: ext4,
    });
    assert.equal(res.capacity_bytes, 512 * MiB);
    const after = dfBytes(target);
    assert.ok(after > before + 200 * MiB, `filesystem grew from ${before} to ${after}`);
    assert.equal(readFileSync(join(target, 'hello.txt'), 'utf8'), 'hello from a pod\n', 'data intact after expansion');
    assert.equal(mountCount(target), 1);
    await c.node.NodeUnpublishVolume!({ volume_id: 'vol-a', target_path: target });
    await unstage('vol-a');
  });

  await t.test('xfs: a clone mounts beside its source (nouuid); never reformatted', async () => {
    await create('vol-x', 320 * MiB, xfs);
    const src = await stage('vol-x', xfs);
    assert.equal(sh('findmnt', ['-n', '-o', 'FSTYPE', src]).trim(), 'xfs');
    writeFileSync(join(src, 'x.txt'), 'xfs data\n');
    await whileFrozen(src, () => create('vol-x-clone', 320 * MiB, xfs, { volume: { volume_id: 'vol-x' } }));
    const clone = await stage('vol-x-clone', xfs);
    assert.equal(readFileSync(join(clone, 'x.txt'), 'utf8'), 'xfs data\n');
    // xfs grows online (xfs_growfs on the mount) after the re-attach.
    const before = dfBytes(clone);
    await c.controller.ControllerExpandVolume!({ volume_id: 'vol-x-clone', capacity_range: { required_bytes: 640 * MiB }, volume_capability: xfs });
    await c.node.NodeExpandVolume!({ volume_id: 'vol-x-clone', volume_path: clone, capacity_range: { required_bytes: 640 * MiB } });
    assert.ok(dfBytes(clone) > before + 250 * MiB, `xfs grew from ${before} to ${dfBytes(clone)}`);
    assert.equal(readFileSync(join(clone, 'x.txt'), 'utf8'), 'xfs data\n');
    await unstage('vol-x-clone');
    // Asking for ext4 on a device holding xfs is refused, not reformatted.
    await expectCode(c.node.NodeStageVolume!({
      volume_id: 'vol-x-clone', staging_target_path: stagingOf('vol-x-clone'), volume_capability: ext4,
    }), status.FAILED_PRECONDITION);
    await unstage('vol-x');
  });

  await t.test('block access type publishes the device itself', async () => {
    await create('vol-b', 64 * MiB, block);
    // Two stage calls at once: the second finds the first in flight → ABORTED (CSI concurrency).
    mkdirSync(stagingOf('vol-b'), { recursive: true });
    staged.set('vol-b', stagingOf('vol-b'));
    const req = { volume_id: 'vol-b', staging_target_path: stagingOf('vol-b'), volume_capability: block };
    const results = await Promise.all([c.node.NodeStageVolume!(req), c.node.NodeStageVolume!(req)]
      .map((p) => p.then(() => 'ok', (err: any) => status[err.code])));
    assert.deepEqual(results.sort(), ['ABORTED', 'ok']);
    await stage('vol-b', block); // the CO's retry succeeds
    const target = join(dir, 'pods', 'p4', 'vol-b-dev');
    await publish('vol-b', target, block);
    await publish('vol-b', target, block);
    assert.equal(mountCount(target), 1);
    assert.equal(Number(sh('blockdev', ['--getsize64', target]).trim()), 64 * MiB);
    const pattern = Buffer.alloc(MiB, 0x5a);
    const fd = openSync(target, 'r+');
    try {
      writeSync(fd, pattern, 0, pattern.length, 8 * MiB);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    const stats = await c.node.NodeGetVolumeStats!({ volume_id: 'vol-b', volume_path: target });
    assert.equal(stats.usage[0].total, 64 * MiB);
    await c.node.NodeUnpublishVolume!({ volume_id: 'vol-b', target_path: target });
    assert.equal(existsSync(target), false);
    await unstage('vol-b');
    // The bytes reached Cairn: read them back over NBD with a real client.
    const read = execFileSync('nbdcopy', [`nbd://${daemon.nbdAddress}/vol-b`, '-'], { maxBuffer: 128 * MiB });
    assert.deepEqual(read.subarray(8 * MiB, 9 * MiB), pattern);
  });

  await t.test('kill the plugin between stage and unstage; unstage after restart cleans up', async () => {
    await create('vol-k', 64 * MiB, ext4);
    const stagingPath = await stage('vol-k', ext4);
    writeFileSync(join(stagingPath, 'k.txt'), 'survives\n');
    c.close();
    await plugin.kill('SIGKILL');
    assert.equal(readFileSync(join(stagingPath, 'k.txt'), 'utf8'), 'survives\n', 'the mount outlives the plugin');
    // From here on the plugin runs without --nbd: it attaches from the nbdUri the API reports.
    plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: null, stateDir });
    assert.match(plugin.logs(), /"nbd":"from the API"/);
    c = csiClients(plugin.socketPath);
    await c.node.NodeStageVolume!({ volume_id: 'vol-k', staging_target_path: stagingPath, volume_capability: ext4 });
    assert.equal(mountCount(stagingPath), 1);
    await unstage('vol-k');
    assert.equal(mountCount(stagingPath), 0);
    assert.deepEqual(loopDevicesUnder(dir), []);
    const nbdfuses = processesMentioning(dir).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('nbdfuse'));
    assert.deepEqual(nbdfuses, []);
  });

  await t.test('a dead nbdfuse shows as an abnormal condition; staging again rebuilds the attachment', async () => {
    const stagingPath = stagingOf('vol-k');
    await stage('vol-k', ext4); // a fresh attach: its address comes from the API
    const attached = JSON.parse(readFileSync(join(stateDir, 'attachments.json'), 'utf8')) as { attachments: Array<{ volumeId: string; uri: string }> };
    assert.equal(attached.attachments.find((a) => a.volumeId === 'vol-k')!.uri, `nbd://${daemon.nbdAddress}/vol-k`);
    const state = JSON.parse(readFileSync(join(stateDir, 'attachments.json'), 'utf8')) as { attachments: Array<{ volumeId: string; nbdfusePid: number }> };
    const pid = state.attachments.find((a) => a.volumeId === 'vol-k')!.nbdfusePid;
    process.kill(pid, 'SIGKILL');
    // The kill lands when the kernel gets to it: wait for the plugin to see it, not a fixed time
    // (the test's timeout bounds a hang).
    let sick = await c.node.NodeGetVolumeStats!({ volume_id: 'vol-k', volume_path: stagingPath });
    while (!sick.volume_condition.abnormal) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      sick = await c.node.NodeGetVolumeStats!({ volume_id: 'vol-k', volume_path: stagingPath });
    }
    assert.match(sick.volume_condition.message, /nbdfuse/);
    await c.node.NodeStageVolume!({ volume_id: 'vol-k', staging_target_path: stagingPath, volume_capability: ext4 });
    assert.equal(readFileSync(join(stagingPath, 'k.txt'), 'utf8'), 'survives\n');
    const healthy = await c.node.NodeGetVolumeStats!({ volume_id: 'vol-k', volume_path: stagingPath });
    assert.equal(healthy.volume_condition.abnormal, false);
    assert.equal(mountCount(stagingPath), 1);
    await unstage('vol-k');
    assert.deepEqual(loopDevicesUnder(dir), []);
  });

  await t.test('staging an unknown volume is NOT_FOUND and leaves nothing behind', async () => {
    const stagingPath = join(dir, 'staging', 'ghost');
    mkdirSync(stagingPath, { recursive: true });
    await expectCode(c.node.NodeStageVolume!({ volume_id: 'ghost', staging_target_path: stagingPath, volume_capability: ext4 }),
      status.NOT_FOUND);
    assert.deepEqual(loopDevicesUnder(dir), []);
    assert.equal(existsSync(join(stateDir, 'fuse', 'ghost')), false, 'no nbdfuse mount dir left');
    assert.equal(existsSync(join(stateDir, 'fuse', 'ghost.log')), false, 'no nbdfuse log left');
    assert.equal(mountCount(stagingPath), 0);
  });
});
