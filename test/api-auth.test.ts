// Authentication and tenant scoping of the REST API, through real HTTP: every route without a token,
// with a wrong, revoked and expired one, and with each role across tenants (a table of every route's
// rule that fails when a route is added without one); a tenant's names, lists, jobs and errors never
// show another tenant's volumes; audit events; no token in any log line; the back-off after failures.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { startApi, type ApiAnswer } from './api-harness.js';
import { Authenticator, authFailuresFree } from '../src/api/auth.js';
import type { TenantStore } from '../src/tenancy/store.js';
import type { FastifyRequest } from 'fastify';

/** The secret part of `cairn_ID_SECRET` (the secret itself may hold '_'). */
function secretOf(token: string): string { return token.slice('cairn_'.length + 13); }

const MiB = 1024 * 1024;

/** Who may call each route: a new route fails this test until its rule is written here too. */
const rules: Record<string, 'public' | 'read' | 'write' | 'admin'> = {
  'DELETE /v1/tenants/:tenant': 'admin', 'DELETE /v1/tokens/:token': 'admin', 'DELETE /v1/volumes/:name': 'write',
  'DELETE /v1/volumes/:name/snapshots/:snapshot': 'write', 'GET /v1/diff': 'read', 'GET /v1/jobs': 'read', 'GET /v1/jobs/:id': 'read',
  'GET /v1/openapi.json': 'public', 'GET /v1/pool': 'read', 'GET /v1/pool/history': 'read', 'GET /v1/snapshots': 'read', 'GET /v1/tenants': 'admin',
  'GET /v1/tenants/:tenant': 'admin', 'GET /v1/tokens': 'admin', 'GET /v1/volumes': 'read', 'GET /v1/volumes/:name': 'read',
  'GET /v1/volumes/:name/snapshots': 'read', 'GET /v1/volumes/:name/snapshots/:snapshot': 'read',
  'GET /v1/volumes/:name/snapshots/:snapshot/export': 'read', 'GET /v1/volumes/:name/space': 'read', 'GET /v1/volumes/:name/tree': 'read',
  'PATCH /v1/volumes/:name': 'write', 'POST /v1/pool/grow': 'admin', 'POST /v1/snapshots': 'write', 'POST /v1/tenants': 'admin',
  'POST /v1/tokens': 'admin', 'POST /v1/volumes': 'write', 'POST /v1/volumes/:name/flatten': 'write', 'POST /v1/volumes/:name/import': 'write',
  'POST /v1/volumes/:name/revert': 'write', 'POST /v1/volumes/:name/snapshots': 'write', 'GET /metrics': 'admin', 'GET /v1/whoami': 'read',
  'GET /v1/volumes/:name/qos': 'read', 'GET /v1/stats': 'read', 'PUT /v1/volumes/:name/qos': 'write', 'GET /v1/tenants/:tenant/qos': 'read', 'PUT /v1/tenants/:tenant/qos': 'admin',
  'GET /v1/tenants/:tenant/encryption': 'admin', 'PUT /v1/tenants/:tenant/encryption': 'admin',
  'POST /v1/tenants/:tenant/encryption/unlock': 'admin', 'POST /v1/tenants/:tenant/encryption/rotate': 'admin',
  'POST /v1/tenants/:tenant/nbd-keys': 'write', 'GET /v1/tenants/:tenant/nbd-keys': 'write', 'DELETE /v1/tenants/:tenant/nbd-keys/:identity': 'write',
  'GET /v1/nodes': 'read', 'GET /v1/nodes/:name': 'read', 'POST /v1/nodes/:name/drain': 'admin', 'GET /v1/cluster': 'admin',
  'GET /v1/tenants/:tenant/nvme-hosts': 'read', 'POST /v1/tenants/:tenant/nvme-hosts': 'write', 'DELETE /v1/tenants/:tenant/nvme-hosts/:nqn': 'write',
};

/** A concrete path for a route pattern (names that need not exist: authorization comes first). */
function concrete(url: string): string {
  return url.replace(':tenant', 'acme').replace(':token', 'nope').replace(':name', 'db').replace(':snapshot', 's1').replace(':identity', 'nope').replace(':nqn', 'nqn.2024-01.com.example:nope').replace(':id', 'nope');
}

function code(r: ApiAnswer): string { return (r.body as { code?: string } | null)?.code ?? `status ${r.status}`; }

