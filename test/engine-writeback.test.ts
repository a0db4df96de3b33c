// Early write-back (native/writeback.c through FileDevice): every WRITEBACK_START_BYTES written, the
// file device asks the kernel to start writing dirty pages back, one request at a time and never
// awaited by a write. Its effect (short commit fdatasyncs) is measured by `npm run bench`, not here;
// here: the call is built, it reports bad descriptors, the device makes it at the right pace, and
// data and close are unaffected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileDevice, WRITEBACK_START_BYTES } from '../src/engine/device/file-device.js';

type StartWriteback = (fd: number) => Promise<void>;
const startWriteback = (createRequire(import.meta.url)('../native/cairn-native.node') as { startWriteback?: StartWriteback }).startWriteback;
const BLOCK = 4096;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-wb-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('startWriteback is built on Linux, resolves for a file and rejects a bad descriptor', async (t) => {
  assert.ok(startWriteback, 'dist/native/cairn-native.node exports startWriteback');
  const fd = openSync(join(tempDir(t), 'f'), 'w');
  await startWriteback(fd);
  closeSync(fd);
  await assert.rejects(startWriteback(fd), /Bad file descriptor/);
  assert.throws(() => startWriteback(-1), RangeError);
  assert.throws(() => (startWriteback as unknown as (x: string) => Promise<void>)('3'), RangeError);
});

test('the file device starts write-back per WRITEBACK_START_BYTES written, and data reads back', async (t) => {
  const device = await FileDevice.create(join(tempDir(t), 'pool'), 4 * WRITEBACK_START_BYTES / BLOCK);
  const chunk = randomBytes(1024 * 1024);
  const chunks = (3 * WRITEBACK_START_BYTES) / chunk.length;
  for (let i = 0; i < WRITEBACK_START_BYTES / chunk.length - 1; i++) await device.write(i * chunk.length / BLOCK, chunk);
  assert.equal(device.writebackStarts, 0, 'nothing started below the threshold');
  for (let i = WRITEBACK_START_BYTES / chunk.length - 1; i < chunks; i++) {
    if (i % 2 === 0) await device.write(i * chunk.length / BLOCK, chunk);
    else await device.writev(i * chunk.length / BLOCK, [chunk.subarray(0, BLOCK), chunk.subarray(BLOCK)]);
  }
  // One request runs at a time, so a fast writer may pass a threshold while one is in flight.
  assert.ok(device.writebackStarts >= 1 && device.writebackStarts <= 3, `1 to 3 starts for 3 thresholds, got ${device.writebackStarts}`);
  const back = Buffer.alloc(chunk.length);
  for (const i of [0, chunks - 2, chunks - 1]) {
    await device.read(i * chunk.length / BLOCK, back);
    assert.ok(back.equals(chunk), `chunk ${i} reads back`);
  }
  await device.flush();
  await device.close(); // waits for a start still in flight: it holds the descriptor's number
});
