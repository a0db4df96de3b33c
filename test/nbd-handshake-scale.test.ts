// The NBD handshake with many exports (issue 17 section 8): `nbdinfo --list` over a pool with 10 000
// snapshots of one volume completes and lists every export, and the handshake's timeout is per
// option: a client idle mid-handshake is cut off after the idle time, one that keeps sending options
// for many idle times is not. Over a unix socket: libnbd 1.14 holds each LIST_META_CONTEXT ~200 ms in
// a TCP socket (MSG_MORE), which would make the list take ~35 minutes over TCP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { startFixture, runOk, waitUntil, defer, MiB } from './nbd-harness.js';

test('nbdinfo --list lists a volume and its 10 000 snapshots', { timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-nbd-sock-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'nbd.sock');
  const f = await startFixture(t, { socketPath });
  await f.engine.createVolume('v', MiB);
  const count = 10_000;
  for (let i = 0; i < count; i += 1000) {
    const names: string[] = [];
    for (let j = i; j < i + 1000; j++) names.push(`v@s${j}`);
    await f.engine.createSnapshots(names);
  }
  const out = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${socketPath}`], { timeoutMs: 540_000 });
  const listed = (JSON.parse(out) as { exports: Array<{ 'export-name': string; contexts?: string[] }> }).exports;
  assert.equal(listed.length, count + 1);
  assert.deepEqual(new Set(listed.map((e) => e['export-name'])).size, count + 1);
  assert.ok(listed.some((e) => e['export-name'] === 'v@s9999'));
  // The volume's 10 000 since-contexts are offered as one namespace record (meta-context.ts).
  const volume = listed.find((e) => e['export-name'] === 'v');
  assert.deepEqual(volume?.contexts?.filter((c) => c.startsWith('qemu:')), ['qemu:dirty-bitmap:since:']);
  // ...and one is still selectable by its name.
  await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:since:s9000', `nbd+unix:///v?socket=${socketPath}`]);
});

function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(0x49484156454f5054n, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

const NBD_OPT_GO = 7, NBD_OPT_STRUCTURED_REPLY = 8;

function goData(name: string): Buffer {
  const n = Buffer.from(name);
  const data = Buffer.alloc(4 + n.length + 2);
  data.writeUInt32BE(n.length, 0);
  n.copy(data, 4);
  return data;
}

/** A raw client: collects what the server sends and tells when it closes. */
function rawClient(t: Parameters<typeof defer>[0], port: number) {
  const socket = net.connect(port, '127.0.0.1');
  defer(t, () => socket.destroy());
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => { received = Buffer.concat([received, d]); });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, closed, received: () => received };
}

test('the handshake timeout is per option: idle clients are cut off, busy ones are not', { timeout: 60_000 }, async (t) => {
  // An option every tenth of the idle time: a loaded machine may delay a timer by most of a second
  // without the busy client looking idle.
  const idleMs = 1000;
  const optionEveryMs = idleMs / 10;
  const f = await startFixture(t, { handshakeIdleMs: idleMs });
  await f.engine.createVolume('v', MiB);
  const port = f.server.port as number;

  // Idle after two options: disconnected (and the server logs why).
  const idle = rawClient(t, port);
  idle.socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option(NBD_OPT_STRUCTURED_REPLY), option(NBD_OPT_STRUCTURED_REPLY)]));
  await idle.closed;
  assert.ok(f.events.some((e) => e.event === 'nbd_hang_up' && e.fields.reason === 'handshake idle'), JSON.stringify(f.events.slice(-3)));

  // Idle in the middle of an option (header sent, data not): disconnected too.
  const partial = rawClient(t, port);
  partial.socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option(NBD_OPT_GO, goData('v')).subarray(0, 20)]));
  await partial.closed;

  // Busy: an option every idle/10 for 4 idle times (a whole-handshake timer would have fired), then
  // GO: it reaches transmission.
  const busy = rawClient(t, port);
  busy.socket.write(Buffer.from([0, 0, 0, 3]));
  let busyClosed = false;
  void busy.closed.then(() => { busyClosed = true; });
  const rounds = 40;
  for (let i = 0; i < rounds; i++) {
    busy.socket.write(option(NBD_OPT_STRUCTURED_REPLY));
    await new Promise((resolve) => setTimeout(resolve, optionEveryMs));
    assert.equal(busyClosed, false, `busy client cut off after ${i + 1} options`);
  }
  busy.socket.write(option(NBD_OPT_GO, goData('v')));
  await waitUntil(() => f.events.some((e) => e.event === 'nbd_connected'), 'the busy client to reach transmission');
  assert.equal(busyClosed, false);
  // 18 bytes of greeting, then 20 per STRUCTURED_REPLY ACK.
  assert.ok(busy.received().length >= 18 + rounds * 20);
});
