// Jobs restored at a restart, against an engine reopened from a power-cut image: a flatten cut short
// resumes when the pool opens and may end before the daemon reads its job records (a loaded machine
// runs the rest of a large flatten in that gap). Its job is then `succeeded` and `resumed`, not
// mistaken for one that had ended before the cut.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool } from '../src/engine/pool.js';
import { FLATTEN_CHUNK_BLOCKS } from '../src/engine/constants.js';
import { JobManager } from '../src/api/jobs.js';
import { JobStore, restoreJobs } from '../src/api/job-store.js';
import { pattern } from './engine-helpers.js';

const K4 = 4096;

function runningFlatten(id: string, target: string): Record<string, unknown> {
  return { id, kind: 'flatten', target, state: 'running', progress: 0.25, error: null,
    createdAt: new Date().toISOString(), finishedAt: null, resumed: false };
}

test('a flatten resumed at open that ends before the job records are read is succeeded and resumed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-jobrestore-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const blocks = 4 * FLATTEN_CHUNK_BLOCKS;
  const device = new SimDevice(8192, new Prng(7));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('o', blocks * K4);
  await engine.write(engine.resolve('o').id, 0, pattern(5, blocks * K4));
  await engine.createSnapshots(['o@s']);
  await engine.cloneVolume('c', 'o@s');
  await engine.cloneVolume('done', 'o@s');
  await engine.flattenVolume('done'); // ended (and committed) before the cut
  await engine.checkpoint();
  let image: SimDevice | null = null;
  await engine.flattenVolume('c', (f) => { if (image === null && f < 1) image = device.crash('clean'); });
  await engine.close();
  assert.ok(image !== null, 'the power cut came after the flatten\'s first step');

  const reopened = await openPool(image, { commitIntervalMs: 0 });
  t.after(() => reopened.close());
  assert.notEqual(reopened.getVolume('c').flattenProgress, null, 'the cut flatten is under way at open');
  // The resumed flatten ends before the job records are read.
  for (let i = 0; i < 10_000 && reopened.getVolume('c').flattenProgress !== null; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(reopened.getVolume('c').origin, null, 'the resumed flatten ended');
  assert.equal(reopened.flattenWasUnderWayAtOpen('c'), true);
  assert.equal(reopened.flattenWasUnderWayAtOpen('done'), false);
  assert.deepEqual(await reopened.read(reopened.resolve('c').id, 0, blocks * K4), pattern(5, blocks * K4));

  const path = join(dir, 'pool.jobs.json');
  await writeFile(path, JSON.stringify({ version: 1, jobs: [runningFlatten('cut', 'c'), runningFlatten('before', 'done')] }));
  const store = new JobStore(path);
  const jobs = new JobManager(store);
  await restoreJobs(jobs, store, reopened, () => {});
  const cut = jobs.get('cut')!;
  assert.equal(cut.state, 'succeeded');
  assert.equal(cut.resumed, true, 'the flatten went on after the restart');
  assert.equal(cut.progress, 1);
  const before = jobs.get('before')!;
  assert.equal(before.state, 'succeeded');
  assert.equal(before.resumed, false, 'that flatten had ended before the restart');
  await jobs.close();
});
