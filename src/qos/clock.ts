// The time QoS runs on: a monotonic clock in milliseconds and one-shot timers. Injected, so the unit
// tests drive the token buckets and the scheduler with a fake clock (test/qos-fake-clock.ts).
export interface QosClock {
  nowMs(): number;
  setTimer(fn: () => void, delayMs: number): unknown;
  clearTimer(handle: unknown): void;
}

export const realClock: QosClock = {
  nowMs: () => performance.now(),
  setTimer: (fn, delayMs) => setTimeout(fn, delayMs),
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
