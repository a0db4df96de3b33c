// startWriteback(fd): asks the kernel to start writing a file's dirty pages to disk, without waiting
// for them (sync_file_range with SYNC_FILE_RANGE_WRITE over the whole file), on libuv's thread pool
// because the call can block while the device queue is full. Returns a promise.
//
// Why: data writes go to the page cache and reach the disk only at the next commit's fdatasync. On a
// machine with much memory the kernel's own write-back starts late (dirty_background_ratio), so each
// commit flushed hundreds of MiB at once: fdatasync took 400-1000 ms (a client FLUSH waits that long)
// and the burst of write-back took a CPU from the event loop. Started early and often, the same bytes
// leave in a steady stream and the commit's fdatasync finds little left to do. No durability comes
// from this call; that is still fdatasync's job.
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include "native.h"

#if defined(__linux__)
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int err;
} writeback_t;

static void writeback_execute(napi_env env, void *data) {
  (void)env;
  writeback_t *w = data;
  w->err = sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0 ? 0 : errno;
}

static void writeback_complete(napi_env env, napi_status status, void *data) {
  writeback_t *w = data;
  napi_value result;
  if (status == napi_ok && w->err == 0) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    napi_value message;
    napi_create_string_utf8(env, status == napi_ok ? strerror(w->err) : "write-back cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &result);
    napi_reject_deferred(env, w->deferred, result);
  }
  napi_delete_async_work(env, w->work);
  free(w);
}

static napi_value start_writeback(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_range_error(env, NULL, "startWriteback(fd): fd is a file descriptor");
    return NULL;
  }
  writeback_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "startWriteback: out of memory");
    return NULL;
  }
  w->fd = fd;
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_string_utf8(env, "cairn:writeback", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, writeback_execute, writeback_complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

void register_writeback(napi_env env, napi_value exports) {
  export_function(env, exports, "startWriteback", start_writeback);
}
#else
void register_writeback(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
