// Real-process crash test: a child process (sim/crash-child.ts) writes batches through the engine
// on a pool file and prints "durable N" after each flush; we SIGKILL it at a random moment, check
// the file offline (checkPoolFile), reopen it and verify that every batch up to the last reported
// one reads back (the next batch may be there or not, per block), then start the next round.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkPoolFile, openPoolFile } from '../src/engine/index.js';
import { Prng } from '../src/engine/device/prng.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { repoRoot } from './cli-helpers.js';
import { batchWrites, crashVolumeBytes, crashVolumeName, writeData } from '../sim/crash-schedule.js';

const B = BLOCK_SIZE_BYTES;
const rounds = 6;
/** A hang bound, not a speed: a child on a busy machine may take long to open the pool. */
const readyTimeoutMs = 120_000;

/** The child entry point: compiled JS next to this compiled test, or the TS source under tsx. */
function childCommand(): { args: string[]; cwd: string } {
  const root = repoRoot();
  const compiled = fileURLToPath(new URL('../sim/crash-child.js', import.meta.url));
  if (import.meta.url.endsWith('.js') && existsSync(compiled)) return { args: [compiled], cwd: root };
  return { args: ['--import', 'tsx', join(root, 'sim', 'crash-child.ts')], cwd: root };
}

interface RoundResult { lastDurable: number; stderr: string; exit: string }

async function runAndKill(poolPath: string, seed: number, killAfterMs: number, children: Set<ChildProcess>): Promise<RoundResult> {
  const { args, cwd } = childCommand();
  const child = spawn(process.execPath, [...args, poolPath, String(seed)], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<string>((resolve) => child.on('close', (code, signal) => resolve(`${code ?? ''}${signal ?? ''}`)));
  const ready = await Promise.race([
    new Promise<boolean>((resolve) => {
      const poll = setInterval(() => { if (stdout.includes('ready\n')) { clearInterval(poll); resolve(true); } }, 5);
      void exited.then(() => { clearInterval(poll); resolve(stdout.includes('ready\n')); });
    }),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), readyTimeoutMs)),
  ]);
  if (ready) await new Promise((resolve) => setTimeout(resolve, killAfterMs));
  child.kill('SIGKILL');
  const exit = await exited;
  children.delete(child);
  assert.ok(ready, `child never became ready (exit ${exit}): ${stderr}`);
  assert.equal(exit, 'SIGKILL', `child ended on its own before the kill: ${stderr}`);
  let lastDurable = -1;
  for (const line of stdout.split('\n')) {
    const m = /^durable (\d+)$/.exec(line);
    if (m) lastDurable = Math.max(lastDurable, Number(m[1]));
  }
  return { lastDurable, stderr, exit };
}

/** What the volume must hold: batches 0..lastDurable applied; blocks of the next batch either way. */
function expectation(baseline: Buffer, seed: number, lastDurable: number): { want: Buffer; maybe: Map<number, Buffer> } {
  const want = Buffer.from(baseline);
  for (let batch = 0; batch <= lastDurable; batch++) {
    for (const w of batchWrites(seed, batch)) writeData(seed, batch, w).copy(want, w.blockNumber * B);
  }
  const maybe = new Map<number, Buffer>();
  const next = lastDurable + 1;
  for (const w of batchWrites(seed, next)) {
    const data = writeData(seed, next, w);
    for (let i = 0; i < w.lengthBlocks; i++) maybe.set(w.blockNumber + i, data.subarray(i * B, (i + 1) * B));
  }
  return { want, maybe };
}

test('kill -9 while writing and flushing: every flushed batch survives and check passes', { timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-crash-'));
  const children = new Set<ChildProcess>();
  t.after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  const poolPath = join(dir, 'pool.cairn');
  const prng = new Prng(20261125);
  let baseline: Buffer = Buffer.alloc(crashVolumeBytes);
  let durableTotal = 0;
  for (let round = 0; round < rounds; round++) {
    const seed = 7000 + round;
    const killAfterMs = prng.int(50, 900);
    const r = await runAndKill(poolPath, seed, killAfterMs, children);
    durableTotal += r.lastDurable + 1;
    t.diagnostic(`round ${round}: killed after ${killAfterMs} ms, last durable batch ${r.lastDurable}`);

    const offline = await checkPoolFile(poolPath);
    assert.ok(offline.ok && offline.problems.length === 0, `round ${round}: checkPoolFile after kill: ${JSON.stringify(offline.problems.slice(0, 5))}`);
    const engine = await openPoolFile(poolPath);
    try {
      const id = engine.resolve(crashVolumeName).id;
      const got = await engine.read(id, 0, crashVolumeBytes);
      const { want, maybe } = expectation(baseline, seed, r.lastDurable);
      const bad: string[] = [];
      for (let b = 0; b < crashVolumeBytes / B; b++) {
        const g = got.subarray(b * B, (b + 1) * B);
        if (g.equals(want.subarray(b * B, (b + 1) * B))) continue;
        if (maybe.get(b)?.equals(g)) continue;
        bad.push(`block ${b}: got header ${g.subarray(0, 16).toString('hex')} want ${want.subarray(b * B, b * B + 16).toString('hex')}`);
      }
      assert.deepEqual(bad.slice(0, 10), [], `round ${round} (seed ${seed}, last durable ${r.lastDurable}): ${bad.length} block(s) lost or wrong`);
      const online = await engine.check();
      assert.ok(online.ok, `round ${round}: check after reopen: ${JSON.stringify(online.problems.slice(0, 5))}`);
      baseline = got; // the next round starts from what is on disk now
    } finally {
      await engine.close();
    }
  }
  assert.ok(durableTotal > rounds, `the child made too few batches durable (${durableTotal}) for the test to mean much`);
});
