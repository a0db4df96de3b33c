// When to do a small positional read or write on the event loop instead of libuv's thread pool.
// Served from the page cache, a 4 KiB pread or pwrite takes 2-5 µs here, while a thread-pool round trip
// costs ~10 µs of event-loop time to submit and complete plus ~60 µs of latency: inline wins by an order
// of magnitude. But an inline call that misses the cache (a cold read from disk, a write throttled by
// dirty-page writeback) blocks every connection for its whole duration. Linux's preadv2(RWF_NOWAIT)
// would tell a cache miss without waiting; Node does not expose it, so the cost is measured instead:
// an inline call slower than a page-cache copy could be sends that kind of I/O to the thread pool for
// a backoff period, which doubles while inline calls keep being slow and resets once they are fast.

import { assert } from '../errors.js';
import {
  INLINE_IO_BACKOFF_MS_MAX, INLINE_IO_BACKOFF_MS_MIN, INLINE_IO_BYTES_MAX, INLINE_IO_SLOW_NS_PER_BYTE, READ_SLOW_FIXED_NS,
} from '../constants.js';

export { INLINE_IO_BYTES_MAX, READ_SLOW_FIXED_NS };

export class InlineIoPolicy {
  private inlineAgainAtMs = 0;
  private backoffMs = INLINE_IO_BACKOFF_MS_MIN;
  /** Inline calls run, and those of them found slow (a cache miss or throttling), for stats and tests. */
  calls = 0;
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
    assert(this.backoffMs >= INLINE_IO_BACKOFF_MS_MIN && this.backoffMs <= INLINE_IO_BACKOFF_MS_MAX, 'the back-off stays within its bounds');
    this.calls++;
    const started = this.nowMs();
    const result = op();
    const elapsedNs = (this.nowMs() - started) * 1e6;
    if (elapsedNs > this.slowFixedNs + bytes * INLINE_IO_SLOW_NS_PER_BYTE) {
      this.slowCalls++;
      this.inlineAgainAtMs = this.nowMs() + this.backoffMs;
      this.backoffMs = Math.min(INLINE_IO_BACKOFF_MS_MAX, this.backoffMs * 2);
    } else {
      this.backoffMs = INLINE_IO_BACKOFF_MS_MIN;
    }
    return result;
  }
}
