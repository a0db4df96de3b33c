// The event loop keeps its core when it wakes a helper thread. Every other thread of the process (libuv's
// thread pool, V8's helpers) is put in SCHED_BATCH by the native addon (native/thread-policy.c says
// why): measured on 2 cores, 1 MiB NBD writes went from 1184-1315 to 1369-1431 MB/s, 4 KiB writes
// at QD 32 from 37-44k to 44-46k IOPS, reads unchanged.
import { nativeAddon } from '../engine/index.js';

/**
 * Applies the policy to the threads that exist now, so it is called once libuv's thread pool has
 * started (after the pool is open: opening it used the pool). Returns how many threads it changed,
 * or null where the addon or the OS lacks the call (nothing changes then; only speed differs).
 */
export function batchHelperThreads(): number | null {
  if (!nativeAddon.batchOtherThreads) return null;
  try {
    return nativeAddon.batchOtherThreads();
  } catch {
    return null; // the OS refused (e.g. no permission): threads keep their policy, only speed differs
  }
}
