// The REST API over real HTTP (fetch) on an ephemeral port, in process with a real engine on a temp
// pool: request validation and problem+json errors, idempotent creates and 409 conflicts, status
// codes for engine errors (404, 409, 416/400, 507), jobs, and that /v1/openapi.json documents every
// route fastify registered (and nothing it did not), with the request schemas it validates with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolFull } from '../src/engine/index.js';
import { apiDocsPath } from '../src/api/server.js';
import { CreateVolumeBody, Volume } from '../src/api/schemas.js';
import { Validator } from '@seriousme/openapi-schema-validator';
import { startApi } from './api-harness.js';

const MiB = 1024 * 1024;

interface Problem { type: string; title: string; status: number; detail: string; code: string }

function assertProblem(r: { status: number; type: string; body: unknown }, status: number, code: string): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  assert.match(r.type, /^application\/problem\+json/);
  const p = r.body as Problem;
  assert.deepEqual(Object.keys(p).sort(), ['code', 'detail', 'status', 'title', 'type']);
  assert.equal(p.code, code, JSON.stringify(p));
  assert.equal(p.status, status);
  assert.ok(p.detail.length > 0);
  assert.equal(p.type, `https://cairn.dev/problems/${code}`);
}

test('REST API: validation, problem+json, idempotency, openapi', { timeout: 600_000 }, async (t) => {
  const { call, registered, engine, base } = await startApi(t, 1024 * MiB);

  await t.test('request validation gives 400 problem+json', async () => {
    assertProblem(await call('POST', '/v1/volumes', {}), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x', size: 'big' }), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x', size: -4096 }), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x', size: 4096, colour: 'red' }), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/volumes', undefined, '{"name": "x", '), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x', size: 4096, from: 'y' }), 400, 'invalid_argument');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x' }), 400, 'invalid_argument');
    assertProblem(await call('POST', '/v1/volumes', { name: 'x', size: 1000 }), 400, 'invalid_size');
    assertProblem(await call('POST', '/v1/volumes', { name: 'a@b', size: 4096 }), 400, 'invalid_name');
    assertProblem(await call('GET', '/v1/diff?from=a@b'), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/snapshots', { snapshots: [] }), 400, 'invalid_request');
    assertProblem(await call('POST', '/v1/snapshots', { snapshots: ['nosnap'] }), 400, 'invalid_name');
    assertProblem(await call('PATCH', '/v1/volumes/x', { size: '1G' }), 400, 'invalid_request');
  });

  await t.test('unknown names and routes give 404', async () => {
    assertProblem(await call('GET', '/v1/volumes/nope'), 404, 'volume_not_found');
    assertProblem(await call('DELETE', '/v1/volumes/nope'), 404, 'volume_not_found');
    assertProblem(await call('GET', '/v1/volumes/nope/snapshots'), 404, 'volume_not_found');
    assertProblem(await call('POST', '/v1/volumes/nope/flatten'), 404, 'volume_not_found');
    assertProblem(await call('GET', '/v1/jobs/nope'), 404, 'job_not_found');
    assertProblem(await call('GET', '/v1/nothing-here'), 404, 'route_not_found');
  });

  await t.test('idempotent creates: same arguments 200, different 409', async () => {
    const first = await call('POST', '/v1/volumes', { name: 'v', size: 8 * MiB });
    assert.equal(first.status, 201);
    const again = await call('POST', '/v1/volumes', { name: 'v', size: 8 * MiB });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, first.body);
    assertProblem(await call('POST', '/v1/volumes', { name: 'v', size: 16 * MiB }), 409, 'name_taken');
    assertProblem(await call('POST', '/v1/volumes', { name: 'v', from: 'v' }), 409, 'name_taken');

    const [a, b] = await Promise.all([
      call('POST', '/v1/volumes', { name: 'race', size: 4 * MiB }),
      call('POST', '/v1/volumes', { name: 'race', size: 4 * MiB }),
    ]);
    assert.deepEqual([a!.status, b!.status].sort(), [200, 201]);
    assert.equal((a!.body as { id: number }).id, (b!.body as { id: number }).id);

    const s1 = await call('POST', '/v1/volumes/v/snapshots', { name: 's1' });
    assert.equal(s1.status, 201);
    const s1again = await call('POST', '/v1/volumes/v/snapshots', { name: 's1' });
    assert.equal(s1again.status, 200);
    assert.deepEqual(s1again.body, s1.body);
    const clone = await call('POST', '/v1/volumes', { name: 'c', from: 'v@s1' });
    assert.equal(clone.status, 201);
    assert.equal((clone.body as { origin: string }).origin, 'v@s1');
    assert.equal((await call('POST', '/v1/volumes', { name: 'c', from: 'v@s1' })).status, 200);
    assertProblem(await call('POST', '/v1/volumes', { name: 'c', size: 8 * MiB }), 409, 'name_taken');
    const group = await call('POST', '/v1/snapshots', { snapshots: ['v@g', 'race@g'] });
    assert.equal(group.status, 201);
    assert.equal((await call('POST', '/v1/snapshots', { snapshots: ['v@g', 'race@g'] })).status, 200);
    assertProblem(await call('POST', '/v1/snapshots', { snapshots: ['v@g', 'c@g'] }), 409, 'name_taken');
    assert.deepEqual(engine.listSnapshots('c'), [], 'a refused group creates nothing');
  });

  await t.test('engine errors map to stable statuses', async () => {
    assertProblem(await call('PATCH', '/v1/volumes/v', { size: 4 * MiB }), 409, 'shrink_refused');
    const shrunk = await call('PATCH', '/v1/volumes/v', { size: 4 * MiB, allowShrink: true });
    assert.equal(shrunk.status, 200);
    assertProblem(await call('POST', '/v1/volumes/v/revert', { snapshot: 'nope' }), 404, 'snapshot_not_found');
    assertProblem(await call('POST', '/v1/volumes/v/revert', { snapshot: 'c@s1' }), 400, 'invalid_argument');
    assertProblem(await call('GET', '/v1/diff?from=v@nope&to=v'), 404, 'snapshot_not_found');
    const diff = await call('GET', '/v1/diff?from=v@s1&to=v');
    assert.equal(diff.status, 200);
    assert.deepEqual(Object.keys(diff.body as object).sort(), ['changedBytes', 'from', 'ranges', 'to']);
    const space = await call('GET', '/v1/volumes/v/space');
    assert.deepEqual(Object.keys(space.body as object).sort(), ['exclusiveBytes', 'mappedBytes', 'name', 'provisionedBytes']);
  });

  await t.test('flatten and delete are jobs', async () => {
    const started = await call('POST', '/v1/volumes/c/flatten');
    assert.equal(started.status, 202);
    const job = started.body as { id: string; kind: string; state: string; progress: number; error: unknown };
    assert.equal(job.kind, 'flatten');
    let polled = job;
    // Until the job ends, however long a busy machine takes (the test's timeout bounds a hang).
    while (polled.state === 'running') {
      await new Promise((r) => setTimeout(r, 50));
      polled = (await call('GET', `/v1/jobs/${job.id}`)).body as typeof job;
    }
    assert.equal(polled.state, 'succeeded');
    assert.equal(polled.progress, 1);
    assert.equal(polled.error, null);
    const listed = (await call('GET', '/v1/jobs')).body as Array<{ id: string }>;
    assert.ok(listed.some((j) => j.id === job.id));
    const del = await call('DELETE', '/v1/volumes/race');
    assert.equal(del.status, 204);
    assertProblem(await call('GET', '/v1/volumes/race'), 404, 'volume_not_found');
  });

  await t.test('openapi.json documents every registered route with the validating schemas', async () => {
    const r = await call('GET', '/v1/openapi.json');
    assert.equal(r.status, 200);
    const doc = r.body as { openapi: string; paths: Record<string, Record<string, {
      parameters?: Array<{ name: string; in: string }>; requestBody?: { content: Record<string, { schema: unknown }> };
      responses: Record<string, unknown>; }>> };
    assert.match(doc.openapi, /^3\./);
    const validation = await new Validator().validate(r.body as Record<string, unknown>);
    assert.equal(validation.valid, true, `a valid OpenAPI 3 document: ${JSON.stringify(validation.errors)}`);
    // The reference UI's own routes (HTML, scripts, its copy of this document) are not API routes.
    const real = registered.filter((x) => x.method !== 'HEAD' && !x.url.startsWith(apiDocsPath))
      .map((x) => `${x.method.toLowerCase()} ${x.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`).sort();
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)).sort();
    assert.deepEqual(documented, real);
    for (const route of ['get /v1/pool', 'post /v1/volumes', 'get /v1/volumes', 'get /v1/volumes/{name}',
      'patch /v1/volumes/{name}', 'delete /v1/volumes/{name}', 'post /v1/volumes/{name}/snapshots', 'post /v1/snapshots',
      'get /v1/volumes/{name}/snapshots', 'delete /v1/volumes/{name}/snapshots/{snapshot}', 'post /v1/volumes/{name}/revert',
      'post /v1/volumes/{name}/flatten', 'get /v1/diff', 'get /v1/jobs/{id}', 'get /v1/openapi.json']) {
      assert.ok(documented.includes(route), `issue route ${route} is served and documented`);
    }
    for (const [path, ops] of Object.entries(doc.paths)) {
      const params = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      for (const [method, op] of Object.entries(ops)) {
        assert.deepEqual((op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name), params, `${method} ${path}`);
        assert.ok('default' in op.responses, `${method} ${path} documents its problem+json errors`);
      }
    }
    const body = doc.paths['/v1/volumes']!.post!.requestBody!.content['application/json']!.schema;
    assert.deepEqual(body, JSON.parse(JSON.stringify(CreateVolumeBody)), 'the same schema validates and documents');
    // Response schemas as OpenAPI 3.0 writes them (a TypeBox `T | null` becomes `nullable: true`).
    const created = doc.paths['/v1/volumes']!.post!.responses['201'] as { content: Record<string, { schema: { properties: object; required: string[] } }> };
    const volumeDoc = created.content['application/json']!.schema;
    assert.deepEqual(Object.keys(volumeDoc.properties).sort(), Object.keys(Volume.properties).sort(), 'responses carry their schemas');
    assert.deepEqual(volumeDoc.required, Volume.required);
    const imported = doc.paths['/v1/volumes/{name}/import']!.post!.requestBody!.content;
    assert.deepEqual(Object.keys(imported), ['application/octet-stream'], 'a stream body is documented under its media type');
  });

  await t.test('the browsable reference answers with HTML', async () => {
    const page = await fetch(`${base}${apiDocsPath}`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await page.text(), /swagger-ui/i);
    const init = await fetch(`${base}${apiDocsPath}/static/swagger-initializer.js`);
    assert.equal(init.status, 200, 'its scripts are served');
  });
});

