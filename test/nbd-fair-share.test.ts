// Fair sharing between tenants in the NBD server (src/nbd/fair-share.ts), with a fake clock: no cap
// while one tenant is busy; busy tenants split the budget by weight; a tenant idle past the window
// stops counting; a QD-1 tenant between requests still counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FairShare } from '../src/nbd/fair-share.js';

test('one busy tenant is never capped; two split the budget by weight', () => {
  let now = 0;
  const weights = new Map([['heavy', 100], ['light', 100]]);
  const fair = new FairShare({ budget: 16, idleMs: 20, nowMs: () => now, weightOf: (t) => weights.get(t) ?? 100 });
  const heavy = fair.share('heavy');
  for (let i = 0; i < 64; i++) heavy.started();
  assert.equal(heavy.cap(), Infinity, 'alone: no cap');
  const light = fair.share('light');
  assert.equal(heavy.cap(), Infinity, 'a tenant that never sent anything is not busy');
  light.started();
  assert.equal(heavy.cap(), 8);
  assert.equal(light.cap(), 8);
  light.ended();
  now += 5;
  assert.equal(heavy.cap(), 8, 'between a QD-1 client\'s requests the tenant still counts');
  now += 30;
  assert.equal(heavy.cap(), Infinity, 'idle past the window: no longer counted');
  light.started();
  weights.set('light', 1000);
  assert.equal(heavy.cap(), 4, 'a 10x weight leaves the flood 16 * 100/1100 = 1, raised to the floor of 4');
  assert.equal(light.cap(), 14);
  assert.equal(heavy.inFlight(), 64);
});

test('three tenants: each busy one gets its share of the budget', () => {
  const fair = new FairShare({ budget: 16, idleMs: 20, nowMs: () => 0 });
  const [a, b, c] = ['a', 'b', 'c'].map((t) => fair.share(t)) as [ReturnType<FairShare['share']>, ReturnType<FairShare['share']>, ReturnType<FairShare['share']>];
  a.started(); b.started(); c.started();
  assert.deepEqual([a.cap(), b.cap(), c.cap()], [5, 5, 5]);
});

// Two tenants' clients (python3-libnbd) against an NBD server over an engine whose writes wait at a
// gate: the flood of tenant "heavy" (64 writes at once, one connection) gets at most its share of the
// budget into the engine while tenant "light" has a write in flight, and all 64 when it is alone.
const clientPy = `
import sys, time, nbd
heavy_uri, light_uri, with_light = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
buf = bytearray(4096)
light = None
if with_light:
    light = nbd.NBD(); light.connect_uri(light_uri)
    light.aio_pwrite(buf, 0)
    while light.aio_in_flight() > 0 and light.aio_peek_command_completed() == 0:
        light.poll(10)
        break
heavy = nbd.NBD(); heavy.connect_uri(heavy_uri)
for i in range(64):
    heavy.aio_pwrite(buf, i * 4096)
while heavy.aio_in_flight() > 0:
    heavy.poll(100)
    if light is not None: light.poll(0)
while light is not None and light.aio_in_flight() > 0:
    light.poll(100)
print('done')
`;

async function floodAgainstGate(t: import('node:test').TestContext, withLight: boolean): Promise<number> {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { createPoolFile } = await import('../src/engine/index.js');
  const { startNbdServer } = await import('../src/nbd/server.js');
  const { run } = await import('./nbd-harness.js');
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-fair-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const engine = await createPoolFile(path.join(dir, 'pool'), 256 * 1024 * 1024);
  t.after(() => engine.close());
  await engine.createVolume('heavy/v', 16 * 1024 * 1024);
  await engine.createVolume('light/v', 16 * 1024 * 1024);
  const heavyId = engine.resolve('heavy/v').id;
  let open = false, heavyNow = 0, heavyMax = 0, lightNow = 0;
  const waiting: Array<() => void> = [];
  const gated = new Proxy(engine, {
    get(target, prop, receiver) {
      if (prop !== 'write') { const v = Reflect.get(target, prop, receiver) as unknown; return typeof v === 'function' ? v.bind(target) : v; }
      return async (id: number, offset: number, data: Buffer, opts?: object) => {
        const heavy = id === heavyId;
        if (heavy) heavyMax = Math.max(heavyMax, ++heavyNow); else lightNow++;
        if (!open) await new Promise<void>((r) => waiting.push(r));
        try { return await target.write(id, offset, data, opts); } finally { if (heavy) heavyNow--; else lightNow--; }
      };
    },
  });
  const server = await startNbdServer(gated, { host: '127.0.0.1', port: 0, fairShare: { budget: 16, idleMs: 20 } });
  t.after(() => server.close());
  const uri = (name: string) => `nbd://127.0.0.1:${server.port}/${encodeURIComponent(name)}`;
  const client = run('/usr/bin/python3', ['-c', clientPy, uri('heavy/v'), uri('light/v'), withLight ? '1' : '0'], { timeoutMs: 120_000 });
  // Let the requests arrive: the flood's count climbs to its bound (or to 64) and stays there.
  const deadline = Date.now() + 60_000;
  const want = withLight ? 8 : 64;
  while (heavyNow < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (withLight) {
    assert.equal(lightNow, 1, 'the light tenant\'s write is in the engine');
    await new Promise((r) => setTimeout(r, 300)); // more time: the bound must hold, not just be slow to pass
  }
  const seen = heavyMax;
  open = true;
  for (const release of waiting.splice(0)) release();
  const result = await client;
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /done/);
  return seen;
}

test('a flood gets only its share into the engine while another tenant is busy, and everything when alone', async (t) => {
  assert.equal(await floodAgainstGate(t, true), 8, 'equal weights: half of a budget of 16');
  assert.equal(await floodAgainstGate(t, false), 64, 'alone: the whole queue depth');
});
