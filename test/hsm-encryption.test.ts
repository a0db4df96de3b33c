// A tenant KEK on an HSM (SoftHSM2, test/softhsm.ts) through a real daemon (issue 20): an encrypted
// volume under a pkcs11: KEK; a restart while the token is gone leaves it locked, the token back
// unlocks it; rotate-kek from the HSM to a file KEK and on to another HSM key, online, while qemu-io
// keeps writing; after each rotation a restart without the old KEK still unlocks, and reads back.
// The daemon inherits SOFTHSM2_CONF from this process (makeSoftHsm sets it before any daemon starts).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, cairn, startServe, tempDir, type DaemonProcess } from './cli-helpers.js';
import { makeSoftHsm } from './softhsm.js';
import {
  assertSameAs, encryptionJson, pollUntil, startWriteLoop, volumeJson, writeBoth, writeKekFile, zeroFile,
} from './encryption-e2e.js';

const hsm = await makeSoftHsm();
after(() => hsm.remove());
await hsm.addKey('kek-a');
await hsm.addKey('kek-b');

test('a pkcs11: KEK on SoftHSM: locked while the token is away, unlocked when back; online rotation to a file KEK and back to the HSM', { timeout: 300_000 }, async (t) => {
  assertBuilt();
  assert.equal(process.env.SOFTHSM2_CONF, hsm.conf, 'the daemon must see the test token\'s configuration');
  const dir = await tempDir(t, 'cairn-enc-hsm-');
  const pool = join(dir, 'cairn.pool');
  const fileKek = await writeKekFile(join(dir, 'tenant.kek'));
  const hsmA = hsm.ref('kek-a');
  const hsmB = hsm.ref('kek-b');
  const tokenAway = `${hsm.tokenDir}.away`;
  const serve = (): Promise<DaemonProcess> => startServe(t, pool, ['--pool-size', '256M', '--kek-retry-ms', '300']);
  let d = await serve();
  const uri = (): string => `${d.nbd}/vol`;
  const mirror = join(dir, 'vol.mirror');

  const set = await cairn(d.api, ['tenant', 'set', 'default', '--kek', hsmA]);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /^kek state:\s+available$/m);
  const created = await cairn(d.api, ['volume', 'create', 'vol', '--size', '8M', '--encrypt']);
  assert.equal(created.code, 0, created.stderr);
  await zeroFile(mirror, 8 * 1024 * 1024);
  await writeBoth(uri(), mirror, ['write -P 0xa1 0 1M', 'write -P 0xb2 5M 512k']);
  await assertSameAs(uri(), mirror, 'written under the HSM KEK');

  // The token goes away (its directory renamed, as keys-pkcs11.test.ts does): a restart leaves the volume locked.
  assert.equal(await d.stop(), 0);
  await rename(hsm.tokenDir, tokenAway);
  try {
    d = await serve();
    assert.equal((await volumeJson(d.api, 'vol')).locked, true);
    const shown = await cairn(d.api, ['tenant', 'show', 'default']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^kek state:\s+unavailable \(PKCS#11 .+\)$/m, 'the reason is the provider\'s');
    assert.match(shown.stdout, /^locked lineages:\s+1$/m);
  } finally {
    await rename(tokenAway, hsm.tokenDir);
  }
  await pollUntil('vol to unlock once the token is back', async () => ((await volumeJson(d.api, 'vol')).locked ? undefined : true));
  await assertSameAs(uri(), mirror, 'after the token came back');

  // Rotation HSM → file, online: qemu-io keeps writing while every data key is re-wrapped.
  await rotateWhileWriting(d, uri(), mirror, fileKek);
  let state = await encryptionJson(d.api, 'default');
  assert.deepEqual([state.kek, state.state, state.rotatingTo, state.lockedLineages], [fileKek, 'available', null, 0]);

  // The proof the keys moved: a restart with the token away unlocks under the file KEK alone.
  assert.equal(await d.stop(), 0);
  await rename(hsm.tokenDir, tokenAway);
  try {
    d = await serve();
    assert.equal((await volumeJson(d.api, 'vol')).locked, false, 'unlocked by the file KEK, the HSM away');
    await assertSameAs(uri(), mirror, 'after rotation to the file KEK and a restart');
  } finally {
    await rename(tokenAway, hsm.tokenDir);
  }

  // Rotation file → another HSM key, online; then a restart with the file KEK away.
  await rotateWhileWriting(d, uri(), mirror, hsmB);
  assert.equal(await d.stop(), 0);
  const keyPath = fileKek.slice('file:'.length);
  await rename(keyPath, `${keyPath}.away`);
  d = await serve();
  assert.equal((await volumeJson(d.api, 'vol')).locked, false, 'unlocked by the HSM KEK, the file away');
  await assertSameAs(uri(), mirror, 'after rotation to the HSM KEK and a restart');
  const shown = await cairn(d.api, ['tenant', 'show', 'default']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.ok(shown.stdout.split('\n').some((l) => /^kek:\s+/.test(l) && l.endsWith(hsmB)), shown.stdout);
  assert.match(shown.stdout, /^kek state:\s+available$/m);
  assert.doesNotMatch(shown.stdout, /rotating to/);
  state = await encryptionJson(d.api, 'default');
  assert.deepEqual([state.kek, state.rotatingTo], [hsmB, null]);
  assert.equal(await d.stop(), 0);
});

/** `cairn tenant rotate-kek default --kek NEW` while a qemu-io write loop runs; the loop's writes all succeed. */
async function rotateWhileWriting(d: DaemonProcess, exportUri: string, mirror: string, newKek: string): Promise<void> {
  const loop = startWriteLoop(exportUri, mirror);
  let rotated;
  try {
    rotated = await cairn(d.api, ['tenant', 'rotate-kek', 'default', '--kek', newKek]);
  } finally {
    await loop.stop();
  }
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.ok(rotated.stdout.split('\n').some((l) => /^kek:\s+/.test(l) && l.endsWith(newKek)), rotated.stdout);
  await assertSameAs(exportUri, mirror, `after the rotation to ${newKek}`);
}
