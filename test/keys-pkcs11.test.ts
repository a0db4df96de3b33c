// PKCS#11 KEKs (src/keys/pkcs11-kek.ts) against a real token, SoftHSM2 (test/softhsm.ts), through the
// public interface: round trips inside the token, byte-for-byte interop with a file KEK holding the
// same key, wrong object, PIN and reference, PIN from the environment, and the token going away and
// coming back within one process. No skip when SoftHSM2 is missing: CI installs it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KekRefInvalid, KekUnavailable, KekWrongKey, openKek, validateKekRef } from '../src/keys/provider.js';
import { makeSoftHsm, SOFTHSM_MODULE, SOFTHSM_TOKEN } from './softhsm.js';

// Before any openKek: SoftHSM reads SOFTHSM2_CONF when this process's module instance initializes.
const hsm = await makeSoftHsm();
after(() => hsm.remove());

/** RFC 3394 §4.6's KEK: the interop test compares against a file KEK holding it. */
const KNOWN_KEK = Buffer.from('000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F', 'hex');
await hsm.addKey('kek-known', KNOWN_KEK);
await hsm.addKey('kek-generated');

const isUnavailable = (pattern: RegExp) => (err: unknown): boolean => {
  assert.ok(err instanceof KekUnavailable, `expected KekUnavailable, got ${String(err)}`);
  assert.equal(err.code, 'kek_unavailable');
  assert.match(err.message, pattern);
  return true;
};

test('round trip inside the token; the reference is kept; the fingerprint is stable and per key', async () => {
  const ref = hsm.ref('kek-generated');
  const kek = await openKek(ref);
  assert.equal(kek.ref, ref);
  assert.match(kek.fingerprint, /^[0-9a-f]{16}$/);
  for (const sizeBytes of [16, 64, 1024]) {
    const dek = randomBytes(sizeBytes);
    const wrapped = await kek.wrap(dek);
    assert.equal(wrapped.length, sizeBytes + 8);
    assert.deepEqual(await kek.unwrap(wrapped), dek);
  }
  const again = await openKek(ref);
  assert.equal(again.fingerprint, kek.fingerprint);
  const other = await openKek(hsm.ref('kek-known'));
  assert.notEqual(other.fingerprint, kek.fingerprint);
  await assert.rejects(other.unwrap(await kek.wrap(randomBytes(64))), KekWrongKey, 'another KEK wrapped it');
  for (const p of [kek, again, other]) await p.close();
});

test('an HSM KEK and a file KEK holding the same key bytes wrap to identical bytes and read each other\'s blobs', async () => {
  const keyPath = join(hsm.dir, 'known.kek');
  await writeFile(keyPath, KNOWN_KEK, { mode: 0o600 });
  const file = await openKek(`file:${keyPath}`);
  const token = await openKek(hsm.ref('kek-known'));
  // RFC 3394 §4.6 inside the token.
  const data = Buffer.from('00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F', 'hex');
  assert.equal((await token.wrap(data)).toString('hex').toUpperCase(), '28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21');
  for (let i = 0; i < 4; i++) {
    const dek = randomBytes(64);
    const byFile = await file.wrap(dek);
    assert.deepEqual(await token.wrap(dek), byFile);
    assert.deepEqual(await token.unwrap(byFile), dek);
    assert.deepEqual(await file.unwrap(await token.wrap(dek)), dek);
  }
  await file.close();
  await token.close();
});

test('a damaged or short blob is KekWrongKey, and the token keeps working', async () => {
  const kek = await openKek(hsm.ref('kek-generated'));
  const dek = randomBytes(64);
  const wrapped = await kek.wrap(dek);
  const damaged = Buffer.from(wrapped);
  damaged[20]! ^= 0x80;
  await assert.rejects(kek.unwrap(damaged), KekWrongKey);
  await assert.rejects(kek.unwrap(wrapped.subarray(0, 40)), KekWrongKey);
  await assert.rejects(kek.unwrap(wrapped.subarray(0, 20)), KekWrongKey);
  assert.deepEqual(await kek.unwrap(wrapped), dek);
  await kek.close();
});

test('a missing object or token is KekUnavailable naming it', async () => {
  await assert.rejects(openKek(hsm.ref('no-such-key')), isUnavailable(/no secret key labelled "no-such-key"/));
  const otherToken = hsm.ref('kek-known').replace(`token=${SOFTHSM_TOKEN}`, 'token=elsewhere');
  await assert.rejects(openKek(otherToken), isUnavailable(/no token labelled "elsewhere"/));
  const wrongId = hsm.ref('kek-known').replace('?', ';id=%07?');
  await assert.rejects(openKek(wrongId), isUnavailable(/id 07/));
  const wrongSerial = hsm.ref('kek-known').replace('?', ';serial=0000?');
  await assert.rejects(openKek(wrongSerial), isUnavailable(/serial 0000/));
});

test('a wrong, missing or empty PIN is KekUnavailable; the token still works with the right one', async () => {
  const wrongPin = join(hsm.dir, 'wrong.pin');
  await writeFile(wrongPin, '0000-wrong\n');
  const ref = hsm.ref('kek-known');
  await assert.rejects(openKek(ref.replace(hsm.pinFile, wrongPin)), isUnavailable(/refused the PIN \(CKR_PIN_INCORRECT\)/));
  await assert.rejects(openKek(ref.replace(hsm.pinFile, join(hsm.dir, 'no.pin'))), isUnavailable(/PIN file .*no\.pin: missing/));
  const emptyPin = join(hsm.dir, 'empty.pin');
  await writeFile(emptyPin, '\n');
  await assert.rejects(openKek(ref.replace(hsm.pinFile, emptyPin)), isUnavailable(/empty/));
  const kek = await openKek(ref);
  await kek.close();
});

