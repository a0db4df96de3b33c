// QoS units with a fake clock: the token buckets (rates, bursts, byte limits, live changes, FIFO order),
// the fair scheduler (a light tenant beside a flood, weights) and the stored form of limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Throttle } from '../src/qos/throttle.js';
import { FairScheduler, Flow, MIXED_WINDOW_REQUESTS } from '../src/qos/fair.js';
import { OpKind, type Pending } from '../src/qos/pending.js';
import { applyChange, decodeLimits, encodeLimits, noLimits, QosInvalid, type QosLimits, type Rates } from '../src/qos/limits.js';
import type { VolumeQos } from '../src/qos/qos-control.js';
import { FakeClock } from './qos-fake-clock.js';

function pending(kind: OpKind = OpKind.write, costBytes = 4096, label = 0): Pending & { label: number } {
  return {
    kind, costBytes, arrivedMs: 0, volume: null as unknown as VolumeQos, tag: 0, next: null, label,
    run: async () => undefined, resolve: () => undefined, reject: () => undefined,
  };
}

function rates(over: Partial<Rates>): Rates { return { ...noLimits(), ...over }; }

test('token bucket: a burst of one second worth, then exactly the rate', () => {
  const clock = new FakeClock();
  const passed: number[] = [];
  const t = new Throttle(clock, () => passed.push(clock.nowMs()));
  t.setRates(rates({ iopsMax: 100 }), 1);
  for (let i = 0; i < 1000; i++) t.submit(pending());
  assert.equal(passed.length, 101, 'burst of 100 (plus the one that empties the bucket)');
  clock.advance(1000);
  assert.equal(passed.length, 201);
  const before = passed.length;
  clock.advance(5000);
  assert.equal(passed.length - before, 500, '100 per second');
  assert.equal(clock.pendingTimers, 1, 'one timer for the head of the queue');
});

test('token bucket: bytes per second with requests larger than the burst', () => {
  const clock = new FakeClock();
  let bytes = 0;
  const t = new Throttle(clock, (p) => { bytes += p.costBytes; });
  const MiB = 1 << 20;
  t.setRates(rates({ bpsMax: MiB / 2 }), 0.5); // burst 256 KiB < one 1 MiB request
  for (let i = 0; i < 100; i++) t.submit(pending(OpKind.write, MiB));
  assert.equal(bytes, MiB, 'the first request goes, into debt');
  clock.advance(10_000);
  const perSecond = (bytes - MiB) / 10;
  assert.ok(Math.abs(perSecond - MiB / 2) <= MiB / 10, `rate ${perSecond}`);
});

test('token bucket: reads and writes draw on their own limits and the total one', () => {
  const clock = new FakeClock();
  const seen = { r: 0, w: 0 };
  const reads = new Throttle(clock, (p) => { if (p.kind === OpKind.read) seen.r++; else seen.w++; });
  reads.setRates(rates({ readIopsMax: 10, iopsMax: 1000 }), 1);
  for (let i = 0; i < 50; i++) reads.submit(pending(OpKind.write));
  assert.equal(seen.w, 50, 'writes are not held by the read limit');
  for (let i = 0; i < 50; i++) reads.submit(pending(OpKind.read));
  assert.equal(seen.r, 11);
  clock.advance(1000);
  assert.equal(seen.r, 21);
});

test('token bucket: trim and write-zeroes count as write operations but not bytes', () => {
  const clock = new FakeClock();
  let n = 0;
  const t = new Throttle(clock, () => { n++; });
  t.setRates(rates({ bpsMax: 4096 }), 1);
  for (let i = 0; i < 100; i++) t.submit(pending(OpKind.trim, 0));
  assert.equal(n, 100);
});

test('token bucket: requests pass in arrival order', () => {
  const clock = new FakeClock();
  const order: number[] = [];
  const t = new Throttle(clock, (p) => order.push((p as Pending & { label: number }).label));
  t.setRates(rates({ writeIopsMax: 50 }), 0.1);
  for (let i = 0; i < 200; i++) t.submit(pending(i % 3 === 0 ? OpKind.read : OpKind.write, 4096, i));
  clock.advance(10_000);
  assert.deepEqual(order, Array.from({ length: 200 }, (_, i) => i));
});

test('token bucket: a live change applies to queued requests; removing the limit releases them in order', () => {
  const clock = new FakeClock();
  let n = 0;
  const t = new Throttle(clock, () => { n++; });
  t.setRates(rates({ iopsMax: 10 }), 1);
  for (let i = 0; i < 1000; i++) t.submit(pending());
  clock.advance(2000);
  assert.equal(n, 31);
  t.setRates(rates({ iopsMax: 100 }), 1);
  clock.advance(2000);
  assert.ok(n >= 230 && n <= 232, `after the raise: ${n}`);
  t.setRates(rates({ iopsMax: 10 }), 1);
  const before = n;
  clock.advance(3000);
  assert.ok(n - before <= 31, `after the cut: ${n - before}`);
  t.setRates(noLimits(), 1);
  assert.equal(n, 1000);
  assert.equal(t.limited, false);
  assert.equal(clock.pendingTimers, 0);
});

