// Time and randomness for the cluster logic, injected so the simulator drives both: the real daemon
// uses the wall clock and timers, the simulator its own virtual time and seeded generator.

export interface Clock {
  nowMs(): number;
  /** Runs `fn` after `ms`; the returned function cancels it. Real timers are unref'd. */
  setTimer(ms: number, fn: () => void): () => void;
  sleep(ms: number): Promise<void>;
  /** Uniform in [0, 1). */
  random(): number;
}

export const realClock: Clock = {
  nowMs: () => Date.now(),
  setTimer(ms, fn) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
  sleep: (ms) => new Promise((resolve) => { setTimeout(resolve, ms).unref(); }),
  random: () => Math.random(),
};
