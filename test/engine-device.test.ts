// A pool on a raw block device (a loop device over a file), as production on a disk would use it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, openPoolFile, checkPoolFile } from '../src/engine/index.js';

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
