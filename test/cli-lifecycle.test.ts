// The daemon's lifecycle through the real binary: restart keeps everything, a second serve on the
// same pool fails with one line, SIGTERM with NBD I/O in flight loses no flushed write (libnbd
// writer), a full pool reports ENOSPC to an NBD writer and pool_full to the CLI and recovers after a
// delete, and `cairn check` runs offline (and refuses a pool a daemon holds).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { adminToken, assertBuilt, cairn, cairnBin, cairnJson, python, qemuIo, run, startServe, tempDir } from './cli-helpers.js';

const MiB = 1024 * 1024;

// Writes 64 KiB blocks (block i filled from sha256(i)), flushing after every 4th write and printing
// the highest block index covered by a completed flush. Runs until the connection dies.
const writerPy = `
import hashlib, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size(); blocks = size // 65536
def block(i):
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (65536 // 32))
i = 0
try:
    while True:
        h.pwrite(block(i), (i % blocks) * 65536)
        if i % 4 == 3:
            h.flush()
            print(i, flush=True)
        i += 1
except Exception as e:
    print('stopped', type(e).__name__, flush=True)
`;

const verifyPy = `
import hashlib, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
last = int(sys.argv[2]); size = h.get_size(); blocks = size // 65536
bad = 0
# Writes last+1..last+4 may have been acknowledged (not flushed) before the daemon stopped and may
# overwrite the positions of writes last+1-blocks..last+4-blocks, so those are not checked.
for i in range(max(0, last - blocks + 5), last + 1):
    want = hashlib.sha256(str(i).encode()).digest() * (65536 // 32)
    if h.pread(65536, (i % blocks) * 65536) != want:
        bad += 1
print(bad)
`;