test('API auth: every route has a rule; no token, wrong, revoked and expired tokens are 401; roles are 403', { timeout: 600_000 }, async (t) => {
  const f = await startApi(t, 256 * MiB);
  await f.tenancy.createTenant('acme');
  const reader = (await f.tenancy.createToken({ role: 'reader', tenant: 'acme' })).token;
  const tenant = (await f.tenancy.createToken({ role: 'tenant', tenant: 'acme' })).token;
  const revoked = await f.tenancy.createToken({ role: 'admin', name: 'gone' });
  await f.tenancy.revokeToken('gone');

  await t.test('the table names every route and each route its rule', () => {
    const specs = new Map(f.specs.map((s) => [`${s.method} ${s.url}`, s.access]));
    assert.deepEqual([...specs.keys()].sort(), Object.keys(rules).sort(), 'a route was added or removed: give it a rule in this table');
    for (const [route, access] of specs) assert.equal(access, rules[route], route);
  });

  await t.test('no token, a malformed one, a wrong one and a revoked one: 401 on every non-public route', async () => {
    const wrong = `cairn_${'0'.repeat(12)}_${'A'.repeat(43)}`;
    const forged = f.adminToken.slice(0, -4) + 'AAAA';
    for (const [route, access] of Object.entries(rules)) {
      const [method, url] = route.split(' ') as [string, string];
      for (const token of [null, 'garbage', wrong, forged, revoked.token]) {
        const r = await f.as(token)(method, concrete(url));
        if (access === 'public') assert.notEqual(r.status, 401, route);
        else {
          assert.equal(r.status, 401, `${route} with ${token === null ? 'no token' : 'a bad token'}: ${code(r)}`);
          assert.equal(code(r), 'unauthorized');
        }
      }
    }
    assert.ok(f.authFailures.includes('missing') && f.authFailures.includes('invalid'), 'failures are counted by reason');
  });

  await t.test('an expired token is refused', async () => {
    const expiring = (await f.tenancy.createToken({ role: 'admin', expiresMs: Date.now() + 60_000 })).token;
    assert.equal((await f.as(expiring)('GET', '/v1/volumes')).status, 200);
    f.advanceClock(61_000);
    assert.equal((await f.as(expiring)('GET', '/v1/volumes')).status, 401);
    assert.equal((await f.call('GET', '/v1/volumes')).status, 200, 'a token without expiry still works');
  });

  await t.test('readers may only read; tenants may not do admin things', async () => {
    for (const [route, access] of Object.entries(rules)) {
      const [method, url] = route.split(' ') as [string, string];
      const asReader = await f.as(reader)(method, concrete(url));
      const asTenant = await f.as(tenant)(method, concrete(url));
      if (access === 'admin') {
        assert.equal(asReader.status, 403, route);
        assert.equal(asTenant.status, 403, route);
      } else if (access === 'write') {
        assert.equal(asReader.status, 403, `${route}: ${code(asReader)}`);
        assert.notEqual(asTenant.status, 403, route);
        assert.notEqual(asTenant.status, 401, route);
      } else {
        for (const r of [asReader, asTenant]) assert.ok(r.status !== 401 && r.status !== 403, `${route}: ${code(r)}`);
      }
    }
  });

  await t.test('revocation takes effect on the next request', async () => {
    const { token } = await f.tenancy.createToken({ role: 'tenant', tenant: 'acme', name: 'short-lived' });
    assert.equal((await f.as(token)('GET', '/v1/volumes')).status, 200);
    assert.equal((await f.call('DELETE', '/v1/tokens/short-lived')).status, 204);
    assert.equal((await f.as(token)('GET', '/v1/volumes')).status, 401);
  });
});

