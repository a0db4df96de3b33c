// The NBD bench's CPU accounting: /proc/PID/stat parsing and a process's CPU time as it works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuTicksOfStat, processCpuMs } from '../bench/nbd-bench.js';

test('cpuTicksOfStat: utime + stime, also when the command name holds spaces and parentheses', () => {
  const rest = 'S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 17 0 100 2000 300';
  assert.equal(cpuTicksOfStat(`4242 (node) ${rest}`), 155);
  assert.equal(cpuTicksOfStat(`4242 (a (b) c) ${rest}`), 155);
  assert.throws(() => cpuTicksOfStat('garbage'), /not a \/proc\/PID\/stat line/);
});

test('processCpuMs: grows while this process computes; null for a process that is gone', () => {
  const before = processCpuMs(process.pid, 100);
  assert.notEqual(before, null);
  const until = performance.now() + 150;
  let x = 0;
  while (performance.now() < until) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
  const after = processCpuMs(process.pid, 100)!;
  assert.ok(after - before! >= 50, `CPU time grew by ${after - before!} ms over 150 ms of computing`);
  assert.equal(processCpuMs(2 ** 22 + 7, 100), null);
});