test('token bucket: releaseAll lets everything through (shutdown)', () => {
  const clock = new FakeClock();
  let n = 0;
  const t = new Throttle(clock, () => { n++; });
  t.setRates(rates({ iopsMax: 1 }), 1);
  for (let i = 0; i < 10; i++) t.submit(pending());
  assert.equal(n, 2);
  t.releaseAll();
  assert.equal(n, 10);
});

/**
 * A client keeping up to 32 requests queued at the throttle, sending at `perSecond` at most (a pass
 * stands for a completion: the pool is infinitely fast), for `ms`; returns nothing, the passes are
 * counted by the throttle's callback.
 */
function drive(t: Throttle, clock: FakeClock, perSecond: number, ms: number): void {
  const step = 1000 / perSecond;
  for (let at = 0; at < ms; at += step) {
    clock.advance(step);
    if (t.queue.length < 32) t.submit(pending());
  }
}

function countIn(times: number[], fromMs: number, toMs: number): number {
  return times.filter((x) => x >= fromMs && x < toMs).length;
}

test('token bucket: a client a little faster than the limit gets its burst for one burst length only', () => {
  const clock = new FakeClock();
  const passed: number[] = [];
  const t = new Throttle(clock, () => passed.push(clock.nowMs()));
  t.setRates(rates({ iopsMax: 1000 }), 1);
  drive(t, clock, 1250, 5000);
  // The burst lets the first second run at the client's pace; the 750 tokens it did not spend by then
  // expire (without a window they would carry it above the limit for 3 more seconds: 5 000, not 4 000).
  assert.ok(Math.abs(countIn(passed, 0, 1000) - 1250) <= 2, `first second ${countIn(passed, 0, 1000)}`);
  const after = countIn(passed, 1000, 5000);
  assert.ok(Math.abs(after - 4000) <= 30, `seconds 1-5: ${after}, want 4 000 (the limit)`);
});

test('token bucket: a quiet spell earns the burst back; a short pause earns only its own tokens, spent in full', () => {
  const clock = new FakeClock();
  const passed: number[] = [];
  const t = new Throttle(clock, () => passed.push(clock.nowMs()));
  t.setRates(rates({ iopsMax: 1000 }), 1);
  drive(t, clock, 1250, 3000);
  clock.advance(3000); // quiet: the bucket refills to its full second
  const start = clock.nowMs();
  drive(t, clock, 1250, 4000);
  assert.ok(Math.abs(countIn(passed, start, start + 1000) - 1250) <= 2, 'a new burst after the quiet spell');
  assert.ok(Math.abs(countIn(passed, start + 1000, start + 4000) - 3000) <= 30, 'then the limit');
  const pausedAt = clock.nowMs();
  clock.advance(600); // a pause shorter than the burst (the 32 queued requests still pass): no new burst window
  drive(t, clock, 1250, 3000);
  // The tokens the pause earned go at 250 a second above the limit, all of them, so the pause and the
  // 3 s after it see exactly the limit (a window would expire ~350 of them after 1 s: 3 250).
  const got = countIn(passed, pausedAt, pausedAt + 3600);
  assert.ok(Math.abs(got - 3600) <= 30, `over the pause and 3 s after it: ${got}, want 3 600`);
});

test('token bucket: a client at the limit never opens a burst window; a faster one is held to the rate', () => {
  const clock = new FakeClock();
  const passed: number[] = [];
  const t = new Throttle(clock, () => passed.push(clock.nowMs()));
  t.setRates(rates({ iopsMax: 500, writeBpsMax: 4096 * 400 }), 2);
  drive(t, clock, 390, 5000); // under both limits: every request passes at once
  assert.equal(t.queue.length, 0);
  assert.ok(Math.abs(passed.length - 1950) <= 2, `${passed.length}`);
  const start = clock.nowMs();
  drive(t, clock, 440, 8000); // over the byte limit (400/s) by 10 %: 2 s of burst, then 400/s
  const late = countIn(passed, start + 2000, start + 8000);
  assert.ok(Math.abs(late - 2400) <= 20, `after the burst: ${late}, want 2 400`);
});

/** A request arriving at the scheduler as QosEngine hands it over: counted, then run or queued. */
function submitTo(s: FairScheduler, p: Pending, flow: Flow): void {
  s.arrive(flow);
  s.submit(p, flow);
}

/** A scheduler whose started requests are kept so the test completes them one at a time. */
function fairFixture(inflightMax: number) {
  const running: (Pending & { label: number })[] = [];
  const s = new FairScheduler(inflightMax, (p) => running.push(p as Pending & { label: number }));
  const completeOne = (): number => { const p = running.shift()!; s.done(); return p.label; };
  return { s, running, completeOne };
}

