// Snapshots by the thousand (issue 17 section 8), through the public interfaces: the engine's index
// lookups and id-ordered pages (against a model, across deletes and a reopen), the REST API's paged
// lists (every item exactly once across pages, bad tokens a 400, the next token in a header) and its
// idempotent snapshot create, and the CLI walking every page. No timing is asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, openPoolFile, type Engine, type SnapshotInfo } from '../src/engine/index.js';
import { startApi } from './api-harness.js';
import { ApiClient } from '../src/cli/client.js';

const MiB = 1024 * 1024;

/** Every page of the engine's list, following `more`. */
function allPages(engine: Engine, volume: string | undefined, limit: number): SnapshotInfo[] {
  const out: SnapshotInfo[] = [];
  let afterId = 0;
  for (;;) {
    const page = engine.listSnapshotsPage({ volume, afterId, limit });
    assert.ok(page.snapshots.length <= limit);
    out.push(...page.snapshots);
    if (!page.more) return out;
    assert.equal(page.snapshots.length, limit, 'a page that says more is full');
    afterId = page.snapshots[page.snapshots.length - 1]!.id;
  }
}

test('engine: snapshot lookups and pages stay exact through creates, deletes and a reopen', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-snap-index-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'pool');
  let engine: Engine = await createPoolFile(path, 256 * MiB);
  await engine.createVolume('a', MiB);
  await engine.createVolume('b', MiB);
  // A model: every snapshot by full name, in creation order.
  const model: string[] = [];
  let seed = 12345;
  const rand = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  for (let round = 0; round < 30; round++) {
    const names: string[] = [];
    for (let i = 0; i < 40; i++) names.push(`${rand(2) === 0 ? 'a' : 'b'}@r${round}-${i}`);
    await engine.createSnapshots(names);
    model.push(...names);
    // Delete a few at random (from anywhere: the middle of the order too).
    for (let d = 0; d < 15; d++) {
      const victim = model.splice(rand(model.length), 1)[0]!;
      await engine.deleteSnapshot(victim);
      assert.equal(engine.findSnapshot(victim), null, `${victim} is gone`);
    }
  }
  const check = (e: Engine) => {
    assert.deepEqual(allPages(e, undefined, 7).map((s) => s.fullName), model, 'pool-wide pages = model order');
    assert.deepEqual(allPages(e, undefined, 1000).map((s) => s.fullName), model);
    for (const v of ['a', 'b']) {
      const want = model.filter((n) => n.startsWith(`${v}@`));
      assert.deepEqual(allPages(e, v, 13).map((s) => s.fullName), want, `${v}'s pages`);
      assert.deepEqual(e.listSnapshots(v).map((s) => s.fullName), want, `${v}'s full list`);
      assert.equal(e.getVolume(v).snapshotCount, want.length);
      assert.deepEqual(e.getVolume(v).snapshots, want.map((n) => n.split('@')[1]));
    }
    for (const n of model.slice(0, 50)) assert.equal(e.findSnapshot(n)?.fullName, n);
    assert.equal(e.findSnapshot('a@never'), null);
    assert.equal(e.findSnapshot('nope@x'), null);
    assert.equal(e.stats().snapshots, model.length);
  };
  check(engine);
  await engine.close();
  engine = await openPoolFile(path);
  check(engine);
  // A volume deleted while its snapshots live: still listed and paged under its name.
  await engine.deleteVolume('a');
  assert.deepEqual(allPages(engine, 'a', 5).map((s) => s.fullName), model.filter((n) => n.startsWith('a@')));
  assert.throws(() => engine.listSnapshotsPage({ limit: 0 }), { code: 'invalid_argument' });
  assert.throws(() => engine.listSnapshotsPage({ volume: 'nope', limit: 1 }), { code: 'volume_not_found' });
  const report = await engine.check();
  assert.equal(report.ok, true, JSON.stringify(report.problems.slice(0, 3)));
  await engine.close();
});

