// Encryption at rest through the engine's interface: the pool file never holds a plaintext block of an
// encrypted volume nor its data key, snapshots and clones share the lineage's key, a reopened pool is
// locked until the key is offered (and refuses a wrong one), deleting the last member shreds the key
// from the whole file, and a re-wrap or a create cut by a power failure at any device call leaves a
// usable key (old or new), never none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { CairnError, openPoolFile } from '../src/engine/index.js';
import { nativeAddon } from '../src/engine/native.js';
import { metaReserveBlocks } from '../src/engine/constants.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { assertClean, MiB, pattern, tempPool } from './engine-helpers.js';

const options = { commitIntervalMs: 0 };
const BLOCK = 4096;

function code(err: unknown): string { return err instanceof CairnError ? err.code : String(err); }
function newKey(): { dek: Buffer; wrapped: Buffer } { return { dek: randomBytes(64), wrapped: randomBytes(72) }; }

/** Every offset of `needle` in `hay`. */
function occurrences(hay: Buffer, needle: Buffer): number {
  let n = 0;
  for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + 1)) n++;
  return n;
}

/** The whole device as one buffer: what a thief holding the pool's disk would have. */
function deviceImage(device: SimDevice): Buffer {
  const out = Buffer.alloc(device.sizeBlocks * BLOCK);
  for (const b of device.storedBlocks()) device.peekDurable(b).copy(out, b * BLOCK);
  return out;
}