test('API tenants: names are per tenant; another tenant\'s objects are 404, never hinted at', { timeout: 600_000 }, async (t) => {
  const f = await startApi(t, 256 * MiB);
  for (const name of ['acme', 'beta']) assert.equal((await f.call('POST', '/v1/tenants', { name })).status, 201);
  const token = async (tenant: string, role: 'tenant' | 'reader' = 'tenant') => (await f.call('POST', '/v1/tokens', { role, tenant })).body as { token: string };
  const acme = f.as((await token('acme')).token), beta = f.as((await token('beta')).token), acmeReader = f.as((await token('acme', 'reader')).token);

  await t.test('the same name in three tenants is three volumes', async () => {
    assert.equal((await f.call('POST', '/v1/volumes', { name: 'db', size: 4 * MiB })).status, 201);
    assert.equal((await acme('POST', '/v1/volumes', { name: 'db', size: 8 * MiB })).status, 201);
    assert.equal((await beta('POST', '/v1/volumes', { name: 'db', size: 12 * MiB })).status, 201);
    assert.deepEqual(f.engine.listVolumes().map((v) => `${v.name}:${v.sizeBytes / MiB}`).sort(), ['acme/db:8', 'beta/db:12', 'db:4']);
    const mine = (await acme('GET', '/v1/volumes')).body as Array<{ name: string; size: number }>;
    assert.deepEqual(mine.map((v) => `${v.name}:${v.size / MiB}`), ['db:8'], 'a tenant lists its own, under its own names');
    const admin = (await f.call('GET', '/v1/volumes')).body as Array<{ name: string }>;
    assert.deepEqual(admin.map((v) => v.name).sort(), ['acme/db', 'beta/db', 'db'], 'an admin sees every tenant as TENANT/NAME');
    assert.equal(((await f.call('GET', '/v1/volumes/acme%2Fdb')).body as { size: number }).size, 8 * MiB);
  });

  await t.test('snapshots, clones, diff, tree and jobs stay inside the tenant', async () => {
    assert.equal((await acme('POST', '/v1/volumes/db/snapshots', { name: 's1' })).status, 201);
    assert.equal((await acme('POST', '/v1/volumes', { name: 'copy', from: 'db@s1' })).status, 201);
    assert.equal((await f.engine.getVolume('acme/copy')).origin?.volume, 'acme/db');
    const copy = (await acme('GET', '/v1/volumes/copy')).body as { origin: string };
    assert.equal(copy.origin, 'db@s1', 'the origin is shown by the tenant\'s name');
    const snaps = (await acme('GET', '/v1/snapshots')).body as Array<{ name: string }>;
    assert.deepEqual(snaps.map((s) => s.name), ['db@s1']);
    assert.deepEqual((await beta('GET', '/v1/snapshots')).body, []);
    assert.deepEqual((await beta('GET', '/v1/snapshots?name=s1')).body, [], 'a lookup by snapshot name finds only the tenant\'s');
    const job = await acme('POST', '/v1/volumes/copy/flatten');
    assert.equal(job.status, 202);
    const id = (job.body as { id: string; target: string }).id;
    assert.equal((job.body as { target: string }).target, 'copy');
    assert.equal((await beta('GET', `/v1/jobs/${id}`)).status, 404, 'another tenant\'s job does not exist for beta');
    assert.ok(((await beta('GET', '/v1/jobs')).body as unknown[]).length === 0);
    assert.equal(((await acme('GET', `/v1/jobs/${id}`)).body as { target: string }).target, 'copy');
    assert.equal(((await f.call('GET', `/v1/jobs/${id}`)).body as { target: string }).target, 'acme/copy');
    assert.equal((await acme('GET', '/v1/volumes/copy/tree')).status, 200);
    assert.equal((await acme('GET', '/v1/diff?from=db@s1&to=db')).status, 200);
  });

  await t.test('another tenant\'s names: 404 as if absent, whatever the spelling', async () => {
    // Each answer is the one for a name that exists nowhere, spelled the same way.
    for (const [path, absentPath] of [
      ['/v1/volumes/copy', '/v1/volumes/nosuch'], ['/v1/volumes/acme%2Fdb', '/v1/volumes/zzzz%2Fdb'],
      ['/v1/volumes/..%2Facme%2Fdb', '/v1/volumes/..%2Fzzzz%2Fdb'], ['/v1/volumes/copy/snapshots', '/v1/volumes/nosuch/snapshots'],
      ['/v1/volumes/db/snapshots/s1', '/v1/volumes/db/snapshots/nosuch'],
    ] as const) {
      const r = await beta('GET', path), absent = await beta('GET', absentPath);
      assert.equal(r.status, 404, path);
      const strip = (x: ApiAnswer, p: string) => JSON.stringify(x.body).split(decodeURIComponent(p.split('/')[3]!)).join('N').replace(/s1|nosuch/g, 'S');
      assert.equal(strip(r, path).replace(/acme/g, 'T'), strip(absent, absentPath).replace(/zzzz/g, 'T'), `${path} answers as ${absentPath} does`);
    }
    assert.equal(code(await beta('GET', '/v1/volumes/copy')), 'volume_not_found');
    for (const [method, path, body] of [
      ['DELETE', '/v1/volumes/acme%2Fdb', undefined], ['POST', '/v1/volumes', { name: 'steal', from: 'acme/db@s1' }],
      ['POST', '/v1/snapshots', { snapshots: ['acme/db@x'] }], ['GET', '/v1/diff?from=acme/db@s1&to=acme/db', undefined],
      ['POST', '/v1/volumes', { name: 'x/y', size: MiB }],
    ] as const) {
      const r = await beta(method, path, body);
      assert.ok(r.status === 404 || r.status === 400, `${method} ${path}: ${r.status} ${code(r)}`);
      // It may echo the name asked for; it never says anything of what acme holds.
      assert.ok(!/acme\/(copy|db@s1\b)|mapped|size/.test(JSON.stringify(r.body).replace(/acme\/db@s1|acme\/db@x/g, '')), `${method} ${path}: ${JSON.stringify(r.body)}`);
    }
    assert.deepEqual(f.engine.listVolumes().map((v) => v.name).sort(), ['acme/copy', 'acme/db', 'beta/db', 'db'], 'nothing was changed');
    // A tenant's own errors speak its names, not the engine's.
    const own = await acme('GET', '/v1/volumes/nope');
    assert.ok(!JSON.stringify(own.body).includes('acme/'), JSON.stringify(own.body));
  });

  await t.test('NBD keys: a tenant manages its own; another tenant\'s are not found', async () => {
    const created = await acme('POST', '/v1/tenants/acme/nbd-keys');
    assert.equal(created.status, 201);
    const identity = (created.body as { identity: string }).identity;
    assert.equal((await beta('GET', '/v1/tenants/acme/nbd-keys')).status, 404);
    assert.equal(code(await beta('DELETE', `/v1/tenants/acme/nbd-keys/${identity}`)), 'tenant_not_found');
    assert.deepEqual(((await acme('GET', '/v1/tenants/acme/nbd-keys')).body as Array<{ identity: string }>).map((k) => k.identity), [identity]);
    assert.equal((await acmeReader('POST', '/v1/tenants/acme/nbd-keys')).status, 403);
  });

  await t.test('NVMe hosts: a tenant manages its own list, a reader reads it; another tenant\'s is not found; errors', async () => {
    const nqn = 'nqn.2014-08.org.nvmexpress:uuid:6f1b2c3d-0000-4000-8000-00000000abcd';
    const added = await acme('POST', '/v1/tenants/acme/nvme-hosts', { nqn });
    assert.equal(added.status, 201, code(added));
    assert.deepEqual(Object.keys(added.body as object).sort(), ['createdMs', 'nqn', 'tenant']);
    assert.equal(code(await acme('POST', '/v1/tenants/acme/nvme-hosts', { nqn })), 'name_taken');
    assert.equal((await acme('POST', '/v1/tenants/acme/nvme-hosts', { nqn })).status, 409);
    const bad = await acme('POST', '/v1/tenants/acme/nvme-hosts', { nqn: 'iqn.2024-01.com.example:x' });
    assert.equal(bad.status, 400);
    assert.equal((bad.body as { type?: string; title?: string }).title, 'Bad Request');
    assert.equal((await f.call('POST', '/v1/tenants/nosuch/nvme-hosts', { nqn })).status, 404);
    assert.equal((await beta('GET', '/v1/tenants/acme/nvme-hosts')).status, 404, 'another tenant: not found');
    assert.equal(code(await beta('DELETE', `/v1/tenants/acme/nvme-hosts/${encodeURIComponent(nqn)}`)), 'tenant_not_found');
    assert.deepEqual(((await acmeReader('GET', '/v1/tenants/acme/nvme-hosts')).body as Array<{ nqn: string }>).map((h) => h.nqn), [nqn]);
    assert.equal((await acmeReader('POST', '/v1/tenants/acme/nvme-hosts', { nqn })).status, 403);
    assert.equal((await f.call('GET', '/v1/tenants/acme/nvme-hosts')).status, 200, 'an admin reads any tenant\'s');
    assert.equal(code(await acme('DELETE', `/v1/tenants/acme/nvme-hosts/${encodeURIComponent('nqn.2024-01.com.example:other')}`)), 'nvme_host_not_found');
    assert.equal((await acme('DELETE', `/v1/tenants/acme/nvme-hosts/${encodeURIComponent(nqn)}`)).status, 204);
    assert.deepEqual((await acme('GET', '/v1/tenants/acme/nvme-hosts')).body, []);
    assert.equal((await acme('POST', '/v1/tenants/acme/nvme-hosts', { nqn })).status, 201, 'added again for the tenant delete below');
  });

  await t.test('a reader reads but changes nothing', async () => {
    assert.equal((await acmeReader('GET', '/v1/volumes/db')).status, 200);
    assert.equal((await acmeReader('POST', '/v1/volumes/db/snapshots', { name: 's2' })).status, 403);
    assert.equal((await acmeReader('DELETE', '/v1/volumes/db')).status, 403);
  });

  await t.test('tenant delete: refused while it owns volumes; --force deletes them with its tokens', async () => {
    const r = await f.call('DELETE', '/v1/tenants/acme');
    assert.equal(r.status, 409);
    assert.equal(code(r), 'tenant_not_empty');
    assert.equal((await f.call('DELETE', '/v1/tenants/default')).status, 400);
    await f.engine.flush();
    // The flatten above may still run: wait for it before forcing.
    for (let i = 0; i < 1200 && f.engine.getVolume('acme/copy').flattenProgress !== null; i++) await new Promise((res) => setTimeout(res, 50));
    assert.equal((await f.call('DELETE', '/v1/tenants/acme?force=true')).status, 204);
    assert.deepEqual(f.engine.listVolumes().map((v) => v.name).sort(), ['beta/db', 'db']);
    assert.equal((await acme('GET', '/v1/volumes')).status, 401, 'the tenant\'s tokens went with it');
    assert.deepEqual(f.tenancy.listNvmeHosts('acme'), [], 'and its NVMe hosts');
    assert.deepEqual(((await f.call('GET', '/v1/tenants')).body as Array<{ name: string }>).map((x) => x.name), ['default', 'beta']);
  });

  await t.test('audit events name the token and tenant of each change, and its outcome', () => {
    const created = f.audits.find((e) => e.route === '/v1/volumes' && e.method === 'POST' && e.tenant === 'beta');
    assert.ok(created !== undefined && created.status === 201 && created.role === 'tenant' && created.tokenName?.startsWith('token-') === true);
    const refused = f.audits.find((e) => e.route === '/v1/tenants/:tenant' && e.status === 409);
    assert.equal(refused?.code, 'tenant_not_empty');
    assert.equal(refused?.tenant, '*');
  });
});

