// Tenants and tokens through the real binaries: the daemon's bootstrap admin token (a 0600 file the
// CLI finds by itself, kept across restarts), `cairn tenant` and `cairn token`, the CLI's token order
// (--token, CAIRN_TOKEN, CAIRN_TOKEN_FILE, the admin file), a tenant token's view, revocation, and
// the API over HTTPS (--ca) and mutual TLS (--client-cert/--client-key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { adminToken, assertBuilt, authHeaders, cairn, cairnJson, startServe, tempDir } from './cli-helpers.js';
import { makePki } from './pki.js';

/** The secret part of `cairn_ID_SECRET` (the secret itself may hold '_'). */
function secretOf(token: string): string { return token.slice('cairn_'.length + 13); }

interface Token { id: string; name: string; role: string; tenant: string | null; token?: string }

test('tenants and tokens through the CLI; the bootstrap admin token', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-tenants-');
  const pool = join(dir, 'cairn.pool');
  let d = await startServe(t, pool, ['--pool-size', '1G']);
  const tokenFile = join(dir, 'cairn.pool.admin-token');

  await t.test('the daemon writes its admin token 0600 and keeps it across a restart', async () => {
    assert.equal((await stat(tokenFile)).mode & 0o777, 0o600);
    const first = (await readFile(tokenFile, 'utf8')).trim();
    assert.ok(d.logs.some((l) => l.includes('"event":"admin_token_created"')));
    assert.ok(!d.logs.some((l) => l.includes(secretOf(first))), 'the token is not in the log');
    assert.equal(await d.stop(), 0);
    d = await startServe(t, pool, ['--pool-size', '1G']);
    assert.equal((await readFile(tokenFile, 'utf8')).trim(), first, 'a valid token file is kept');
  });

  await t.test('with no token the CLI finds the admin file of the default pool path; without one it says how to give one', async () => {
    const viaDefault = await cairn(d.api, ['volume', 'list'], { env: { CAIRN_TOKEN_FILE: '', CAIRN_POOL: pool } });
    assert.equal(viaDefault.code, 0, viaDefault.stderr);
    const none = await cairn(d.api, ['volume', 'list'], { env: { CAIRN_TOKEN_FILE: '', CAIRN_POOL: join(dir, 'other.pool') } });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /needs a token.*\(unauthorized\); no token: pass --token, set CAIRN_TOKEN or CAIRN_TOKEN_FILE/);
  });

  const acme: { token: string } = { token: '' };
  await t.test('tenant create/list/show; token create prints the secret once', async () => {
    assert.equal((await cairn(d.api, ['tenant', 'create', 'acme'])).code, 0);
    assert.equal((await cairn(d.api, ['tenant', 'create', 'Bad_Name'])).code, 1);
    const dup = await cairn(d.api, ['tenant', 'create', 'acme']);
    assert.match(dup.stderr, /already exists.*name_taken/);
    const created = await cairn(d.api, ['token', 'create', '--role', 'tenant', '--tenant', 'acme', '--name', 'ci', '--expires', '30d']);
    assert.equal(created.code, 0, created.stderr);
    acme.token = created.stdout.trim();
    assert.match(acme.token, /^cairn_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/, 'stdout is the token alone (for $(...))');
    assert.match(created.stderr, /not shown again/);
    const listed = await cairnJson<Token[]>(d.api, ['token', 'list']);
    assert.deepEqual(listed.map((x) => x.name).sort(), ['bootstrap-admin', 'ci']);
    assert.ok(!JSON.stringify(listed).includes(secretOf(acme.token)), 'lists never hold a secret');
    const tenants = await cairnJson<Array<{ name: string }>>(d.api, ['tenant', 'list']);
    assert.deepEqual(tenants.map((x) => x.name), ['default', 'acme']);
    assert.equal((await cairn(d.api, ['token', 'create', '--role', 'reader', '--tenant', 'acme', '--expires', 'soon'])).code, 2, 'a bad expiry is a usage error');
    assert.equal((await cairn(d.api, ['token', 'create', '--role', 'tenant'])).code, 1, 'a tenant token needs a tenant');
  });

  await t.test('a tenant token works inside its tenant only; --token beats CAIRN_TOKEN beats CAIRN_TOKEN_FILE', async () => {
    const asAcme = { CAIRN_TOKEN: acme.token };
    assert.equal((await cairn(d.api, ['volume', 'create', 'db', '--size', '4M'], { env: asAcme })).code, 0);
    assert.equal((await cairn(d.api, ['volume', 'create', 'db', '--size', '8M'])).code, 0, 'the admin makes default\'s own db');
    const acmeList = await cairn(d.api, ['--json', 'volume', 'list'], { env: asAcme });
    assert.deepEqual((JSON.parse(acmeList.stdout) as Array<{ name: string; size: number }>).map((v) => `${v.name}:${v.size}`), [`db:${4 * 1024 * 1024}`]);
    const all = await cairnJson<Array<{ name: string; nbdUri: string | null }>>(d.api, ['volume', 'list']);
    assert.deepEqual(all.map((v) => v.name).sort(), ['acme/db', 'db']);
    // Without NBD TLS, plain NBD serves only `default`: acme's volume has no URI a client could open.
    assert.deepEqual(all.map((v) => [v.name, v.nbdUri?.replace(/:\d+\//, ':PORT/') ?? null]).sort(),
      [['acme/db', null], ['db', 'nbd://127.0.0.1:PORT/db']]);
    assert.equal((await cairn(d.api, ['tenant', 'list'], { env: asAcme })).code, 1, 'tenants are an admin\'s');
    // Order: a wrong CAIRN_TOKEN loses to a good --token; a good CAIRN_TOKEN beats a bad token file.
    const badFile = join(dir, 'bad.token');
    await writeFile(badFile, 'cairn_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n');
    assert.equal((await cairn(d.api, ['--token', acme.token, 'volume', 'list'], { env: { CAIRN_TOKEN: 'nope' } })).code, 0);
    assert.equal((await cairn(d.api, ['volume', 'list'], { env: { CAIRN_TOKEN: acme.token, CAIRN_TOKEN_FILE: badFile } })).code, 0);
    const refused = await cairn(d.api, ['volume', 'list'], { env: { CAIRN_TOKEN_FILE: badFile } });
    assert.equal(refused.code, 1);
    assert.ok(refused.stderr.includes(`the token from ${badFile} was refused`), refused.stderr);
  });

  await t.test('revoke: the next request is refused; tenant delete refuses, then --force', async () => {
    assert.equal((await cairn(d.api, ['token', 'revoke', 'ci'])).code, 0);
    const after = await cairn(d.api, ['volume', 'list'], { env: { CAIRN_TOKEN: acme.token } });
    assert.equal(after.code, 1);
    assert.match(after.stderr, /not valid.*unauthorized/);
    const refused = await cairn(d.api, ['tenant', 'delete', 'acme']);
    assert.match(refused.stderr, /owns 1 volume.*tenant_not_empty/);
    assert.equal((await cairn(d.api, ['tenant', 'delete', 'acme', '--force'])).code, 0);
    assert.deepEqual((await cairnJson<Array<{ name: string }>>(d.api, ['volume', 'list'])).map((v) => v.name), ['db']);
  });

  await t.test('/metrics counts the refused tokens by reason (and needs an admin token itself)', async () => {
    const denied = await fetch(`${d.api}/metrics`);
    assert.equal(denied.status, 401);
    const text = await (await fetch(`${d.api}/metrics`, { headers: authHeaders(d.api) })).text();
    assert.match(text, /cairn_api_auth_failures_total\{reason="invalid"\} [1-9]/);
    assert.match(text, /cairn_api_auth_failures_total\{reason="missing"\} [1-9]/);
    assert.ok(!text.includes(secretOf(acme.token)));
  });

  await t.test('the daemon logs an audit event per change, with the token\'s name and never its secret', () => {
    const audits = d.logs.filter((l) => l.includes('"event":"audit"'));
    assert.ok(audits.some((l) => l.includes('"tokenName":"ci"') && l.includes('"tenant":"acme"') && l.includes('"status":201')), audits.join('\n'));
    assert.ok(audits.some((l) => l.includes('"route":"/v1/tenants/:tenant"') && l.includes('"status":409') && l.includes('tenant_not_empty')));
    for (const secret of [acme.token, adminToken(d.api)].map(secretOf)) assert.ok(!d.logs.some((l) => l.includes(secret)));
  });
});

test('the API over HTTPS (--ca) and with client certificates (mutual TLS)', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-api-tls-');
  const pki = await makePki(dir);
  const client = await pki.client('ops', '/CN=ops');
  const f = (name: string) => ({ 'ca.pem': pki.ca, 'server.pem': pki.serverCert, 'server.key': pki.serverKey, 'client.pem': client.cert, 'client.key': client.key }[name] ?? join(dir, name));
  const d = await startServe(t, f('cairn.pool'), ['--pool-size', '1G', '--api-tls-cert', f('server.pem'), '--api-tls-key', f('server.key')]);
  assert.match(d.api, /^https:\/\/127\.0\.0\.1:\d+$/);
  const ok = await cairn(d.api, ['--ca', f('ca.pem'), 'volume', 'create', 'v', '--size', '1M']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((await cairn(d.api, ['volume', 'list'], { env: { CAIRN_CA: f('ca.pem') } })).code, 0, 'CAIRN_CA works as --ca');
  const unverified = await cairn(d.api, ['volume', 'list']);
  assert.equal(unverified.code, 1, 'an unknown CA is refused');
  assert.match(unverified.stderr, /cannot reach cairn daemon|certificate/i);
  assert.equal(await d.stop(), 0);

  const m = await startServe(t, f('cairn.pool'), ['--pool-size', '1G', '--api-tls-cert', f('server.pem'), '--api-tls-key', f('server.key'),
    '--api-tls-client-ca', f('ca.pem')]);
  const noCert = await cairn(m.api, ['--ca', f('ca.pem'), 'volume', 'list']);
  assert.equal(noCert.code, 1, 'without a client certificate the handshake fails');
  const withCert = await cairn(m.api, ['--ca', f('ca.pem'), '--client-cert', f('client.pem'), '--client-key', f('client.key'), '--json', 'volume', 'list']);
  assert.equal(withCert.code, 0, withCert.stderr);
  assert.deepEqual((JSON.parse(withCert.stdout) as Array<{ name: string }>).map((v) => v.name), ['v']);
  assert.equal((await cairn(m.api, ['--ca', f('ca.pem'), '--client-cert', f('client.pem'), 'volume', 'list'])).code, 1, 'a certificate needs its key');
});
