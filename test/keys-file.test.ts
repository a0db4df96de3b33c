// File KEKs (src/keys/file-kek.ts) through the public interface (src/keys/provider.ts): RFC 3394's own
// test vector, round trips, a wrong or damaged blob, missing and malformed key files, the hex form,
// fingerprints, and references refused without I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KekRefInvalid, KekUnavailable, KekWrongKey, openKek, validateKekRef, type KekProvider } from '../src/keys/provider.js';

const kekBytes = (seed: number): Buffer => Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 7 + seed) & 0xff));

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-keys-'));
  try { await fn(dir); } finally { await rm(dir, { recursive: true, force: true }); }
}

async function keyFile(dir: string, name: string, content: Buffer | string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content, { mode: 0o600 });
  return path;
}

async function using<T>(provider: KekProvider, fn: (p: KekProvider) => Promise<T>): Promise<T> {
  try { return await fn(provider); } finally { await provider.close(); }
}

test('RFC 3394 §4.6: 256-bit KEK wrapping 256 bits of key data gives the RFC\'s ciphertext, and unwraps back', async () => {
  await withDir(async (dir) => {
    const kek = Buffer.from('000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F', 'hex');
    const data = Buffer.from('00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F', 'hex');
    const expected = Buffer.from('28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21', 'hex');
    await using(await openKek(`file:${await keyFile(dir, 'kek', kek)}`), async (p) => {
      assert.deepEqual(await p.wrap(data), expected);
      assert.deepEqual(await p.unwrap(expected), data);
    });
  });
});

test('round trip of a 64-byte DEK and other sizes; wrapping is deterministic (RFC 3394 has no nonce)', async () => {
  await withDir(async (dir) => {
    const ref = `file:${await keyFile(dir, 'kek', kekBytes(1))}`;
    await using(await openKek(ref), async (p) => {
      assert.equal(p.ref, ref);
      for (const sizeBytes of [16, 24, 64, 1024]) {
        const dek = randomBytes(sizeBytes);
        const wrapped = await p.wrap(dek);
        assert.equal(wrapped.length, sizeBytes + 8);
        assert.notDeepEqual(wrapped.subarray(8), dek);
        assert.deepEqual(await p.unwrap(wrapped), dek);
        assert.deepEqual(await p.wrap(dek), wrapped);
      }
      // Sizes RFC 3394 cannot wrap are a bug of the caller: an assertion, not a KekError.
      for (const sizeBytes of [0, 8, 20, 1032]) {
        await assert.rejects(p.wrap(Buffer.alloc(sizeBytes)), { name: 'AssertionError' }, `${sizeBytes} bytes`);
      }
    });
  });
});

test('a blob wrapped by another KEK, damaged or cut short is KekWrongKey', async () => {
  await withDir(async (dir) => {
    const a = await openKek(`file:${await keyFile(dir, 'a', kekBytes(1))}`);
    const b = await openKek(`file:${await keyFile(dir, 'b', kekBytes(2))}`);
    const dek = randomBytes(64);
    const wrapped = await a.wrap(dek);
    await assert.rejects(b.unwrap(wrapped), (err) => err instanceof KekWrongKey && err.code === 'kek_wrong_key');
    for (const byte of [0, 7, 8, 40, 71]) {
      const damaged = Buffer.from(wrapped);
      damaged[byte]! ^= 0x01;
      await assert.rejects(a.unwrap(damaged), KekWrongKey, `bit flipped in byte ${byte}`);
    }
    for (const lengthBytes of [0, 16, 71, 64]) await assert.rejects(a.unwrap(wrapped.subarray(0, lengthBytes)), KekWrongKey, `${lengthBytes} bytes`);
    assert.deepEqual(await a.unwrap(wrapped), dek, 'the failures changed nothing');
    await a.close();
    await b.close();
  });
});

