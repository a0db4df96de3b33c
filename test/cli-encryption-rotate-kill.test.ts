// `cairn tenant rotate-kek` interrupted by kill -9 (issue 20): a tenant with many encrypted volumes,
// the rotation started through the CLI and the daemon killed at several moments after the daemon has
// recorded it; at the restart every volume unlocks (each key wrapped by the old or the new KEK, both
// still there), the rotation resumes and ends (the new KEK, nothing rotating), and the data reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { assertBuilt, cairn, python, startServe, tempDir, type DaemonProcess } from './cli-helpers.js';
import { apiCall, apiGet, encryptionJson, pollUntil, writeKekFile, type EncryptionJson, type VolumeJson } from './encryption-e2e.js';

const VOLUMES = 30;
/** How long after the daemon shows the rotation under way it is killed: several points of a rotation. */
const KILL_DELAYS_MS = [0, 5, 20, 60, 150];
/** Rounds added (killing at once) while no kill has yet fallen inside a rotation: a fast machine may need them. */
const EXTRA_ROUNDS_MAX = 6;

const names = Array.from({ length: VOLUMES }, (_, i) => `v${String(i).padStart(2, '0')}`);

/** Writes (argv[1] == "write") or checks one 4 KiB block of pattern i+1 at 0 and at 512 KiB of each export. */
const blocksPy = `
import sys, nbd
mode, base, names = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = []
for i, name in enumerate(names):
    h = nbd.NBD(); h.connect_uri(base + '/' + name)
    block = bytes([i + 1]) * 4096
    for off in (0, 512 * 1024):
        if mode == 'write': h.pwrite(block, off)
        elif h.pread(4096, off) != block: bad.append(name + '@' + str(off))
    if mode == 'write': h.flush()
    h.shutdown()
print('bad: ' + ' '.join(bad) if bad else 'ok')
`;

test('kill -9 in the middle of tenant rotate-kek: every volume unlocks at restart and the rotation ends on the new KEK', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-enc-rotkill-');
  const pool = join(dir, 'cairn.pool');
  const keks = [await writeKekFile(join(dir, 'a.kek')), await writeKekFile(join(dir, 'b.kek'))];
  const serve = (): Promise<DaemonProcess> => startServe(t, pool, ['--pool-size', '256M', '--kek-retry-ms', '300']);
  let d = await serve();
  const set = await cairn(d.api, ['tenant', 'set', 'default', '--kek', keks[0]!]);
  assert.equal(set.code, 0, set.stderr);
  for (const name of names) {
    const r = await apiCall(d.api, 'POST', '/v1/volumes', { name, size: 1024 * 1024, encrypted: true });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  const written = await python(blocksPy, ['write', d.nbd, ...names]);
  assert.equal(written.stdout.trim(), 'ok', written.stderr);

  let resumed = 0;
  const delays = [...KILL_DELAYS_MS];
  for (let round = 0; round < delays.length; round++) {
    const delayMs = delays[round]!;
    const from = keks[round % 2]!;
    const to = keks[(round + 1) % 2]!;
    const rotation = cairn(d.api, ['tenant', 'rotate-kek', 'default', '--kek', to]);
    // The daemon has taken the request once it shows the new KEK as rotatingTo (or, already done, as the KEK).
    const seen = await pollUntil(`the rotation to ${to} to start`, async () => {
      const s = await encryptionJson(d.api, 'default');
      return s.rotatingTo === to || s.kek === to ? s : undefined;
    }, 90_000, 2);
    await new Promise((r) => setTimeout(r, delayMs));
    d.child.kill('SIGKILL');
    await d.stop();
    const cli = await rotation;
    t.diagnostic(`round ${round}: killed ${delayMs} ms after ${seen.rotatingTo === to ? 'rotatingTo' : 'the end'} was seen; the CLI exited ${cli.code}`);

    d = await serve();
    if (d.logs.some((l) => l.includes('"event":"kek_rotation_resumed"'))) {
      resumed++;
      const done = d.logs.find((l) => l.includes('"event":"kek_rotated"'));
      t.diagnostic(`round ${round}: resumed at start; ${done === undefined ? 'no kek_rotated event' : `re-wrapped ${String((JSON.parse(done) as { rewrapped?: number }).rewrapped)} of ${VOLUMES} then`}`);
    }
    const volumes = await apiGet<VolumeJson[]>(d.api, '/v1/volumes');
    assert.deepEqual(volumes.map((v) => [v.name, v.encrypted, v.locked]), names.map((n) => [n, true, false]), `round ${round}: all unlocked at start`);
    let state: EncryptionJson = await encryptionJson(d.api, 'default');
    if (state.kek === from && state.rotatingTo === null) {
      // Killed before the rotation's first step was durable: the daemon never answered, so a client retries.
      t.diagnostic(`round ${round}: the rotation had not reached the disk; retried`);
      const retried = await cairn(d.api, ['tenant', 'rotate-kek', 'default', '--kek', to]);
      assert.equal(retried.code, 0, retried.stderr);
      state = await encryptionJson(d.api, 'default');
    }
    assert.deepEqual([state.kek, state.rotatingTo, state.state, state.error, state.encryptedLineages, state.lockedLineages],
      [to, null, 'available', null, VOLUMES, 0], `round ${round}: the rotation ended on the new KEK`);
    const shown = await cairn(d.api, ['tenant', 'show', 'default']);
    assert.ok(shown.stdout.split('\n').some((l) => /^kek:\s+/.test(l) && l.endsWith(to)), shown.stdout);
    assert.doesNotMatch(shown.stdout, /rotating to/);
    const check = await python(blocksPy, ['check', d.nbd, ...names]);
    assert.equal(check.stdout.trim(), 'ok', `round ${round}: ${check.stdout}${check.stderr}`);
    if (round === delays.length - 1 && resumed === 0 && delays.length < KILL_DELAYS_MS.length + EXTRA_ROUNDS_MAX) delays.push(0);
  }
  t.diagnostic(`rotations resumed at start: ${resumed} of ${delays.length}`);
  assert.ok(resumed > 0, 'at least one kill fell inside a rotation (else the test proved nothing about resuming)');

  // The last KEK alone suffices: the other one moved away, a restart unlocks everything.
  const last = (await encryptionJson(d.api, 'default')).kek!;
  assert.equal(await d.stop(), 0);
  const other = keks.find((k) => k !== last)!.slice('file:'.length);
  await rename(other, `${other}.away`);
  d = await serve();
  const volumes = await apiGet<VolumeJson[]>(d.api, '/v1/volumes');
  assert.ok(volumes.every((v) => !v.locked), 'every key is wrapped by the final KEK');
  assert.equal(await d.stop(), 0);
});
