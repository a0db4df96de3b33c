// A PKCS#11 token that stops answering (test/fixtures/pkcs11-hang-shim.c: C_OpenSession waits while a
// flag file exists) must not stop the daemon: PKCS#11 runs in a worker thread, so each call fails with
// KekUnavailable after its bound while the event loop keeps running, and once the token answers again
// the same provider and new ones work.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { KekUnavailable, openKek } from '../src/keys/provider.js';
import { makeSoftHsm, SOFTHSM_MODULE, SOFTHSM_TOKEN } from './softhsm.js';

const hsm = await makeSoftHsm();
after(() => hsm.remove());
const source = fileURLToPath(new URL('../../test/fixtures/pkcs11-hang-shim.c', import.meta.url));

test('a token that stops answering: KekUnavailable after the bound, the event loop runs on, and it works again once it answers', { timeout: 60_000 }, async () => {
  const shim = join(hsm.dir, 'hang-shim.so');
  execFileSync('cc', ['-O1', '-shared', '-fPIC', '-o', shim, source, '-ldl']);
  const real = join(hsm.dir, 'softhsm-copy.so');
  copyFileSync(SOFTHSM_MODULE, real); // another file: its own instance, beside the one other tests load
  const flag = join(hsm.dir, 'hang');
  process.env.CAIRN_HANG_REAL = real;
  process.env.CAIRN_HANG_FILE = flag;
  await hsm.addKey('kek-hang');
  const ref = `pkcs11:token=${SOFTHSM_TOKEN};object=kek-hang?module-path=${shim}&pin-source=file:${hsm.pinFile}`;
  const env = { ...process.env, CAIRN_PKCS11_TIMEOUT_MS: '400' };

  const kek = await openKek(ref, env);
  const dek = randomBytes(64);
  const wrapped = await kek.wrap(dek);

  writeFileSync(flag, 'hang');
  let ticks = 0;
  const ticker = setInterval(() => { ticks++; }, 10);
  try {
    await assert.rejects(kek.unwrap(wrapped), (err) => err instanceof KekUnavailable && /did not answer within 400 ms/.test(err.message));
    assert.ok(ticks > 0, 'timers ran while the token hung: the event loop was not blocked');
    await assert.rejects(openKek(ref, env), KekUnavailable, 'a new open waits behind the hung call and fails the same way');
  } finally {
    clearInterval(ticker);
    rmSync(flag, { force: true });
  }
  assert.ok(!existsSync(flag));
  // The hung call returns once the token answers; the calls queued behind it run and are dropped.
  let back: Buffer | null = null;
  for (let i = 0; i < 50 && back === null; i++) {
    back = await kek.unwrap(wrapped).catch(() => null);
    if (back === null) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(back !== null && back.equals(dek), 'the same provider unwraps again once the token answers');
  const again = await openKek(ref, env);
  assert.ok((await again.unwrap(await again.wrap(dek))).equals(dek));
  await again.close();
  await kek.close();
});