test('a missing, unreadable, empty, short, long or non-hex key file is KekUnavailable naming the path', async () => {
  await withDir(async (dir) => {
    const missing = join(dir, 'nope');
    await assert.rejects(openKek(`file:${missing}`), (err) => err instanceof KekUnavailable && err.code === 'kek_unavailable' && err.message.includes(missing));
    const bad: Array<[string, Buffer | string]> = [
      ['empty', ''], ['short', kekBytes(1).subarray(0, 31)], ['long', Buffer.concat([kekBytes(1), Buffer.of(0)])],
      ['hex-short', kekBytes(1).toString('hex').slice(0, 62)], ['hex-junk', `${'zz'.repeat(32)}\n`],
      ['hex-two-newlines', `${kekBytes(1).toString('hex')}\n\n`], ['huge', Buffer.alloc(1 << 20)],
    ];
    for (const [name, content] of bad) {
      const path = await keyFile(dir, name, content);
      await assert.rejects(openKek(`file:${path}`), (err) => err instanceof KekUnavailable && err.message.includes(path), name);
    }
    await assert.rejects(openKek(`file:${dir}`), KekUnavailable, 'a directory');
    if (process.getuid?.() !== 0) {
      const locked = await keyFile(dir, 'locked', kekBytes(1));
      await chmod(locked, 0o000);
      await assert.rejects(openKek(`file:${locked}`), KekUnavailable, 'unreadable');
    }
  });
});

test('the key file is re-read at each open: a key that comes back is seen', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'kek');
    await assert.rejects(openKek(`file:${path}`), KekUnavailable);
    await keyFile(dir, 'kek', kekBytes(3));
    await using(await openKek(`file:${path}`), async (p) => assert.equal((await p.wrap(randomBytes(64))).length, 72));
  });
});

test('the hex form (with or without a newline, either case) is the same key as the raw form', async () => {
  await withDir(async (dir) => {
    const key = kekBytes(4);
    const raw = await openKek(`file:${await keyFile(dir, 'raw', key)}`);
    const hexNl = await openKek(`file:${await keyFile(dir, 'hex-nl', `${key.toString('hex')}\n`)}`);
    const hexUpper = await openKek(`file:${await keyFile(dir, 'hex-upper', key.toString('hex').toUpperCase())}`);
    const dek = randomBytes(64);
    const wrapped = await raw.wrap(dek);
    assert.deepEqual(await hexNl.wrap(dek), wrapped);
    assert.deepEqual(await hexUpper.unwrap(wrapped), dek);
    assert.equal(hexNl.fingerprint, raw.fingerprint);
    assert.equal(hexUpper.fingerprint, raw.fingerprint);
    for (const p of [raw, hexNl, hexUpper]) await p.close();
  });
});

test('fingerprints: 16 hex characters, stable across opens, different per key, not the key', async () => {
  await withDir(async (dir) => {
    const key = kekBytes(5);
    const refA = `file:${await keyFile(dir, 'a', key)}`;
    const a1 = await openKek(refA);
    const a2 = await openKek(refA);
    const b = await openKek(`file:${await keyFile(dir, 'b', kekBytes(6))}`);
    assert.match(a1.fingerprint, /^[0-9a-f]{16}$/);
    assert.equal(a1.fingerprint, a2.fingerprint);
    assert.notEqual(a1.fingerprint, b.fingerprint);
    assert.ok(!key.toString('hex').includes(a1.fingerprint));
    // HMAC-SHA256(key, "cairn kek fingerprint v1"), first 8 bytes: pinned, since stored blobs name it.
    const { createHmac } = await import('node:crypto');
    assert.equal(a1.fingerprint, createHmac('sha256', key).update('cairn kek fingerprint v1').digest('hex').slice(0, 16));
    for (const p of [a1, a2, b]) await p.close();
  });
});

test('a closed provider refuses to work (a use after close is a bug of the caller)', async () => {
  await withDir(async (dir) => {
    const p = await openKek(`file:${await keyFile(dir, 'kek', kekBytes(7))}`);
    const wrapped = await p.wrap(randomBytes(64));
    await p.close();
    await assert.rejects(p.wrap(randomBytes(64)), { name: 'AssertionError' });
    await assert.rejects(p.unwrap(wrapped), { name: 'AssertionError' });
  });
});