test('encryption: no plaintext block, no data key in the pool file; snapshot and clone share the key; locked until unlocked', async () => {
  const pool = await tempPool(64 * MiB);
  const { engine } = pool;
  const key = newKey();
  const enc = await engine.createVolume('secret', 4 * MiB, { encryption: key });
  assert.deepEqual(enc.encryption, { keyId: enc.encryption!.keyId, locked: false });
  const plain = await engine.createVolume('plain', 4 * MiB);
  assert.equal(plain.encryption, null);
  // The same recognisable block at 8 places of the encrypted volume, and once in the plain one (the control).
  const block = Buffer.alloc(BLOCK, 'CAIRN-PLAINTEXT-MARKER-');
  const e = engine.resolve('secret'), p = engine.resolve('plain');
  for (let i = 0; i < 8; i++) await engine.write(e.id, i * 64 * 1024, block);
  const big = pattern(11, MiB);
  await engine.write(e.id, MiB, big); // a 1 MiB write: the thread-pool path
  await engine.write(p.id, 0, Buffer.alloc(BLOCK, 'PLAIN-CONTROL-MARKER-'));
  await engine.write(e.id, 100, Buffer.from('unaligned')); // read-modify-write of an encrypted block
  await engine.createSnapshots(['secret@s1']);
  const clone = await engine.cloneVolume('copy', 'secret@s1');
  assert.equal(clone.encryption?.keyId, enc.encryption!.keyId, 'a clone shares its origin\'s key');
  assert.equal(engine.getSnapshot('secret@s1').encryption?.keyId, enc.encryption!.keyId);
  await engine.write(engine.resolve('copy').id, 2 * MiB, pattern(12, 64 * 1024));
  await engine.flush();
  const expectSecret = async (eng: CairnEngine): Promise<void> => {
    const id = eng.resolve('secret').id;
    const head = await eng.read(id, 0, BLOCK);
    assert.equal(head.subarray(100, 109).toString(), 'unaligned');
    assert.ok(head.subarray(0, 100).equals(block.subarray(0, 100)));
    assert.ok((await eng.read(id, 64 * 1024, BLOCK)).equals(block));
    assert.ok((await eng.read(id, MiB, MiB)).equals(big));
    assert.ok((await eng.read(eng.resolve('secret@s1').id, MiB, MiB)).equals(big));
    assert.ok((await eng.read(eng.resolve('copy').id, 2 * MiB, 64 * 1024)).equals(pattern(12, 64 * 1024)));
  };
  await expectSecret(engine);
  await engine.close();

  const file = readFileSync(pool.path);
  assert.equal(occurrences(file, Buffer.from('PLAIN-CONTROL-MARKER-')) > 0, true, 'the search finds a plain volume\'s data (the control)');
  assert.equal(occurrences(file, Buffer.from('CAIRN-PLAINTEXT-MARKER-')), 0, 'no plaintext of the encrypted volume');
  assert.equal(occurrences(file, big.subarray(0, 64)), 0, 'no plaintext of the 1 MiB write');
  assert.equal(occurrences(file, key.dek.subarray(0, 32)) + occurrences(file, key.dek.subarray(32)), 0, 'the data key never reaches the disk');
  assert.equal(occurrences(file, key.wrapped), 2, 'the wrapped key is in its slot, twice (one per copy of the keyring)');
  // Equal plaintext at 8 places: 8 different ciphertexts (the tweak is the physical block).
  const seen = new Set<string>();
  for (let at = 0; at < file.length; at += BLOCK) {
    const b = file.subarray(at, at + BLOCK);
    if (b.every((x) => x === 0)) continue;
    const h = b.toString('base64');
    assert.ok(!seen.has(h), `block ${at / BLOCK} appears twice in the pool file`);
    seen.add(h);
  }

  const reopened = (await openPoolFile(pool.path, options)) as CairnEngine;
  try {
    assert.equal(reopened.getVolume('secret').encryption?.locked, true, 'no key offered yet: locked');
    assert.equal(reopened.getVolume('plain').encryption, null);
    const id = reopened.resolve('secret').id;
    await assert.rejects(reopened.read(id, 0, BLOCK), (err) => code(err) === 'volume_locked' && (err as CairnError).errno === 'EACCES');
    await assert.rejects(reopened.write(id, 0, block), (err) => code(err) === 'volume_locked');
    await assert.rejects(reopened.trim(id, 0, BLOCK), (err) => code(err) === 'volume_locked');
    await assert.rejects(reopened.flattenVolume('copy'), (err) => code(err) === 'volume_locked');
    assert.ok((await reopened.read(reopened.resolve('plain').id, 0, BLOCK)).subarray(0, 5).equals(Buffer.from('PLAIN')), 'other volumes keep working');
    // The pool is checked without any key: checksums cover the ciphertext.
    await assertClean(reopened);
    const keys = reopened.listKeys();
    assert.equal(keys.length, 1);
    assert.deepEqual(keys[0]!.members, ['copy', 'secret', 'secret@s1']);
    assert.ok(keys[0]!.wrapped[0]!.equals(key.wrapped));
    assert.throws(() => reopened.unlockKey(keys[0]!.keyId, randomBytes(64)), (err) => code(err) === 'wrong_key', 'a wrong key is refused, never used');
    reopened.unlockKey(keys[0]!.keyId, key.dek);
    assert.equal(reopened.getVolume('copy').encryption?.locked, false);
    await expectSecret(reopened);
  } finally {
    await reopened.close();
    await pool.cleanup();
  }
});

test('encryption: deleting the last member of a lineage shreds its key from the whole pool file', async () => {
  const pool = await tempPool(64 * MiB);
  const { engine } = pool;
  const key = newKey(), other = newKey();
  await engine.createVolume('v', MiB, { encryption: key });
  await engine.createVolume('keep', MiB, { encryption: other });
  await engine.write(engine.resolve('v').id, 0, pattern(3, 64 * 1024));
  await engine.createSnapshots(['v@a']);
  await engine.cloneVolume('c', 'v@a');
  // Many commits, so copy-on-write leaves old catalog blocks behind: none of them may hold the key.
  for (let i = 0; i < 20; i++) await engine.createSnapshots([`v@n${i}`]);
  for (let i = 0; i < 20; i++) await engine.deleteSnapshot(`v@n${i}`);
  const present = async (): Promise<number> => { await engine.checkpoint(); return occurrences(readFileSync(pool.path), key.wrapped); };
  await engine.deleteVolume('v');
  assert.equal(await present(), 2, 'the snapshot and the clone still use the key');
  await engine.deleteVolume('c');
  assert.equal(await present(), 2, 'the snapshot of the deleted volume still uses it');
  await engine.deleteSnapshot('v@a');
  assert.equal(await present(), 0, 'deleted with its last member: no copy anywhere in the file');
  assert.equal(occurrences(readFileSync(pool.path), other.wrapped), 2, 'another lineage\'s key is untouched');
  assert.deepEqual(engine.listKeys().map((k) => k.members), [['keep']]);
  await assertClean(engine);
  await pool.cleanup();
});

