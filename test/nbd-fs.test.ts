// A real filesystem on a Cairn volume: nbdfuse exposes the export as a file, losetup makes it a block
// device, mkfs.ext4 + mount + files; then snapshot, clone, attach the clone and find the files.
// Needs root, /dev/fuse and loop devices (the CI machine has them); everything is detached after.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { mkdir, writeFile, readFile, access, readdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { startFixture, runOk, run, waitUntil, defer, MiB } from './nbd-harness.js';

interface Attached { loop: string; mountPoint: string }

/** nbdfuse + losetup + mount; registers detach steps (run in reverse order by defer). */
async function attach(t: TestContext, dir: string, uri: string, name: string, format: boolean): Promise<Attached> {
  const fuseDir = path.join(dir, `fuse-${name}`);
  const mountPoint = path.join(dir, `mnt-${name}`);
  await mkdir(fuseDir);
  await mkdir(mountPoint);
  const fuse = spawn('nbdfuse', [fuseDir, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let fuseErr = '';
  fuse.stderr.on('data', (d: Buffer) => { fuseErr += d.toString(); });
  defer(t, async () => {
    await run('fusermount3', ['-u', fuseDir]);
    if (fuse.exitCode === null) {
      fuse.kill('SIGTERM');
      await new Promise((resolve) => fuse.once('exit', resolve));
    }
  });
  const file = path.join(fuseDir, 'nbd');
  await waitUntil(() => access(file).then(() => true, () => false), `nbdfuse ${fuseErr}`);
  const loop = (await runOk('losetup', ['-f', '--show', file])).trim();
  defer(t, async () => { await run('losetup', ['-d', loop]); });
  if (format) await runOk('mkfs.ext4', ['-q', '-F', loop]);
  await runOk('mount', [loop, mountPoint]);
  defer(t, async () => { await run('umount', [mountPoint]); });
  return { loop, mountPoint };
}

test('ext4 on a volume via nbdfuse + loop; snapshot, clone, mount the clone, find the files', { timeout: 600_000 }, async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('fs', 128 * MiB);
  const files = new Map<string, Buffer>([['a.bin', randomBytes(3 * MiB)], ['b.txt', Buffer.from('cairn keeps this\n')]]);
  const original = await attach(t, f.dir, f.uri('fs'), 'fs', true);
  await mkdir(path.join(original.mountPoint, 'sub'));
  for (const [name, data] of files) await writeFile(path.join(original.mountPoint, 'sub', name), data);
  // Unmount flushes the filesystem and (through the loop device and nbdfuse) issues NBD flushes.
  await runOk('umount', [original.mountPoint]);
  await runOk('e2fsck', ['-f', '-n', original.loop]);
  await runOk('losetup', ['-d', original.loop]);
  await f.engine.createSnapshots(['fs@s1']);
  await f.engine.cloneVolume('fsclone', 'fs@s1');
  const clone = await attach(t, f.dir, f.uri('fsclone'), 'clone', false);
  assert.deepEqual((await readdir(path.join(clone.mountPoint, 'sub'))).sort(), ['a.bin', 'b.txt']);
  for (const [name, data] of files) assert.ok((await readFile(path.join(clone.mountPoint, 'sub', name))).equals(data), name);
  // The clone is writable and independent of the snapshot.
  await writeFile(path.join(clone.mountPoint, 'sub', 'new.txt'), 'only in the clone\n');
  await runOk('umount', [clone.mountPoint]);
  await runOk('e2fsck', ['-f', '-n', clone.loop]);
  await runOk('losetup', ['-d', clone.loop]);
  const snapshotFiles = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', f.uri('fs@s1'), f.uri('fsclone')]);
  assert.equal(snapshotFiles.code, 1, 'clone differs from the snapshot after writing to it');
});