test('API auth: tokens never appear in logs or lists; token create shows the secret once', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { lines.push(chunk.toString()); done(); } });
  const f = await startApi(t, 64 * MiB, 'cairn-api-log-', { logger: pino({ level: 'trace' }, sink) });
  const created = (await f.call('POST', '/v1/tokens', { role: 'admin', name: 'ops', expiresInSeconds: 3600 })).body as { token: string; expiresAt: string };
  assert.match(created.token, /^cairn_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  assert.ok(Date.parse(created.expiresAt) > Date.now());
  await f.as(created.token)('GET', '/v1/volumes');
  await f.as(created.token)('POST', '/v1/volumes', { name: 'v', size: MiB });
  await f.as(`${created.token}x`)('GET', '/v1/volumes');
  const listed = JSON.stringify((await f.call('GET', '/v1/tokens')).body);
  assert.ok(listed.includes('"ops"'));
  const secret = secretOf(created.token);
  for (const where of [listed, lines.join('')]) {
    assert.ok(!where.includes(secret) && !where.includes(secretOf(f.adminToken)), 'no token secret anywhere');
  }
  assert.ok(lines.some((l) => l.includes('"event":"audit"') && l.includes('"tokenName":"ops"')), 'audit events reach the log');
  // The catalog holds a salted hash, not the secret.
  assert.ok(!JSON.stringify(f.engine.listSettings('token/').map((s) => s.value.toString())).includes(secret));
});

