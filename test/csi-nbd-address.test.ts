// Where the CSI node attaches a volume from: --nbd when given, else the nbdUri the daemon's API
// reports for the volume (an address bound to every interface replaced by the API's host); an
// unknown volume is NOT_FOUND and a daemon without NBD over TCP is FAILED_PRECONDITION.
// (test/csi-node.test.ts stages real volumes with a plugin started without --nbd.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import type { ApiVolume, CairnApi } from '../src/csi/api-client.js';
import { exportUriOf, nbdSource, reachableUri } from '../src/csi/nbd-address.js';

function fakeApi(volumes: Record<string, string | null>): CairnApi {
  const getVolume = async (name: string): Promise<ApiVolume | null> => (name in volumes
    ? { name, id: 1, sizeBytes: 0, mappedBytes: 0, createdMs: 0, origin: null, snapshots: [], nbdUri: volumes[name] ?? null }
    : null);
  return { getVolume } as unknown as CairnApi;
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
