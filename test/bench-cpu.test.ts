// The NBD bench's CPU accounting: /proc/PID/stat parsing, and a process's CPU time in ms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpuTicksOfStat, processCpuMs } from '../bench/nbd-bench.js';

test('cpuTicksOfStat: utime + stime, also when the command name holds spaces and parentheses', () => {
  const rest = 'S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 17 0 100 2000 300';
  assert.equal(cpuTicksOfStat(`4242 (node) ${rest}`), 155);
  assert.equal(cpuTicksOfStat(`4242 (a (b) c) ${rest}`), 155);
  assert.throws(() => cpuTicksOfStat('garbage'), /not a \/proc\/PID\/stat line/);
});

test('processCpuMs: the CPU time the kernel reports for the process, in ms; null for a process that is gone', () => {
  const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  const tickMs = 1000 / ticksPerSecond;
  // The same kernel count as getrusage (process.cpuUsage, every thread), cut down to whole clock ticks.
  const usageMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const lowMs = usageMs();
  const ms = processCpuMs(process.pid, ticksPerSecond);
  const highMs = usageMs();
  assert.notEqual(ms, null);
  assert.ok(ms! >= lowMs - tickMs && ms! <= highMs, `${ms} ms against getrusage's ${lowMs}-${highMs} ms (one tick ${tickMs} ms)`);
  assert.equal(processCpuMs(2 ** 22 + 7, ticksPerSecond), null);
});
