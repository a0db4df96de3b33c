// `cairn pool grow` end to end: the real binary against a real daemon that keeps serving a volume over
// NBD while its pool grows; qemu-io then writes more than the old pool had free. Refusals (a shrink,
// an unaligned size, not a size) are one line with their code; the grown pool checks clean and
// keeps its size and data across a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, run, startServe, tempDir } from './cli-helpers.js';

const MiB = 1024 * 1024;
interface PoolView { size: number; freeBytes: number; allocatedBytes: number }

test('cairn pool grow: online, refusals, the new space usable at once', { timeout: 110_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t);
  const pool = join(dir, 'grow.pool');
  const d = await startServe(t, pool, ['--pool-size', '32M']);
  await cairnJson(d.api, ['volume', 'create', 'big', '--size', '96M']);
  // Data written before the grow is read back after it (and after a restart).
  const before = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 8M', `${d.nbd}/big`]);
  assert.equal(before.code, 0, before.stderr);
  const old = await cairnJson<PoolView>(d.api, ['pool', 'status']);
  assert.equal(old.size, 32 * MiB);
  assert.ok(old.freeBytes < 48 * MiB);

  const shrink = await cairn(d.api, ['pool', 'grow', '--size', '16M']);
  assert.equal(shrink.code, 1);
  assert.match(shrink.stderr, /^cairn: refusing to shrink the pool from 33554432 to 16777216 bytes.*\(shrink_refused\)\n$/);
  const unaligned = await cairn(d.api, ['pool', 'grow', '--size', '40000000']);
  assert.equal(unaligned.code, 1);
  assert.match(unaligned.stderr, /multiple of 4096.*\(invalid_size\)\n$/);
  const notASize = await cairn(d.api, ['pool', 'grow', '--size', 'lots']);
  assert.equal(notASize.code, 2);
  assert.match(notASize.stderr, /invalid size "lots"/);
  assert.equal((await cairnJson<PoolView>(d.api, ['pool', 'status'])).size, 32 * MiB, 'refusals change nothing');

  const grown = await cairnJson<PoolView>(d.api, ['pool', 'grow', '--size', '128M']);
  assert.equal(grown.size, 128 * MiB);
  assert.equal(statSync(pool).size, 128 * MiB, 'the pool file was enlarged');
  const table = await cairn(d.api, ['pool', 'status']);
  assert.match(table.stdout, /^size:\s+128M$/m);
  // More than the old pool had free, through the daemon that kept running.
  const fill = await run('qemu-io', ['-f', 'raw', ...Array.from({ length: 64 }, (_, i) => ['-c', `write -P 0x22 ${8 + i}M 1M`]).flat(), `${d.nbd}/big`]);
  assert.equal(fill.code, 0, fill.stderr);
  assert.doesNotMatch(fill.stdout + fill.stderr, /No space|error/i);

  // A file enlarged from outside is taken by a grow without a size.
  truncateSync(pool, 160 * MiB);
  const plain = await cairn(d.api, ['pool', 'grow']);
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, /^size:\s+160M$/m);
  assert.equal(await d.stop(), 0);

  const check = await cairn(null, ['--json', 'check', '--pool', pool]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  const d2 = await startServe(t, pool);
  assert.equal((await cairnJson<PoolView>(d2.api, ['pool', 'status'])).size, 160 * MiB);
  const verify = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x11 0 8M', '-c', 'read -P 0x22 8M 64M', `${d2.nbd}/big`]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.doesNotMatch(verify.stdout + verify.stderr, /failed/i);
  assert.equal(await d2.stop(), 0);
});
