// NBD access per tenant, with real clients: a TLS-PSK key from the pool (TenantStore) or an X.509
// client certificate naming a tenant sees only that tenant's exports (nbdinfo --list, qemu-io), another
// tenant's name fails exactly as a missing one (the server's own message, read through libnbd's debug
// log and qemu-io), plain clients see only the default tenant's, TLS-required refuses them, and keys
// created or deleted while the server runs apply to the next connection. The daemon's wiring
// (src/daemon/nbd-access.ts) is what the server is given here.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { startFixture, runOk, run, runPython, PythonSession, MiB, type Fixture } from './nbd-harness.js';
import { TenantStore } from '../src/tenancy/store.js';
import { nbdAccess, certTenant, CERT_ADMIN_URI, type NbdAccess } from '../src/daemon/nbd-access.js';
import { subjectAltUris, type TlsConfig } from '../src/nbd/tls.js';
import { makePki } from './pki.js';

interface TenantFixture extends Fixture { store: TenantStore; port: number }

/** A server wired as the daemon wires it, with tenants acme and globex and a volume or two each. */
async function tenantFixture(t: TestContext, tls: Omit<TlsConfig, 'pskLookup'> & { tenantKeys?: boolean }): Promise<TenantFixture> {
  let access: NbdAccess | null = null;
  const { tenantKeys, ...files } = tls;
  const f = await startFixture(t, {
    tls: { ...files, ...(tenantKeys === true ? { pskLookup: (id: string) => access!.pskLookup(id) } : {}) },
    exportsFor: (peer) => access!.exportsFor(peer),
  });
  const store = new TenantStore(f.engine);
  access = nbdAccess(f.engine, store);
  await store.createTenant('acme');
  await store.createTenant('globex');
  for (const name of ['pub', 'acme/db', 'acme/logs', 'globex/db']) await f.engine.createVolume(name, 4 * MiB);
  await f.engine.createSnapshots(['acme/db@s1', 'globex/db@g1']);
  return { ...f, store, port: f.server.port as number };
}

/** Writes a psk file (and a qemu tls-creds-psk directory: DIR/keys.psk) for one key. */
async function pskDir(f: Fixture, name: string, identity: string, key: string): Promise<{ dir: string; file: string }> {
  const dir = path.join(f.dir, name);
  await mkdir(dir);
  const file = path.join(dir, 'keys.psk');
  await writeFile(file, `${identity}:${key}\n`);
  return { dir, file };
}

async function listExports(uri: string): Promise<string[]> {
  const out = JSON.parse(await runOk('nbdinfo', ['--list', '--json', uri])) as { exports: Array<{ 'export-name': string }> };
  return out.exports.map((e) => e['export-name']).sort();
}

const pskUri = (f: TenantFixture, identity: string, file: string, name = ''): string =>
  `nbds://${identity}@localhost:${f.port}/${name}?tls-psk-file=${file}`;

