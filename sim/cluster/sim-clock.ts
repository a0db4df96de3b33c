// Virtual time for the cluster simulator (TigerBeetle's time.zig): a timer queue ordered by due time
// then insertion, a seeded generator, and helpers that run due timers one by one while letting the
// real promise continuations (the engine and the cluster logic use real promises) settle between events.
// Nothing here reads the wall clock, so a run is a function of its seed.
import { Prng } from '../../src/engine/device/prng.js';
import type { Clock } from '../../src/cluster/clock.js';

interface Timer {
  atMs: number;
  /** Insertion order: timers due at the same instant run in the order they were set. */
  order: number;
  fn: () => void;
  cancelled: boolean;
}

/** setImmediate turns given to promise continuations after each event (enough for an engine call chain to reach its next wait). */
export const SETTLE_TURNS_DEFAULT = 8;
/** Where virtual time starts (any fixed instant; records carry it as createdMs/startedMs). */
export const SIM_EPOCH_MS = 1_700_000_000_000;
/** How far `run` lets virtual time go before it calls a promise stuck. */
export const RUN_LIMIT_MS_DEFAULT = 120_000;

/** Settle rounds `runUntil` allows with no timer due before it calls the wait stuck. */
export const IDLE_SETTLE_ROUNDS_MAX = 64;

export class SimTimeout extends Error {
  constructor(message: string) { super(message); this.name = 'SimTimeout'; }
}

export class SimClock implements Clock {
  readonly prng: Prng;
  settleTurns = SETTLE_TURNS_DEFAULT;
  /** Timers run so far (a replay aid: a failure can name the event count). */
  eventsRun = 0;
  private now: number;
  private orderNext = 0;
  /** Sorted by (atMs, order). */
  private queue: Timer[] = [];

  constructor(seedOrPrng: number | Prng, startMs = SIM_EPOCH_MS) {
    this.prng = typeof seedOrPrng === 'number' ? new Prng(seedOrPrng) : seedOrPrng;
    this.now = startMs;
  }

  nowMs(): number { return this.now; }

  setTimer(ms: number, fn: () => void): () => void {
    if (!Number.isFinite(ms)) throw new RangeError(`SimClock.setTimer: bad delay ${ms}`);
    const timer: Timer = { atMs: this.now + Math.max(0, ms), order: this.orderNext++, fn, cancelled: false };
    this.insert(timer);
    return () => {
      if (timer.cancelled) return;
      timer.cancelled = true;
      const i = this.queue.indexOf(timer);
      if (i >= 0) this.queue.splice(i, 1);
    };
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => { this.setTimer(ms, resolve); });
  }

  random(): number { return this.prng.float(); }

  /** Timers waiting (cancelled ones are removed at once). */
  get pendingTimers(): number { return this.queue.length; }

  /** When the next timer is due, or null. */
  nextDueMs(): number | null { return this.queue[0]?.atMs ?? null; }

  /** Lets promise continuations run: a few macrotask turns (microtasks drain between them). */
  async settle(turns = this.settleTurns): Promise<void> {
    for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => { setImmediate(resolve); });
  }

  /** Runs the next timer (moving time to it), then settles. False when no timer is queued. */
  async step(): Promise<boolean> {
    const timer = this.queue.shift();
    if (timer === undefined) return false;
    this.now = Math.max(this.now, timer.atMs);
    timer.cancelled = true;
    this.eventsRun++;
    timer.fn();
    await this.settle();
    return true;
  }

  /** Moves time forward by `ms`, running every timer that falls due on the way, in order. */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`SimClock.advance: bad duration ${ms}`);
    const untilMs = this.now + ms;
    await this.settle();
    while (this.queue.length > 0 && this.queue[0]!.atMs <= untilMs) await this.step();
    this.now = untilMs;
    await this.settle();
  }

  /**
   * Runs timers until none is left or virtual time passed `limitMs` from now. Periodic timers (a
   * lease keepalive) never leave the queue empty: then this is "advance by limitMs".
   */
  async runUntilIdle(limitMs = RUN_LIMIT_MS_DEFAULT): Promise<void> {
    const untilMs = this.now + limitMs;
    await this.settle();
    while (this.queue.length > 0 && this.queue[0]!.atMs <= untilMs) await this.step();
    if (this.queue.length > 0) this.now = untilMs;
    await this.settle();
  }

  /** Runs timers until `done()` holds; throws SimTimeout after `limitMs` of virtual time. */
  async runUntil(done: () => boolean, limitMs = RUN_LIMIT_MS_DEFAULT, what = 'condition'): Promise<void> {
    const untilMs = this.now + limitMs;
    await this.settle();
    let idleRounds = 0;
    while (!done()) {
      const next = this.queue[0];
      if (next !== undefined && next.atMs <= untilMs) {
        await this.step();
        continue;
      }
      // No timer is due: work may still be running on promise turns alone (a long engine call).
      if (++idleRounds > IDLE_SETTLE_ROUNDS_MAX) {
        throw new SimTimeout(`${what} did not hold within ${limitMs} ms of virtual time`);
      }
      await this.settle();
    }
  }

  /**
   * Drives virtual time until `promise` settles and returns its outcome: the way a simulated
   * client waits for a call that needs the network or timers. Throws SimTimeout when it is still
   * pending after `limitMs` of virtual time (a hang is a finding).
   */
  async run<T>(promise: Promise<T>, limitMs = RUN_LIMIT_MS_DEFAULT, what = 'call'): Promise<T> {
    let settled = false;
    const watched = promise.finally(() => { settled = true; });
    // The caller awaits `watched` below; until then a rejection must not count as unhandled.
    watched.catch(() => undefined);
    await this.runUntil(() => settled, limitMs, what);
    return watched;
  }

  private insert(timer: Timer): void {
    // Binary search for the first timer due strictly later (equal times keep insertion order).
    let lo = 0;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.queue[mid]!.atMs <= timer.atMs) lo = mid + 1;
      else hi = mid;
    }
    this.queue.splice(lo, 0, timer);
  }
}
