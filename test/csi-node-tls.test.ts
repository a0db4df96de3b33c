// The node attaches over TLS-PSK when the stage secret carries an NBD key: a daemon that requires
// TLS (--nbd-tls-psk FILE --nbd-tls-required) refuses a plain stage and serves one with the key
// (nbdfuse over nbds:// with tls-psk-file, then losetup, mkfs and mount as usual). The key lives
// only in a 0600 psk file while the volume is staged: never in the state file, a command line or a
// log. With tenant NBD keys (`--nbd-tls psk`, `cairn tenant nbd-key create`; skipped while the
// daemon lacks them) a tenant's key stages that tenant's volume and no other tenant's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import {
  csiClients, expectCode, loopDevicesUnder, mountsUnder, processesMentioning, removeDir, startDaemon, startPlugin,
  tempDir, type CsiClients, type Daemon, type Plugin,
} from './csi-harness.js';

const MiB = 1024 ** 2;
const ext4 = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const notRoot = process.getuid?.() !== 0 ? 'needs root (mount, losetup, FUSE)' : false;

/** Whether `cairn serve` knows `--nbd-tls psk` (tenant NBD keys), which lands with another branch. */
interface Rig { dir: string; daemon: Daemon; plugin: Plugin; c: CsiClients; stateDir: string; staged: Map<string, string> }

async function rig(prefix: string, daemonArgs: (dir: string) => string[]): Promise<Rig> {
  const dir = tempDir(prefix);
  const daemon = await startDaemon(dir, '4G', daemonArgs(dir));
  const stateDir = join(dir, 'state');
  const plugin = await startPlugin({ dir, api: daemon.apiUrl, nbd: daemon.nbdAddress, stateDir });
  return { dir, daemon, plugin, c: csiClients(plugin.socketPath), stateDir, staged: new Map() };
}