/** Follows the API's next-page header from the first page; returns every item's `name`. */
async function walk(call: Awaited<ReturnType<typeof startApi>>['call'], path: string, limit: number, from: string | null = null): Promise<string[]> {
  const names: string[] = [];
  let token: string | null = from;
  for (let pages = 0; pages < 10_000; pages++) {
    const sep = path.includes('?') ? '&' : '?';
    const r = await call('GET', `${path}${sep}limit=${limit}${token === null ? '' : `&pageToken=${token}`}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const items = r.body as Array<{ name: string }>;
    assert.ok(items.length <= limit);
    names.push(...items.map((i) => i.name));
    if (r.next === null) return names;
    token = r.next;
  }
  assert.fail('paging did not end');
}

test('API: paged lists return every item once, bad tokens are a 400, snapshot create stays idempotent', async (t) => {
  const { engine, call, base, adminToken } = await startApi(t, 256 * MiB, 'cairn-api-paging-');
  for (const v of ['v3', 'v1', 'v2', 'v4', 'v5']) await engine.createVolume(v, MiB);
  const want: string[] = [];
  for (let i = 0; i < 6; i++) {
    const group = [`v1@s${i}a`, `v2@s${i}`, `v1@s${i}b`];
    await engine.createSnapshots(group);
    want.push(...group);
  }
  await engine.deleteSnapshot('v1@s2a');
  want.splice(want.indexOf('v1@s2a'), 1);

  // Every page size walks the same list, in id order, each item once.
  for (const limit of [1, 2, 4, 17, 1000]) {
    assert.deepEqual(await walk(call, '/v1/snapshots', limit), want, `pool-wide, limit ${limit}`);
    assert.deepEqual(await walk(call, '/v1/volumes/v1/snapshots', limit), want.filter((n) => n.startsWith('v1@')), `v1, limit ${limit}`);
    assert.deepEqual(await walk(call, '/v1/snapshots?volume=v2', limit), want.filter((n) => n.startsWith('v2@')));
    assert.deepEqual(await walk(call, '/v1/volumes', limit), ['v1', 'v2', 'v3', 'v4', 'v5'], `volumes, limit ${limit}`);
  }
  // Without a limit: the whole (short) list and no next token.
  const all = await call('GET', '/v1/snapshots');
  assert.equal(all.next, null);
  assert.equal((all.body as unknown[]).length, want.length);
  // A deletion between pages neither repeats nor skips what is left.
  const first = await call('GET', '/v1/snapshots?limit=4');
  await engine.deleteSnapshot(want[4]!);
  const rest = await walk(call, '/v1/snapshots', 3, first.next);
  assert.deepEqual([...(first.body as Array<{ name: string }>).map((s) => s.name), ...rest], want.filter((_, i) => i !== 4));
  want.splice(4, 1);

  // Invalid tokens and limits: a clear 400 naming the problem.
  const volumeToken = (await call('GET', '/v1/volumes?limit=1')).next!;
  for (const bad of ['garbage!', 'Zm9v', volumeToken, Buffer.from('snapshot:abc').toString('base64url'), Buffer.from('snapshot:').toString('base64url')]) {
    const r = await call('GET', `/v1/snapshots?pageToken=${encodeURIComponent(bad)}`);
    assert.equal(r.status, 400, `token ${bad}: ${JSON.stringify(r.body)}`);
    assert.equal((r.body as { code: string }).code, 'invalid_argument');
    assert.match((r.body as { detail: string }).detail, /page token/);
  }
  const badVolumeToken = await call('GET', `/v1/volumes?pageToken=${Buffer.from('snapshot:7').toString('base64url')}`);
  assert.equal(badVolumeToken.status, 400);
  for (const limit of ['0', '1001', '-1', 'x']) assert.equal((await call('GET', `/v1/snapshots?limit=${limit}`)).status, 400, `limit ${limit}`);

  // Idempotent create: same name again is 200 with the same snapshot; a group overlapping partly is 409.
  const created = await call('POST', '/v1/volumes/v3/snapshots', { name: 'x' });
  assert.equal(created.status, 201);
  const again = await call('POST', '/v1/volumes/v3/snapshots', { name: 'x' });
  assert.equal(again.status, 200);
  assert.equal((again.body as { id: number }).id, (created.body as { id: number }).id);
  const groupAgain = await call('POST', '/v1/snapshots', { snapshots: ['v3@x', 'v1@s0a'] });
  assert.equal(groupAgain.status, 200);
  const partial = await call('POST', '/v1/snapshots', { snapshots: ['v3@x', 'v4@new'] });
  assert.equal(partial.status, 409);
  assert.equal(engine.findSnapshot('v4@new'), null, 'a refused group creates nothing');
  assert.equal((await call('POST', '/v1/volumes/nope/snapshots', { name: 'x' })).status, 404);
  // ?name= finds a snapshot name on any volume (a lookup; CSI's create uses it).
  await engine.createSnapshots(['v5@x']);
  const named = await call('GET', '/v1/snapshots?name=x');
  assert.deepEqual((named.body as Array<{ name: string }>).map((s) => s.name).sort(), ['v3@x', 'v5@x']);
  assert.deepEqual(((await call('GET', '/v1/snapshots?name=x&volume=v5')).body as Array<{ name: string }>).map((s) => s.name), ['v5@x']);
  assert.deepEqual((await call('GET', '/v1/snapshots?name=none')).body, []);
  await engine.deleteSnapshot('v5@x');
  assert.deepEqual(((await call('GET', '/v1/snapshots?name=x')).body as Array<{ name: string }>).map((s) => s.name), ['v3@x']);
  // The volume view counts snapshots.
  assert.equal(((await call('GET', '/v1/volumes/v1')).body as { snapshotCount: number }).snapshotCount, want.filter((n) => n.startsWith('v1@')).length);

  // The CLI's client walks every page by default, or one page with --limit.
  const client = new ApiClient(base, { token: adminToken });
  const everything = await client.list<{ name: string }>('/v1/snapshots');
  assert.deepEqual(everything.items.map((s) => s.name), [...want, 'v3@x']);
  assert.equal(everything.nextPageToken, null);
  const onePage = await client.list<{ name: string }>('/v1/snapshots', { limit: 2 });
  assert.deepEqual(onePage.items.map((s) => s.name), want.slice(0, 2));
  const next = await client.list<{ name: string }>('/v1/snapshots', { limit: 2, pageToken: onePage.nextPageToken! });
  assert.deepEqual(next.items.map((s) => s.name), want.slice(2, 4));
});
