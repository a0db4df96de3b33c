// End to end through the real `cairn` binary against a real `cairn serve` on a temp pool: every
// volume/snapshot/diff command, its --json shape and table output, and its errors (unknown and
// taken names, bad sizes, usage errors, a daemon that is not running).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { assertBuilt, authHeaders, cairn, cairnJson, run, startServe, tempDir } from './cli-helpers.js';

interface Volume {
  name: string; id: number; size: number; mappedBytes: number; exclusiveBytes: number | null; createdMs: number;
  createdAt: string; origin: string | null; snapshots: string[]; nbdUri: string | null; flattenProgress: number | null;
}
interface Snapshot { name: string; volume: string; snapshot: string; id: number; size: number; mappedBytes: number; createdMs: number }
interface TreeNode { name: string; kind: string; size: number; mappedBytes: number; exclusiveBytes: number | null; current: boolean; children: TreeNode[] }
interface Job { id: string; kind: string; state: string; progress: number; error: unknown }

const MiB = 1024 * 1024;

/** A port nothing listens on: bound then released (nothing else on this test machine grabs it). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Writes `pattern` at `offset` through NBD with qemu-io (a real client). */
async function qemuWrite(uri: string, pattern: number, offset: number, length: number): Promise<void> {
  const r = await run('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, uri]);
  assert.equal(r.code, 0, `qemu-io write failed: ${r.stdout}${r.stderr}`);
}

async function qemuVerify(uri: string, pattern: number, offset: number, length: number): Promise<boolean> {
  const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', `read -P ${pattern} ${offset} ${length}`, uri]);
  return r.code === 0 && !/Pattern verification failed|failed/i.test(r.stdout + r.stderr);
}

test('cairn CLI against a real daemon', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t);
  const d = await startServe(t, join(dir, 'pool'), ['--pool-size', '1G']);
  const api = d.api;

  await t.test('pool status', async () => {
    const p = await cairnJson<{ size: number; freeBytes: number; volumes: number; nbd: string }>(api, ['pool', 'status']);
    assert.equal(p.size, 1024 * MiB);
    assert.equal(p.volumes, 0);
    assert.equal(p.nbd, d.nbd);
    const text = await cairn(api, ['pool', 'status']);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /size:\s+1G/);
  });

  await t.test('volume create, idempotent repeat, show --json shape, list table', async () => {
    const createStartedMs = Date.now();
    const v = await cairnJson<Volume>(api, ['volume', 'create', 'db', '--size', '64M']);
    assert.equal(v.name, 'db');
    assert.equal(v.size, 64 * MiB);
    assert.equal(v.origin, null);
    const again = await cairnJson<Volume>(api, ['volume', 'create', 'db', '--size', '67108864']);
    assert.equal(again.id, v.id, 'same name and arguments: the same volume');
    await qemuWrite(`${d.nbd}/db`, 0xab, 0, MiB);
    const shown = await cairnJson<Volume>(api, ['volume', 'show', 'db']);
    assert.deepEqual(Object.keys(shown).sort(), ['createdAt', 'createdMs', 'encrypted', 'exclusiveBytes', 'flattenProgress', 'id', 'locked',
      'mappedBytes', 'name', 'nbdUri', 'origin', 'qos', 'size', 'snapshotCount', 'snapshots'].sort());
    assert.equal(shown.mappedBytes, MiB);
    assert.equal(shown.exclusiveBytes, MiB);
    assert.equal(shown.nbdUri, `${d.nbd}/db`);
    assert.ok(shown.createdMs >= createStartedMs && shown.createdMs <= Date.now(), `createdMs ${shown.createdMs} outside the create call`);
    const list = await cairn(api, ['volume', 'list']);
    assert.equal(list.code, 0);
    const lines = list.stdout.trim().split('\n');
    assert.match(lines[0]!, /^NAME\s+SIZE\s+MAPPED\s+SNAPSHOTS\s+ORIGIN\s+ENCRYPTION\s+CREATED$/);
    assert.match(lines[1]!, /^db\s+64M\s+1M\s+0\s+-\s+-\s+\d{4}-/);
    const listJson = await cairnJson<Volume[]>(api, ['volume', 'list']);
    assert.deepEqual(listJson.map((x) => x.name), ['db']);
  });

  await t.test('snapshots: create, atomic group, list, idempotent, diff', async () => {
    await cairnJson(api, ['volume', 'create', 'log', '--size', '16M']);
    const [s1] = await cairnJson<Snapshot[]>(api, ['snapshot', 'create', 'db@s1']);
    assert.equal(s1!.name, 'db@s1');
    assert.equal(s1!.volume, 'db');
    assert.equal(s1!.snapshot, 's1');
    assert.equal(s1!.mappedBytes, MiB);
    await qemuWrite(`${d.nbd}/db`, 0xcd, 4 * MiB, 2 * MiB);
    const group = await cairnJson<Snapshot[]>(api, ['snapshot', 'create', 'db@s2', 'log@s2']);
    assert.deepEqual(group.map((s) => s.name), ['db@s2', 'log@s2']);
    assert.equal(group[0]!.createdMs, group[1]!.createdMs, 'a group is one instant');
    const repeat = await cairnJson<Snapshot[]>(api, ['snapshot', 'create', 'db@s2', 'log@s2']);
    assert.deepEqual(repeat.map((s) => s.id), group.map((s) => s.id));
    const all = await cairnJson<Snapshot[]>(api, ['snapshot', 'list']);
    assert.deepEqual(all.map((s) => s.name).sort(), ['db@s1', 'db@s2', 'log@s2']);
    const dbOnly = await cairn(api, ['snapshot', 'list', 'db']);
    assert.match(dbOnly.stdout, /^NAME\s+SIZE\s+MAPPED\s+CREATED\n/);
    assert.equal(dbOnly.stdout.trim().split('\n').length, 3);
    const diff = await cairnJson<{ ranges: Array<{ offset: number; length: number }>; changedBytes: number }>(api, ['diff', 'db@s1', 'db@s2']);
    assert.deepEqual(diff.ranges, [{ offset: 4 * MiB, length: 2 * MiB }]);
    assert.equal(diff.changedBytes, 2 * MiB);
    await qemuWrite(`${d.nbd}/db`, 0xef, 10 * MiB, 4096);
    const live = await cairnJson<{ ranges: Array<{ offset: number; length: number }> }>(api, ['diff', 'db@s2', 'db']);
    assert.deepEqual(live.ranges, [{ offset: 10 * MiB, length: 4096 }]);
    const text = await cairn(api, ['diff', 'db@s1', 'db@s2']);
    assert.match(text.stdout, /OFFSET\s+LENGTH\s+SIZE\n\s*4194304\s+2097152\s+2M\n1 ranges, 2M changed/);
  });

  await t.test('clone from snapshot and from live volume, tree, flatten, revert, resize', async () => {
    const c1 = await cairnJson<Volume>(api, ['volume', 'create', 'c1', '--from', 'db@s1']);
    assert.equal(c1.origin, 'db@s1');
    assert.equal(c1.size, 64 * MiB);
    const c2 = await cairnJson<Volume>(api, ['volume', 'create', 'c2', '--from', 'db']);
    assert.equal(c2.origin, 'db');
    assert.ok(await qemuVerify(`${d.nbd}/c1`, 0xab, 0, MiB), 'a clone reads its origin\'s data');
    assert.ok(await qemuVerify(`${d.nbd}/c2`, 0xef, 10 * MiB, 4096), 'a live clone holds the latest writes');
    const same = await cairnJson<Volume>(api, ['volume', 'create', 'c1', '--from', 'db@s1']);
    assert.equal(same.id, c1.id);
    const tree = await cairnJson<TreeNode>(api, ['volume', 'tree', 'c1']);
    assert.equal(tree.name, 'db');
    assert.deepEqual(tree.children.map((c) => c.name), ['db@s1', 'db@s2', 'c2']);
    assert.deepEqual(tree.children[0]!.children.map((c) => c.name), ['c1']);
    assert.equal(tree.children[0]!.children[0]!.current, true);
    const treeText = await cairn(api, ['volume', 'tree', 'db']);
    assert.equal(treeText.code, 0);
    assert.match(treeText.stdout, /^db \*  \(64M size, /);
    assert.match(treeText.stdout, /├── @ db@s1 .*\n│   └── c1 /);
    assert.match(treeText.stdout, /└── c2 /);
    const job = await cairnJson<Job>(api, ['volume', 'flatten', 'c1']);
    assert.equal(job.kind, 'flatten');
    assert.equal(job.state, 'succeeded');
    assert.equal(job.progress, 1);
    const flat = await cairnJson<Volume>(api, ['volume', 'show', 'c1']);
    assert.equal(flat.exclusiveBytes, MiB, 'after flatten the clone owns its blocks');
    assert.ok(await qemuVerify(`${d.nbd}/c1`, 0xab, 0, MiB));
    const reverted = await cairnJson<Volume>(api, ['volume', 'revert', 'db', '--to', 's1']);
    assert.equal(reverted.name, 'db');
    assert.ok(await qemuVerify(`${d.nbd}/db`, 0, 4 * MiB, 2 * MiB), 'revert drops later writes');
    assert.ok(await qemuVerify(`${d.nbd}/db`, 0xab, 0, MiB));
    const grown = await cairnJson<Volume>(api, ['volume', 'resize', 'db', '--size', '128M']);
    assert.equal(grown.size, 128 * MiB);
    const shrink = await cairn(api, ['volume', 'resize', 'db', '--size', '32M']);
    assert.equal(shrink.code, 1);
    assert.match(shrink.stderr, /shrink_refused/);
    const shrunk = await cairnJson<Volume>(api, ['volume', 'resize', 'db', '--size', '96M', '--shrink']);
    assert.equal(shrunk.size, 96 * MiB);
  });

  await t.test('delete snapshot and volume; snapshots and clones keep working', async () => {
    const del = await cairnJson<{ name: string; deleted: boolean }>(api, ['snapshot', 'delete', 'log@s2']);
    assert.deepEqual(del, { name: 'log@s2', deleted: true });
    const text = await cairn(api, ['volume', 'delete', 'log']);
    assert.equal(text.code, 0);
    assert.equal(text.stdout.trim(), 'deleted volume log');
    const names = (await cairnJson<Volume[]>(api, ['volume', 'list'])).map((v) => v.name).sort();
    assert.deepEqual(names, ['c1', 'c2', 'db']);
    const gone = await cairn(api, ['volume', 'show', 'log']);
    assert.equal(gone.code, 1);
  });

  await t.test('errors: one line on stderr, exit 1 (daemon) or 2 (usage)', async () => {
    const cases: Array<{ args: string[]; code: number; message: RegExp }> = [
      { args: ['volume', 'show', 'nope'], code: 1, message: /^cairn: volume not found: nope \(volume_not_found\)\n$/ },
      { args: ['volume', 'create', 'db', '--size', '1G'], code: 1, message: /\(name_taken\)\n$/ },
      { args: ['volume', 'create', 'x', '--from', 'db@nope'], code: 1, message: /\(snapshot_not_found\)\n$/ },
      { args: ['volume', 'create', 'x', '--size', '1000'], code: 1, message: /\(invalid_size\)\n$/ },
      { args: ['volume', 'create', 'x', '--size', '12Q'], code: 2, message: /invalid size "12Q"/ },
      { args: ['volume', 'create', 'x'], code: 2, message: /exactly one of --size and --from/ },
      { args: ['volume', 'frobnicate'], code: 2, message: /unknown command/ },
      { args: ['snapshot', 'create', 'nocolon'], code: 2, message: /expected VOLUME@SNAPSHOT/ },
      { args: ['snapshot', 'create', 'db@s1'], code: 0, message: /^$/ },
      { args: ['snapshot', 'create', 'db@s1', 'c2@new'], code: 1, message: /\(name_taken\)/ },
      { args: ['snapshot', 'delete', 'db@nope'], code: 1, message: /\(snapshot_not_found\)/ },
      { args: ['diff', 'db@nope', 'db'], code: 1, message: /\(snapshot_not_found\)/ },
      { args: ['volume', 'revert', 'db', '--to', 'nope'], code: 1, message: /\(snapshot_not_found\)/ },
      { args: ['volume', 'resize', 'nope', '--size', '1G'], code: 1, message: /\(volume_not_found\)/ },
    ];
    for (const c of cases) {
      const r = await cairn(api, c.args);
      assert.equal(r.code, c.code, `cairn ${c.args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, c.message, `cairn ${c.args.join(' ')}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    const noSub = await cairn(null, ['volume']);
    assert.equal(noSub.code, 2, 'a missing subcommand is a usage error');
    const noArgs = await cairn(null, []);
    assert.equal(noArgs.code, 2);
    const help = await cairn(null, ['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /volume/);
    assert.match(help.stdout, /csi/);
    const csiHelp = await cairn(null, ['csi', '--help']);
    assert.equal(csiHelp.code, 0);
    assert.match(csiHelp.stdout, /--endpoint/);
    const csiUsage = await cairn(null, ['csi']);
    assert.equal(csiUsage.code, 2, 'cairn csi without --endpoint is a usage error');
  });

  await t.test('a daemon that is not running: a clear message', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const r = await cairn(url, ['volume', 'list']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `cairn: cannot reach cairn daemon at ${url}: connection refused\n`);
    const env = await cairn(null, ['pool', 'status'], { env: { CAIRN_API: url } });
    assert.equal(env.code, 1);
    assert.equal(env.stderr, `cairn: cannot reach cairn daemon at ${url}: connection refused\n`);
  });

  await t.test('metrics count per-volume I/O', async () => {
    const r = await fetch(`${api}/metrics`, { headers: authHeaders(api) });
    const text = await r.text();
    assert.match(text, /cairn_io_operations_total\{volume="db",op="write"\} [1-9]/);
    assert.match(text, /cairn_io_bytes_total\{volume="db",op="write"\} [1-9]/);
    assert.match(text, /cairn_io_latency_seconds_bucket\{le="[^"]+",volume="db",op="read"\}/);
    assert.match(text, /cairn_pool_size_bytes 1073741824/);
    assert.match(text, /cairn_commit_duration_seconds_count [1-9]/);
    assert.match(text, /cairn_checksum_errors_total 0/);
    assert.match(text, /cairn_flush_log_rounds_total \d+/);
    assert.match(text, /cairn_flush_eager_rounds_total \d+/);
    assert.match(text, /cairn_flush_inline_blocks_total \d+/);
    assert.match(text, /cairn_held_write_blocks \d+/);
  });

  assert.equal(await d.stop(), 0, 'SIGTERM exits 0');
});
