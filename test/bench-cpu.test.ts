// The NBD bench's CPU accounting: /proc/PID/stat parsing, and a process's CPU time in ms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { cpuTicksOfStat, processCpuMs } from '../bench/nbd-bench.js';

test('cpuTicksOfStat: utime + stime, also when the command name holds spaces and parentheses', () => {
  const rest = 'S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 17 0 100 2000 300';
  assert.equal(cpuTicksOfStat(`4242 (node) ${rest}`), 155);
  assert.equal(cpuTicksOfStat(`4242 (a (b) c) ${rest}`), 155);
  assert.throws(() => cpuTicksOfStat('garbage'), /not a \/proc\/PID\/stat line/);
});

/** Burns CPU until this process has used at least `userMs` in user mode and `systemMs` in the kernel. */
function burnCpu(userMs: number, systemMs: number): void {
  const zero = openSync('/dev/zero', 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    // A condition, not a duration: however slow or busy the machine, the loop ends once the kernel
    // has counted that much CPU (reading /dev/zero is kernel time, the arithmetic user time).
    for (let u = process.cpuUsage(); u.user / 1000 < userMs || u.system / 1000 < systemMs; u = process.cpuUsage()) {
      if (u.system / 1000 < systemMs) readSync(zero, buf, 0, buf.length, null);
      let x = 0;
      for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
      if (x === 42) buf[0] = 1;
    }
  } finally {
    closeSync(zero);
  }
}

test('processCpuMs: the CPU time the kernel reports for the process, in ms; null for a process that is gone', () => {
  const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  const tickMs = 1000 / ticksPerSecond;
  // Enough CPU in each mode that a wrong unit (ticks, s, µs) or a missing field (utime or stime alone,
  // or the children's cutime/cstime) lands far outside the bounds below.
  burnCpu(8 * tickMs, 8 * tickMs);
  // What the kernel guarantees: /proc/PID/stat gives utime and stime each truncated to whole ticks
  // (so the sum is at most 2 ticks short of the exact time), from the same count getrusage reads
  // (process.cpuUsage, every thread); reading it takes a little CPU itself, so it lies between a
  // getrusage before and one after, less the two truncations.
  const usageMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
  const lowMs = usageMs();
  const ms = processCpuMs(process.pid, ticksPerSecond);
  const highMs = usageMs();
  assert.notEqual(ms, null);
  assert.ok(ms! >= lowMs - 2 * tickMs && ms! <= highMs,
    `${ms} ms against getrusage's ${lowMs}-${highMs} ms (utime and stime each truncated to a tick of ${tickMs} ms)`);
  assert.equal(processCpuMs(2 ** 22 + 7, ticksPerSecond), null);
});

test('processCpuMs of one thread: the main thread\'s share, at most the whole process\'s', () => {
  const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  burnCpu(4 * (1000 / ticksPerSecond), 0);
  const main = processCpuMs(process.pid, ticksPerSecond, process.pid);
  const whole = processCpuMs(process.pid, ticksPerSecond);
  assert.notEqual(main, null);
  assert.ok(main! > 0 && main! <= whole!, `main thread ${main} ms within the process's ${whole} ms`);
  assert.equal(processCpuMs(process.pid, ticksPerSecond, 2 ** 22 + 7), null, 'no such thread');
});
