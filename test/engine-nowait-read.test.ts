// Reads from the page cache only (native/nowait-read.c through FileDevice): small reads run on the
// event loop when the data is cached and go to the thread pool when it is not, without timing the
// read (a preempted cached read is still cached). The counts of where reads and writes ran are in
// engine.stats().deviceIo. Their effect on speed is measured by `npm run bench`, not here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileDevice } from '../src/engine/device/file-device.js';
import { INLINE_IO_BYTES_MAX } from '../src/engine/device/inline-io.js';
import { createPoolFile } from '../src/engine/index.js';

type PreadNowait = (fd: number, into: Buffer, position: number) => number;
const preadNowait = (createRequire(import.meta.url)('../native/cairn-native.node') as { preadNowait?: PreadNowait }).preadNowait;
const BLOCK = 4096;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-nowait-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('preadNowait is built on Linux: reads cached bytes, 0 at the end, refuses bad arguments', (t) => {
  assert.ok(preadNowait, 'dist/native/cairn-native.node exports preadNowait');
  const file = join(tempDir(t), 'f');
  const data = randomBytes(3 * BLOCK);
  writeFileSync(file, data); // just written: in the page cache
  const fd = openSync(file, 'r');
  try {
    const into = Buffer.alloc(BLOCK);
    assert.equal(preadNowait(fd, into, BLOCK), BLOCK);
    assert.ok(into.equals(data.subarray(BLOCK, 2 * BLOCK)));
    assert.equal(preadNowait(fd, into, 3 * BLOCK), 0, 'at the end of the file');
    assert.throws(() => preadNowait(-1, into, 0), RangeError);
    assert.throws(() => preadNowait(fd, into, -1), RangeError);
    assert.throws(() => (preadNowait as unknown as (a: number, b: string, c: number) => number)(fd, 'x', 0), RangeError);
  } finally {
    closeSync(fd);
  }
  assert.throws(() => preadNowait(fd, Buffer.alloc(BLOCK), 0), /Bad file descriptor/);
});

test('the file device reads cached blocks inline and counts where its reads and writes ran', async (t) => {
  const device = await FileDevice.create(join(tempDir(t), 'pool'), 1024);
  const data = randomBytes(2 * INLINE_IO_BYTES_MAX);
  await device.write(0, data); // over the inline bound: through the thread pool
  await device.write(600, data.subarray(0, BLOCK)); // inline
  const before = device.ioCounts();
  assert.equal(before.pooledWrites, 1);
  assert.equal(before.inlineWrites, 1);
  const small = Buffer.alloc(BLOCK);
  assert.equal(device.readIfCheap(1, small), true, 'a cached block is read on the spot');
  assert.ok(small.equals(data.subarray(BLOCK, 2 * BLOCK)));
  await device.read(600, small);
  assert.ok(small.equals(data.subarray(0, BLOCK)));
  const large = Buffer.alloc(data.length);
  assert.equal(device.readIfCheap(0, large), false, 'over the inline bound: not on the event loop');
  await device.read(0, large);
  assert.ok(large.equals(data));
  const after = device.ioCounts();
  assert.equal(after.inlineReads - before.inlineReads, 2);
  assert.equal(after.pooledReads - before.pooledReads, 1);
  assert.equal(after.slowInlineReads, 0);
  await device.close();
});

test('engine.stats() reports the device\'s I/O counts', async (t) => {
  const engine = await createPoolFile(join(tempDir(t), 'pool.cairn'), 64 * 1024 * 1024);
  try {
    const id = (await engine.createVolume('v', 1024 * 1024)).id;
    const start = engine.stats().deviceIo;
    assert.ok(start, 'a file pool counts its device I/O');
    const data = randomBytes(BLOCK);
    await engine.write(id, 0, data);
    await engine.flush(); // a lone write is held until then, and goes to the log
    assert.ok((await engine.read(id, 0, BLOCK)).equals(data));
    const io = engine.stats().deviceIo!;
    assert.ok(io.inlineWrites + io.pooledWrites > start.inlineWrites + start.pooledWrites, 'the write is counted');
    assert.ok(io.inlineReads + io.pooledReads > start.inlineReads + start.pooledReads, 'the read is counted');
  } finally {
    await engine.close();
  }
});
