// A tenant whose KEK file is gone when the daemon starts (issue 20): its encrypted volume is listed as
// locked, NBD I/O on it fails with EPERM (libnbd and qemu-io), a plain volume of the same tenant and
// the default tenant's go on working, `tenant show` gives the reason; the file back, the volume
// unlocks on its own (--kek-retry-ms) or with `cairn tenant unlock` (retry off), with its data intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, python, run, startServe, tempDir, type DaemonProcess, type RunResult } from './cli-helpers.js';
import { apiCall, encryptionJson, pollUntil, volumeJson, writeKekFile, type VolumeJson } from './encryption-e2e.js';

/** One read and one write at offset 0: each prints "ok" or the errno name libnbd reports. */
const probePy = `
import errno, sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
def attempt(f):
    try:
        f(); return 'ok'
    except nbd.Error as e:
        return (errno.errorcode.get(e.errno, str(e.errno)) if e.errno else 'none') + ' ' + (e.string or '')
print(attempt(lambda: h.pread(4096, 0)))
print(attempt(lambda: h.pwrite(b'x' * 4096, 0)))
h.shutdown()
`;

/** sha256 of a whole export (libnbd; the URI may name a local PSK file). */
const hashPy = `
import hashlib, sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
size = h.get_size(); d = hashlib.sha256(); off = 0
while off < size:
    n = min(4 << 20, size - off); d.update(h.pread(n, off)); off += n
print(d.hexdigest(), size)
h.shutdown()
`;

