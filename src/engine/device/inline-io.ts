// When to do a small positional read or write on the event loop instead of libuv's thread pool.
// Served from the page cache, a 4 KiB pread or pwrite takes 2-5 µs here, while a thread-pool round trip
// costs ~10 µs of event-loop time to submit and complete plus ~60 µs of latency: inline wins by an order
// of magnitude. But an inline call that misses the cache (a cold read from disk, a write throttled by
// dirty-page writeback) blocks every connection for its whole duration. Linux's preadv2(RWF_NOWAIT)
// would tell a cache miss without waiting; Node does not expose it, so the cost is measured instead:
// an inline call slower than a page-cache copy could be sends that kind of I/O to the thread pool for
// a backoff period, which doubles while inline calls keep being slow and resets once they are fast.

/** Inline calls are allowed up to this size. */
export const INLINE_IO_BYTES_MAX = 256 * 1024;
/** Fixed part of the "too slow for the page cache" bound, plus a per-byte part (copy at ≥ 2 GB/s). */
const SLOW_FIXED_NS = 60_000;
const SLOW_NS_PER_BYTE = 0.5;
const BACKOFF_MS_MIN = 50;
const BACKOFF_MS_MAX = 5_000;

export class InlineIoPolicy {
  private inlineAgainAtMs = 0;
  private backoffMs = BACKOFF_MS_MIN;
  /** Inline calls found slow (a cache miss or throttling), for stats and tests. */
  slowCalls = 0;

  constructor(private readonly nowMs: () => number = () => performance.now()) {}

  /** Whether an operation of `bytes` may run inline now. */
  allows(bytes: number): boolean {
    return bytes <= INLINE_IO_BYTES_MAX && this.nowMs() >= this.inlineAgainAtMs;
  }

  /** Runs `op` inline and learns from how long it took. */
  run<T>(bytes: number, op: () => T): T {
    const started = this.nowMs();
    const result = op();
    const elapsedNs = (this.nowMs() - started) * 1e6;
    if (elapsedNs > SLOW_FIXED_NS + bytes * SLOW_NS_PER_BYTE) {
      this.slowCalls++;
      this.inlineAgainAtMs = this.nowMs() + this.backoffMs;
      this.backoffMs = Math.min(BACKOFF_MS_MAX, this.backoffMs * 2);
    } else if (this.nowMs() >= this.inlineAgainAtMs) {
      this.backoffMs = BACKOFF_MS_MIN;
    }
    return result;
  }
}
