// The I/O metrics (src/daemon/io-stats.ts through the instrumenting decorator): what /metrics shows
// and GET /v1/stats totals after real requests to an engine, including failed ones, in Prometheus's
// text format with the names, types and label order prom-client's own classes gave.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool } from '../src/engine/pool.js';
import { Metrics, latencyBucketsSeconds } from '../src/daemon/metrics.js';
import { InstrumentedEngine } from '../src/daemon/instrumented-engine.js';
import { IoStats } from '../src/daemon/io-stats.js';

const MiB = 1024 * 1024;

/** Series of the text exposition: `name{labels}` -> value. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

test('I/O metrics: counts, bytes and latency per volume and operation; failures timed, not counted', async () => {
  const metrics = new Metrics();
  const engine = new InstrumentedEngine(await createPool(new SimDevice(8192, new Prng(3)), { commitIntervalMs: 0 }), metrics);
  const a = await engine.createVolume('a', MiB), b = await engine.createVolume('b', MiB);
  for (let i = 0; i < 3; i++) await engine.write(a.id, i * 4096, Buffer.alloc(4096, i + 1));
  await engine.write(b.id, 0, Buffer.alloc(8192, 9));
  await engine.read(a.id, 0, 4096);
  await engine.flush();
  // Past the end: refused, counted as an error and timed, not counted as a completed read.
  await assert.rejects(engine.read(a.id, MiB, 4096));
  const text = (await metrics.render()).body;
  const s = series(text);
  assert.equal(s.get('cairn_io_operations_total{volume="a",op="write"}'), 3);
  assert.equal(s.get('cairn_io_operations_total{volume="b",op="write"}'), 1);
  assert.equal(s.get('cairn_io_operations_total{volume="a",op="read"}'), 1);
  assert.equal(s.get('cairn_io_operations_total{volume="pool",op="flush"}'), 1);
  assert.equal(s.get('cairn_io_bytes_total{volume="a",op="write"}'), 3 * 4096);
  assert.equal(s.get('cairn_io_bytes_total{volume="b",op="write"}'), 8192);
  assert.equal(s.get('cairn_io_bytes_total{volume="pool",op="flush"}'), undefined, 'no bytes series for an operation that moves none');
  assert.match(text, /^# TYPE cairn_io_operations_total counter$/m);
  assert.match(text, /^# TYPE cairn_io_latency_seconds histogram$/m);
  assert.equal(s.get('cairn_io_errors_total{volume="a",op="read",code="out_of_range"}'), 1);
  // Reads of a: one succeeded, one failed; both are in the histogram.
  assert.equal(s.get('cairn_io_latency_seconds_count{volume="a",op="read"}'), 2);
  assert.equal(s.get('cairn_io_latency_seconds_bucket{le="+Inf",volume="a",op="read"}'), 2);
  let previous = 0;
  for (const le of latencyBucketsSeconds) {
    const v = s.get(`cairn_io_latency_seconds_bucket{le="${le}",volume="a",op="write"}`);
    assert.ok(v !== undefined && v >= previous && v <= 3, `bucket le=${le} is cumulative (${v})`);
    previous = v;
  }
  const sum = s.get('cairn_io_latency_seconds_sum{volume="a",op="write"}')!;
  assert.ok(sum > 0 && sum < 60, `the sum is seconds (${sum})`);
  const totals = metrics.ioTotals();
  const byName = new Map(totals.volumes.map((v) => [v.name, v]));
  assert.deepEqual([...byName.keys()].sort(), ['a', 'b'], 'the pool\'s flushes are not a volume');
  assert.deepEqual({ ...byName.get('a')!, latencyCounts: undefined }, { name: 'a', readOps: 1, writeOps: 3, readBytes: 4096, writeBytes: 3 * 4096, latencyCounts: undefined });
  assert.equal(byName.get('a')!.latencyCounts.at(-1), 5, 'every timed request of a, read or write, in the last bucket');
  await engine.close();
});

test('IoStats: a request lands in the first bucket whose bound it does not pass', () => {
  const io = new IoStats([0.001, 0.01]);
  const slot = io.slot('v', 'read');
  assert.equal(io.slot('v', 'read'), slot, 'one slot per pair');
  for (const seconds of [0.0005, 0.001, 0.002, 0.01, 0.5]) io.observe(slot, seconds);
  assert.deepEqual([...slot.buckets], [2, 2, 1]);
  assert.equal(slot.timed, 5);
  assert.equal(slot.ops, 0, 'timing alone does not count a completed request');
  io.completed(slot, 4096);
  assert.deepEqual([slot.ops, slot.bytes], [1, 4096]);
  assert.throws(() => new IoStats([0.01, 0.001]), RangeError);
});