test('encryption: flatten re-encrypts moved blocks; sealed ranges move between lineages of one data key', async () => {
  const device = new SimDevice(16384, new Prng(5));
  const engine = await createPool(device, options);
  const key = newKey();
  await engine.createVolume('base', MiB, { encryption: key });
  const data = pattern(9, 256 * 1024);
  await engine.write(engine.resolve('base').id, 0, data);
  await engine.createSnapshots(['base@s']);
  await engine.cloneVolume('clone', 'base@s');
  await engine.write(engine.resolve('base').id, 0, pattern(10, BLOCK));
  await engine.flattenVolume('clone');
  assert.ok((await engine.read(engine.resolve('clone').id, 0, data.length)).equals(data));
  // Sealed: a raw stream's form. Another lineage with the same data key receives it.
  const sealed = await engine.readSealed(engine.resolve('clone').id, 0, data.length);
  assert.ok(!sealed.equals(data) && sealed.indexOf(data.subarray(0, 32)) < 0, 'sealed data is not the plaintext');
  await engine.createVolume('received', MiB, { encryption: { dek: key.dek, wrapped: randomBytes(72) } });
  await engine.writeSealed(engine.resolve('received').id, 0, sealed);
  assert.ok((await engine.read(engine.resolve('received').id, 0, data.length)).equals(data));
  await assert.rejects(engine.readSealed(engine.resolve('base').id, 1, BLOCK), (err) => code(err) === 'invalid_argument');
  await engine.createVolume('p', MiB);
  await assert.rejects(engine.readSealed(engine.resolve('p').id, 0, BLOCK), (err) => code(err) === 'invalid_argument');
  const image = device.crash('clean');
  const report = await checkPool(image);
  assert.ok(report.ok, JSON.stringify(report.problems));
  const e2 = await openPool(image.crash('clean'), options);
  for (const k of e2.listKeys()) e2.unlockKey(k.keyId, key.dek);
  assert.ok((await e2.read(e2.resolve('clone').id, 0, data.length)).equals(data));
  await e2.close();
  await engine.close();
});

test('encryption: a flatten cut while its lineage is locked goes on by itself once the key is offered', async () => {
  const pool = await tempPool(64 * MiB);
  const key = newKey();
  await pool.engine.createVolume('base', 4 * MiB, { encryption: key });
  const data = pattern(21, 4 * MiB);
  await pool.engine.write(pool.engine.resolve('base').id, 0, data);
  await pool.engine.createSnapshots(['base@s']);
  await pool.engine.cloneVolume('copy', 'base@s');
  // Cut after the first chunk (a restart would cut it the same way): the cursor stays in the catalog.
  await assert.rejects(pool.engine.flattenVolume('copy', (f) => { if (f < 1) throw new Error('cut'); }), /cut/);
  assert.ok((pool.engine.getVolume('copy').flattenProgress ?? 0) > 0, 'a cursor is left');
  await pool.engine.close();

  const reopened = (await openPoolFile(pool.path, options)) as CairnEngine;
  try {
    const locked = reopened.getVolume('copy');
    assert.equal(locked.encryption?.locked, true);
    assert.notEqual(locked.flattenProgress, null, 'locked: the flatten waits for the key');
    assert.notEqual(locked.origin, null);
    reopened.unlockKey(locked.encryption!.keyId, key.dek);
    for (let i = 0; i < 500 && reopened.getVolume('copy').flattenProgress !== null; i++) await new Promise((r) => setTimeout(r, 10));
    const done = reopened.getVolume('copy');
    assert.equal(done.flattenProgress, null, 'the flatten went on once the key came');
    assert.equal(done.origin, null);
    assert.ok((await reopened.read(reopened.resolve('copy').id, 0, 4 * MiB)).equals(data), 'the flattened clone reads its data');
    await assertClean(reopened);
  } finally {
    await reopened.close();
    await pool.cleanup();
  }
});