function qemuPsk(f: TenantFixture, dir: string, identity: string, exportName: string, commands: string[], flags: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run('qemu-io', [...flags, '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${dir},username=${identity}`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.port},export=${exportName},tls-creds=tls0`, ...commands.flatMap((c) => ['-c', c])]);
}

/** qemu-io's report of the server's refusal, with the export's name replaced by NAME. */
function refusal(stderr: string, exportName: string): string {
  const line = stderr.split('\n').find((l) => l.startsWith('server reported:'));
  assert.ok(line !== undefined, `qemu-io reports the server's message: ${stderr}`);
  return line.split(exportName).join('NAME');
}

test('TLS-PSK with a tenant key from the pool: only that tenant\'s exports, others fail as missing ones', async (t) => {
  const f = await tenantFixture(t, { tenantKeys: true });
  const acme = await f.store.createNbdKey('acme');
  const { dir, file } = await pskDir(f, 'acme', acme.identity, acme.key);
  assert.deepEqual(await listExports(pskUri(f, acme.identity, file)), ['db', 'db@s1', 'logs']);
  assert.deepEqual(await listExports(`nbd://localhost:${f.port}`), ['pub'], 'a plain client sees the default tenant only');

  const io = await qemuPsk(f, dir, acme.identity, 'db', ['write -P 0x5a 0 64k', 'read -P 0x5a 0 64k']);
  assert.equal(io.code, 0, io.stderr);
  const target = f.engine.resolve('acme/db');
  assert.ok((await f.engine.read(target.id, 0, 65536)).every((b) => b === 0x5a), 'the write reached acme/db');
  const connected = f.events.find((e) => e.event === 'nbd_connected' && e.fields.export === 'db');
  assert.equal(connected?.fields.identity, `psk:${acme.identity}`);

  // Another tenant's volume, snapshot and a missing name: the same refusal, naming only what was asked.
  const missing = refusal((await qemuPsk(f, dir, acme.identity, 'nosuch', ['read 0 4k'])).stderr, 'nosuch');
  assert.equal(missing, 'server reported: volume not found: NAME');
  for (const name of ['globex/db', 'globex/nosuch', 'pub', '../pub']) {
    const r = await qemuPsk(f, dir, acme.identity, name, ['read 0 4k']);
    assert.notEqual(r.code, 0, name);
    assert.equal(refusal(r.stderr, name), missing, name);
  }
  const snap = await qemuPsk(f, dir, acme.identity, 'globex/db@g1', ['read 0 4k']);
  const missingSnap = await qemuPsk(f, dir, acme.identity, 'nosuch@g1', ['read 0 4k']);
  assert.equal(refusal(snap.stderr, 'globex/db'), refusal(missingSnap.stderr, 'nosuch'));
  const readOnly = await qemuPsk(f, dir, acme.identity, 'db@s1', ['read -P 0 0 4k'], ['-r']);
  assert.equal(readOnly.code, 0, readOnly.stderr);

  // globex's key sees globex's, and the plain client cannot open a tenant's volume by its engine name.
  const globex = await f.store.createNbdKey('globex');
  const g = await pskDir(f, 'globex', globex.identity, globex.key);
  assert.deepEqual(await listExports(pskUri(f, globex.identity, g.file)), ['db', 'db@g1']);
  const plain = await run('nbdinfo', [`nbd://localhost:${f.port}/acme/db`]);
  assert.notEqual(plain.code, 0);
});

test('NBD keys created or deleted while the server runs apply to the next connection', async (t) => {
  const f = await tenantFixture(t, { tenantKeys: true, required: true });
  const first = await f.store.createNbdKey('acme');
  const a = await pskDir(f, 'first', first.identity, first.key);
  assert.deepEqual(await listExports(pskUri(f, first.identity, a.file)), ['db', 'db@s1', 'logs']);
  const second = await f.store.createNbdKey('acme');
  const b = await pskDir(f, 'second', second.identity, second.key);
  assert.deepEqual(await listExports(pskUri(f, second.identity, b.file)), ['db', 'db@s1', 'logs']);
  // A connection opened with the key keeps working after the key is deleted; new ones are refused.
  const open = new PythonSession(t, `
import nbd, sys, json
h = nbd.NBD(); h.set_tls(nbd.TLS_REQUIRE); h.set_tls_psk_file(sys.argv[3]); h.set_tls_username(sys.argv[2])
h.set_export_name('db'); h.connect_tcp('127.0.0.1', sys.argv[1])
for line in sys.stdin:
    h.pwrite(b'\x42' * 4096, 0); print(json.dumps({'read': h.pread(4096, 0) == b'\x42' * 4096}))`, [String(f.port), first.identity, a.file]);
  assert.deepEqual(await open.call('io'), { read: true });
  await f.store.deleteNbdKey(first.identity);
  const gone = await run('nbdinfo', ['--list', pskUri(f, first.identity, a.file)]);
  assert.notEqual(gone.code, 0, 'a deleted key is refused');
  assert.deepEqual(await open.call('io'), { read: true }, 'the open connection goes on');
  assert.deepEqual(await listExports(pskUri(f, second.identity, b.file)), ['db', 'db@s1', 'logs']);
  // A right identity with a wrong key, and a key of one identity under another's name, are refused.
  const wrong = await pskDir(f, 'wrong', second.identity, first.key);
  assert.notEqual((await run('nbdinfo', ['--list', pskUri(f, second.identity, wrong.file)])).code, 0);
  // Deleting the tenant removes its keys with it.
  await f.engine.deleteVolume('acme/db');
  await f.engine.deleteVolume('acme/logs');
  await f.store.deleteTenant('acme');
  assert.notEqual((await run('nbdinfo', ['--list', pskUri(f, second.identity, b.file)])).code, 0);
  const logged = JSON.stringify(f.events);
  for (const key of [first.key, second.key]) assert.ok(!logged.includes(key), 'no key in the server\'s log events');
});

test('TLS required with tenant keys only: plain clients are refused (NBD_REP_ERR_TLS_REQD), keys work', async (t) => {
  const f = await tenantFixture(t, { tenantKeys: true, required: true });
  const acme = await f.store.createNbdKey('acme');
  const { file } = await pskDir(f, 'acme', acme.identity, acme.key);
  assert.notEqual((await run('nbdinfo', ['--list', `nbd://localhost:${f.port}`])).code, 0);
  assert.notEqual((await run('nbdinfo', [`nbd://localhost:${f.port}/pub`])).code, 0);
  // libnbd without TLS, option by option: the server's answer to LIST and INFO before STARTTLS.
  const plain = await runPython(`
import nbd, sys, json
h = nbd.NBD(); h.set_tls(nbd.TLS_DISABLE); h.set_opt_mode(True)
messages = []
h.set_debug(True); h.set_debug_callback(lambda ctx, msg: messages.append(msg))
h.connect_tcp('127.0.0.1', sys.argv[1])
out = {}
for op in ['list', 'info']:
    try:
        if op == 'list': h.opt_list(lambda name, desc: 0)
        else: h.set_export_name('pub'); h.opt_info()
        out[op] = 'ok'
    except nbd.Error as e:
        out[op] = e.errno
out['messages'] = [m for m in messages if 'server error message' in m or 'TLS_REQD' in m or 'TLS' in m and 'required' in m]
print(json.dumps(out))`, [String(f.port)]) as { list: string; info: string; messages: string[] };
  assert.notEqual(plain.list, 'ok');
  assert.notEqual(plain.info, 'ok');
  assert.ok(plain.messages.some((m) => /requires TLS/.test(m)), JSON.stringify(plain.messages));
  assert.deepEqual(await listExports(pskUri(f, acme.identity, file)), ['db', 'db@s1', 'logs']);
});

test('option-level edge cases over a tenant key (libnbd): INFO, GO and meta contexts of other names', async (t) => {
  const f = await tenantFixture(t, { tenantKeys: true });
  const acme = await f.store.createNbdKey('acme');
  const { file } = await pskDir(f, 'acme', acme.identity, acme.key);
  const script = `
import nbd, sys, json, re
port, identity, psk = sys.argv[1], sys.argv[2], sys.argv[3]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE); h.set_tls_psk_file(psk); h.set_tls_username(identity)
h.set_opt_mode(True); h.set_full_info(True); h.add_meta_context('base:allocation')
messages = []
h.set_debug(True); h.set_debug_callback(lambda ctx, msg: messages.append(msg))
h.connect_tcp('127.0.0.1', port)
def server_message():
    found = [m.split('server error message: ', 1)[1] for m in messages if 'server error message: ' in m]
    messages.clear()
    return found[-1] if found else None
out = {}
for name in ['db', 'nosuch', 'globex/db', 'globex/nosuch', 'nosuch@g1', 'globex/db@g1', 'pub']:
    h.set_export_name(name)
    entry = {}
    try:
        h.opt_info(); entry['info'] = [h.get_canonical_export_name(), h.get_size(), h.is_read_only()]
    except nbd.Error as e:
        entry['info'] = [e.errno, server_message()]
    try:
        entry['contexts'] = h.opt_list_meta_context(lambda ctx: 0)
    except nbd.Error as e:
        entry['contexts'] = [e.errno, server_message()]
    out[name] = entry
h.set_export_name('globex/db')
try:
    h.opt_go(); out['go_other'] = 'ok'
except nbd.Error as e:
    out['go_other'] = [e.errno, server_message()]
h.set_export_name('db')
h.opt_go()
out['after'] = [h.get_canonical_export_name(), h.can_meta_context('base:allocation'), h.pread(4096, 0) == bytes(4096)]
h.shutdown()
print(json.dumps(out))`;
  const out = await runPython(script, [String(f.port), acme.identity, file]) as Record<string, { info: unknown[]; contexts: unknown }> & { go_other: unknown[]; after: unknown[] };
  assert.deepEqual(out.db!.info, ['db', 4 * MiB, false], 'NBD_INFO_NAME gives the tenant\'s own name');
  const shape = (entry: unknown[], name: string): unknown[] => [entry[0], String(entry[1]).split(name).join('NAME')];
  const missing = shape(out.nosuch!.info, 'nosuch');
  assert.deepEqual(missing, ['ENOENT', 'volume not found: NAME']);
  for (const name of ['globex/db', 'globex/nosuch', 'pub']) {
    assert.deepEqual(shape(out[name]!.info, name), missing, `INFO ${name}`);
    assert.deepEqual(shape(out[name]!.contexts as unknown[], name), shape(out.nosuch!.contexts as unknown[], 'nosuch'), `LIST_META_CONTEXT ${name}`);
  }
  assert.deepEqual(shape(out['globex/db@g1']!.info, 'globex/db'), shape(out['nosuch@g1']!.info, 'nosuch'));
  assert.deepEqual(shape(out.go_other, 'globex/db'), missing, 'GO fails as INFO does');
  assert.deepEqual(out.after, ['db', true, true], 'the session goes on after a refused name');
});

test('no access: a refused identity gets NBD_REP_ERR_POLICY to every option but STARTTLS and ABORT', async (t) => {
  // A server whose plain view is empty (exportsFor null): what a client with a deleted tenant's certificate meets.
  const f = await startFixture(t, { exportsFor: () => null });
  await f.engine.createVolume('v', 4 * MiB);
  const out = await runPython(`
import nbd, sys, json
h = nbd.NBD(); h.set_tls(nbd.TLS_DISABLE); h.set_opt_mode(True)
messages = []
h.set_debug(True); h.set_debug_callback(lambda ctx, msg: messages.append(msg))
h.connect_tcp('127.0.0.1', sys.argv[1])
out = {}
try:
    h.opt_list(lambda name, desc: 0); out['list'] = 'ok'
except nbd.Error as e:
    out['list'] = e.errno
h.set_export_name('v')
try:
    h.opt_go(); out['go'] = 'ok'
except nbd.Error as e:
    out['go'] = e.errno
out['messages'] = [m.split('server error message: ', 1)[1] for m in messages if 'server error message: ' in m]
h.opt_abort()
print(json.dumps(out))`, [String(f.server.port)]) as { list: string; go: string; messages: string[] };
  assert.notEqual(out.list, 'ok');
  assert.notEqual(out.go, 'ok');
  assert.deepEqual([...new Set(out.messages)], ['no exports for this client']);
});

test('certificate rule: SAN URI cairn:tenant:NAME, cairn:admin, none → default, two → refused', () => {
  assert.deepEqual(subjectAltUris('DNS:localhost, URI:cairn:tenant:acme, IP Address:127.0.0.1'), ['cairn:tenant:acme']);
  assert.deepEqual(subjectAltUris('URI:"cairn:tenant:a, b"'), ['cairn:tenant:a, b']);
  assert.deepEqual(subjectAltUris(undefined), []);
  assert.equal(certTenant(['cairn:tenant:acme']), 'acme');
  assert.equal(certTenant(['https://example.com/x']), 'default');
  assert.equal(certTenant([]), 'default');
  assert.equal(certTenant(['cairn:tenant:acme', 'cairn:tenant:globex']), null);
  assert.equal(certTenant(['cairn:tenant:acme', CERT_ADMIN_URI]), null);
  assert.equal(certTenant(['cairn:tenant:Not/A/Tenant']), null);
  assert.equal(typeof certTenant([CERT_ADMIN_URI]), 'symbol');
});

interface ClientCerts { ca: string; serverCert: string; serverKey: string; dirs: Record<string, string> }

/** A CA, a server certificate and one client credential directory (libnbd/qemu layout) per subjectAltName. */
async function makeClientCerts(base: string, clients: Record<string, string | null>): Promise<ClientCerts> {
  const pki = await makePki(base, 'Cairn tenant CA');
  const dirs: Record<string, string> = {};
  for (const [name, san] of Object.entries(clients)) dirs[name] = (await pki.client(name, `/CN=${name}`, san ?? undefined)).dir;
  return { ca: pki.ca, serverCert: pki.serverCert, serverKey: pki.serverKey, dirs };
}

test('X.509 client certificates name their tenant (SAN URI cairn:tenant:NAME); cairn:admin sees every export', async (t) => {
  const setup = await startFixture(t); // for its temp dir
  const certs = await makeClientCerts(setup.dir, {
    acme: 'URI:cairn:tenant:acme,DNS:acme.example', nobody: null, admin: `URI:${CERT_ADMIN_URI}`,
    ghost: 'URI:cairn:tenant:ghost', twice: 'URI:cairn:tenant:acme,URI:cairn:tenant:globex',
  });
  const f = await tenantFixture(t, { certFile: certs.serverCert, keyFile: certs.serverKey, caFile: certs.ca, required: true });
  const uri = (who: string, name = ''): string => `nbds://localhost:${f.port}/${name}?tls-certificates=${certs.dirs[who]}`;
  assert.deepEqual(await listExports(uri('acme')), ['db', 'db@s1', 'logs']);
  assert.deepEqual(await listExports(uri('nobody')), ['pub'], 'a certificate naming no tenant: the default tenant');
  assert.deepEqual(await listExports(uri('admin')), ['acme/db', 'acme/db@s1', 'acme/logs', 'globex/db', 'globex/db@g1', 'pub']);
  for (const who of ['ghost', 'twice']) {
    const r = await run('nbdinfo', ['--list', uri(who)]);
    assert.notEqual(r.code, 0, `${who} is refused`);
  }
  await runOk('qemu-io', ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certs.dirs.acme}`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.port},export=logs,tls-creds=tls0`, '-c', 'write -P 0x11 0 64k', '-c', 'read -P 0x11 0 64k']);
  const other = await run('qemu-io', ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certs.dirs.acme}`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.port},export=globex/db,tls-creds=tls0`, '-r', '-c', 'read 0 4k']);
  assert.equal(refusal(other.stderr, 'globex/db'), 'server reported: volume not found: NAME');
  const logged = f.events.filter((e) => e.event === 'nbd_tls_identity').map((e) => [e.fields.identity, e.fields.access]);
  assert.ok(logged.some(([id, ok]) => id === 'cert:CN=ghost' && ok === false), JSON.stringify(logged));
  // A certificate of a tenant created later gets its exports from then on.
  await f.store.createTenant('ghost');
  await f.engine.createVolume('ghost/v', 4 * MiB);
  assert.deepEqual(await listExports(uri('ghost')), ['v']);
});

test('a tenant\'s pool-wide snapshot page is never empty while more follow (LIST relies on its last id)', async (t) => {
  const f = await startFixture(t);
  const store = new TenantStore(f.engine);
  await store.createTenant('acme');
  await store.createTenant('globex');
  await f.engine.createVolume('globex/db', 4 * MiB);
  await f.engine.createVolume('acme/db', 4 * MiB);
  // More of globex's snapshots in a row than the view reads pages of one before answering short.
  await f.engine.createSnapshots(Array.from({ length: 100 }, (_, i) => `globex/db@g${i}`));
  await f.engine.createSnapshots(['acme/db@mine']);
  const view = nbdAccess(f.engine, store).exportsFor({ kind: 'psk', identity: 'acme-00000000', owner: 'acme' })!;
  const page = view.listSnapshotsPage({ limit: 1 });
  assert.deepEqual(page.snapshots.map((s) => s.fullName), ['db@mine']);
  assert.equal(view.listSnapshotsPage({ afterId: page.snapshots[0]!.id, limit: 1 }).snapshots.length, 0);
});