/** Unstages through the plugin, then checks nothing (mount, loop device, nbdfuse, psk file) is left. */
async function teardown(r: Rig): Promise<void> {
  for (const [volumeId, stagingPath] of r.staged) {
    await r.c.node.NodeUnstageVolume!({ volume_id: volumeId, staging_target_path: stagingPath }).catch(() => undefined);
  }
  r.c.close();
  await r.plugin.kill();
  const leftMounts = mountsUnder(r.dir);
  const leftLoops = loopDevicesUnder(r.dir);
  const leftProcs = processesMentioning(r.dir).filter((pid) => {
    try { return !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cairn.pool'); } catch { return false; }
  });
  for (const m of leftMounts.reverse()) try { execFileSync('umount', ['-l', m]); } catch { /* best effort */ }
  for (const l of leftLoops) try { execFileSync('losetup', ['-d', l]); } catch { /* best effort */ }
  for (const pid of leftProcs) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  await r.daemon.stop();
  removeDir(r.dir);
  assert.deepEqual({ leftMounts, leftLoops, leftProcs }, { leftMounts: [], leftLoops: [], leftProcs: [] });
}

async function stage(r: Rig, volumeId: string, secrets: Record<string, string>): Promise<string> {
  const stagingPath = join(r.dir, 'staging', volumeId.replace('/', '~'));
  mkdirSync(stagingPath, { recursive: true });
  r.staged.set(volumeId, stagingPath);
  await r.c.node.NodeStageVolume!({ volume_id: volumeId, staging_target_path: stagingPath, volume_capability: ext4, secrets });
  return stagingPath;
}

test('node stage over TLS-PSK with the key from the stage secret', { timeout: 600_000, skip: notRoot }, async (t) => {
  const identity = 'csi-node';
  const keyHex = 'a1'.repeat(32);
  const r = await rig('cairn-csi-tls-', (dir) => {
    writeFileSync(join(dir, 'keys.psk'), `${identity}:${keyHex}\n`, { mode: 0o600 });
    return ['--nbd-tls-psk', join(dir, 'keys.psk'), '--nbd-tls-required'];
  });
  t.after(() => teardown(r));
  await r.c.controller.CreateVolume!({ name: 'vol-tls', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [ext4] });

  await t.test('a plain stage is refused by a TLS-only server and leaves nothing behind', async () => {
    const err = await stage(r, 'vol-tls', {}).then(() => null, (e: { code: number; details: string }) => e);
    assert.ok(err !== null && err.code !== status.OK, 'refused');
    r.staged.delete('vol-tls');
    assert.deepEqual(loopDevicesUnder(r.dir), []);
  });

  await t.test('a wrong key is PERMISSION_DENIED', async () => {
    const err = await expectCode(stage(r, 'vol-tls', { nbdPsk: `${identity}:${'b2'.repeat(32)}` }), status.PERMISSION_DENIED);
    r.staged.delete('vol-tls');
    assert.ok(!err.details.includes('b2b2b2'), 'the key is not in the message');
    assert.equal(existsSync(join(r.stateDir, 'psk', 'vol-tls')), false, 'the psk file of a failed stage is removed');
  });

  await t.test('the right key for a volume that does not exist is NOT_FOUND', async () => {
    await expectCode(stage(r, 'ghost', { nbdPsk: `${identity}:${keyHex}` }), status.NOT_FOUND);
    r.staged.delete('ghost');
    assert.deepEqual(loopDevicesUnder(r.dir), []);
  });

  await t.test('the right key stages, mounts and writes; unstage removes the key file', async () => {
    const stagingPath = await stage(r, 'vol-tls', { nbdPsk: `${identity}:${keyHex}` });
    writeFileSync(join(stagingPath, 'hello.txt'), 'over TLS\n');
    const pskFile = join(r.stateDir, 'psk', 'vol-tls', 'keys.psk');
    assert.equal(statSync(pskFile).mode & 0o777, 0o600);
    // Staged again (kubelet retries): the same staging, no second mount.
    await stage(r, 'vol-tls', { nbdPskIdentity: identity, nbdPskKey: keyHex });
    const state = readFileSync(join(r.stateDir, 'attachments.json'), 'utf8');
    assert.match(state, /nbds:\/\/csi-node@/);
    assert.ok(!state.includes(keyHex), 'no key in the state file');
    for (const pid of processesMentioning(r.dir)) {
      assert.ok(!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(keyHex), 'no key on a command line');
    }
    await r.c.node.NodeUnstageVolume!({ volume_id: 'vol-tls', staging_target_path: stagingPath });
    r.staged.delete('vol-tls');
    assert.equal(existsSync(pskFile), false);
    assert.ok(!r.plugin.logs().includes(keyHex) && !r.daemon.logs().includes(keyHex), 'no key in a log');
    // The bytes reached Cairn: stage once more and read the file back.
    const again = await stage(r, 'vol-tls', { nbdPsk: `${identity}:${keyHex}` });
    assert.equal(readFileSync(join(again, 'hello.txt'), 'utf8'), 'over TLS\n');
  });

  await t.test('a tenant volume without a key in the stage secret is INVALID_ARGUMENT', async () => {
    await expectCode(stage(r, 'acme/db', {}), status.INVALID_ARGUMENT);
    r.staged.delete('acme/db');
  });
});

test('node stage with tenant NBD keys: a tenant\'s key stages its own volumes only', { timeout: 600_000, skip: notRoot }, async (t) => {
  const r = await rig('cairn-csi-tenant-tls-', () => ['--nbd-tls', 'psk', '--nbd-tls-required']);
  t.after(() => teardown(r));
  const adminToken = readFileSync(join(r.dir, 'cairn.pool.admin-token'), 'utf8').trim();
  const admin = async (path: string, body: unknown): Promise<any> => {
    const res = await fetch(r.daemon.apiUrl + path, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    assert.ok(res.ok, `${path}: ${res.status}`);
    return res.json();
  };
  const keys: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  for (const tenant of ['acme', 'beta']) {
    await admin('/v1/tenants', { name: tenant });
    keys[tenant] = (await admin(`/v1/tenants/${tenant}/nbd-keys`, {})).psk as string;
    tokens[tenant] = (await admin('/v1/tokens', { role: 'tenant', tenant, name: `${tenant}-csi` })).token as string;
    await r.c.controller.CreateVolume!({
      name: 'db', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [ext4], secrets: { token: tokens[tenant]! },
    });
  }
  // beta's key would open beta's own db (the export name is the tenant's plain name): refused.
  await expectCode(stage(r, 'acme/db', { nbdPsk: keys.beta! }), status.PERMISSION_DENIED);
  r.staged.delete('acme/db');
  const stagingPath = await stage(r, 'acme/db', { nbdPsk: keys.acme! });
  writeFileSync(join(stagingPath, 'tenant.txt'), 'acme\n');
  assert.equal(readFileSync(join(stagingPath, 'tenant.txt'), 'utf8'), 'acme\n');
});
