// Real NBD clients against Cairn: qemu-io patterns, qemu-img convert + compare, nbdcopy, nbdinfo
// --list and --map on a sparse volume, fio's nbd engine with crc32c verification (4 KiB, and 4 KiB to
// 1 MiB at QD 32), the unix socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFile, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { startFixture, runOk, run, parseMap, defer, MiB } from './nbd-harness.js';

test('qemu-io writes patterns and reads them back, unaligned too', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('vol', 64 * MiB);
  const out = await runOk('qemu-io', ['-f', 'raw',
    '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 5000 3000', '-c', 'write -P 0x11 60M 4M',
    '-c', 'flush', '-c', 'read -P 0xab 0 5000', '-c', 'read -P 0xcd 5000 3000', '-c', 'read -P 0xab 8000 1040576',
    '-c', 'read -P 0x11 60M 4M', '-c', 'read -P 0 1M 59M', f.uri('vol')]);
  assert.doesNotMatch(out, /Pattern verification failed|error/i);
  assert.equal((out.match(/^read /gm) ?? []).length, 5);
  // A mismatching pattern must be detected (the check can fail).
  const bad = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0xee 0 4k', f.uri('vol')]);
  assert.match(bad.stdout + bad.stderr, /Pattern verification failed/);
});

test('qemu-img convert copies a volume out and back; compare finds them equal', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('src', 32 * MiB);
  await f.engine.createVolume('dst', 32 * MiB);
  const image = path.join(f.dir, 'image.raw');
  // Half random data, half holes.
  await writeFile(image, Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(8 * MiB), randomBytes(1 * MiB), Buffer.alloc(15 * MiB)]));
  await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', image, f.uri('src')]);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', image, f.uri('src')]);
  const copy = path.join(f.dir, 'copy.raw');
  await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', f.uri('src'), copy]);
  assert.deepEqual(await readFile(copy), await readFile(image));
  await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', copy, f.uri('dst')]);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.uri('src'), f.uri('dst')]);
  // compare must notice a difference.
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 20M 4k', f.uri('dst')]);
  const differ = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.uri('src'), f.uri('dst')]);
  assert.equal(differ.code, 1, differ.stdout + differ.stderr);
});

test('nbdcopy copies to and from exports', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('a', 16 * MiB);
  await f.engine.createVolume('b', 16 * MiB);
  const image = path.join(f.dir, 'in.raw');
  const data = Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(10 * MiB), randomBytes(3 * MiB)]);
  await writeFile(image, data);
  await runOk('nbdcopy', [image, f.uri('a')]);
  await runOk('nbdcopy', [f.uri('a'), f.uri('b')]);
  const out = path.join(f.dir, 'out.raw');
  await runOk('nbdcopy', [f.uri('b'), out]);
  assert.ok((await readFile(out)).equals(data), 'data survives file -> a -> b -> file');
});

test('nbdinfo lists exports and maps holes of a sparse volume', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('sparse', 16 * MiB);
  await f.engine.createVolume('other', 4 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 1M 1M', '-c', 'write -P 2 8M 64k', f.uri('sparse')]);
  await f.engine.createSnapshots(['sparse@s1']);
  const list = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${f.server.port}`]);
  const names = (JSON.parse(list) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']).sort();
  assert.deepEqual(names, ['other', 'sparse', 'sparse@s1']);
  const map = parseMap(await runOk('nbdinfo', ['--map', f.uri('sparse')]));
  assert.deepEqual(map, [
    [0, 1 * MiB, 3], [1 * MiB, 1 * MiB, 0], [2 * MiB, 6 * MiB, 3], [8 * MiB, 64 * 1024, 0], [8 * MiB + 64 * 1024, 8 * MiB - 64 * 1024, 3],
  ]);
  const info = JSON.parse(await runOk('nbdinfo', ['--json', f.uri('sparse@s1')])) as { exports: Record<string, unknown>[] };
  assert.equal(info.exports[0]!['is_read_only'], true);
  assert.equal(info.exports[0]!['export-size'], 16 * MiB);
});

test('fio nbd engine: random writes verified with crc32c', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('fio', 64 * MiB);
  const out = await runOk('fio', ['--name=verify', '--ioengine=nbd', `--uri=${f.uri('fio')}`, '--rw=randwrite', '--bs=4k',
    '--size=32M', '--iodepth=16', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'], { timeoutMs: 90_000 });
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number } }[] }).jobs[0]!;
  assert.equal(job.error, 0);
  assert.equal(job.write.io_bytes, 32 * MiB);
});

test('fio nbd engine: 4 KiB to 1 MiB writes at QD 32, read back and verified (gather-list writes, pooled read buffers)', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('fio-mixed', 128 * MiB);
  const out = await runOk('fio', ['--name=verify-mixed', '--ioengine=nbd', `--uri=${f.uri('fio-mixed')}`, '--rw=randwrite',
    '--bsrange=4k-1m', '--size=96M', '--iodepth=32', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
    '--verify_state_save=0', '--output-format=json'], { timeoutMs: 120_000 });
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs[0]!;
  assert.equal(job.error, 0);
  assert.equal(job.write.io_bytes, 96 * MiB);
  assert.ok(job.read.io_bytes > 0, 'the verify phase read the data back');
});

test('unix socket export works with nbd+unix URIs', async (t) => {
  const dirFixture = await startFixture(t);
  const socketPath = path.join(dirFixture.dir, 'nbd.sock');
  const { startNbdServer } = await import('../src/nbd/server.js');
  const server = await startNbdServer(dirFixture.engine, { socketPath });
  defer(t, () => server.close());
  assert.equal(server.port, null);
  await dirFixture.engine.createVolume('u', 8 * MiB);
  const uri = `nbd+unix:///u?socket=${socketPath}`;
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', '-c', 'read -P 0x42 0 64k', uri]);
  const size = await runOk('nbdinfo', ['--size', uri]);
  assert.equal(size.trim(), String(8 * MiB));
});
