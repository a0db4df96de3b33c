// Runs inside the qemu guest (guest/nbd.sh), chrooted into the host's root shared read-only over 9p:
// the CSI plugin (this tree's dist/, node and the host's tools, as in the plugin's image) attaches a
// Cairn volume with the kernel NBD client, for the first time on a real kernel. CreateVolume through
// the controller, NodeStageVolume (nbd-client, mkfs.ext4, mount), NodePublishVolume (bind mount), a
// file through the mount, unpublish, unstage (the NBD device is released), DeleteVolume. Prints
// CAIRN-RESULT lines for the host; env: CSI_API (http://10.0.2.2:PORT), CSI_NBD (10.0.2.2:PORT), CSI_TOKEN.
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { csiClients, startPlugin, type CsiClients, type Plugin } from '../csi-harness.js';

const MiB = 1 << 20;
const dir = '/run/csi'; // the guest's tmpfs (the host's root, and so its /tmp, is read-only here)
const ext4 = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
let failed = 0;

async function check(name: string, fn: () => Promise<unknown> | unknown): Promise<boolean> {
  try {
    await fn();
    console.log(`CAIRN-RESULT ${name} PASS`);
    return true;
  } catch (e) {
    failed++;
    console.log(`CAIRN-RESULT ${name} FAIL ${String((e as Error).message ?? e).replaceAll('\n', ' ').slice(0, 300)}`);
    return false;
  }
}

/** The /dev/nbdN devices the kernel has connected (a pid file exists while a client holds one). */
const connectedNbds = (): string[] => readdirSync('/sys/block').filter((n) => /^nbd\d+$/.test(n) && existsSync(`/sys/block/${n}/pid`));
const mounted = (path: string): boolean => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);

async function main(): Promise<void> {
  mkdirSync(dir, { recursive: true });
  // startPlugin hands the plugin this file as its API token (the daemon's admin token, from the host).
  writeFileSync(join(dir, 'cairn.pool.admin-token'), `${process.env.CSI_TOKEN}\n`);
  let plugin: Plugin | null = null;
  let c: CsiClients | null = null;
  if (!await check('csi-plugin-start', async () => {
    plugin = await startPlugin({ dir, api: process.env.CSI_API!, nbd: process.env.CSI_NBD!, mode: 'all', stateDir: join(dir, 'state') });
    c = csiClients(plugin.socketPath);
  })) return;
  const client = c!;
  let volumeId = '';
  const staging = join(dir, 'staging');
  const target = join(dir, 'pods', 'p1', 'mount');
  mkdirSync(staging, { recursive: true });
  mkdirSync(join(dir, 'pods', 'p1'), { recursive: true });
  const before = connectedNbds();
  await check('csi-create', async () => {
    const res = await client.controller.CreateVolume!({ name: 'pvc-vm', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [ext4] });
    volumeId = res.volume.volume_id as string;
  });
  const staged = await check('csi-stage-kernel-nbd', async () => {
    await client.node.NodeStageVolume!({ volume_id: volumeId, staging_target_path: staging, volume_capability: ext4 });
    const now = connectedNbds().filter((n) => !before.includes(n));
    if (now.length !== 1) throw new Error(`expected one newly connected /dev/nbdN, found ${now.join(',') || 'none'}`);
    if (!mounted(staging)) throw new Error('staging path not mounted');
  });
  if (staged) {
    await check('csi-publish', () => client.node.NodePublishVolume!({ volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: ext4 }));
    await check('csi-file', () => {
      writeFileSync(join(target, 'hello.txt'), 'written through the CSI mount\n');
      if (readFileSync(join(staging, 'hello.txt'), 'utf8') !== 'written through the CSI mount\n') throw new Error('the bind mount shows other data');
    });
    await check('csi-unpublish', async () => {
      await client.node.NodeUnpublishVolume!({ volume_id: volumeId, target_path: target });
      if (mounted(target)) throw new Error('target still mounted');
    });
    await check('csi-unstage', async () => {
      await client.node.NodeUnstageVolume!({ volume_id: volumeId, staging_target_path: staging });
      if (mounted(staging)) throw new Error('staging still mounted');
      const left = connectedNbds().filter((n) => !before.includes(n));
      if (left.length !== 0) throw new Error(`still connected: ${left.join(',')}`);
    });
  }
  if (volumeId !== '') await check('csi-delete', () => client.controller.DeleteVolume!({ volume_id: volumeId }));
  client.close();
  await (plugin as Plugin | null)?.kill();
}

await main().catch((e: unknown) => { failed++; console.log(`CAIRN-RESULT csi-guest FAIL ${String(e)}`); });
process.exit(failed === 0 ? 0 : 1);
