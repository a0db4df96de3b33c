// Encryption at rest end to end (issue 20): a real `cairn serve`, the `cairn` CLI, and qemu-io/qemu-img
// over NBD. A tenant KEK from a file, an encrypted volume next to a plain one, snapshot, clone, diff,
// revert and flatten on the encrypted lineage, each read back against a local mirror written with the
// same qemu-io commands; then the pool file, searched raw, holds the plain volume's pattern and not
// the encrypted one's, and a restart unlocks the volume with the data intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, run, startServe, tempDir } from './cli-helpers.js';
import {
  MiB, apiCall, assertSameAs, countInFile, markerBlock, qemuIo, volumeJson, writeBoth, writeKekFile, zeroFile, type VolumeJson,
} from './encryption-e2e.js';

const SIZE_BYTES = 16 * MiB;
const SECRET_TEXT = 'CAIRN-E2E-SECRET-PLAINTEXT-0042|';
const CONTROL_TEXT = 'CAIRN-E2E-CONTROL-PLAINTEXT-007|';

interface DiffJson { from: string; to: string; changedBytes: number; ranges: Array<{ offset: number; length: number }> }

test('an encrypted volume through the CLI and NBD: lineage operations read back, no plaintext in the pool file', { timeout: 300_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-enc-cli-');
  const pool = join(dir, 'cairn.pool');
  const kek = await writeKekFile(join(dir, 'tenant.kek'));
  let d = await startServe(t, pool, ['--pool-size', '256M']);
  const uri = (name: string): string => `${d.nbd}/${encodeURIComponent(name).replace(/%40/g, '@')}`;

  // The KEK: set, state available. Without one, --encrypt is refused with a hint.
  const refused = await cairn(d.api, ['volume', 'create', 'early', '--size', '1M', '--encrypt']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /no key-encryption key.*tenant set default --kek/);
  const set = await cairn(d.api, ['tenant', 'set', 'default', '--kek', kek]);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /^kek state:\s+available$/m);

  const created = await cairn(d.api, ['volume', 'create', 'sec', '--size', '16M', '--encrypt']);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /sec .* encrypted /);
  assert.equal((await cairn(d.api, ['volume', 'create', 'plain', '--size', '16M'])).code, 0);
  const shown = await cairn(d.api, ['volume', 'show', 'sec']);
  assert.match(shown.stdout, /^encryption:\s+encrypted$/m);
  assert.deepEqual(pick(await volumeJson(d.api, 'sec')), { encrypted: true, locked: false });
  assert.deepEqual(pick(await volumeJson(d.api, 'plain')), { encrypted: false, locked: false });

  // Known data: marker blocks (a recognisable pattern for the raw search) and qemu-io patterns.
  const mirror = join(dir, 'sec.mirror');
  const controlMirror = join(dir, 'plain.mirror');
  await zeroFile(mirror, SIZE_BYTES);
  await zeroFile(controlMirror, SIZE_BYTES);
  await fillMarkers(uri('sec'), mirror, join(dir, 'secret.raw'), SECRET_TEXT);
  await fillMarkers(uri('plain'), controlMirror, join(dir, 'control.raw'), CONTROL_TEXT);
  await writeBoth(uri('sec'), mirror, ['write -P 0x5a 8M 1M', 'write -P 0xc3 12M 64k', 'write -z 13M 1M']);
  await assertSameAs(uri('sec'), mirror, 'sec after the first writes');
  await assertSameAs(uri('plain'), controlMirror, 'plain after its writes');

  // Snapshot, then change the volume; a clone of the snapshot sees the old data, encrypted too.
  assert.equal((await cairn(d.api, ['snapshot', 'create', 'sec@s1'])).code, 0);
  const mirrorS1 = join(dir, 'sec-s1.mirror');
  await copyFile(mirror, mirrorS1);
  await writeBoth(uri('sec'), mirror, ['write -P 0x77 0 1M', 'write -P 0x78 10M 4k']);
  await assertSameAs(uri('sec'), mirror, 'sec after writes past the snapshot');
  await assertSameAs(uri('sec@s1'), mirrorS1, 'the snapshot keeps the old data');
  const snaps = await cairnJson<Array<{ name: string; encrypted: boolean; locked: boolean }>>(d.api, ['snapshot', 'list', 'sec']);
  assert.deepEqual(snaps.map((s) => [s.name, s.encrypted, s.locked]), [['sec@s1', true, false]]);

  const clone = await cairn(d.api, ['volume', 'create', 'sec-clone', '--from', 'sec@s1']);
  assert.equal(clone.code, 0, clone.stderr);
  assert.deepEqual(pick(await volumeJson(d.api, 'sec-clone')), { encrypted: true, locked: false });
  await assertSameAs(uri('sec-clone'), mirrorS1, 'a clone of the snapshot');
  const cloneMirror = join(dir, 'clone.mirror');
  await copyFile(mirrorS1, cloneMirror);
  await writeBoth(uri('sec-clone'), cloneMirror, ['write -P 0x99 2M 512k']);

  // The refusals the lineage implies: a plain clone of an encrypted source, an encrypted clone of a plain one.
  const plainOfEncrypted = await apiCall(d.api, 'POST', '/v1/volumes', { name: 'x', from: 'sec@s1', encrypted: false });
  assert.equal(plainOfEncrypted.status, 400, JSON.stringify(plainOfEncrypted.body));
  const encryptedOfPlain = await cairn(d.api, ['volume', 'create', 'y', '--from', 'plain', '--encrypt']);
  assert.equal(encryptedOfPlain.code, 1);
  assert.match(encryptedOfPlain.stderr, /not encrypted/);

  // Diff between the snapshot and the live volume: exactly the two ranges written since.
  const diff = await cairnJson<DiffJson>(d.api, ['diff', 'sec@s1', 'sec']);
  assert.deepEqual(diff.ranges, [{ offset: 0, length: MiB }, { offset: 10 * MiB, length: 4096 }]);
  assert.equal(diff.changedBytes, MiB + 4096);

  // Revert the volume: back to the snapshot's data; the clone is untouched.
  assert.equal((await cairn(d.api, ['volume', 'revert', 'sec', '--to', 's1'])).code, 0);
  await copyFile(mirrorS1, mirror);
  await assertSameAs(uri('sec'), mirror, 'sec reverted to s1');
  await assertSameAs(uri('sec-clone'), cloneMirror, 'the clone after the revert of its source');

  // Flatten the clone: it depends on nothing, is still encrypted, and reads the same.
  const flattened = await cairn(d.api, ['volume', 'flatten', 'sec-clone']);
  assert.equal(flattened.code, 0, flattened.stderr);
  const afterFlatten = await volumeJson(d.api, 'sec-clone');
  assert.deepEqual([afterFlatten.origin, afterFlatten.encrypted, afterFlatten.locked], [null, true, false]);
  await assertSameAs(uri('sec-clone'), cloneMirror, 'the clone after flatten');
  await writeBoth(uri('sec-clone'), cloneMirror, ['write -P 0x3c 15M 1M']);

  // The pool file at rest: the control volume's pattern is there, the encrypted lineage's is not.
  assert.equal(await d.stop(), 0);
  const keyBytes = await readFile(kek.slice('file:'.length));
  const [control, secret, patternBlock, cloneBlock, kekCopies] = await countInFile(pool, [
    Buffer.from(CONTROL_TEXT), Buffer.from(SECRET_TEXT), Buffer.alloc(4096, 0x5a), Buffer.alloc(4096, 0x99), keyBytes]);
  assert.ok(control! > 0, 'the plain control volume\'s pattern is in the pool file (the search works)');
  assert.equal(secret, 0, 'no plaintext of the encrypted volume in the pool file');
  assert.equal(patternBlock, 0, 'no plaintext block of the qemu-io pattern');
  assert.equal(cloneBlock, 0, 'no plaintext block of the clone\'s writes');
  assert.equal(kekCopies, 0, 'the KEK itself is not in the pool file');

  // A restart: the KEK file is there, the lineage unlocks at start, every member reads back.
  d = await startServe(t, pool, ['--pool-size', '256M']);
  const listed = await cairnJson<VolumeJson[]>(d.api, ['volume', 'list']);
  assert.deepEqual(listed.map((v) => [v.name, v.encrypted, v.locked]), [['plain', false, false], ['sec', true, false], ['sec-clone', true, false]]);
  await assertSameAs(uri('sec'), mirror, 'sec after a restart');
  await assertSameAs(uri('sec@s1'), mirrorS1, 'the snapshot after a restart');
  await assertSameAs(uri('sec-clone'), cloneMirror, 'the flattened clone after a restart');
  await assertSameAs(uri('plain'), controlMirror, 'plain after a restart');
  const io = await qemuIo(uri('sec'), ['read -P 0x5a 8M 1M']);
  assert.equal(io.code, 0, io.stderr);
  assert.doesNotMatch(io.stdout, /Pattern verification failed/);
  assert.equal(await d.stop(), 0);
});

function pick(v: { encrypted: boolean; locked: boolean }): { encrypted: boolean; locked: boolean } {
  return { encrypted: v.encrypted, locked: v.locked };
}

/**
 * Puts 4 MiB of marker blocks at offset 0 of the export and of its mirror, with qemu-img convert
 * (a raw source file written through NBD; -n: the target exists).
 */
async function fillMarkers(exportUri: string, mirror: string, source: string, text: string): Promise<void> {
  const markers = markerBlock(text, 4 * MiB);
  await writeFile(source, markers);
  const r = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, exportUri]);
  assert.equal(r.code, 0, `qemu-img convert to ${exportUri}: ${r.stderr}`);
  const fh = await open(mirror, 'r+');
  await fh.write(markers, 0, markers.length, 0);
  await fh.close();
}
