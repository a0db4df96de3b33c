// The one native addon (dist/native/cairn-native.node): block checksums and early write-back.
#include "native.h"

NAPI_MODULE_INIT() {
  register_block_checksums(env, exports);
  register_writeback(env, exports);
  return exports;
}
