// Jobs across a real daemon restart (SIGKILL, then `cairn serve` again on the same pool): a job id
// never turns into a 404. A flatten cut short comes back `running` with `resumed: true`, follows the
// flatten the engine resumes, and succeeds; an export or import cut short is `interrupted` with a
// message that says it must be retried; a finished job is still there; a bad job file is set aside.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, authHeaders, cairnJson, run, startServe, tempDir, until, type DaemonProcess } from './cli-helpers.js';

/** Polled every 10 ms: a flatten's running state is short-lived. */
const untilFast = <T>(what: string, probe: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> => until(what, probe, timeoutMs, 10);

interface Job { id: string; kind: string; target: string; state: string; progress: number; resumed: boolean; error: { code: string; message: string } | null }
interface Volume { flattenProgress: number | null; origin: unknown }

async function get<T>(api: string, path: string): Promise<{ status: number; body: T }> {
  const r = await fetch(`${api}${path}`, { headers: authHeaders(api) });
  return { status: r.status, body: (await r.json()) as T };
}

async function kill(d: DaemonProcess): Promise<void> {
  await d.stop('SIGKILL');
}

test('jobs survive a daemon restart or say plainly that it ended them', { timeout: 240_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-jobs-');
  const pool = join(dir, 'pool');
  const jobFile = `${pool}.jobs.json`;
  let d = await startServe(t, pool, ['--pool-size', '2G']);

  // A clone sharing 768 MiB with its origin: flattening it copies every block, long enough to cut.
  await cairnJson(d.api, ['volume', 'create', 'src', '--size', '768M']);
  const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6c 0 768M', `${d.nbd}/src`], { timeoutMs: 120_000 });
  assert.equal(w.code, 0, w.stderr);
  await cairnJson(d.api, ['snapshot', 'create', 'src@base']);
  await cairnJson(d.api, ['volume', 'create', 'clone', '--from', 'src@base']);

  // A job that finished before the restart.
  await cairnJson(d.api, ['volume', 'create', 'small', '--size', '4M']);
  await cairnJson(d.api, ['snapshot', 'create', 'small@s']);
  const exp = await fetch(`${d.api}/v1/volumes/small/snapshots/s/export`, { headers: authHeaders(d.api) });
  const finishedId = exp.headers.get('x-cairn-job')!;
  await exp.arrayBuffer();
  await untilFast('the export job to finish', async () => ((await get<Job>(d.api, `/v1/jobs/${finishedId}`)).body.state === 'succeeded' ? true : null));

  // An export cut by the restart: its stream is open, not read to the end.
  const cut = await fetch(`${d.api}/v1/volumes/src/snapshots/base/export`, { headers: authHeaders(d.api) });
  const exportId = cut.headers.get('x-cairn-job')!;

  // An import cut by the restart: half a stream sent, the rest never comes.
  const stream = Buffer.from(await (await fetch(`${d.api}/v1/volumes/small/snapshots/s/export`, { headers: authHeaders(d.api) })).arrayBuffer());
  const post = request(`${d.api}/v1/volumes/incoming/import`, { method: 'POST', headers: { ...authHeaders(d.api), 'content-type': 'application/octet-stream' } });
  post.on('error', () => {}); // the daemon dies under it
  post.write(stream.subarray(0, stream.length >> 1));
  const importJob = await untilFast('the import job', async () =>
    (await get<Job[]>(d.api, '/v1/jobs')).body.find((j) => j.kind === 'import' && j.target === 'incoming') ?? null);

  // A flatten cut by the restart once its cursor is in the catalog.
  const started = await fetch(`${d.api}/v1/volumes/clone/flatten`, { method: 'POST', headers: authHeaders(d.api) });
  assert.equal(started.status, 202);
  const flattenId = ((await started.json()) as Job).id;
  await untilFast('the flatten to be under way', async () => {
    const v = (await get<Volume>(d.api, '/v1/volumes/clone')).body;
    // Past its first step (so the commit that put its cursor in the catalog is durable: the cursor shows
    // in memory before that commit ends) and well before its end.
    return v.flattenProgress !== null && v.flattenProgress > 0 && v.flattenProgress < 0.5 ? true : null;
  });
  await kill(d);
  cut.body?.cancel().catch(() => {});
  assert.ok(existsSync(jobFile), 'the job records are beside the pool');

  d = await startServe(t, pool);
  await t.test('a flatten comes back resumed and finishes', async () => {
    const r = await get<Job>(d.api, `/v1/jobs/${flattenId}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.resumed, true);
    assert.ok(r.body.state === 'running' || r.body.state === 'succeeded', r.body.state);
    const end = await untilFast('the resumed flatten', async () => {
      const j = (await get<Job>(d.api, `/v1/jobs/${flattenId}`)).body;
      return j.state === 'running' ? null : j;
    }, 120_000);
    assert.equal(end.state, 'succeeded', JSON.stringify(end.error));
    assert.equal(end.progress, 1);
    assert.equal((await get<Volume>(d.api, '/v1/volumes/clone')).body.origin, null, 'the clone shares nothing now');
  });
  await t.test('an export and an import cut by the restart are interrupted, to be retried', async () => {
    for (const [id, kind] of [[exportId, 'export'], [importJob.id, 'import']] as const) {
      const r = await get<Job>(d.api, `/v1/jobs/${id}`);
      assert.equal(r.status, 200, `${kind} job is still known`);
      assert.equal(r.body.state, 'interrupted', kind);
      assert.equal(r.body.resumed, false);
      assert.equal(r.body.error?.code, 'job_interrupted');
      assert.match(r.body.error?.message ?? '', /restarted.*does not resume on its own/, kind);
    }
    assert.match((await get<Job>(d.api, `/v1/jobs/${importJob.id}`)).body.error!.message, /must be retried/);
  });
  await t.test('a job finished before the restart is still there', async () => {
    const r = await get<Job>(d.api, `/v1/jobs/${finishedId}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.state, 'succeeded');
    assert.equal(r.body.kind, 'export');
  });
  await t.test('a clean stop keeps the records too; a bad job file is set aside, not fatal', async () => {
    assert.equal(await d.stop(), 0);
    const saved = JSON.parse(await readFile(jobFile, 'utf8')) as { jobs: Job[] };
    assert.equal(saved.jobs.find((j) => j.id === flattenId)?.state, 'succeeded');
    await writeFile(jobFile, '{"not":"a job file"');
    d = await startServe(t, pool);
    assert.ok(d.logs.some((l) => l.includes('jobs_file_invalid')));
    assert.ok(existsSync(`${jobFile}.bad`));
    assert.equal((await get<Job[]>(d.api, '/v1/jobs')).status, 200);
    assert.equal(await d.stop(), 0);
  });
});
