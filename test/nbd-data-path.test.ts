// NBD data-path helpers. The busy-poll window: polling starts on a request, keeps the loop from
// sleeping while requests keep coming, and stops once the window passes without one (or at once when
// the server closes). The READ buffer pool: size classes, reuse, and its bound. Receive slabs: a slab
// goes back to the pool only when the socket, the receive queue and every request are done with it,
// and a real server's connections keep reusing the same few slabs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BusyPoller } from '../src/nbd/busy-poll.js';
import { SlabPool, SlabReader, type Slab } from '../src/nbd/recv-slabs.js';
import { RecvQueue } from '../src/nbd/recv-queue.js';

test('busy poller polls for its window after the last kick, then lets the loop sleep', async () => {
  let now = 0;
  const poller = new BusyPoller(50_000, () => now);
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  assert.equal(poller.active, false);
  poller.kick();
  assert.equal(poller.active, true);
  for (let i = 0; i < 5; i++) await turn();
  assert.equal(poller.active, true, 'the loop keeps turning inside the window');
  now = 40;
  poller.kick(); // a request at 40 ms extends the window to 90 ms
  now = 80;
  await turn(); await turn();
  assert.equal(poller.active, true, 'still inside the extended window');
  now = 91;
  await turn(); await turn();
  assert.equal(poller.active, false, 'polling ends once the window passed without a kick');
});

test('busy poller counts its kicks, its loop turns and the idle ones with their time', async () => {
  let now = 0;
  const poller = new BusyPoller(10_000, () => now);
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  poller.kick();
  now = 1;
  await turn(); // the turn after the kick found it: not idle
  now = 3;
  await turn(); // nothing arrived since: idle, 2 ms
  poller.kick();
  now = 4;
  await turn();
  now = 20; // past the window: this turn ends polling
  await turn();
  const stats = poller.stats;
  assert.equal(stats.kicks, 2);
  assert.equal(stats.turns, 4);
  assert.equal(stats.idleTurns, 2);
  assert.equal(stats.idleMs, 2 + 16);
  assert.equal(poller.active, false);
  await turn();
  assert.deepEqual(poller.stats, stats, 'no turns once polling ended');
});

test('busy poller off (window 0) never polls; stop() ends polling', async () => {
  const off = new BusyPoller(0);
  off.kick();
  assert.equal(off.active, false);
  const on = new BusyPoller(1_000_000);
  on.kick();
  on.stop();
  // The poll queued before stop() ends on its next turn; a fixed sleep could fire first on a busy machine.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(on.active, false);
});

test('read buffer pool: power-of-two classes, reuse after release, bounded pooled bytes', async () => {
  const { ReadBufferPool } = await import('../src/nbd/read-buffers.js');
  const pool = new ReadBufferPool(3 * 1024 * 1024);
  const a = pool.acquire(1_000_000);
  assert.equal(a.length, 1024 * 1024);
  assert.equal(pool.acquire(100).length, 4096, 'smallest class is 4 KiB');
  pool.release(a);
  assert.equal(pool.bytesPooled, 1024 * 1024);
  assert.equal(pool.acquire(1024 * 1024), a, 'a released buffer is handed out again');
  assert.equal(pool.bytesPooled, 0);
  const big = [pool.acquire(2 * 1024 * 1024), pool.acquire(2 * 1024 * 1024)];
  for (const b of big) pool.release(b);
  assert.equal(pool.bytesPooled, 2 * 1024 * 1024, 'the second one would pass the bound: left to the GC');
  pool.release(Buffer.alloc(5000));
  assert.equal(pool.bytesPooled, 2 * 1024 * 1024, 'a buffer not of a class size is not taken');
});

test('CACHE prefetches: the whole range is read through the engine in bounded steps, and it always succeeds', async (t) => {
  const { startFixture, runPython, MiB } = await import('./nbd-harness.js');
  const f = await startFixture(t);
  await f.engine.createVolume('c', 16 * MiB);
  const id = f.engine.resolve('c').id;
  await f.engine.write(id, 0, Buffer.alloc(9 * MiB, 7));
  const reads: [number, number][] = [];
  const engine = f.engine as { read: (id: number, offset: number, length: number, into?: Buffer) => Promise<Buffer> };
  const realRead = engine.read.bind(f.engine);
  engine.read = (target, offset, length, into) => { reads.push([offset, length]); return realRead(target, offset, length, into); };
  const r = await runPython(`
import nbd, sys, json
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.cache(9 * 1024 * 1024 + 512, 1024 * 1024 - 512)
print(json.dumps({"ok": True, "data": h.pread(4096, 0) == bytes([7]) * 4096}))
`, [f.uri('c')]) as { ok: boolean; data: boolean };
  assert.deepEqual(r, { ok: true, data: true });
  // [1 MiB - 512, 10 MiB) in 4 MiB steps, then the client's own 4 KiB read.
  assert.deepEqual(reads, [[MiB - 512, 4 * MiB], [5 * MiB - 512, 4 * MiB], [9 * MiB - 512, MiB + 512], [0, 4096]]);
});

/** Simulates socket reads of `bytes` into the reader's slabs, queued as the connection does. */
function receive(reader: SlabReader, recv: RecvQueue, bytes: Buffer): void {
  let at = 0;
  while (at < bytes.length) {
    const target = reader.nextBuffer();
    const n = Math.min(target.length, bytes.length - at, 100_000);
    bytes.copy(target, 0, at, at + n);
    const { chunk, slab } = reader.filled(n);
    recv.push(chunk, slab);
    at += n;
  }
}

