// The key manager over a simulated disk: a KEK rotation cut by a power failure at every device call
// leaves every data key openable (by the old KEK or the new one) and resumes at the next start; a
// tenant whose KEK file is missing at start stays locked, and unlocks when it is back (on request or
// by the background retry).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { KeyManager } from '../src/tenancy/key-manager.js';
import { MiB, pattern } from './engine-helpers.js';

const options = { commitIntervalMs: 0 };
const VOLUMES = 4;

function kekFiles(t: { after(fn: () => void): void }): { k1: string; k2: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-km-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const k1 = join(dir, 'k1'), k2 = join(dir, 'k2');
  writeFileSync(k1, randomBytes(32));
  writeFileSync(k2, randomBytes(32));
  return { k1: `file:${k1}`, k2: `file:${k2}`, dir };
}

async function readAll(engine: CairnEngine): Promise<void> {
  for (let i = 0; i < VOLUMES; i++) {
    const got = await engine.read(engine.resolve(`v${i}`).id, 0, 8192);
    assert.ok(got.equals(pattern(100 + i, 8192)), `v${i} reads back`);
  }
}

test('key manager: a rotation cut at every device call leaves every key openable and resumes at start', async (t) => {
  const { k1, k2 } = kekFiles(t);
  const setup = new SimDevice(16384, new Prng(41));
  const engine = await createPool(setup, options);
  const km = new KeyManager(engine, { retryMs: 0 });
  await km.setKek('default', k1);
  for (let i = 0; i < VOLUMES; i++) {
    await engine.createVolume(`v${i}`, MiB, { encryption: await km.newDataKey('default') });
    await engine.write(engine.resolve(`v${i}`).id, 0, pattern(100 + i, 8192));
  }
  await engine.close();
  const base = setup.crash('clean');
  let cuts = 0;
  const outcomes = new Set<string>();
  for (let after = 0; ; after++) {
    const device = base.crash('clean');
    const e = await openPool(device, options);
    const m = new KeyManager(e, { retryMs: 0 });
    await m.start();
    assert.equal(m.status('default').lockedLineages, 0);
    device.armCrash(after, 'torn');
    await m.rotateKek('default', k2).catch(() => undefined);
    const image = device.takeArmedImage();
    if (image === null) {
      assert.equal(m.status('default').kek, k2);
      await e.close();
      break;
    }
    cuts++;
    const reopened = await openPool(image, options);
    const m2 = new KeyManager(reopened, { retryMs: 0 });
    await m2.start(); // unlocks with either KEK, and finishes a rotation that had begun
    const s = m2.status('default');
    assert.equal(s.lockedLineages, 0, `cut after ${after} calls: every key opens (${s.error ?? ''})`);
    assert.equal(s.rotatingTo, null, `cut after ${after}: an interrupted rotation is finished at start`);
    assert.ok(s.kek === k1 || s.kek === k2);
    outcomes.add(s.kek!);
    await readAll(reopened);
    await reopened.close();
  }
  assert.ok(cuts >= VOLUMES * 4, `the rotation was cut at ${cuts} places`);
  assert.deepEqual([...outcomes].sort(), [k1, k2].sort(), 'cuts before the rotation began and after it was recorded');
});

test('key manager: a missing KEK file locks its tenant; it unlocks on request and by the background retry', async (t) => {
  const { k1, dir } = kekFiles(t);
  const path = k1.slice('file:'.length);
  const setup = new SimDevice(8192, new Prng(43));
  const engine = await createPool(setup, options);
  const km = new KeyManager(engine, { retryMs: 0 });
  await km.setKek('default', k1);
  await engine.createVolume('v0', MiB, { encryption: await km.newDataKey('default') });
  await engine.createVolume('plain', MiB);
  await engine.write(engine.resolve('v0').id, 0, pattern(100, 8192));
  await engine.close();
  const image = setup.crash('clean');

  renameSync(path, join(dir, 'away'));
  const e = await openPool(image, options);
  const m = new KeyManager(e, { retryMs: 20 });
  t.after(() => m.close());
  await m.start();
  let s = m.status('default');
  assert.equal(s.state, 'unavailable');
  assert.match(s.error ?? '', /k1/);
  assert.equal(s.lockedLineages, 1);
  assert.equal(e.getVolume('v0').encryption?.locked, true);
  await assert.rejects(e.read(e.resolve('v0').id, 0, 4096), (err) => (err as { code?: string }).code === 'volume_locked');
  await e.write(e.resolve('plain').id, 0, pattern(1, 4096)); // the other volumes keep working
  await assert.rejects(m.newDataKey('default'), (err) => (err as { code?: string }).code === 'kek_unavailable');
  s = await m.unlock('default');
  assert.equal(s.lockedLineages, 1, 'still away: still locked');
  renameSync(join(dir, 'away'), path);
  // The background retry (every 20 ms here) unlocks it without being asked.
  for (let i = 0; i < 500 && e.getVolume('v0').encryption?.locked === true; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(e.getVolume('v0').encryption?.locked, false, 'unlocked by the retry once the KEK is back');
  assert.equal(m.status('default').state, 'available');
  assert.ok((await e.read(e.resolve('v0').id, 0, 8192)).equals(pattern(100, 8192)));
  // A wrong key file in place of the right one is refused (the wrap's integrity check), never used.
  m.close();
  e.lockKey(e.listKeys()[0]!.keyId);
  writeFileSync(path, randomBytes(32));
  s = await m.unlock('default');
  assert.equal(s.lockedLineages, 1);
  assert.match(s.error ?? '', /key slot/);
  await e.close();
});
