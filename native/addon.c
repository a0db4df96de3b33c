// The one native addon (dist/native/cairn-native.node): block checksums, early write-back and the
// helper threads' scheduling policy.
#include "native.h"

NAPI_MODULE_INIT() {
  register_block_checksums(env, exports);
  register_writeback(env, exports);
  register_thread_policy(env, exports);
  return exports;
}
