// The addon's parts; each adds its functions to `exports` where this machine supports them.
#ifndef CAIRN_NATIVE_H
#define CAIRN_NATIVE_H
#include <node_api.h>

void register_block_checksums(napi_env env, napi_value exports);
void register_writeback(napi_env env, napi_value exports);
void register_thread_policy(napi_env env, napi_value exports);

#endif