test('API auth: repeated failures from one address are slowed down, others are not', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const store = { verifyToken: () => null } as unknown as TenantStore;
    const auth = new Authenticator(store);
    const req = (ip: string) => ({ headers: { authorization: 'Bearer bad' }, ip }) as unknown as FastifyRequest;
    const settled = async (p: Promise<unknown>): Promise<boolean> => {
      let done = false;
      p.catch(() => undefined).finally(() => { done = true; });
      for (let i = 0; i < 5; i++) await Promise.resolve();
      return done;
    };
    for (let i = 0; i < authFailuresFree; i++) assert.ok(await settled(auth.authenticate(req('10.0.0.1'))), 'the first failures answer at once');
    const slowed = auth.authenticate(req('10.0.0.1'));
    assert.equal(await settled(slowed), false, 'then the address waits');
    assert.ok(await settled(auth.authenticate(req('10.0.0.2'))), 'another address does not');
    mock.timers.tick(100);
    await assert.rejects(slowed, (e) => (e as { code?: string }).code === 'unauthorized');
    const slower = auth.authenticate(req('10.0.0.1'));
    mock.timers.tick(100);
    assert.equal(await settled(slower), false, 'each further failure waits longer');
    mock.timers.tick(100);
    await assert.rejects(slower);
  } finally {
    mock.timers.reset();
  }
});
