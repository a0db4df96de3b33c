// NBD data-path helpers. The busy-poll window: polling starts on a request, keeps the loop from
// sleeping while requests keep coming, and stops once the window passes without one (or at once when
// the server closes). The READ buffer pool: size classes, reuse, and its bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BusyPoller } from '../src/nbd/busy-poll.js';

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

test('busy poller off (window 0) never polls; stop() ends polling', async () => {
  const off = new BusyPoller(0);
  off.kick();
  assert.equal(off.active, false);
  const on = new BusyPoller(1_000_000);
  on.kick();
  on.stop();
  await sleep(5);
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
