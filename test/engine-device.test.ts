// A pool on a raw block device (a loop device over a file), as production on a disk would use it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, openPoolFile, checkPoolFile, IoError } from '../src/engine/index.js';

const isRoot = process.getuid?.() === 0;

test('a pool on a raw block device survives reopen and checks clean', { skip: isRoot ? false : 'needs root for losetup' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-dev-'));
  const backing = join(dir, 'disk');
  writeFileSync(backing, '');
  truncateSync(backing, 64 * 1024 * 1024);
  const loop = execFileSync('losetup', ['-f', '--show', backing]).toString().trim();
  t.after(() => { execFileSync('losetup', ['-d', loop]); rmSync(dir, { recursive: true, force: true }); });
  const engine = await createPoolFile(loop, 0, { commitIntervalMs: 0 });
  assert.equal(engine.stats().sizeBytes, 64 * 1024 * 1024, 'the whole device is the pool');
  await engine.createVolume('v', 16 * 1024 * 1024);
  await engine.write(engine.resolve('v').id, 8192, Buffer.alloc(4096, 0x5a), { fua: true });
  await engine.close();
  const again = await openPoolFile(loop);
  assert.deepEqual(await again.read(again.resolve('v').id, 8192, 4096), Buffer.alloc(4096, 0x5a));
  await again.close();
  assert.equal((await checkPoolFile(loop)).ok, true);
});

test('a pool file preallocated in full has every byte on disk; a sparse one does not; both serve and check clean', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-prealloc-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const size = 48 * 1024 * 1024;
  for (const preallocate of ['full', 'off'] as const) {
    const path = join(dir, `pool-${preallocate}`);
    const engine = await createPoolFile(path, size, { preallocate, commitIntervalMs: 0 });
    const onDisk = statSync(path).blocks * 512;
    if (preallocate === 'full') assert.ok(onDisk >= size, `preallocated: ${onDisk} bytes on disk of ${size}`);
    else assert.ok(onDisk < size / 2, `sparse: ${onDisk} bytes on disk of ${size}`);
    await engine.createVolume('v', 16 * 1024 * 1024);
    await engine.write(engine.resolve('v').id, 1 << 20, Buffer.alloc(65536, 0x6b), { fua: true });
    await engine.close();
    const again = await openPoolFile(path);
    assert.deepEqual(await again.read(again.resolve('v').id, 1 << 20, 65536), Buffer.alloc(65536, 0x6b));
    assert.deepEqual(await again.read(again.resolve('v').id, 0, 65536), Buffer.alloc(65536), 'unwritten blocks read as zeros');
    await again.close();
    assert.equal((await checkPoolFile(path)).ok, true);
  }
});

test('preallocating on a filesystem without the space fails clearly and leaves no file behind', { skip: isRoot ? false : 'needs root to mount a small tmpfs' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-prealloc-full-'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
  t.after(() => { execFileSync('umount', [mnt]); rmSync(dir, { recursive: true, force: true }); });
  const path = join(mnt, 'pool');
  await assert.rejects(createPoolFile(path, 32 * 1024 * 1024, { preallocate: 'full' }),
    (e: unknown) => e instanceof IoError && /cannot lay down the pool file .*preallocated.*ENOSPC/.test(e.message));
  assert.equal(existsSync(path), false, 'no pool file was left');
  assert.equal(existsSync(`${path}.preallocating`), false, 'the half-written file was removed');
  // The same size sparse fits (only what is written takes space).
  const engine = await createPoolFile(path, 32 * 1024 * 1024, { commitIntervalMs: 0 });
  await engine.close();
});

test('a preallocated pool is laid down under a temporary name: a stale one from a killed run is replaced, and an existing pool is never overwritten', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-prealloc-tmp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'pool');
  writeFileSync(`${path}.preallocating`, 'left by a process killed while preallocating');
  const engine = await createPoolFile(path, 16 * 1024 * 1024, { preallocate: 'full', commitIntervalMs: 0 });
  assert.equal(existsSync(`${path}.preallocating`), false);
  await engine.createVolume('v', 4 * 1024 * 1024);
  await engine.write(engine.resolve('v').id, 0, Buffer.alloc(4096, 0x21), { fua: true });
  await engine.close();
  await assert.rejects(createPoolFile(path, 16 * 1024 * 1024, { preallocate: 'full' }), /EEXIST/);
  assert.equal(existsSync(`${path}.preallocating`), false, 'the refused attempt cleaned up after itself');
  const again = await openPoolFile(path);
  assert.deepEqual(await again.read(again.resolve('v').id, 0, 4096), Buffer.alloc(4096, 0x21), 'the existing pool is untouched');
  await again.close();
});

test('a durable write reaches the open pool file even after its path names another file', async (t) => {
  const { FileDevice } = await import('../src/engine/device/file-device.js');
  const { readFileSync, renameSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), 'cairn-dsync-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'pool'), moved = join(dir, 'moved');
  const device = await FileDevice.create(path, 16);
  renameSync(path, moved);
  writeFileSync(path, Buffer.alloc(16 * 4096, 0x11)); // a stranger now holds the name
  const before = device.ioCounts();
  await device.writeDurable(3, Buffer.alloc(2 * 4096, 0x5a));
  await device.writeDurable(3, Buffer.alloc(4096, 0x6b)); // written over, through the same descriptor
  const after = device.ioCounts();
  assert.equal(after.inlineWrites + after.pooledWrites - before.inlineWrites - before.pooledWrites, 2, 'counted');
  await device.close();
  const pool = readFileSync(moved);
  assert.deepEqual(pool.subarray(3 * 4096, 4 * 4096), Buffer.alloc(4096, 0x6b));
  assert.deepEqual(pool.subarray(4 * 4096, 5 * 4096), Buffer.alloc(4096, 0x5a));
  assert.deepEqual(readFileSync(path), Buffer.alloc(16 * 4096, 0x11), 'the file now at the path is untouched');
});
