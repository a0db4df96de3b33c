// The one native addon (dist/native/cairn-native.node): block checksums, early write-back and the
// helper threads' scheduling policy, reads that never wait for the disk (one by one or a request's runs
// through an io_uring), AES-256-XTS of data blocks.
#include "native.h"

NAPI_MODULE_INIT() {
  register_block_checksums(env, exports);
  register_writeback(env, exports);
  register_thread_policy(env, exports);
  register_nowait_read(env, exports);
  register_xts(env, exports);
  return exports;
}
