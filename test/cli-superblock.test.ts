// Issue 17 §4 through the real binary: a few damaged bytes in the newest superblock copy are reported
// by `cairn check` and cost nothing in `cairn serve`; both copies of the newest generation damaged:
// check reports each, serve refuses with one line, and `serve --rewind` opens and says what is lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { createPoolFile, openPoolFile } from '../src/engine/index.js';
import { SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS } from '../src/engine/constants.js';
import { assertBuilt, cairn, cairnBin, cairnJson, run, startServe, tempDir } from './cli-helpers.js';

const K64 = 65536;
const primaryOf = (g: number): number => SUPERBLOCK_SLOTS[g % 2 === 0 ? 0 : 1];
const mirrorOf = (g: number): number => SUPERBLOCK_MIRROR_SLOTS[g % 2 === 0 ? 0 : 1];

async function damageBlock(pool: string, blockNumber: number): Promise<void> {
  const handle = await open(pool, 'r+');
  await handle.write(Buffer.alloc(8, 0xff), 0, 8, blockNumber * 4096 + 20);
  await handle.close();
}

/** qemu-io (a real client) reads 64 KiB of `export` and checks every byte is `byte`. */
async function expectPattern(nbd: string, byte: number): Promise<void> {
  const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0x${byte.toString(16)} 0 64k`, nbd]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout + r.stderr, /verification failed/i, `the volume holds 0x${byte.toString(16)}`);
}

test('a damaged newest superblock: check reports it, serve keeps the last flushed writes; both copies: refused, --rewind', async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-sb-');
  const pool = join(dir, 'p.pool');
  // The history: write, snapshot, overwrite, flush, clean stop.
  const engine = await createPoolFile(pool, 64 * 1024 * 1024, { commitIntervalMs: 0 });
  await engine.createVolume('v', 4 * 1024 * 1024);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, Buffer.alloc(K64, 0xa1));
  await engine.checkpoint();
  await engine.createSnapshots(['v@s']);
  await engine.write(id, 0, Buffer.alloc(K64, 0xb2));
  await engine.checkpoint();
  const generation = engine.stats().generation;
  await engine.close();

  await t.test('one damaged copy: check exit 1 naming the block; serve opens with the last flushed write', async (t) => {
    await damageBlock(pool, primaryOf(generation));
    const r = await cairn(null, ['check', '--pool', pool]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const rows = r.stdout.split('\n').filter((l) => l.startsWith('superblock'));
    assert.equal(rows.length, 1, r.stdout);
    assert.match(rows[0]!, new RegExp(`^superblock\\s+${primaryOf(generation)}\\s+superblock primary copy at block ${primaryOf(generation)} is damaged \\(bad checksum`));
    assert.match(r.stdout, /^FAILED: 1 problems/m);
    const d = await startServe(t, pool);
    assert.ok(d.logs.some((l) => l.includes('"superblock_copy_corrupt"')), 'the damage is logged');
    await expectPattern(`${d.nbd}/v`, 0xb2);
    await expectPattern(`${d.nbd}/v@s`, 0xa1);
    assert.equal(await d.stop(), 0);
    const again = await cairn(null, ['check', '--pool', pool]);
    assert.equal(again.code, 0, `the stop's commit rewrote the copy: ${again.stdout}`);
  });

  await t.test('both copies of the newest generation: check lists each, serve refuses in one line, --rewind opens and logs the loss', async (t) => {
    const d = await startServe(t, pool);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xc3 0 64k', '-c', 'flush', `${d.nbd}/v`]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal(await d.stop(), 0);
    // The flush went to the intent log; the stop's commit made the newest generation.
    const reopened = await openPoolFile(pool, { commitIntervalMs: 0 });
    const newest = reopened.stats().generation;
    await reopened.close();
    await damageBlock(pool, primaryOf(newest));
    await damageBlock(pool, mirrorOf(newest));

    const check = await cairn(null, ['check', '--pool', pool]);
    assert.equal(check.code, 1);
    const rows = check.stdout.split('\n').filter((l) => l.startsWith('superblock'));
    assert.equal(rows.length, 3, check.stdout);
    assert.match(rows[0]!, new RegExp(`block ${primaryOf(newest)} is damaged`));
    assert.match(rows[1]!, new RegExp(`block ${mirrorOf(newest)} is damaged`));
    assert.match(rows[2]!, new RegExp(`generation ${newest} is lost`));

    const refused = await run(process.execPath, [cairnBin, 'serve', '--pool', pool, '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--log-format', 'json']);
    assert.equal(refused.code, 1);
    const lines = refused.stderr.trim().split('\n');
    assert.equal(lines.length, 1, refused.stderr);
    assert.match(lines[0]!, new RegExp(`^cairn: generation ${newest} of the pool is lost: .*--rewind.* \\(superblock_lost\\)$`));

    const r = await startServe(t, pool, ['--rewind']);
    const rewind = r.logs.map((l) => JSON.parse(l) as { event?: string; lostGeneration?: number; generation?: number; level?: number })
      .find((e) => e.event === 'pool_rewind');
    assert.ok(rewind, 'the rewind is logged');
    assert.equal(rewind.lostGeneration, newest);
    assert.equal(rewind.generation, newest - 1);
    assert.ok((rewind.level ?? 0) >= 40, 'at warn level');
    // The lost generation's only change was the flushed write, and the intent log still holds it.
    assert.ok(r.logs.some((l) => l.includes('"log_replayed"')), 'the rewound generation replays the log');
    await expectPattern(`${r.nbd}/v`, 0xc3);
    assert.equal(await r.stop(), 0);
    const after = await cairn(null, ['check', '--pool', pool]);
    assert.equal(after.code, 0, after.stdout);
  });

  await t.test('--rewind is a flag, never a config file setting', async () => {
    const cfg = join(dir, 'c.json');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(cfg, JSON.stringify({ rewind: true }));
    const r = await run(process.execPath, [cairnBin, 'serve', '--config', cfg, '--pool', pool, '--api', '127.0.0.1:0', '--nbd', 'off']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^cairn: rewind is a command-line flag only/);
  });
});