test('daemon lifecycle', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-life-');
  const pool = join(dir, 'pool');

  await t.test('restart keeps volumes, snapshots, clones and data', async (t) => {
    const d1 = await startServe(t, pool, ['--pool-size', '512M']);
    await cairnJson(d1.api, ['volume', 'create', 'keep', '--size', '16M']);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 2M', `${d1.nbd}/keep`]);
    assert.equal(w.code, 0, w.stderr);
    await cairnJson(d1.api, ['snapshot', 'create', 'keep@one']);
    await cairnJson(d1.api, ['volume', 'create', 'keepclone', '--from', 'keep@one']);
    // nbdUri carries the (ephemeral) NBD port, which changes across restarts.
    const listWithoutUri = async (api: string) => (await cairnJson<Array<{ nbdUri?: string }>>(api, ['volume', 'list']))
      .map(({ nbdUri: _uri, ...rest }) => rest);
    const before = await listWithoutUri(d1.api);
    assert.equal(await d1.stop('SIGINT'), 0, 'SIGINT exits 0');

    const second = await cairn(null, ['check', '--pool', pool]);
    assert.equal(second.code, 0, second.stdout + second.stderr);
    assert.match(second.stdout, /^ok: 0 problems/m);

    const d2 = await startServe(t, pool);
    assert.deepEqual(await listWithoutUri(d2.api), before);
    for (const target of ['keep', 'keep@one', 'keepclone']) {
      const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 1M 2M', `${d2.nbd}/${target}`]);
      assert.equal(r.code, 0, `${target}: ${r.stdout}${r.stderr}`);
      assert.doesNotMatch(r.stdout, /verification failed/i, target);
    }

    // One process owns a pool.
    const dup = await run(process.execPath, [cairnBin, 'serve', '--pool', pool, '--api', '127.0.0.1:0', '--nbd', '127.0.0.1:0', '--log-format', 'json']);
    assert.equal(dup.code, 1);
    assert.equal(dup.stderr, `cairn: pool ${pool} is in use by another cairn process (pid ${d2.child.pid}); stop it first\n`);
    const checkHeld = await cairn(null, ['check', '--pool', pool]);
    assert.equal(checkHeld.code, 1);
    assert.match(checkHeld.stderr, /is in use by another cairn process/);
    assert.equal(await d2.stop(), 0);

    // A lock left by a process that no longer exists is stale and taken over.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((resolve) => dead.on('exit', resolve));
    await writeFile(`${pool}.lock`, `${dead.pid}\n`);
    const d3 = await startServe(t, pool);
    assert.equal(await d3.stop(), 0);
  });

  await t.test('--pool-preallocate full writes a new pool file end to end', async (t) => {
    const path = join(dir, 'thick.pool');
    const d = await startServe(t, path, ['--pool-size', '64M', '--pool-preallocate', 'full']);
    assert.ok((await stat(path)).blocks * 512 >= 64 * MiB, 'every byte of the pool file is on disk');
    assert.ok(d.logs.some((l) => (JSON.parse(l) as { event?: string }).event === 'pool_preallocate'), 'the slow step is logged before it starts');
    await cairnJson(d.api, ['volume', 'create', 'thick', '--size', '8M']);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 0 4M', '-c', 'read -P 0x3c 0 4M', `${d.nbd}/thick`]);
    assert.equal(w.code, 0, w.stderr);
    assert.doesNotMatch(w.stdout, /verification failed/i);
    assert.equal(await d.stop(), 0);
  });

  await t.test('threads: a thread pool of 16, and every thread but the event loop in SCHED_BATCH', async (t) => {
    const d = await startServe(t, join(dir, 'threads.pool'), ['--pool-size', '64M']);
    const pid = d.child.pid!;
    const policyOf = async (tid: string): Promise<number> => {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces); policy is field 41 of stat(5).
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
    };
    const tids = (await readdir(`/proc/${pid}/task`)).filter((tid) => tid !== String(pid));
    const policies = await Promise.all(tids.map(policyOf));
    assert.equal(await policyOf(String(pid)), 0, 'the event loop stays SCHED_OTHER');
    const batched = policies.filter((p) => p === 3).length;
    assert.ok(tids.length >= 16, `UV_THREADPOOL_SIZE=16 took effect before the pool started (${tids.length} threads besides the loop)`);
    assert.ok(batched >= 16, `thread-pool threads are SCHED_BATCH (${batched} of ${tids.length})`);
    const ready = d.logs.map((l) => JSON.parse(l) as { event?: string; helperThreadsBatched?: number }).find((e) => e.event === 'ready')!;
    assert.ok((ready.helperThreadsBatched ?? 0) >= 16, 'the ready line reports the count');
  });

  await t.test('SIGTERM with NBD writes in flight loses no flushed write', async (t) => {
    const d = await startServe(t, pool);
    await cairnJson(d.api, ['volume', 'create', 'busy', '--size', '8M']);
    const writer = spawn('/usr/bin/python3', ['-c', writerPy, `${d.nbd}/busy`], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => { if (writer.exitCode === null) writer.kill('SIGKILL'); });
    let out = '';
    writer.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    const writerDone = new Promise((resolve) => writer.on('exit', resolve));
    // Let it run past several flushes, then stop the daemon under load.
    while ((out.match(/\n/g) ?? []).length < 60) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await d.stop('SIGTERM'), 0);
    await writerDone;
    const flushed = out.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
    assert.ok(flushed.length >= 60);
    const last = flushed[flushed.length - 1]!;
    const d2 = await startServe(t, pool);
    const v = await python(verifyPy, [`${d2.nbd}/busy`, String(last)]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), '0', `every block covered by a completed flush (up to write ${last}) reads back`);
    assert.equal(await d2.stop(), 0);
    const check = await cairn(null, ['--json', 'check', '--pool', pool]);
    assert.equal(check.code, 0, check.stdout);
    assert.equal((JSON.parse(check.stdout) as { ok: boolean }).ok, true);
  });

  await t.test('a full pool: ENOSPC over NBD, pool_full from the CLI, usable after a delete', async (t) => {
    const tiny = join(dir, 'tiny.pool');
    const d = await startServe(t, tiny, ['--pool-size', '64M']);
    await cairnJson(d.api, ['volume', 'create', 'big', '--size', '256M']);
    // 1 MiB writes, so the pool fills to its last block (one huge request would fail as a whole).
    const writes = Array.from({ length: 128 }, (_, i) => ['-c', `write -P 0x77 ${i}M 1M`]).flat();
    const fill = await run('qemu-io', ['-f', 'raw', ...writes, `${d.nbd}/big`]);
    assert.match(fill.stdout + fill.stderr, /No space left on device/, 'the writer sees ENOSPC');
    const status = await cairnJson<{ freeBytes: number; size: number }>(d.api, ['pool', 'status']);
    assert.ok(status.freeBytes < 4 * MiB, `pool is full (free ${status.freeBytes})`);

    // A stream that cannot fit: import fails with pool_full and leaves nothing behind.
    const streamPath = join(dir, 'fits-not.cairn');
    await cairnJson(d.api, ['snapshot', 'create', 'big@s']);
    const exp = await cairn(d.api, ['export', 'big@s', '-o', streamPath]);
    assert.equal(exp.code, 0, exp.stderr);
    const imp = await cairn(d.api, ['import', streamPath, 'again']);
    assert.equal(imp.code, 1);
    assert.match(imp.stderr, /\(pool_full\)\n$/);
    assert.deepEqual((await cairnJson<Array<{ name: string }>>(d.api, ['volume', 'list'])).map((v) => v.name), ['big']);

    const del = await cairn(d.api, ['volume', 'delete', 'big']);
    assert.equal(del.code, 0, del.stderr);
    await cairn(d.api, ['snapshot', 'delete', 'big@s']);
    await cairnJson(d.api, ['volume', 'create', 'after', '--size', '8M']);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 8M', `${d.nbd}/after`]);
    assert.equal(w.code, 0, w.stderr);
    assert.doesNotMatch(w.stdout + w.stderr, /No space/);
    assert.equal(await d.stop(), 0);
  });

  await t.test('check reports a corrupted data block and exits 1', async (t) => {
    const bad = join(dir, 'bad.pool');
    const d = await startServe(t, bad, ['--pool-size', '64M']);
    await cairnJson(d.api, ['volume', 'create', 'v', '--size', '4M']);
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xc3 0 64k', `${d.nbd}/v`]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal(await d.stop(), 0);
    // Find the written data in the pool file (a 4 KiB-aligned block of 0xc3) and flip one bit.
    const bytes = await readFile(bad);
    const block = Buffer.alloc(4096, 0xc3);
    let at = -1;
    for (let off = 0; off + 4096 <= bytes.length; off += 4096) if (bytes.subarray(off, off + 4096).equals(block)) { at = off; break; }
    assert.ok(at >= 0, 'the data block is in the pool file');
    const handle = await open(bad, 'r+');
    await handle.write(Buffer.from([0xc3 ^ 0x10]), 0, 1, at + 100);
    await handle.close();
    const r = await cairn(null, ['check', '--pool', bad]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^KIND\s+BLOCK\s+PROBLEM\n/);
    assert.match(r.stdout, new RegExp(`\\b${at / 4096}\\b`), 'the problem names the physical block');
    assert.match(r.stdout, /^FAILED: [1-9]\d* problems/m);
    const json = await cairn(null, ['--json', 'check', '--pool', bad]);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout) as { ok: boolean; problems: Array<{ kind: string; physicalBlock: number }> };
    assert.equal(report.ok, false);
    assert.ok(report.problems.some((p) => p.physicalBlock === at / 4096));
  });

  await t.test('config file and environment feed serve; bad config is one line', async (t) => {
    const cfg = join(dir, 'cairn.yaml');
    await writeFile(cfg, `pool: ${join(dir, 'cfg.pool')}\npoolSize: 128M\nlogLevel: warn\ncapacitySampleMs: 200\n`);
    const d = await startServe(t, join(dir, 'cfg.pool'), ['--config', cfg, '--log-level', 'info']);
    const p = await cairnJson<{ size: number; path: string; allocatedBytes: number; metadataBytes: number | null }>(d.api, ['pool', 'status']);
    assert.equal(p.size, 128 * MiB);
    // The metadata share: the superblocks, the intent log, the space map and catalog of a new pool.
    assert.ok(p.metadataBytes !== null && p.metadataBytes > 0 && p.metadataBytes <= p.allocatedBytes, JSON.stringify(p));
    const human = await cairn(d.api, ['pool', 'status']);
    assert.match(human.stdout, /metadata:\s+\S+ \(\d+\.\d % of allocated\)/);
    // The daemon samples the pool's capacity (here every 200 ms, from the config file) for the dashboard.
    await cairnJson(d.api, ['volume', 'create', 'grows', '--size', '16M']);
    await qemuIo(`${d.nbd}/grows`, 'write -P 0x33 0 8M');
    type History = { intervalMs: number; samples: Array<{ timeMs: number; size: number; allocatedBytes: number; freeBytes: number; metadataBytes: number | null }> };
    const history = async (): Promise<History> => (await fetch(`${d.api}/v1/pool/history`, { headers: { authorization: `Bearer ${adminToken(d.api)}` } })).json() as Promise<History>;
    let h = await history();
    for (let i = 0; i < 100 && !(h.samples.length >= 3 && h.samples[h.samples.length - 1]!.allocatedBytes >= h.samples[0]!.allocatedBytes + 8 * MiB); i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      h = await history();
    }
    assert.equal(h.intervalMs, 200);
    assert.ok(h.samples.length >= 3, JSON.stringify(h));
    assert.ok(h.samples[h.samples.length - 1]!.allocatedBytes >= h.samples[0]!.allocatedBytes + 8 * MiB, 'the 8 MiB written show in the samples');
    for (const [i, s] of h.samples.entries()) {
      assert.equal(s.allocatedBytes + s.freeBytes, s.size);
      assert.ok(s.metadataBytes !== null && s.metadataBytes <= s.allocatedBytes);
      if (i > 0) assert.ok(s.timeMs >= h.samples[i - 1]!.timeMs, 'oldest first');
    }
    assert.equal(await d.stop(), 0);
    await writeFile(cfg, 'pool: x\nbogus: 1\n');
    const bad = await run(process.execPath, [cairnBin, 'serve', '--config', cfg]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, `cairn: unknown setting "bogus" in config file ${cfg}\n`);
    const badSample = await run(process.execPath, [cairnBin, 'serve', '--pool', join(dir, 'e.pool')], { env: { CAIRN_CAPACITY_SAMPLE_MS: '5' } });
    assert.equal(badSample.code, 1);
    assert.equal(badSample.stderr, 'cairn: invalid capacitySampleMs (environment): 5 (at least 100 ms)\n');
    const badEnv = await run(process.execPath, [cairnBin, 'serve', '--pool', join(dir, 'e.pool')], { env: { CAIRN_POOL_SIZE: 'lots' } });
    assert.equal(badEnv.code, 1);
    assert.match(badEnv.stderr, /^cairn: invalid poolSize \(environment\): lots\n$/);
  });
});