test('receive slabs: payload views stay intact until released; slabs are reused only then', () => {
  const pool = new SlabPool(256 * 1024, 4, 8);
  const reader = new SlabReader(pool);
  const recv = new RecvQueue(32);
  const first = Buffer.alloc(300 * 1024, 0xa1);
  receive(reader, recv, first);
  const pins: Slab[] = [];
  const views = recv.takeViews(first.length, pins);
  assert.equal(pins.length, 2, 'a payload spanning two slabs pins both');
  assert.ok(Buffer.concat(views).equals(first));
  // More traffic while the payload is held: no slab it sits in may be handed out again.
  for (let i = 0; i < 10; i++) {
    const other = Buffer.alloc(200 * 1024, i);
    receive(reader, recv, other);
    const otherPins: Slab[] = [];
    assert.ok(Buffer.concat(recv.takeViews(other.length, otherPins)).equals(other));
    for (const slab of otherPins) slab.unref();
  }
  assert.ok(Buffer.concat(views).equals(first), 'held payload unchanged by later reads');
  const createdWhileHeld = pool.created;
  for (const slab of pins) slab.unref();
  for (let i = 0; i < 10; i++) {
    const other = Buffer.alloc(200 * 1024, 0x50 + i);
    receive(reader, recv, other);
    const otherPins: Slab[] = [];
    recv.takeViews(other.length, otherPins);
    for (const slab of otherPins) slab.unref();
  }
  assert.equal(pool.created, createdWhileHeld, 'released slabs are reused instead of new ones made');
  assert.ok(pool.created <= 6, `a few slabs serve all the traffic (made ${pool.created})`);
});

test('receive slabs: bytes still queued hold their slab; clear() and close() release everything', () => {
  const pool = new SlabPool(128 * 1024, 8, 8);
  const reader = new SlabReader(pool);
  const recv = new RecvQueue(32);
  receive(reader, recv, Buffer.alloc(100 * 1024, 1));
  receive(reader, recv, Buffer.alloc(100 * 1024, 2));
  assert.equal(pool.idleCount, 0, 'queued bytes keep their slabs');
  recv.skip(100 * 1024);
  assert.equal(pool.idleCount, 1, 'the first slab is free once its bytes are consumed and the reader moved on');
  recv.clear();
  reader.close();
  assert.equal(pool.idleCount, pool.created, 'every slab is back in the pool');
  assert.equal(recv.length, 0);
});

test('receive slabs: only readersMax connections read into slabs at once (each pins one slab)', () => {
  const pool = new SlabPool(128 * 1024, 8, 2);
  const a = pool.tryReader(), b = pool.tryReader();
  assert.ok(a && b);
  assert.equal(pool.tryReader(), null, 'a third connection keeps Node buffers');
  a.close();
  a.close(); // closing twice releases once
  assert.equal(pool.readers, 1);
  const c = pool.tryReader();
  assert.ok(c, 'a closed reader frees its place');
  b.close(); c.close();
  assert.equal(pool.readers, 0);
});

test('a real client writing through the server: reads land in slabs and the data reads back intact', async (t) => {
  const { startFixture, runPython, MiB } = await import('./nbd-harness.js');
  const f = await startFixture(t);
  await f.engine.createVolume('s', 64 * MiB);
  // 48 MiB of distinct 1 MiB writes, many in flight: more than the slabs, so slabs are reused while
  // earlier payloads may still be held by running writes.
  const r = await runPython(`
import nbd, sys, json
h = nbd.NBD(); h.connect_uri(sys.argv[1])
bufs = [nbd.Buffer.from_bytearray(bytearray([i % 251]) * (1024 * 1024)) for i in range(48)]
for i, b in enumerate(bufs):
    h.aio_pwrite(b, i * 1024 * 1024)
while h.aio_in_flight() > 0:
    h.poll(-1)
ok = all(h.pread(1024 * 1024, i * 1024 * 1024) == bytes([i % 251]) * (1024 * 1024) for i in range(48))
print(json.dumps({"ok": ok}))
`, [f.uri('s')]) as { ok: boolean };
  assert.deepEqual(r, { ok: true });
  const connected = f.events.find((e) => e.event === 'nbd_connected');
  assert.equal(connected?.fields.recvSlabs, true, 'the connection reads into slabs');
  const id = f.engine.resolve('s').id;
  for (const i of [0, 17, 47]) assert.ok((await f.engine.read(id, i * MiB, MiB)).equals(Buffer.alloc(MiB, i % 251)));
});

test('connections past the slab readers bound keep Node buffers and work the same', async (t) => {
  const { startFixture, runPython, MiB } = await import('./nbd-harness.js');
  const c = await import('../src/nbd/constants.js');
  const f = await startFixture(t);
  await f.engine.createVolume('many', 16 * MiB);
  const count = c.RECV_SLAB_READERS_MAX + 2;
  const r = await runPython(`
import nbd, sys, json
n = int(sys.argv[2])
hs = []
for i in range(n):
    h = nbd.NBD(); h.connect_uri(sys.argv[1]); hs.append(h)
for i, h in enumerate(hs):
    h.pwrite(bytes([i % 256]) * 65536, i * 65536)
for h in hs:
    h.flush()
ok = all(hs[0].pread(65536, i * 65536) == bytes([i % 256]) * 65536 for i in range(n))
for h in hs:
    h.shutdown()
print(json.dumps({"ok": ok}))
`, [f.uri('many'), String(count)]) as { ok: boolean };
  assert.deepEqual(r, { ok: true });
  const connected = f.events.filter((e) => e.event === 'nbd_connected');
  assert.equal(connected.length, count);
  assert.equal(connected.filter((e) => e.fields.recvSlabs === true).length, c.RECV_SLAB_READERS_MAX);
  assert.equal(connected.filter((e) => e.fields.recvSlabs === false).length, 2);
});
