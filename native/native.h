// The addon's parts; each adds its functions to `exports` where this machine supports them.
#ifndef CAIRN_NATIVE_H
#define CAIRN_NATIVE_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Adds the native function `fn` to `exports` under `name`. */
static inline void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value value;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &value);
  napi_set_named_property(env, exports, name, value);
}

/** Whether cairn_crc_blocks runs on this CPU (x86-64 with SSE4.2). */
bool cairn_crc_blocks_supported(void);
/** crc32c of each 4 KiB block of p into out[i]; false (nothing written) where unsupported. Any thread. */
bool cairn_crc_blocks(const uint8_t *p, size_t blocks, uint32_t *out);

/**
 * Reads runs of 4 KiB blocks (plan: block, blocks, block offset in base; count triples) through an
 * io_uring with RWF_NOWAIT (read-ring.c): the number of runs read whole, in order; -2 when the file
 * refuses RWF_NOWAIT; -1 with errno on a read error; -3 when no ring is available (read otherwise).
 * Calling thread only; nothing is in flight when it returns.
 */
int64_t cairn_ring_read_runs(int fd, uint8_t *base, const double *plan, uint32_t count);

/** Whether cairn_xts_vaes runs on this CPU (x86-64 with VAES and AVX-512, enabled by the OS). */
bool cairn_xts_vaes_supported(void);
/**
 * AES-256-XTS (IEEE 1619) of `units` 4 KiB data units with VAES; unit i's tweak is u64 LE
 * (first_unit + i), u64 LE domain. dst is src (in place) or does not overlap it. False (nothing
 * written) where unsupported. Any thread.
 */
bool cairn_xts_vaes(const uint8_t key[64], const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit, uint64_t domain,
                    bool encrypt);

/** Room for cairn_xts_vaes's expanded keys (data key both ways, tweak key): 45 AES round keys. */
#define CAIRN_XTS_SCHEDULE_BYTES (45 * 16)
/** An AES-256-XTS key expanded once for cairn_xts_vaes_with. Key material: wipe it when done. */
typedef struct {
  _Alignas(16) uint8_t bytes[CAIRN_XTS_SCHEDULE_BYTES];
} cairn_xts_schedule_t;
/** Expands a 64-byte XTS key into `out`; false (nothing written) where cairn_xts_vaes is unsupported. */
bool cairn_xts_vaes_expand(const uint8_t key[64], cairn_xts_schedule_t *out);
/** cairn_xts_vaes with a key expanded by cairn_xts_vaes_expand (only called where that succeeded). */
void cairn_xts_vaes_with(const cairn_xts_schedule_t *schedule, const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit,
                         uint64_t domain, bool encrypt);

void register_block_checksums(napi_env env, napi_value exports);
void register_writeback(napi_env env, napi_value exports);
void register_thread_policy(napi_env env, napi_value exports);
void register_nowait_read(napi_env env, napi_value exports);
void register_xts(napi_env env, napi_value exports);

#endif