test('encryption: a re-wrap cut by a power failure at any device call leaves the old or the new wrapped key', async () => {
  const key = newKey(), next = randomBytes(72);
  const setup = new SimDevice(8192, new Prng(21));
  const base = await createPool(setup, options);
  await base.createVolume('v', MiB, { encryption: key });
  await base.write(base.resolve('v').id, 0, pattern(1, BLOCK));
  await base.close();
  const baseImage = setup.crash('clean');
  let cuts = 0;
  for (let after = 0; ; after++) {
    const device = baseImage.crash('clean');
    const engine = await openPool(device, options);
    const keyId = engine.listKeys()[0]!.keyId;
    device.armCrash(after, 'torn');
    let finished = true;
    try { await engine.rewrapKey(keyId, next); } catch { finished = false; }
    const image = device.takeArmedImage();
    if (image === null) { assert.ok(finished); await engine.close(); break; }
    cuts++;
    const reopened = await openPool(image, options);
    const keys = reopened.listKeys();
    assert.equal(keys.length, 1, `cut after ${after} calls: the key is still there`);
    assert.ok(keys[0]!.wrapped.some((w) => w.equals(key.wrapped) || w.equals(next)), `cut after ${after}: old or new wrapped form`);
    reopened.unlockKey(keys[0]!.keyId, key.dek);
    assert.ok((await reopened.read(reopened.resolve('v').id, 0, BLOCK)).equals(pattern(1, BLOCK)));
    await reopened.close();
  }
  assert.ok(cuts >= 4, `the re-wrap was cut at ${cuts} places`);
});

test('encryption: a create cut by a power failure leaves the volume with its key, or neither (the slot is shredded at open)', async () => {
  const setup = new SimDevice(8192, new Prng(33));
  const base = await createPool(setup, options);
  await base.close();
  const baseImage = setup.crash('clean');
  for (let after = 0; ; after++) {
    const key = newKey();
    const device = baseImage.crash('clean');
    const engine = await openPool(device, options);
    device.armCrash(after, 'torn');
    try { await engine.createVolume('v', MiB, { encryption: key }); } catch { /* cut */ }
    const image = device.takeArmedImage();
    if (image === null) { await engine.close(); break; }
    const reopened = await openPool(image, options);
    const exists = reopened.listVolumes().some((v) => v.name === 'v');
    assert.equal(reopened.listKeys().length, exists ? 1 : 0, `cut after ${after}: a key exactly when the volume exists`);
    if (exists) reopened.unlockKey(reopened.listKeys()[0]!.keyId, key.dek);
    else assert.equal(occurrences(deviceImage(image), key.wrapped), 0, `cut after ${after}: an orphaned slot is shredded at open`);
    await reopened.close();
  }
});

test('encryption: bad keys are refused with clear errors', async () => {
  const device = new SimDevice(8192, new Prng(3));
  const engine = await createPool(device, options);
  const half = randomBytes(32);
  await assert.rejects(engine.createVolume('a', MiB, { encryption: { dek: Buffer.concat([half, half]), wrapped: randomBytes(72) } }), (err) => code(err) === 'invalid_argument');
  await assert.rejects(engine.createVolume('a', MiB, { encryption: { dek: randomBytes(32), wrapped: randomBytes(72) } }), (err) => code(err) === 'invalid_argument');
  await assert.rejects(engine.createVolume('a', MiB, { encryption: { dek: randomBytes(64), wrapped: randomBytes(300) } }), (err) => code(err) === 'invalid_argument');
  await engine.createVolume('a', MiB, { encryption: newKey() });
  await assert.rejects(engine.createVolume('a', MiB, { encryption: newKey() }), (err) => code(err) === 'name_taken');
  assert.equal(engine.listKeys().length, 1, 'a refused create leaves no key behind');
  assert.throws(() => engine.unlockKey(999, randomBytes(64)), (err) => code(err) === 'invalid_argument');
  await engine.close();
});

