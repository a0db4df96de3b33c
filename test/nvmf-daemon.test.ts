// NVMe/TCP in the real daemon (`cairn serve --nvmf`): the same volume served over NVMe/TCP and NBD at
// once shows the same bytes both ways (qemu-io as the NBD client); a tenant refuses a host until the
// API adds it to the allow-list; SIGTERM with a controller connected shuts down cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { assertBuilt, authHeaders, cairn, qemuIo, startServe, tempDir, type DaemonProcess } from './cli-helpers.js';
import { NvmfSession, ioSqe, SC, HOST_NQN } from './nvmf-client.js';
import { ConfigError, loadConfig } from '../src/daemon/config.js';

const MiB = 1024 * 1024;
const LBA = 4096;
const NQN_BASE = 'nqn.2026-12.io.cairn';

function nvmfPorts(d: DaemonProcess): { port: number; discoveryPort: number } {
  for (const line of d.logs) {
    const ev = JSON.parse(line) as { event?: string; nvmf?: { port: number; discoveryPort: number } };
    if (ev.event === 'ready' && ev.nvmf) return ev.nvmf;
  }
  throw new Error('no nvmf ports in the ready line');
}

test('one volume over NVMe/TCP and NBD at once; tenant allow-list; graceful stop', async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-nvmf-');
  const d = await startServe(t, join(dir, 'pool.cairn'), ['--pool-size', '1G', '--nvmf', '127.0.0.1:0', '--nvmf-discovery', '127.0.0.1:0']);
  const { port } = nvmfPorts(d);
  assert.ok(d.logs.some((l) => l.includes('"nvmf_listening"')));
  assert.equal((await cairn(d.api, ['volume', 'create', 'vol', '--size', '16M'])).code, 0);

  const s = await NvmfSession.open(port, `${NQN_BASE}:default`, { ioQueues: 2, headerDigest: true, dataDigest: true });
  t.after(() => s.close());
  const list = await s.identify(0x02);
  const nsid = list.data.readUInt32LE(0);
  assert.ok(nsid > 0);
  // NBD writes, NVMe/TCP reads.
  await qemuIo(`${d.nbd}/vol`, 'write -P 0xab 0 1M');
  const read = await s.io[0]!.command(ioSqe(0x02, nsid, 0, MiB / LBA), { readBytes: MiB });
  assert.equal(read.status, 0);
  assert.deepEqual(read.data, Buffer.alloc(MiB, 0xab));
  // NVMe/TCP writes (by R2T, FUA), NBD reads.
  const w = await s.io[1]!.command(ioSqe(0x01, nsid, MiB / LBA, 256 * 1024 / LBA, 1 << 30), { data: Buffer.alloc(256 * 1024, 0xcd) });
  assert.equal(w.status, 0);
  await qemuIo(`${d.nbd}/vol`, 'read -P 0xcd 1M 256k');
  await qemuIo(`${d.nbd}/vol`, 'read -P 0xab 0 1M');

  const metrics = await (await fetch(`${d.api}/metrics`, { headers: authHeaders(d.api) })).text();
  assert.match(metrics, /^cairn_nvmf_controllers 1$/m);
  assert.match(metrics, /^cairn_nvmf_connections 3$/m);

  // A tenant other than default admits no host until one is added.
  assert.equal((await cairn(d.api, ['tenant', 'create', 'acme'])).code, 0);
  await assert.rejects(NvmfSession.open(port, `${NQN_BASE}:acme`), (err: Error & { completion?: { status: number } }) => SC(err.completion!.status) === 0x84);
  const added = await fetch(`${d.api}/v1/tenants/acme/nvme-hosts`, {
    method: 'POST', headers: { ...authHeaders(d.api), 'content-type': 'application/json' }, body: JSON.stringify({ nqn: HOST_NQN }),
  });
  assert.ok(added.ok, `add host: ${added.status} ${await added.text()}`);
  const acme = await NvmfSession.open(port, `${NQN_BASE}:acme`);
  acme.close();

  // SIGTERM with a controller connected: a clean exit.
  assert.equal(await d.stop(), 0);
  await s.admin.closed;
});

test('NVMe/TCP settings: flags, environment and their checks', () => {
  const none = loadConfig({}, {}, undefined);
  assert.equal(none.nvmf, null, 'off unless asked for');
  assert.equal(none.nvmfDiscovery, 'auto');
  const cfg = loadConfig({ nvmf: '0.0.0.0:4420', nvmfDiscovery: 'off', nvmfAdvertise: '[fd00::1]:14420', nvmfInCapsuleBytes: '16k' },
    { CAIRN_NVMF_NQN_BASE: 'nqn.2030-01.com.example:storage' }, undefined);
  assert.deepEqual(cfg.nvmf, { host: '0.0.0.0', port: 4420 });
  assert.equal(cfg.nvmfDiscovery, null);
  assert.deepEqual(cfg.nvmfAdvertise, { host: 'fd00::1', port: 14420 });
  assert.equal(cfg.nvmfInCapsuleBytes, 16384);
  assert.equal(cfg.nvmfNqnBase, 'nqn.2030-01.com.example:storage');
  assert.deepEqual(loadConfig({ nvmfAdvertise: 'nvme.example.com' }, {}, undefined).nvmfAdvertise, { host: 'nvme.example.com', port: null });
  assert.throws(() => loadConfig({ nvmfNqnBase: 'not-an-nqn' }, {}, undefined), ConfigError);
  assert.throws(() => loadConfig({ nvmfInCapsuleBytes: '1000' }, {}, undefined), ConfigError);
  assert.throws(() => loadConfig({ nvmfAdvertise: 'host:99999' }, {}, undefined), ConfigError);
});