test('REST API: a full pool is 507 pool_full', { timeout: 600_000 }, async (t) => {
  const { call, engine, base, adminToken } = await startApi(t, 48 * MiB);
  const auth = { authorization: `Bearer ${adminToken}` };
  assert.equal((await call('POST', '/v1/volumes', { name: 'big', size: 256 * MiB })).status, 201);
  const id = engine.resolve('big').id;
  const chunk = Buffer.alloc(MiB, 0x5c);
  let full = false;
  for (let i = 0; i < 256 && !full; i += 1) {
    try { await engine.write(id, i * MiB, chunk); } catch (err) {
      assert.ok(err instanceof PoolFull, String(err));
      full = true;
    }
  }
  assert.ok(full, 'the pool filled up');
  assert.equal((await call('POST', '/v1/volumes/big/snapshots', { name: 's' })).status, 201);
  const stream = await fetch(`${base}/v1/volumes/big/snapshots/s/export`, { headers: auth });
  assert.equal(stream.status, 200);
  const bytes = Buffer.from(await stream.arrayBuffer());
  assert.equal(bytes.length, Number(stream.headers.get('content-length')));
  const r = await fetch(`${base}/v1/volumes/again/import`, { method: 'POST', body: bytes, headers: { ...auth, 'content-type': 'application/octet-stream' } });
  assert.equal(r.status, 507);
  assert.match(r.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(((await r.json()) as Problem).code, 'pool_full');
  assertProblem(await call('GET', '/v1/volumes/again'), 404, 'volume_not_found');
  const jobs = (await call('GET', '/v1/jobs')).body as Array<{ kind: string; state: string; error: { code: string } | null; progress: number }>;
  const exportJob = jobs.find((j) => j.kind === 'export');
  assert.equal(exportJob?.state, 'succeeded');
  assert.equal(exportJob?.progress, 1);
  const importJob = jobs.find((j) => j.kind === 'import');
  assert.equal(importJob?.state, 'failed');
  assert.equal(importJob?.error?.code, 'pool_full');
  const wrongType = await fetch(`${base}/v1/volumes/x/import`, { method: 'POST', body: '{}', headers: { ...auth, 'content-type': 'application/json' } });
  assert.equal(wrongType.status, 415);
});
