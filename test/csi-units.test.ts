// Pure pieces of the CSI driver: name mapping, paging tokens, REST problem → gRPC code
// mapping, the attachment state file, and the per-volume operation locks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { ApiProblem, parseSnapshot, parseVolume, problemToCsi } from '../src/csi/api-client.js';
import { OperationLocks } from '../src/csi/locks.js';
import { cairnNameFor, decodePageToken, encodePageToken, pageOf, parseSnapshotId } from '../src/csi/names.js';
import { AttachmentState, type Attachment } from '../src/csi/state.js';
import { removeDir, tempDir } from './csi-harness.js';

test('CSI names map to Cairn names deterministically', () => {
  assert.equal(cairnNameFor('pvc-0f1e2d3c-aaaa-bbbb-cccc-123456789abc', 'csi'), 'pvc-0f1e2d3c-aaaa-bbbb-cccc-123456789abc');
  const hashed = cairnNameFor('has space', 'csi');
  assert.match(hashed, /^csi-[0-9a-f]{40}$/);
  assert.equal(cairnNameFor('has space', 'csi'), hashed);
  assert.notEqual(cairnNameFor('has space!', 'csi'), hashed);
  assert.match(cairnNameFor('x'.repeat(100), 'snap'), /^snap-/);
  assert.throws(() => cairnNameFor('', 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.throws(() => cairnNameFor('bad\u0001name', 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.throws(() => cairnNameFor('y'.repeat(129), 'csi'), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
  assert.deepEqual(parseSnapshotId('vol@snap'), { volume: 'vol', snapshot: 'snap' });
  assert.equal(parseSnapshotId('vol'), null);
  assert.equal(parseSnapshotId('@snap'), null);
  assert.equal(parseSnapshotId('a b@c'), null);
});

test('paging tokens round-trip; bad ones are ABORTED', () => {
  assert.equal(decodePageToken(encodePageToken('pvc-7')), 'pvc-7');
  assert.equal(decodePageToken(''), null);
  for (const bad of ['%%%', 'e30', Buffer.from('{"v":2,"after":"x"}').toString('base64url')]) {
    assert.throws(() => decodePageToken(bad), (e: { code: number }) => e.code === status.ABORTED, bad);
  }
  const ids = ['c', 'a', 'e', 'b', 'd'];
  const one = pageOf(ids, (x) => x, 2, '');
  assert.deepEqual(one.page, ['a', 'b']);
  const two = pageOf(ids, (x) => x, 2, one.nextToken);
  assert.deepEqual(two.page, ['c', 'd']);
  const three = pageOf(ids, (x) => x, 2, two.nextToken);
  assert.deepEqual(three, { page: ['e'], nextToken: '' });
  // A token whose entry was deleted meanwhile still continues after it.
  assert.deepEqual(pageOf(['a', 'c', 'd'], (x) => x, 0, encodePageToken('b')).page, ['c', 'd']);
  assert.throws(() => pageOf(ids, (x) => x, -1, ''), (e: { code: number }) => e.code === status.INVALID_ARGUMENT);
});

test('REST problems map to the gRPC codes the CSI spec names', () => {
  const cases: Array<[number, string, status]> = [
    [404, 'volume_not_found', status.NOT_FOUND], [404, 'snapshot_not_found', status.NOT_FOUND],
    [409, 'name_taken', status.ALREADY_EXISTS], [507, 'pool_full', status.RESOURCE_EXHAUSTED],
    [400, 'invalid_size', status.INVALID_ARGUMENT], [400, 'invalid_name', status.INVALID_ARGUMENT],
    [416, 'out_of_range', status.OUT_OF_RANGE], [409, 'shrink_refused', status.OUT_OF_RANGE],
    [503, 'pool_closed', status.UNAVAILABLE], [500, 'io_error', status.INTERNAL],
  ];
  for (const [http, code, want] of cases) {
    assert.equal(problemToCsi(new ApiProblem(http, code, 'x'), 'ctx').code, want, code);
  }
  assert.equal(problemToCsi(new Error('boom'), 'ctx').code, status.INTERNAL);
});

test('API objects parse with the REST field names', () => {
  const v = parseVolume({ name: 'v', id: 3, size: 8192, mappedBytes: 0, createdMs: 5, origin: 'src@s1', snapshots: ['s1'] });
  assert.deepEqual(v.origin, { volume: 'src', snapshot: 's1' });
  assert.equal(v.sizeBytes, 8192);
  assert.deepEqual(parseVolume({ name: 'c', origin: 'src' }).origin, { volume: 'src', snapshot: null });
  const s = parseSnapshot({ name: 'v@s1', volume: 'v', snapshot: 's1', size: 4096, createdMs: 7 });
  assert.deepEqual(s, { fullName: 'v@s1', volume: 'v', name: 's1', sizeBytes: 4096, createdMs: 7 });
});

test('the attachment state file survives a reload and is written atomically', () => {
  const dir = tempDir('cairn-csi-state-');
  try {
    const att: Attachment = {
      volumeId: 'v1', uri: 'nbd://127.0.0.1:10809/v1', method: 'fuse', device: '/dev/loop9', fuseDir: join(dir, 'fuse', 'v1'),
      nbdfusePid: 1234, stagingPath: '/staging/v1', accessType: 'mount', fsType: 'ext4', mountFlags: [], published: [],
    };
    const a = new AttachmentState(dir);
    a.put(att);
    a.put({ ...att, volumeId: 'v2' });
    a.remove('v2');
    const b = new AttachmentState(dir);
    assert.deepEqual(b.all(), [att]);
    const onDisk = JSON.parse(readFileSync(join(dir, 'attachments.json'), 'utf8')) as { version: number };
    assert.equal(onDisk.version, 1);
  } finally {
    removeDir(dir);
  }
});

test('operation locks refuse a second operation on the same id with ABORTED', async () => {
  const locks = new OperationLocks();
  let release!: () => void;
  const first = locks.run(['v1'], () => new Promise<void>((resolve) => { release = resolve; }));
  await assert.rejects(locks.run(['v1'], async () => undefined), (e: { code: number }) => e.code === status.ABORTED);
  await locks.run(['v2'], async () => undefined); // other ids are free
  release();
  await first;
  await locks.run(['v1'], async () => undefined); // free again
});