test('a PIN in the reference is refused; the PIN may come from the environment', async () => {
  const withValue = `${hsm.ref('kek-known')}&pin-value=${hsm.pin}`;
  assert.throws(() => validateKekRef(withValue), KekRefInvalid);
  await assert.rejects(openKek(withValue), (err) => err instanceof KekRefInvalid && err.code === 'invalid_argument' && !err.message.includes(hsm.pin));

  const fromEnv = hsm.ref('kek-known').replace(`file:${hsm.pinFile}`, 'env:CAIRN_TEST_HSM_PIN');
  const kek = await openKek(fromEnv, { CAIRN_TEST_HSM_PIN: hsm.pin });
  const dek = randomBytes(64);
  assert.deepEqual(await kek.unwrap(await kek.wrap(dek)), dek);
  await kek.close();
  await assert.rejects(openKek(fromEnv, {}), isUnavailable(/CAIRN_TEST_HSM_PIN is not set/));
  await assert.rejects(openKek(fromEnv, { CAIRN_TEST_HSM_PIN: 'nope-nope' }), isUnavailable(/CKR_PIN_INCORRECT/));
});

test('the module comes from module-path or CAIRN_PKCS11_MODULE; a module that does not load is KekUnavailable', async () => {
  const noModule = hsm.ref('kek-known').replace(`module-path=${SOFTHSM_MODULE}&`, '');
  assert.ok(!noModule.includes('module-path'));
  await assert.rejects(openKek(noModule, {}), KekRefInvalid);
  const kek = await openKek(noModule, { CAIRN_PKCS11_MODULE: SOFTHSM_MODULE });
  await kek.close();
  const missing = hsm.ref('kek-known').replace(SOFTHSM_MODULE, '/usr/lib/no-such-pkcs11.so');
  await assert.rejects(openKek(missing), isUnavailable(/no-such-pkcs11\.so cannot be loaded/));
  const notAModule = hsm.ref('kek-known').replace(SOFTHSM_MODULE, hsm.conf);
  await assert.rejects(openKek(notAModule), isUnavailable(/cannot be loaded/));
});

test('the token going away makes open, wrap and unwrap KekUnavailable; back, it works again in the same process', async () => {
  const ref = hsm.ref('kek-known');
  const kek = await openKek(ref);
  const dek = randomBytes(64);
  const wrapped = await kek.wrap(dek);
  const fingerprint = kek.fingerprint;

  const away = `${hsm.tokenDir}.away`;
  await rename(hsm.tokenDir, away);
  try {
    await assert.rejects(kek.wrap(dek), KekUnavailable);
    await assert.rejects(kek.unwrap(wrapped), KekUnavailable, 'not KekWrongKey: the blob is fine, the token is gone');
    await assert.rejects(openKek(ref), KekUnavailable);
    await assert.rejects(openKek(ref), KekUnavailable, 'and again: every attempt fails cleanly');
  } finally {
    await rename(away, hsm.tokenDir);
  }
  assert.deepEqual(await kek.unwrap(wrapped), dek, 'the provider opened before works again');
  assert.deepEqual(await kek.wrap(dek), wrapped);
  const reopened = await openKek(ref);
  assert.equal(reopened.fingerprint, fingerprint);
  assert.deepEqual(await reopened.unwrap(wrapped), dek);
  await reopened.close();
  await kek.close();
});

test('a token deleted and re-created under the same label is another token: the old provider refuses it', async () => {
  const ref = hsm.ref('kek-known');
  const kek = await openKek(ref);
  const wrapped = await kek.wrap(randomBytes(64));
  // What `softhsm2-util --delete-token` does: the token's directory goes.
  const saved = `${hsm.tokenDir}.saved`;
  await rename(hsm.tokenDir, saved);
  try {
    await initTokenIn(hsm.tokenDir);
    await hsm.addKey('kek-known', KNOWN_KEK);
    await assert.rejects(kek.wrap(randomBytes(64)), isUnavailable(/now has serial/));
    const reopened = await openKek(ref);
    assert.notEqual(reopened.fingerprint, kek.fingerprint, 'the fingerprint names the token serial');
    await assert.rejects(reopened.unwrap(Buffer.alloc(72)), KekWrongKey);
    await reopened.close();
  } finally {
    await rm(hsm.tokenDir, { recursive: true, force: true });
    await rename(saved, hsm.tokenDir);
  }
  const back = await openKek(ref);
  assert.equal(back.fingerprint, kek.fingerprint);
  assert.equal((await back.unwrap(wrapped)).length, 64);
  await back.close();
  await kek.close();
});

/** A new token labelled like the test's, in an empty token directory (softhsm2-util reads SOFTHSM2_CONF). */
async function initTokenIn(tokenDir: string): Promise<void> {
  await mkdir(tokenDir);
  await promisify(execFile)('softhsm2-util', ['--init-token', '--free', '--label', SOFTHSM_TOKEN, '--so-pin', 'so-pin-2', '--pin', hsm.pin]);
}