test('validateKekRef refuses junk without touching the file system, and accepts good references', () => {
  const env = {};
  const junk = [
    '', 'kek', '/etc/kek', 'file:', 'file:relative/kek', 'file://host/kek', 'file:/a/../kek', 'file:/a/./kek', 'file:/a//kek', 'file:/dir/',
    'file:/a\nb', 'file:/a\u0000b', `file:/${'a'.repeat(5000)}`, 'http://example/kek', 'FILE:/kek',
    'pkcs11:', 'pkcs11:token=t', 'pkcs11:object=o', 'pkcs11:token=t;object=o', // no pin-source, no module
    'pkcs11:token=t;object=o?module-path=/m.so', 'pkcs11:token=t;object=o?pin-source=file:/p', // no module anywhere
    'pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234', 'pkcs11:token=t;object=o;pin-value=1234?module-path=/m.so&pin-source=file:/p',
    'pkcs11:token=t;object=o?module-path=m.so&pin-source=file:/p', 'pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:p',
    'pkcs11:token=t;object=o?module-path=/m.so&pin-source=env:1BAD', 'pkcs11:token=t;object=o?module-path=/m.so&pin-source=http:/p',
    'pkcs11:token=t;token=u;object=o?module-path=/m.so&pin-source=file:/p', 'pkcs11:token=t;object=o;type=private?module-path=/m.so&pin-source=file:/p',
    'pkcs11:token=t;object=o;id=%zz?module-path=/m.so&pin-source=file:/p', 'pkcs11:token=t;object=%FF?module-path=/m.so&pin-source=file:/p',
    'pkcs11:token=t;object=?module-path=/m.so&pin-source=file:/p', 'pkcs11:token=t;object?module-path=/m.so&pin-source=file:/p',
    'pkcs11:token=t;object=o;slot-id=1?module-path=/m.so&pin-source=file:/p', 'pkcs11:token=t;object=o?module-name=softhsm2&pin-source=file:/p',
  ];
  for (const ref of junk) {
    assert.throws(() => validateKekRef(ref, env), (err) => err instanceof KekRefInvalid && err.code === 'invalid_argument', JSON.stringify(ref));
  }
  const pinValue = 'pkcs11:token=t;object=o?module-path=/m.so&pin-value=s3cret-1234';
  assert.throws(() => validateKekRef(pinValue, env), (err) => err instanceof KekRefInvalid && /pin-value/.test(err.message) && !err.message.includes('s3cret'));
  const good = [
    'file:/etc/cairn/kek', 'file:/k',
    'pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/p',
    'pkcs11:token=my%20token;object=kek%2Da;id=%01%02;type=secret-key;serial=abc?module-path=/usr/lib/m.so&pin-source=env:CAIRN_PIN',
    'pkcs11:object=o;token=t?pin-source=/run/pin&module-path=/m.so',
  ];
  for (const ref of good) validateKekRef(ref, env);
  // The module may come from the environment instead of the reference.
  validateKekRef('pkcs11:token=t;object=o?pin-source=file:/p', { CAIRN_PKCS11_MODULE: '/m.so' });
  assert.throws(() => validateKekRef('pkcs11:token=t;object=o?pin-source=file:/p', { CAIRN_PKCS11_MODULE: 'm.so' }), KekRefInvalid);
});

test('openKek refuses a bad reference with KekRefInvalid before any I/O', async () => {
  await assert.rejects(openKek('file:relative', {}), KekRefInvalid);
  await assert.rejects(openKek('pkcs11:token=t;object=o?module-path=/m.so&pin-value=1', {}), KekRefInvalid);
  await assert.rejects(openKek('pkcs11:token=t;object=o?pin-source=file:/p', {}), (err) => err instanceof KekRefInvalid && /CAIRN_PKCS11_MODULE/.test(err.message));
});
