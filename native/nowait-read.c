// preadNowait(fd, buffer, position): a positional read that never waits for the disk
// (preadv2 with RWF_NOWAIT). Returns the bytes read from the page cache (possibly fewer than asked,
// 0 at the end of the file), -1 when the data is not all cached (EAGAIN: nothing or part of it
// would need disk I/O), -2 when the file does not support the flag (EOPNOTSUPP: the caller falls
// back to timing its reads). Other errors throw.
//
// Why: small reads run on the event loop when the page cache serves them (device/inline-io.ts), and a
// read that would wait for the disk must go to the thread pool instead. Without this call the device
// can only time each read and back off after a slow one; on a busy 2-core machine the event loop is
// preempted in the middle of cached reads often enough that the timing sent 15 % of 4 KiB reads to
// the thread pool (measured, bench/nbd-bench.ts diagnostics), at ~10 µs more event-loop time each.
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include "native.h"

#if defined(__linux__) && defined(RWF_NOWAIT)
/** The `want` arguments, the first two a descriptor and a Buffer: false unless they are. */
static bool fd_and_buffer(napi_env env, napi_callback_info info, size_t want, napi_value *argv, int32_t *fd, void **data, size_t *length) {
  size_t argc = want;
  bool is_buffer = false;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == want &&
         napi_get_value_int32(env, argv[0], fd) == napi_ok && *fd >= 0 &&
         napi_is_buffer(env, argv[1], &is_buffer) == napi_ok && is_buffer &&
         napi_get_buffer_info(env, argv[1], data, length) == napi_ok;
}

static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t position;
  void *data;
  size_t length;
  if (!fd_and_buffer(env, info, 3, argv, &fd, &data, &length) ||
      napi_get_value_int64(env, argv[2], &position) != napi_ok || position < 0) {
    napi_throw_range_error(env, NULL, "preadNowait(fd, buffer, position): a descriptor, a Buffer and a position");
    return NULL;
  }
  struct iovec iov = { .iov_base = data, .iov_len = length };
  ssize_t n;
  do n = preadv2(fd, &iov, 1, (off_t)position, RWF_NOWAIT); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) n = -1;
  else if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) n = -2;
  else if (n < 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  napi_value result;
  napi_create_int64(env, (int64_t)n, &result);
  return result;
}

/**
 * preadRunsNowait(fd, buffer, plan, count): reads runs of 4 KiB blocks from the page cache alone, in
 * order, with no JavaScript between them. Run i is plan[3i + 1] blocks from block plan[3i] of the
 * file into the buffer at block plan[3i + 2]. Returns how many runs (a prefix) were read whole: a
 * run not all cached ends the batch (the caller reads it and the rest otherwise); -2 when the file
 * refuses the flag. Other errors throw.
 *
 * Why: a 1 MiB read of a volume overwritten at random is ~100-256 runs of a block or a few. Run by
 * run from JavaScript (preadNowait, a subarray and a checksum call each), such a read cost ~4 us per
 * run on the event loop here, four times nbdkit's whole 1 MiB read (bench, "1M seq read, aged volume").
 * Through an io_uring where the kernel allows one (read-ring.c): one system call for up to 256 runs.
 */
#define RUN_BLOCK_BYTES 4096
static napi_value pread_runs_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint32_t count;
  void *data;
  size_t length;
  bool is_typed = false;
  napi_typedarray_type type;
  size_t plan_length;
  void *plan_data;
  if (!fd_and_buffer(env, info, 4, argv, &fd, &data, &length) ||
      napi_is_typedarray(env, argv[2], &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, argv[2], &type, &plan_length, &plan_data, NULL, NULL) != napi_ok || type != napi_float64_array ||
      napi_get_value_uint32(env, argv[3], &count) != napi_ok || (size_t)count * 3 > plan_length) {
    napi_throw_range_error(env, NULL, "preadRunsNowait(fd, buffer, plan, count): a descriptor, a Buffer, a Float64Array of count triples");
    return NULL;
  }
  const double *plan = plan_data;
  // Checked whole before anything is read: a bad plan reads nothing.
  for (uint32_t i = 0; i < count; i++) {
    double pba = plan[3 * i], blocks = plan[3 * i + 1], at = plan[3 * i + 2];
    if (!(pba >= 0 && blocks >= 1 && at >= 0 && pba == (double)(int64_t)pba && blocks == (double)(int64_t)blocks &&
          at == (double)(int64_t)at && (at + blocks) * RUN_BLOCK_BYTES <= (double)length && pba < 9007199254740992.0 / RUN_BLOCK_BYTES)) {
      napi_throw_range_error(env, NULL, "preadRunsNowait: a run outside the buffer or not whole blocks");
      return NULL;
    }
  }
  int64_t done_runs = cairn_ring_read_runs(fd, data, plan, count);
  if (done_runs == -1) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  if (done_runs != -3) {
    napi_value ringed;
    napi_create_int64(env, done_runs, &ringed);
    return ringed;
  }
  // No ring here: run by run.
  done_runs = count;
  for (uint32_t i = 0; i < count && done_runs == count; i++) {
    uint8_t *dst = (uint8_t *)data + (size_t)plan[3 * i + 2] * RUN_BLOCK_BYTES;
    size_t want = (size_t)plan[3 * i + 1] * RUN_BLOCK_BYTES, got = 0;
    off_t position = (off_t)plan[3 * i] * RUN_BLOCK_BYTES;
    while (got < want) {
      struct iovec iov = { .iov_base = dst + got, .iov_len = want - got };
      ssize_t n = preadv2(fd, &iov, 1, position + (off_t)got, RWF_NOWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) { done_runs = i; break; }
      if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS)) { done_runs = -2; break; }
      if (n < 0) {
        napi_throw_error(env, NULL, strerror(errno));
        return NULL;
      }
      if (n == 0) {
        napi_throw_error(env, NULL, "preadRunsNowait: short read (the file ends)");
        return NULL;
      }
      got += (size_t)n;
    }
  }
  napi_value result;
  napi_create_int64(env, done_runs, &result);
  return result;
}

void register_nowait_read(napi_env env, napi_value exports) {
  export_function(env, exports, "preadNowait", pread_nowait);
  export_function(env, exports, "preadRunsNowait", pread_runs_nowait);
}
#else
void register_nowait_read(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
