// The kernel's NBD client against `cairn serve`, in a real Linux guest under qemu (test/vm/README.md):
// nbd-client attaches two volumes; the guest writes patterns across request sizes with direct I/O and
// reads them back, discards and zeroes ranges, runs mkfs.ext4 and mkfs.xfs, mounts, writes files,
// unmounts and fscks. Then the CSI plugin (test/vm/csi-guest.ts, the host's root shared over 9p)
// stages a volume through its kernel-NBD path. Afterwards the host reads what the guest wrote through
// its own NBD clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { adminToken, assertBuilt, cairnJson, python, qemuIo, root, startServe, tempDir } from './cli-helpers.js';
import { bootGuest, keepLogOnFailure, vmUnavailable } from './vm/qemu.js';

const MiB = 1 << 20;
/** One boot runs every check; TCG is slow and a loaded CI machine slower. A hang bound, not a speed. */
const BOOT_TIMEOUT_MS = 480_000;
const RAW_BYTES = 64 * MiB;
/** mkfs.xfs refuses filesystems under 300 MiB. */
const FS_BYTES = 512 * MiB;
/** The guest's request sizes, in order, one MiB each from MiB 1, filled with octal bytes 101, 102, … */
const PATTERN_SIZES = [4096, 8192, 65536, 131072, 524288, 1048576];
/** MiBs 2 and 3 of the patterns: blkdiscard and blkdiscard -z leave zeros there. */
const ZEROED_MIBS = [2, 3];

const rangeHashPy = `
import hashlib, sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print(hashlib.sha256(h.pread(int(sys.argv[3]), int(sys.argv[2]))).hexdigest())
`;

const skip = vmUnavailable();

test('kernel NBD client in a qemu guest: patterns, discards, ext4 and xfs on Cairn volumes', { skip: skip ?? false, timeout: 900_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-vm-nbd-');
  const d = await startServe(t, join(dir, 'pool'), ['--pool-size', '2G']);
  await cairnJson(d.api, ['volume', 'create', 'raw', '--size', String(RAW_BYTES)]);
  await cairnJson(d.api, ['volume', 'create', 'fs', '--size', String(FS_BYTES)]);
  const port = new URL(d.nbd).port;
  const run = await bootGuest(t, {
    script: 'nbd',
    env: {
      NBD_PORT: port, RAW: 'raw', RAW_BYTES, FS: 'fs',
      // The CSI plugin in the guest reaches the daemon's API and NBD server through qemu's gateway.
      CSI_API: `http://10.0.2.2:${new URL(d.api).port}`, CSI_NBD: `10.0.2.2:${port}`, CSI_TOKEN: adminToken(d.api), REPO: root,
    },
    shareHostRoot: true,
    timeoutMs: BOOT_TIMEOUT_MS,
    onResult: (r) => t.diagnostic(`guest ${r.name} ${r.pass ? 'PASS' : `FAIL ${r.detail}`}`),
  });
  keepLogOnFailure(t, run);
  const failed = run.results.filter((r) => !r.pass);
  assert.deepEqual(failed, [], `guest checks failed (serial log ${run.logPath})`);
  const expected = ['nbd-connect', 'nbd-blkdiscard-z-reads-zero', 'nbd-ext4-fsck', 'nbd-ext4-files', 'nbd-xfs-fsck', 'nbd-xfs-files', 'nbd-disconnect-fs',
    'csi-plugin-start', 'csi-stage-kernel-nbd', 'csi-file', 'csi-unstage', 'csi-delete'];
  for (const name of expected) assert.ok(run.results.some((r) => r.name === name), `guest check ${name} did not run (serial log ${run.logPath})`);
  assert.equal(run.done, 0, `guest script did not finish cleanly (serial log ${run.logPath})`);

  // The host reads the guest's writes back through the same daemon with qemu-io and libnbd.
  const uri = `${d.nbd}/raw`;
  for (let i = 1; i <= PATTERN_SIZES.length; i++) {
    const byte = ZEROED_MIBS.includes(i) ? 0 : Number.parseInt(String(100 + i), 8);
    await qemuIo(uri, `read -P ${byte} ${i * MiB} ${MiB}`);
  }
  await qemuIo(uri, `read -P 0 0 ${MiB}`);
  const hash = await python(rangeHashPy, [uri, String(16 * MiB), String(4 * MiB)]);
  assert.equal(hash.code, 0, hash.stderr);
  assert.equal(hash.stdout.trim(), run.values.get('random-4m'), 'the random 4 MiB the guest wrote, read by the host');
});
