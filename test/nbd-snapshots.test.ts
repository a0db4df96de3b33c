// Snapshots and clones over NBD, the changed-blocks context, and what open connections see when their
// volume is deleted, reverted or resized (the behaviours docs/nbd.md defines).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFixture, runOk, run, parseMap, runPython, PythonSession, waitUntil, MiB } from './nbd-harness.js';

test('a snapshot export keeps old data after the volume is overwritten; writes to it fail', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('vol', 16 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa1 0 4M', '-c', 'flush', f.uri('vol')]);
  await f.engine.createSnapshots(['vol@s1']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0xb2 0 4M', f.uri('vol')]);
  await runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0xa1 0 4M', '-c', 'read -P 0 4M 12M', f.uri('vol@s1')]);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0xb2 0 4M', f.uri('vol')]);
  // qemu refuses to write a read-only export itself; a non-strict libnbd client sends the writes
  // anyway and the server must answer EPERM (1) to each.
  const refused = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', f.uri('vol@s1')]);
  assert.notEqual(refused.code, 0);
  const errors = await runPython(`
import nbd, sys, json
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
def err(fn):
    try: fn(); return 0
    except nbd.Error as e: return e.errnum
print(json.dumps({"ro": h.is_read_only(), "write": err(lambda: h.pwrite(b"x" * 4096, 0)),
  "trim": err(lambda: h.trim(4096, 0)), "zero": err(lambda: h.zero(4096, 0)),
  "still": h.pread(4, 0) == b"\\xa1" * 4}))
`, [f.uri('vol@s1')]);
  assert.deepEqual(errors, { ro: true, write: 1, trim: 1, zero: 1, still: true });
});

test('a clone made from a snapshot is writable and independent', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('base', 8 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x10 0 8M', f.uri('base')]);
  await f.engine.createSnapshots(['base@gold']);
  await f.engine.cloneVolume('clone', 'base@gold');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x20 1M 1M', f.uri('clone')]);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x30 2M 1M', f.uri('base')]);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x10 0 1M', '-c', 'read -P 0x20 1M 1M', '-c', 'read -P 0x10 2M 6M', f.uri('clone')]);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x10 0 2M', '-c', 'read -P 0x30 2M 1M', '-c', 'read -P 0x10 3M 5M', f.uri('base')]);
  await runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x10 0 8M', f.uri('base@gold')]);
});

test('the changed-blocks context reports exactly the ranges written between two snapshots', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('db', 32 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 8M', f.uri('db')]);
  await f.engine.createSnapshots(['db@s1']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 2 1M 4k', '-c', 'write -P 3 3M 128k', '-c', 'write -P 4 20M 1M', f.uri('db')]);
  await f.engine.createSnapshots(['db@s2']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 5 30M 64k', f.uri('db')]);
  const expected = [
    [0, 1 * MiB, 0], [1 * MiB, 4096, 1], [1 * MiB + 4096, 2 * MiB - 4096, 0], [3 * MiB, 128 * 1024, 1],
    [3 * MiB + 128 * 1024, 17 * MiB - 128 * 1024, 0], [20 * MiB, 1 * MiB, 1], [21 * MiB, 11 * MiB, 0],
  ];
  const onSnapshot = parseMap(await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:since:s1', f.uri('db@s2')]));
  assert.deepEqual(onSnapshot, expected);
  // On the live volume the later write shows up too.
  const onVolume = parseMap(await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:since:s1', f.uri('db')]));
  assert.deepEqual(onVolume, [...expected.slice(0, 6), [21 * MiB, 9 * MiB, 0], [30 * MiB, 64 * 1024, 1], [30 * MiB + 64 * 1024, 2 * MiB - 64 * 1024, 0]]);
  // The contexts offered: a snapshot export lists only earlier snapshots.
  const contexts = await runPython(`
import nbd, sys, json
out = {}
for name in sys.argv[1:]:
    h = nbd.NBD(); h.set_opt_mode(True)
    h.add_meta_context("qemu:dirty-bitmap:"); h.add_meta_context("base:")
    h.connect_uri(name)
    got = []
    h.opt_list_meta_context(lambda n: got.append(n) or 0)
    out[name.rsplit("/", 1)[1]] = sorted(got)
    h.opt_abort()
print(json.dumps(out))
`, [f.uri('db'), f.uri('db@s1'), f.uri('db@s2')]);
  assert.deepEqual(contexts, {
    db: ['base:allocation', 'qemu:dirty-bitmap:since:s1', 'qemu:dirty-bitmap:since:s2'],
    'db%40s1': ['base:allocation'],
    'db%40s2': ['base:allocation', 'qemu:dirty-bitmap:since:s1'],
  });
});

const sessionScript = `
import nbd, sys, json
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
def err(fn):
    try: fn(); return 0
    except nbd.Error as e: return e.errnum if e.errnum is not None else -1
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "size": print(json.dumps({"size": h.get_size()}))
    elif cmd[0] == "read": print(json.dumps({"err": err(lambda: h.pread(int(cmd[2]), int(cmd[1])))}))
    elif cmd[0] == "write": print(json.dumps({"err": err(lambda: h.pwrite(b"w" * int(cmd[2]), int(cmd[1])))}))
    elif cmd[0] == "peek": print(json.dumps({"data": h.pread(int(cmd[2]), int(cmd[1])).hex()}))
`;

test('deleting an exported volume: requests fail, the connection ends, others keep working', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('doomed', 8 * MiB);
  await f.engine.createVolume('other', 8 * MiB);
  const session = new PythonSession(t, sessionScript, [f.uri('doomed')]);
  assert.deepEqual(await session.call('write 0 4096'), { err: 0 });
  await f.engine.deleteVolume('doomed');
  const after = await session.call('read 0 4096');
  assert.notEqual(after.err, 0, 'I/O to a deleted volume fails');
  await waitUntil(() => f.server.connections() === 0, 'connection to the deleted volume to end');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 9 0 64k', '-c', 'read -P 9 0 64k', f.uri('other')]);
  assert.ok(f.events.some((e) => e.event === 'nbd_target_gone'));
});

test('resizing an exported volume: open connections keep their size, new ones see the new size', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('r', 8 * MiB);
  const session = new PythonSession(t, sessionScript, [f.uri('r')]);
  assert.deepEqual(await session.call('size'), { size: 8 * MiB });
  await f.engine.resizeVolume('r', 16 * MiB);
  assert.deepEqual(await session.call('size'), { size: 8 * MiB });
  assert.deepEqual(await session.call(`read ${8 * MiB} 4096`), { err: 22 }, 'past the negotiated size: EINVAL');
  assert.deepEqual(await session.call(`write ${8 * MiB} 4096`), { err: 28 }, 'write past the negotiated size: ENOSPC');
  assert.deepEqual(await session.call('write 0 4096'), { err: 0 });
  assert.equal((await runOk('nbdinfo', ['--size', f.uri('r')])).trim(), String(16 * MiB));
});

test('reverting an exported volume ends its connections; a new connection sees the snapshot data', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('rv', 8 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 4k', f.uri('rv')]);
  await f.engine.createSnapshots(['rv@before']);
  const session = new PythonSession(t, sessionScript, [f.uri('rv')]);
  assert.deepEqual(await session.call('write 0 4096'), { err: 0 });
  await f.engine.revertVolume('rv', 'before');
  await waitUntil(() => f.server.connections() === 0, 'connection to the reverted volume to end');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x61 0 4k', f.uri('rv')]);
});
