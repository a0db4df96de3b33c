// Reads of a volume whose blocks lie scattered (written in a shuffled order, as random overwrites leave
// them): one request's many physical runs are read from the page cache in one device call
// (readRunsIfCheap, native preadRunsNowait), checked with one checksum pass, decrypted run by run.
// Through the engine's public interface on a real pool file: the data, a flipped bit found, held data
// seen over stale home blocks, an encrypted volume's plaintext; with the io_uring and without it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CairnError, openPoolFile } from '../src/engine/index.js';
import { FileDevice } from '../src/engine/device/file-device.js';
import { nativeAddon } from '../src/engine/native.js';
import { IO_BYTES_MAX } from '../src/engine/constants.js';
import type { Engine } from '../src/engine/types.js';
import { MiB, pattern, tempPool } from './engine-helpers.js';

const K4 = 4096;
const BLOCKS = 512; // 2 MiB volume

/** A permutation of 0..n-1 from a fixed seed: every block of the volume written once, scattered on disk. */
function shuffled(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let x = seed;
  for (let i = n - 1; i > 0; i--) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const j = x % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** Writes block i of the volume as pattern(1000 + i) in a shuffled order, one write at a time. */
async function writeScattered(engine: Engine, id: number): Promise<Buffer> {
  const expected = Buffer.alloc(BLOCKS * K4);
  for (const i of shuffled(BLOCKS, 7)) {
    const block = pattern(1000 + i, K4);
    block.copy(expected, i * K4);
    await engine.write(id, i * K4, block);
  }
  return expected;
}

/** Counts the runs FileDevice was asked to read in batches while `body` runs. */
async function countBatchedRuns(body: () => Promise<void>): Promise<number> {
  const original = FileDevice.prototype.readRunsIfCheap;
  let runs = 0;
  FileDevice.prototype.readRunsIfCheap = function (this: FileDevice, plan: Float64Array, count: number, into: Buffer): number {
    const read = original.call(this, plan, count, into);
    runs += read;
    return read;
  };
  try {
    await body();
  } finally {
    FileDevice.prototype.readRunsIfCheap = original;
  }
  return runs;
}

const batchedReadsBuilt = nativeAddon.preadRunsNowait !== undefined;

test('a read of scattered blocks returns every block, and its runs were read in batches', async () => {
  const pool = await tempPool(64 * MiB);
  try {
    const v = await pool.engine.createVolume('v', BLOCKS * K4);
    const expected = await writeScattered(pool.engine, v.id);
    await pool.engine.flush();
    let got: Buffer | null = null;
    const runs = await countBatchedRuns(async () => { got = await pool.engine.read(v.id, 0, BLOCKS * K4); });
    assert.ok(got !== null && expected.equals(got), 'the 2 MiB read matches what was written');
    // Odd ranges: partial first and last blocks, a range inside one block, one ending at the volume's end.
    for (const [off, len] of [[100, 3 * K4], [K4 * 7 + 9, 200 * K4 + 33], [5, 17], [BLOCKS * K4 - 70 * K4 - 1, 70 * K4 + 1]] as const) {
      assert.ok((await pool.engine.read(v.id, off, len)).equals(expected.subarray(off, off + len)), `read at ${off}+${len}`);
    }
    if (batchedReadsBuilt) assert.ok(runs > BLOCKS / 4, `most runs read in batches (${runs})`);
  } finally {
    await pool.cleanup();
  }
});

test('the longest read there is, at an unaligned offset, over scattered blocks (one block more than IO_BYTES_MAX)', async () => {
  const pool = await tempPool(128 * MiB);
  try {
    const size = IO_BYTES_MAX + 2 * K4;
    const v = await pool.engine.createVolume('big', size);
    const expected = pattern(77, size);
    for (let at = 0; at < size; at += 4 * MiB) await pool.engine.write(v.id, at, expected.subarray(at, Math.min(size, at + 4 * MiB)));
    // Every 16th block rewritten alone: ~2,000 runs, the first and the last block of the read among them.
    for (let b = 0; b < size / K4; b += 16) {
      const block = pattern(9000 + b, K4);
      block.copy(expected, b * K4);
      await pool.engine.write(v.id, b * K4, block);
    }
    await pool.engine.flush();
    const got = await pool.engine.read(v.id, 100, IO_BYTES_MAX);
    assert.ok(got.equals(expected.subarray(100, 100 + IO_BYTES_MAX)), 'the 32 MiB read at offset 100 matches');
  } finally {
    await pool.cleanup();
  }
});

test('a flipped bit in one scattered block fails the read that covers it, and only that read', async () => {
  const pool = await tempPool(64 * MiB);
  const v = await pool.engine.createVolume('v', BLOCKS * K4);
  const expected = await writeScattered(pool.engine, v.id);
  await pool.engine.close();
  const file = readFileSync(pool.path);
  const victim = 300;
  const at = file.indexOf(pattern(1000 + victim, K4));
  assert.ok(at > 0 && at % K4 === 0, 'the victim block is found in the pool file');
  file[at + 1234]! ^= 0x04;
  writeFileSync(pool.path, file);
  const engine = await openPoolFile(pool.path, { commitIntervalMs: 0 });
  try {
    const id = engine.resolve('v').id;
    // Cached now (the file was just written), so the batched path reads it.
    await assert.rejects(engine.read(id, 256 * K4, 256 * K4), (err: unknown) => err instanceof CairnError && err.code === 'checksum_error');
    assert.ok((await engine.read(id, 0, 256 * K4)).equals(expected.subarray(0, 256 * K4)), 'the other half reads');
    assert.ok((await engine.read(id, 301 * K4, 100 * K4)).equals(expected.subarray(301 * K4, 401 * K4)), 'past the bad block reads');
  } finally {
    await engine.close();
    await pool.cleanup();
  }
});

test('a batched read sees writes not yet on disk and every later overwrite', async () => {
  const pool = await tempPool(64 * MiB);
  try {
    const v = await pool.engine.createVolume('v', BLOCKS * K4);
    const expected = await writeScattered(pool.engine, v.id);
    // Lone small writes, unflushed (a flush's log round may carry them; they may still be held in memory).
    for (const i of [3, 77, 78, 200, 511]) {
      const block = pattern(5000 + i, K4);
      block.copy(expected, i * K4);
      await pool.engine.write(v.id, i * K4, block);
      assert.ok((await pool.engine.read(v.id, 0, BLOCKS * K4)).equals(expected), `after overwriting block ${i}`);
    }
    await pool.engine.flush();
    assert.ok((await pool.engine.read(v.id, 0, BLOCKS * K4)).equals(expected), 'after the flush');
  } finally {
    await pool.cleanup();
  }
});

test('an encrypted volume read in batches returns its plaintext', async () => {
  const pool = await tempPool(64 * MiB);
  try {
    const v = await pool.engine.createVolume('secret', BLOCKS * K4, { encryption: { dek: randomBytes(64), wrapped: randomBytes(72) } });
    const expected = await writeScattered(pool.engine, v.id);
    await pool.engine.flush();
    let got: Buffer | null = null;
    const runs = await countBatchedRuns(async () => { got = await pool.engine.read(v.id, 0, BLOCKS * K4); });
    assert.ok(got !== null && expected.equals(got), 'plaintext back');
    if (batchedReadsBuilt) assert.ok(runs > BLOCKS / 4, `most runs read in batches (${runs})`);
  } finally {
    await pool.cleanup();
  }
});

test('every case above also passes with the io_uring turned off (CAIRN_IO_URING=0: preadv2 run by run, in a child)',
  { skip: process.env.CAIRN_IO_URING === '0' ? 'this is the child' : !batchedReadsBuilt ? 'no native addon' : false }, () => {
    // Not as a subtest of this run (NODE_TEST_CONTEXT would make the child report to this runner).
    const env: NodeJS.ProcessEnv = { ...process.env, CAIRN_IO_URING: '0' };
    delete env.NODE_TEST_CONTEXT;
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], { env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(child.status, 0, `child failed:\n${child.stdout}\n${child.stderr}`);
    assert.match(child.stdout, /# pass 5\b/, 'the five cases ran in the child');
  });