test('a tenant whose KEK is unavailable at start: locked, EPERM over NBD, others unaffected; unlocks when the KEK is back', { timeout: 300_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-enc-locked-');
  const pool = join(dir, 'cairn.pool');
  const keyPath = join(dir, 'acme.kek');
  const awayPath = join(dir, 'acme.kek.away');
  const kek = await writeKekFile(keyPath);
  const serveArgs = (retryMs: number): string[] => ['--pool-size', '256M', '--nbd-tls', 'psk', '--kek-retry-ms', String(retryMs)];
  let d = await startServe(t, pool, serveArgs(300));

  // Setup through the API; the encryption steps through the CLI.
  assert.equal((await apiCall(d.api, 'POST', '/v1/tenants', { name: 'acme' })).status, 201);
  for (const name of ['acme/scratch', 'pub']) assert.equal((await apiCall(d.api, 'POST', '/v1/volumes', { name, size: 8 * 1024 * 1024 })).status, 201);
  for (const args of [['tenant', 'set', 'acme', '--kek', kek], ['volume', 'create', 'acme/db', '--size', '8M', '--encrypt']]) {
    const r = await cairn(d.api, args);
    assert.equal(r.code, 0, `cairn ${args.join(' ')}: ${r.stderr}`);
  }
  const key = await cairnJson<{ identity: string; psk: string }>(d.api, ['tenant', 'nbd-key', 'create', 'acme']);
  // qemu's tls-creds-psk object reads DIR/keys.psk; libnbd takes the file in the URI.
  const pskDir = join(dir, 'psk');
  await mkdir(pskDir);
  const pskFile = join(pskDir, 'keys.psk');
  await writeFile(pskFile, `${key.psk}\n`);
  const acme = (daemon: DaemonProcess, name: string): Target => ({
    uri: `nbds://${key.identity}@localhost:${new URL(daemon.nbd).port}/${name}?tls-psk-file=${pskFile}`,
    qemu: ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${pskDir},username=${key.identity}`, '--image-opts',
      `driver=nbd,host=localhost,port=${new URL(daemon.nbd).port},export=${name},tls-creds=tls0`],
  });
  const pub = (daemon: DaemonProcess): Target => ({ uri: `${daemon.nbd}/pub`, qemu: [`${daemon.nbd}/pub`] });

  await writeAll(acme(d, 'db'), ['write -P 0x5e 0 2M', 'write -P 0xe5 6M 1M']);
  await writeAll(acme(d, 'scratch'), ['write -P 0x21 0 1M']);
  await writeAll(pub(d), ['write -P 0x42 1M 1M']);
  const dbHash = await exportHash(acme(d, 'db'));

  // The KEK file goes away; the daemon starts anyway, with acme's encrypted volume locked.
  assert.equal(await d.stop(), 0);
  await rename(keyPath, awayPath);
  d = await startServe(t, pool, serveArgs(300));
  const listed = await cairnJson<VolumeJson[]>(d.api, ['volume', 'list']);
  assert.deepEqual(listed.map((v) => [v.name, v.encrypted, v.locked]),
    [['acme/db', true, true], ['acme/scratch', false, false], ['pub', false, false]]);
  assert.match((await cairn(d.api, ['volume', 'list'])).stdout, /^acme\/db .* encrypted, locked /m);
  assert.match((await cairn(d.api, ['volume', 'show', 'acme/db'])).stdout, /^encryption:\s+encrypted, locked$/m);
  const shown = await cairn(d.api, ['tenant', 'show', 'acme']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^kek state:\s+unavailable \(.*acme\.kek.*\)$/m, 'the reason names the missing file');
  assert.match(shown.stdout, /^locked lineages:\s+1$/m);
  const state = await encryptionJson(d.api, 'acme');
  assert.equal(state.state, 'unavailable');
  assert.match(state.error ?? '', /acme\.kek/);

  // Over NBD: the export is listed and opens, but reads and writes fail with EPERM.
  const probe = await python(probePy, [acme(d, 'db').uri]);
  assert.equal(probe.code, 0, probe.stderr);
  assert.deepEqual(probe.stdout.trim().split('\n').map((l) => l.split(' ')[0]), ['EPERM', 'EPERM'], probe.stdout);
  const io = await qemu(acme(d, 'db'), ['read 0 4k']);
  assert.match(`${io.stdout}${io.stderr}`, /Operation not permitted/);
  // Plain volumes, the tenant's own and the default tenant's, work.
  await readAll(acme(d, 'scratch'), ['read -P 0x21 0 1M']);
  await readAll(pub(d), ['read -P 0x42 1M 1M']);
  await writeAll(pub(d), ['write -P 0x43 3M 4k']);

  // The file back: the retry unlocks the volume without any command.
  await rename(awayPath, keyPath);
  await pollUntil('acme/db to unlock on its own', async () => ((await volumeJson(d.api, 'acme/db')).locked ? undefined : true));
  assert.equal(await exportHash(acme(d, 'db')), dbHash, 'the data is intact');
  const back = await encryptionJson(d.api, 'acme');
  assert.deepEqual([back.state, back.error, back.lockedLineages], ['available', null, 0]);
  await readAll(acme(d, 'db'), ['read -P 0x5e 0 2M', 'read -P 0xe5 6M 1M']);

  // Retry off: `cairn tenant unlock` exits 1 while the KEK is away, 0 once it is back.
  assert.equal(await d.stop(), 0);
  await rename(keyPath, awayPath);
  d = await startServe(t, pool, serveArgs(0));
  assert.equal((await volumeJson(d.api, 'acme/db')).locked, true);
  const still = await cairn(d.api, ['tenant', 'unlock', 'acme']);
  assert.equal(still.code, 1, `${still.stdout}${still.stderr}`);
  assert.match(still.stdout, /^locked lineages:\s+1$/m);
  await rename(awayPath, keyPath);
  assert.equal((await volumeJson(d.api, 'acme/db')).locked, true, 'no retry: still locked until asked');
  const unlocked = await cairn(d.api, ['tenant', 'unlock', 'acme']);
  assert.equal(unlocked.code, 0, `${unlocked.stdout}${unlocked.stderr}`);
  assert.match(unlocked.stdout, /^kek state:\s+available$/m);
  assert.match(unlocked.stdout, /^locked lineages:\s+0$/m);
  assert.equal((await volumeJson(d.api, 'acme/db')).locked, false);
  assert.equal(await exportHash(acme(d, 'db')), dbHash, 'the data is intact after tenant unlock');
  await readAll(pub(d), ['read -P 0x42 1M 1M', 'read -P 0x43 3M 4k']);
  assert.equal(await d.stop(), 0);
});

/** An export as libnbd (a URI) and qemu-io (its arguments, the image last) reach it. */
interface Target { uri: string; qemu: string[] }

function qemu(target: Target, commands: string[]): Promise<RunResult> {
  return run('qemu-io', [...commands.flatMap((c) => ['-c', c]), ...target.qemu]);
}

async function writeAll(target: Target, commands: string[]): Promise<void> {
  const r = await qemu(target, commands);
  assert.equal(r.code, 0, `${commands.join('; ')}: ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /failed|error/i, r.stdout);
}

async function readAll(target: Target, commands: string[]): Promise<void> {
  const r = await qemu(target, commands);
  assert.equal(r.code, 0, `${commands.join('; ')}: ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /Pattern verification failed|failed|error/i, r.stdout);
}

async function exportHash(target: Target): Promise<string> {
  const r = await python(hashPy, [target.uri]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}
