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
static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t position;
  void *data;
  size_t length;
  bool is_buffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok ||
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

void register_nowait_read(napi_env env, napi_value exports) {
  export_function(env, exports, "preadNowait", pread_nowait);
}
#else
void register_nowait_read(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