test('fair scheduler: a light tenant beside a flood waits for about one slot', () => {
  const { s, running, completeOne } = fairFixture(4);
  const heavy = new Flow(100);
  const light = new Flow(100);
  s.arrive(light); // the light tenant's earlier requests: two tenants are about, the bound is on
  for (let i = 0; i < 64; i++) submitTo(s, pending(OpKind.write, 4096, 1), heavy);
  assert.equal(running.length, 4);
  assert.equal(s.queued, 60);
  submitTo(s, pending(OpKind.write, 4096, 2), light);
  let completions = 0;
  while (!running.some((p) => p.label === 2)) { completeOne(); completions++; }
  assert.ok(completions <= 2, `the light request started after ${completions} completions`);
});

test('fair scheduler: weights share a contended pool in proportion', () => {
  const { s, running, completeOne } = fairFixture(2);
  const a = new Flow(300);
  const b = new Flow(100);
  for (let i = 0; i < 2000; i++) { submitTo(s, pending(OpKind.write, 4096, 1), a); submitTo(s, pending(OpKind.write, 4096, 2), b); }
  const counts = [0, 0, 0];
  for (let i = 0; i < 800; i++) { completeOne(); counts[running[running.length - 1]!.label]!++; }
  const ratio = counts[1]! / counts[2]!;
  assert.ok(ratio > 2.8 && ratio < 3.2, `A:B = ${ratio}`);
});

test('fair scheduler: bytes count, so 1 MiB requests do not take the share of 4 KiB ones', () => {
  const { s, running, completeOne } = fairFixture(1);
  const big = new Flow(100);
  const small = new Flow(100);
  for (let i = 0; i < 500; i++) { submitTo(s, pending(OpKind.write, 1 << 20, 1), big); submitTo(s, pending(OpKind.write, 4096, 2), small); }
  const counts = [0, 0, 0];
  for (let i = 0; i < 300; i++) { completeOne(); counts[running[0]!.label]!++; }
  assert.ok(counts[2]! > 10 * counts[1]!, `small ${counts[2]}, big ${counts[1]}`);
});

test('fair scheduler: one tenant alone is never bounded; a second one switches the bound on for a while', () => {
  const { s, running, completeOne } = fairFixture(8);
  const a = new Flow(100);
  const b = new Flow(100);
  for (let i = 0; i < 64; i++) submitTo(s, pending(), a);
  assert.equal(running.length, 64, 'alone: all 64 run');
  submitTo(s, pending(OpKind.write, 4096, 2), b);
  assert.equal(s.queued, 1, 'the second tenant waits for the bound (64 in flight)');
  for (let i = 0; i < 100; i++) submitTo(s, pending(), a);
  assert.equal(s.queued, 101);
  while (!running.some((p) => p.label === 2)) completeOne();
  assert.ok(running.length <= 8);
  for (let i = 0; i < MIXED_WINDOW_REQUESTS; i++) { submitTo(s, pending(), a); completeOne(); }
  assert.equal(s.queued, 0, 'after the window, with one tenant only, the queue drains');
  const before = running.length;
  for (let i = 0; i < 32; i++) submitTo(s, pending(), a);
  assert.equal(running.length, before + 32, 'and is unbounded again');
});

test('fair scheduler: uncontended requests start at once; inflightMax 0 never queues', () => {
  const { s, running } = fairFixture(8);
  const f = new Flow(100);
  const g = new Flow(100);
  s.arrive(g);
  for (let i = 0; i < 8; i++) { assert.equal(s.open, true); submitTo(s, pending(), f); }
  assert.equal(s.open, false);
  assert.equal(running.length, 8);
  const off = fairFixture(0);
  for (let i = 0; i < 1000; i++) submitTo(off.s, pending(), f);
  assert.equal(off.running.length, 1000);
});

test('limits: changes, removal with 0 or null, bounds, and the stored form within 248 bytes', () => {
  const l = applyChange(noLimits(), { iopsMax: 500, writeBpsMax: 1 << 20, burstSeconds: 2, weight: 300 });
  assert.equal(l.iopsMax, 500);
  assert.equal(applyChange(l, { iopsMax: 0 }).iopsMax, null);
  assert.equal(applyChange(l, { iopsMax: null }).iopsMax, null);
  assert.equal(applyChange(l, { readIopsMax: 7 }).writeBpsMax, 1 << 20, 'absent fields stay');
  assert.throws(() => applyChange(l, { iopsMax: -1 }), QosInvalid);
  assert.throws(() => applyChange(l, { iopsMax: 1.5 }), QosInvalid);
  assert.throws(() => applyChange(l, { burstSeconds: 100 }), QosInvalid);
  assert.throws(() => applyChange(l, { weight: 20_000 }), QosInvalid);
  const key = `qos/t/${'t'.repeat(32)}`;
  const full: QosLimits = applyChange(noLimits(), {
    iopsMax: 10_000_000, readIopsMax: 9_999_999, writeIopsMax: 9_999_998, bpsMax: 2 ** 44, readBpsMax: 2 ** 44 - 1,
    writeBpsMax: 2 ** 44 - 2, burstSeconds: 0.123456789, weight: 9999,
  });
  const value = encodeLimits(key, full)!;
  assert.ok(key.length + value.length <= 248, `${key.length + value.length} bytes`);
  assert.deepEqual(decodeLimits(value), full);
  assert.equal(encodeLimits('qos/v/1', noLimits()), null, 'defaults only: no record');
});
