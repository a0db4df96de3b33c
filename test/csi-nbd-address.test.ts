// Where the CSI node attaches a volume from: --nbd when given, else the nbdUri the daemon's API
// reports for the volume (an address bound to every interface replaced by the API's host); an
// unknown volume is NOT_FOUND, a daemon without NBD over TCP is FAILED_PRECONDITION, and a locked
// (encrypted, KEK unavailable) volume is UNAVAILABLE.
// (test/csi-node.test.ts stages real volumes with a plugin started without --nbd.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import type { ApiVolume, CairnApi } from '../src/csi/api-client.js';
import { exportUriOf, nbdSource, reachableUri } from '../src/csi/nbd-address.js';
import type { Session } from '../src/csi/sessions.js';

/** The plugin's own session over a fake API: an admin unless `tenant` is given. */
function fakeApi(volumes: Record<string, string | null>, tenant: string | null = null, locked: string[] = []): { own(): Promise<Session> } {
  const getVolume = async (name: string): Promise<ApiVolume | null> => (name in volumes
    ? {
      name, id: 1, sizeBytes: 0, mappedBytes: 0, createdMs: 0, origin: null, snapshots: [], nbdUri: volumes[name] ?? null,
      encrypted: locked.includes(name), locked: locked.includes(name),
    }
    : null);
  const pool = async () => ({ sizeBytes: 0, freeBytes: 0, checksumErrors: 0, nbd: 'nbd://0.0.0.0:10809' });
  const api = { getVolume, pool } as unknown as CairnApi;
  return { own: async () => ({ api, role: tenant === null ? 'admin' : 'tenant', tenant }) };
}

test('the NBD address comes from the API unless --nbd is given', async () => {
  const api = fakeApi({ vol: 'nbd://10.0.0.7:10809/vol', open: 'nbd://0.0.0.0:10809/open', six: 'nbd://[::]:10809/six', off: null });
  const fromApi = nbdSource(undefined, api, 'http://cairn.cairn.svc:10880');
  assert.equal(fromApi.kind, 'api');
  assert.equal(await exportUriOf(fromApi, 'vol'), 'nbd://10.0.0.7:10809/vol');
  assert.equal(await exportUriOf(fromApi, 'open'), 'nbd://cairn.cairn.svc:10809/open', 'a wildcard bind is reached at the API host');
  assert.equal(await exportUriOf(fromApi, 'six'), 'nbd://cairn.cairn.svc:10809/six');
  await assert.rejects(exportUriOf(fromApi, 'ghost'), (e: { code: number }) => e.code === status.NOT_FOUND);
  await assert.rejects(exportUriOf(fromApi, 'off'), (e: { code: number; message: string }) =>
    e.code === status.FAILED_PRECONDITION && /--nbd/.test(e.message));
  const fixed = nbdSource('nbd.example:10999', api, 'http://cairn.cairn.svc:10880');
  assert.equal(await exportUriOf(fixed, 'vol'), 'nbd://nbd.example:10999/vol', '--nbd wins over the API');
  assert.equal(await exportUriOf(fixed, 'ghost'), 'nbd://nbd.example:10999/ghost', 'with --nbd the API is not asked');
  assert.equal(reachableUri('nbd://127.0.0.1:1/a%40b', 'http://x:1'), 'nbd://127.0.0.1:1/a%40b');
});

test('tenant volumes: a TLS-PSK key opens the plain name over nbds://; the key stays in its file', async () => {
  const psk = { identity: 'acme-0a1b2c3d', file: '/var/lib/cairn-csi/psk/acme~db/keys.psk' };
  const admin = nbdSource(undefined, fakeApi({ 'acme/db': 'nbd://10.0.0.7:10809/acme%2Fdb' }), 'http://cairn:10880');
  assert.equal(await exportUriOf(admin, 'acme/db', psk),
    'nbds://acme-0a1b2c3d@10.0.0.7:10809/db?tls-psk-file=%2Fvar%2Flib%2Fcairn-csi%2Fpsk%2Facme%7Edb%2Fkeys.psk');
  assert.equal(await exportUriOf(admin, 'acme/db'), 'nbd://10.0.0.7:10809/acme%2Fdb');
  // The node's own token of tenant acme looks the volume up by its plain name.
  const acme = nbdSource(undefined, fakeApi({ db: 'nbd://10.0.0.8:10809/db' }, 'acme'), 'http://cairn:10880');
  assert.match(await exportUriOf(acme, 'acme/db', psk), /^nbds:\/\/acme-0a1b2c3d@10\.0\.0\.8:10809\/db\?/);
  // A token of another tenant cannot see it: the pool's NBD address (wildcard → the API host) is used.
  const other = nbdSource(undefined, fakeApi({}, 'other'), 'http://cairn:10880');
  assert.match(await exportUriOf(other, 'acme/db', psk), /^nbds:\/\/acme-0a1b2c3d@cairn:10809\/db\?/);
  const fixed = nbdSource('nbd.example:10999', fakeApi({}), 'http://cairn:10880');
  assert.match(await exportUriOf(fixed, 'acme/db', psk), /^nbds:\/\/acme-0a1b2c3d@nbd\.example:10999\/db\?tls-psk-file=/);
  await assert.rejects(exportUriOf(admin, 'default/db'), (e: { code: number }) => e.code === status.NOT_FOUND);
});

test('a locked volume (encrypted, its tenant\'s KEK unavailable) is UNAVAILABLE before anything is attached', async () => {
  const source = nbdSource(undefined, fakeApi({ sealed: 'nbd://10.0.0.7:10809/sealed', open: 'nbd://10.0.0.7:10809/open' }, null, ['sealed']),
    'http://cairn:10880');
  await assert.rejects(exportUriOf(source, 'sealed'), (e: { code: number; message: string }) =>
    e.code === status.UNAVAILABLE && /locked/.test(e.message) && /key-encryption key/.test(e.message));
  assert.equal(await exportUriOf(source, 'open'), 'nbd://10.0.0.7:10809/open');
});
