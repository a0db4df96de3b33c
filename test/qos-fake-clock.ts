// A fake QosClock: time moves only when the test advances it, and timers fire in due order as it does.
import type { QosClock } from '../src/qos/clock.js';

export class FakeClock implements QosClock {
  private now = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { atMs: number; fn: () => void }>();

  nowMs(): number { return this.now; }
  setTimer(fn: () => void, delayMs: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { atMs: this.now + Math.max(1, delayMs), fn });
    return id;
  }
  clearTimer(handle: unknown): void { this.timers.delete(handle as number); }
  get pendingTimers(): number { return this.timers.size; }

  /** Moves time forward by `ms`, firing each timer at its due time, earliest first. */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      let due: [number, { atMs: number; fn: () => void }] | null = null;
      for (const entry of this.timers) if (entry[1].atMs <= end && (due === null || entry[1].atMs < due[1].atMs)) due = entry;
      if (due === null) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].atMs);
      due[1].fn();
    }
    this.now = end;
  }
}
