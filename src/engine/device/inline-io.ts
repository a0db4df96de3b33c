// When to do a small positional read or write on the event loop instead of libuv's thread pool.
// Served from the page cache, a 4 KiB pread or pwrite takes 2-5 µs here, while a thread-pool round trip
// costs ~10 µs of event-loop time to submit and complete plus ~60 µs of latency: inline wins by an order
// of magnitude. But an inline call that misses the cache (a cold read from disk, a write throttled by
// dirty-page writeback) blocks every connection for its whole duration. Linux's preadv2(RWF_NOWAIT)
// would tell a cache miss without waiting; Node does not expose it, so the cost is measured instead:
// an inline call slower than a page-cache copy could be sends that kind of I/O to the thread pool for
// a backoff period, which doubles while inline calls keep being slow and resets once they are fast.

import { assert } from '../errors.js';

/** Inline calls are allowed up to this size. */
export const INLINE_IO_BYTES_MAX = 256 * 1024;
/**
 * "Too slow for the page cache": a fixed part plus a per-byte part (a copy at ≥ 2 GB/s). Reads use a
 * tight bound, since a read from disk (≥ 80 µs on NVMe) is exactly what must not block the loop.
 * Writes use a loose one: a write into a page the commit's fdatasync is writing back may wait a few
 * hundred µs, which costs less than sending every write through the thread pool; what must be
 * avoided is dirty-page throttling, which sleeps for milliseconds.
 */
export const READ_SLOW_FIXED_NS = 60_000;
export const WRITE_SLOW_FIXED_NS = 2_000_000;
const SLOW_NS_PER_BYTE = 0.5;
const BACKOFF_MS_MIN = 50;
const BACKOFF_MS_MAX = 1_000;

export class InlineIoPolicy {
  private inlineAgainAtMs = 0;
  private backoffMs = BACKOFF_MS_MIN;
  /** Inline calls found slow (a cache miss or throttling), for stats and tests. */
  slowCalls = 0;

  constructor(private readonly slowFixedNs: number, private readonly nowMs: () => number = () => performance.now()) {
    assert(slowFixedNs > 0, 'a slow-call threshold');
  }

  /** Whether an operation of `bytes` may run inline now. */
  allows(bytes: number): boolean {
    assert(bytes >= 0, 'an I/O of some bytes');
    return bytes <= INLINE_IO_BYTES_MAX && this.nowMs() >= this.inlineAgainAtMs;
  }

  /** Runs `op` inline and learns from how long it took. */
  run<T>(bytes: number, op: () => T): T {
    assert(this.backoffMs >= BACKOFF_MS_MIN && this.backoffMs <= BACKOFF_MS_MAX, 'the back-off stays within its bounds');
    const started = this.nowMs();
    const result = op();
    const elapsedNs = (this.nowMs() - started) * 1e6;
    if (elapsedNs > this.slowFixedNs + bytes * SLOW_NS_PER_BYTE) {
      this.slowCalls++;
      this.inlineAgainAtMs = this.nowMs() + this.backoffMs;
      this.backoffMs = Math.min(BACKOFF_MS_MAX, this.backoffMs * 2);
    } else {
      this.backoffMs = BACKOFF_MS_MIN;
    }
    return result;
  }
}