test('encryption: a write landing in many small runs is sealed in one job per group, each block with its own tweak and checksum', async () => {
  const pool = await tempPool(64 * MiB);
  const { engine } = pool;
  try {
    await engine.createVolume('frag', 8 * MiB, { encryption: newKey() });
    await engine.createVolume('plain', 64 * MiB);
    const id = engine.resolve('frag').id, plainId = engine.resolve('plain').id;
    // 2 MiB laid down, the pool filled but for ~1 MiB, then every other block of the 2 MiB trimmed
    // and committed: the free space is now mostly runs of one block.
    const before = pattern(21, 2 * MiB);
    await engine.write(id, 0, before);
    const reserve = metaReserveBlocks(engine.stats().sizeBytes / BLOCK) * BLOCK; // free, but only for metadata
    const fill = Math.floor((engine.stats().freeBytes - reserve - MiB) / BLOCK) * BLOCK;
    for (let at = 0; at < fill; at += MiB) await engine.write(plainId, at, pattern(22, Math.min(MiB, fill - at)));
    for (let b = 0; b < 512; b += 2) await engine.trim(id, b * BLOCK, BLOCK);
    await engine.checkpoint();
    const native = nativeAddon.xtsSealPiecesAsync;
    let jobs = 0;
    if (native) nativeAddon.xtsSealPiecesAsync = (...args) => { jobs++; return native(...args); };
    // Writes of 48 blocks (below the large-write size, so placed at the lowest free blocks), more
    // of them than the free space outside the holes holds.
    const writes = Array.from({ length: 6 }, (_, i) => pattern(40 + i, 48 * BLOCK));
    try {
      for (let i = 0; i < writes.length; i++) await engine.write(id, 4 * MiB + i * MiB / 2, writes[i]!);
    } finally {
      if (native) nativeAddon.xtsSealPiecesAsync = native;
    }
    if (native) assert.ok(jobs >= 1, 'runs of a write were sealed together');
    for (let i = 0; i < writes.length; i++) assert.ok((await engine.read(id, 4 * MiB + i * MiB / 2, writes[i]!.length)).equals(writes[i]!), `write ${i} read back through its tweaks and checksums`);
    for (let b = 1; b < 512; b += 2) assert.ok((await engine.read(id, b * BLOCK, BLOCK)).equals(before.subarray(b * BLOCK, (b + 1) * BLOCK)), `block ${b} kept`);
    await assertClean(engine);
    await engine.close();
    const file = readFileSync(pool.path);
    for (const w of writes) assert.equal(occurrences(file, w.subarray(0, 64)), 0, 'no plaintext of the writes in the pool file');
  } finally {
    await pool.cleanup();
  }
});

test('encryption: a flipped bit in a long encrypted run fails its read with checksum_error (verified in the decrypting job)', async () => {
  const device = new SimDevice(16384, new Prng(7));
  const engine = await createPool(device, options);
  await engine.createVolume('v', 4 * MiB, { encryption: newKey() });
  const id = engine.resolve('v').id;
  await engine.checkpoint();
  const before = new Set(device.storedBlocks());
  const data = pattern(31, MiB);
  await engine.write(id, MiB, data);
  await engine.checkpoint();
  // The 1 MiB write is one run of 256 new blocks: the only such run among the blocks it added.
  const added = device.storedBlocks().filter((b) => !before.has(b)).sort((a, b) => a - b);
  const start = added.find((b, i) => added[i + 255] === b + 255);
  assert.ok(start !== undefined, 'the write\'s run is found');
  assert.ok((await engine.read(id, MiB, MiB)).equals(data), 'sound before the flip');
  device.injectBitFlip(start + 100, 777);
  await assert.rejects(engine.read(id, MiB, MiB), (err: unknown) => code(err) === 'checksum_error');
  assert.ok((await engine.read(id, MiB, 100 * BLOCK)).equals(data.subarray(0, 100 * BLOCK)), 'the blocks before it still read');
  // Short runs are verified and decrypted in one call on the caller's thread: the same verdicts.
  await assert.rejects(engine.read(id, MiB + 100 * BLOCK, BLOCK), (err: unknown) => code(err) === 'checksum_error', 'the flipped block alone');
  await assert.rejects(engine.read(id, MiB + 99 * BLOCK, 3 * BLOCK), (err: unknown) => code(err) === 'checksum_error', 'a short run holding it');
  assert.ok((await engine.read(id, MiB + 101 * BLOCK, 2 * BLOCK)).equals(data.subarray(101 * BLOCK, 103 * BLOCK)), 'the blocks after it still read');
  await engine.close();
});
