// AES-256-XTS of whole 4 KiB blocks (IEEE 1619: data unit = one block) with OpenSSL's EVP API, the
// OpenSSL inside Node itself (its headers in Node's include dir, its symbols exported by the node binary).
//
// Why: Node's crypto.createCipheriv per 4 KiB block costs ~9-15 us, mostly the setup of a cipher object
// and its key schedule. Here one EVP_CIPHER_CTX per call takes the key once, and each block re-inits
// only the IV (the tweak), so a run of blocks costs the AES work and little else. Where the CPU has
// VAES and AVX-512, xts-vaes.c does the same work ~1.75x faster (chosen once, below; `xtsKernel`).
//
// xtsBlocks(key, src, dst, firstBlock, domain, encrypt): key is 64 bytes (two AES-256 keys, halves
// different); src a positive multiple of 4096 bytes; dst as long, and either src itself (in place) or
// not overlapping it. Block i uses the tweak: bytes 0..7 = u64 LE (firstBlock + i), bytes 8..15 = u64
// LE domain. xtsBlocksAsync(...the same...) does it on libuv's thread pool and returns a promise; it
// holds references to src and dst until done (the caller must not change them meanwhile) and a copy
// of the key, wiped afterwards. Bad arguments throw RangeError.
//
// xtsKey(key) expands a key once into a handle that xtsBlocks takes in place of the key (the VAES
// kernel then skips its key schedule per call, ~0.1 us of a 4 KiB unit's ~0.6); xtsKeyWipe(handle)
// wipes it (later calls with it throw), and so does the garbage collector when it frees the handle.
// xtsBlocks also takes crcs like xtsBlocksAsync (a slot per block at least): a 4 KiB read from the
// page cache is verified and decrypted in one call.
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "native.h"

#if defined(__has_include)
#if __has_include(<openssl/evp.h>) && __has_include(<openssl/err.h>)
#define CAIRN_HAVE_OPENSSL 1
#endif
#endif

#if defined(CAIRN_HAVE_OPENSSL)
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>

#define XTS_BLOCK_BYTES 4096
#define XTS_KEY_BYTES 64
#define XTS_TWEAK_BYTES 16
// Block numbers and domains arrive as JavaScript numbers: exact up to 2^53 - 1.
#define XTS_NUMBER_MAX 9007199254740991.0

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
// OpenSSL 3 looks the legacy EVP_aes_256_xts() up in its provider on every init (a lock and a hash
// lookup); fetched once, the cipher is used directly: a one-block call 1.25 -> 1.05 us. Kept for the
// life of the process.
static EVP_CIPHER *fetched_cipher = NULL;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static void fetch_cipher(void) {
  fetched_cipher = EVP_CIPHER_fetch(NULL, "AES-256-XTS", NULL);
  ERR_clear_error();
}
static const EVP_CIPHER *xts_cipher(void) {
  pthread_once(&fetch_once, fetch_cipher);
  return fetched_cipher != NULL ? fetched_cipher : EVP_aes_256_xts();
}
#else
static const EVP_CIPHER *xts_cipher(void) { return EVP_aes_256_xts(); }
#endif

typedef struct {
  uint8_t key[XTS_KEY_BYTES];
  const uint8_t *src;
  uint8_t *dst;
  size_t length_bytes;
  double first_block;
  double domain;
  int encrypt;
  /** When set, the crc32c of each ciphertext block: of dst after encrypting, of src before decrypting. */
  uint32_t *crcs;
  /** Where the VAES kernel runs and the call passed a key handle (sync calls only): its expanded key. */
  const cairn_xts_schedule_t *schedule;
} xts_job_t;

/** What xtsKey hands out: the key and, where the VAES kernel runs, its expansion. Freed by the GC. */
typedef struct {
  uint8_t key[XTS_KEY_BYTES];
  cairn_xts_schedule_t schedule;
  bool expanded;
  bool wiped;
} xts_key_t;

static void put_u64_le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/** AES-256-XTS of the job's blocks with OpenSSL's EVP; 0 on success, -1 when OpenSSL refused. */
static int xts_run_openssl(const xts_job_t *job) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return -1;
  int ok = EVP_CipherInit_ex(ctx, xts_cipher(), NULL, job->key, NULL, job->encrypt) == 1;
  uint8_t tweak[XTS_TWEAK_BYTES];
  put_u64_le(tweak + 8, (uint64_t)job->domain);
  uint64_t block = (uint64_t)job->first_block;
  for (size_t at = 0; ok && at < job->length_bytes; at += XTS_BLOCK_BYTES, block++) {
    put_u64_le(tweak, block);
    int written = 0;
    // Only the IV changes: the key schedule set above is kept (cipher, engine and key NULL, enc -1).
    ok = EVP_CipherInit_ex(ctx, NULL, NULL, NULL, tweak, -1) == 1 &&
         EVP_CipherUpdate(ctx, job->dst + at, &written, job->src + at, XTS_BLOCK_BYTES) == 1 &&
         written == XTS_BLOCK_BYTES;
  }
  EVP_CIPHER_CTX_free(ctx); // wipes the key schedule
  if (!ok) ERR_clear_error(); // Node's error queue is shared
  return ok ? 0 : -1;
}

// The VAES kernel (xts-vaes.c) is used only where the CPU has it, CAIRN_XTS_VAES is not "0", and it
// gives OpenSSL's bytes on a known unit both ways: a compiler or CPU that got it wrong costs speed,
// never data.
static bool use_vaes = false;
static pthread_once_t vaes_once = PTHREAD_ONCE_INIT;
static void choose_kernel(void) {
  const char *env = getenv("CAIRN_XTS_VAES");
  if ((env != NULL && strcmp(env, "0") == 0) || !cairn_xts_vaes_supported()) return;
  static uint8_t plain[2 * XTS_BLOCK_BYTES], by_openssl[sizeof plain], by_vaes[sizeof plain];
  xts_job_t job = {.src = plain, .dst = by_openssl, .length_bytes = sizeof plain, .first_block = 0xfffffffffff0ULL, .domain = 0x10203};
  for (int i = 0; i < XTS_KEY_BYTES; i++) job.key[i] = (uint8_t)(i * 37 + 11);
  for (size_t i = 0; i < sizeof plain; i++) plain[i] = (uint8_t)(i * 131 + (i >> 8));
  bool same = true;
  for (int encrypt = 1; same && encrypt >= 0; encrypt--) {
    job.encrypt = encrypt;
    same = xts_run_openssl(&job) == 0 &&
           cairn_xts_vaes(job.key, plain, by_vaes, 2, (uint64_t)job.first_block, (uint64_t)job.domain, encrypt) &&
           memcmp(by_openssl, by_vaes, sizeof plain) == 0;
  }
  use_vaes = same;
}

/** "vaes" or "openssl": which kernel xts_run uses on this machine. */
static const char *xts_kernel(void) {
  pthread_once(&vaes_once, choose_kernel);
  return use_vaes ? "vaes" : "openssl";
}

/**
 * The VAES kernel over the job with its checksums taken a few units at a time, each unit summed and
 * ciphered while it is still in L1: two passes over a 1 MiB run (sum, then cipher) read it twice from
 * L2 or from the other core that read it from the file. The schedule is expanded once per job.
 */
#define FUSED_UNITS 6
static void xts_run_vaes_fused(const xts_job_t *job, size_t blocks) {
  cairn_xts_schedule_t local;
  const cairn_xts_schedule_t *schedule = job->schedule;
  if (schedule == NULL) {
    cairn_xts_vaes_expand(job->key, &local);
    schedule = &local;
  }
  for (size_t at = 0; at < blocks; at += FUSED_UNITS) {
    size_t n = blocks - at < FUSED_UNITS ? blocks - at : FUSED_UNITS;
    const uint8_t *src = job->src + at * XTS_BLOCK_BYTES;
    uint8_t *dst = job->dst + at * XTS_BLOCK_BYTES;
    if (!job->encrypt) cairn_crc_blocks(src, n, job->crcs + at);
    cairn_xts_vaes_with(schedule, src, dst, n, (uint64_t)job->first_block + at, (uint64_t)job->domain, job->encrypt);
    if (job->encrypt) cairn_crc_blocks(dst, n, job->crcs + at);
  }
  if (schedule == &local) OPENSSL_cleanse(&local, sizeof local);
}

/** Runs the job; 0 on success, -1 when OpenSSL refused (its error queue is cleared: Node's is shared). */
static int xts_run(const xts_job_t *job) {
  size_t blocks = job->length_bytes / XTS_BLOCK_BYTES;
  pthread_once(&vaes_once, choose_kernel);
  // A job with checksums is only accepted where cairn_crc_blocks runs (parse_job).
  if (use_vaes && job->crcs != NULL) {
    xts_run_vaes_fused(job, blocks);
    return 0;
  }
  if (job->crcs != NULL && !job->encrypt && !cairn_crc_blocks(job->src, blocks, job->crcs)) return -1;
  int rc;
  if (use_vaes && job->schedule != NULL) {
    cairn_xts_vaes_with(job->schedule, job->src, job->dst, blocks, (uint64_t)job->first_block, (uint64_t)job->domain, job->encrypt);
    rc = 0;
  } else if (use_vaes) rc = cairn_xts_vaes(job->key, job->src, job->dst, blocks, (uint64_t)job->first_block, (uint64_t)job->domain, job->encrypt) ? 0 : -1;
  else rc = xts_run_openssl(job);
  if (rc == 0 && job->crcs != NULL && job->encrypt && !cairn_crc_blocks(job->dst, blocks, job->crcs)) return -1;
  return rc;
}

static napi_value throw_range(napi_env env, const char *message) {
  napi_throw_range_error(env, NULL, message);
  return NULL;
}

/** The bytes of a Uint8Array (a Buffer is one); false for anything else. */
static bool get_bytes(napi_env env, napi_value value, uint8_t **data, size_t *length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return false;
  napi_typedarray_type type;
  napi_value array_buffer;
  size_t offset;
  void *p = NULL;
  if (napi_get_typedarray_info(env, value, &type, length, &p, &array_buffer, &offset) != napi_ok) return false;
  if (type != napi_uint8_array) return false;
  *data = p;
  return true;
}

/** A typed array's elements and count, when it has the type asked for. */
static bool get_typed(napi_env env, napi_value value, napi_typedarray_type want, void **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  napi_value array_buffer;
  size_t offset;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return false;
  if (napi_get_typedarray_info(env, value, &type, length, data, &array_buffer, &offset) != napi_ok) return false;
  return type == want;
}

/** A JavaScript number that is an integer in [0, 2^53 - 1]. */
static bool get_index(napi_env env, napi_value value, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, value, &t) != napi_ok || t != napi_number) return false;
  if (napi_get_value_double(env, value, out) != napi_ok) return false;
  return *out >= 0 && *out <= XTS_NUMBER_MAX && *out == (double)(uint64_t)*out;
}

/** The key handle `value` is (an external made by xtsKey), or NULL. */
static xts_key_t *get_key_handle(napi_env env, napi_value value) {
  napi_valuetype t;
  void *p = NULL;
  if (napi_typeof(env, value, &t) != napi_ok || t != napi_external || napi_get_value_external(env, value, &p) != napi_ok) return NULL;
  return p;
}

/**
 * The key of a call: a 64-byte Uint8Array, or (where `handles`) a handle made by xtsKey and not wiped.
 * False with `bad` set when it is neither or its halves are equal.
 */
static bool get_key(napi_env env, napi_value value, bool handles, xts_key_t **handle, uint8_t **key, const char **bad) {
  size_t length = 0;
  *handle = handles ? get_key_handle(env, value) : NULL;
  if (*handle != NULL && (*handle)->wiped) *bad = "the key handle was wiped";
  else if (*handle != NULL) *key = (*handle)->key;
  else if (!get_bytes(env, value, key, &length) || length != XTS_KEY_BYTES) *bad = handles ? "key must be a 64-byte Uint8Array or a key handle" : "key must be a 64-byte Uint8Array";
  else if (memcmp(*key, *key + XTS_KEY_BYTES / 2, XTS_KEY_BYTES / 2) == 0) *bad = "the two halves of an XTS key must differ";
  return *bad == NULL;
}

/**
 * Reads and checks the arguments into `job`; on a bad one throws RangeError and returns false. The
 * key may be a handle (xtsKey) where `handles` is set: its expansion is then used as long as the call.
 */
static bool parse_job(napi_env env, napi_callback_info info, xts_job_t *job, napi_value *src_value, napi_value *dst_value, napi_value *crcs_value,
                      bool handles) {
  size_t argc = 7;
  napi_value argv[7];
  void *crcs = NULL;
  size_t crc_count = 0;
  uint8_t *key = NULL, *src, *dst;
  size_t src_length, dst_length;
  bool encrypt;
  const char *bad = NULL;
  napi_valuetype t;
  bool with_crcs = crcs_value != NULL && argc == 7;
  xts_key_t *handle = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 || argc > (crcs_value != NULL ? 7 : 6)) bad = "xtsBlocks(key, src, dst, firstBlock, domain, encrypt, crcs?), xtsBlocksAsync(...)";
  else if (!get_key(env, argv[0], handles, &handle, &key, &bad)) { /* bad says why */ }
  else if (!get_bytes(env, argv[1], &src, &src_length)) bad = "src must be a Uint8Array";
  else if (src_length == 0 || src_length % XTS_BLOCK_BYTES != 0) bad = "src must be one or more whole 4 KiB blocks";
  else if (!get_bytes(env, argv[2], &dst, &dst_length) || dst_length != src_length) bad = "dst must be a Uint8Array as long as src";
  else if (dst != src && dst < src + src_length && src < dst + dst_length) bad = "dst must be src itself or not overlap it";
  else if (!get_index(env, argv[3], &job->first_block)) bad = "firstBlock must be an integer in [0, 2^53 - 1]";
  else if (job->first_block + (double)(src_length / XTS_BLOCK_BYTES - 1) > XTS_NUMBER_MAX) bad = "the last block number passes 2^53 - 1";
  else if (!get_index(env, argv[4], &job->domain)) bad = "domain must be an integer in [0, 2^53 - 1]";
  else if (napi_typeof(env, argv[5], &t) != napi_ok || t != napi_boolean || napi_get_value_bool(env, argv[5], &encrypt) != napi_ok) bad = "encrypt must be a boolean";
  else if ((with_crcs = crcs_value != NULL && argc == 7) && !cairn_crc_blocks_supported()) bad = "checksums in the job need x86-64 with SSE4.2";
  else if (with_crcs && (!get_typed(env, argv[6], napi_uint32_array, &crcs, &crc_count) || crc_count < src_length / XTS_BLOCK_BYTES)) bad = "crcs must be a Uint32Array with a slot per block";
  if (bad != NULL) {
    throw_range(env, bad);
    return false;
  }
  memcpy(job->key, key, XTS_KEY_BYTES);
  job->src = src;
  job->dst = dst;
  job->length_bytes = src_length;
  job->encrypt = encrypt ? 1 : 0;
  job->crcs = with_crcs ? crcs : NULL;
  job->schedule = handle != NULL && handle->expanded ? &handle->schedule : NULL;
  *src_value = argv[1];
  *dst_value = argv[2];
  if (crcs_value != NULL) *crcs_value = with_crcs ? argv[6] : NULL;
  return true;
}

static napi_value xts_blocks(napi_env env, napi_callback_info info) {
  xts_job_t job;
  napi_value src_value, dst_value, crcs_value;
  if (!parse_job(env, info, &job, &src_value, &dst_value, &crcs_value, true)) return NULL;
  int rc = xts_run(&job);
  OPENSSL_cleanse(job.key, sizeof job.key);
  if (rc != 0) napi_throw_error(env, NULL, "xtsBlocks: OpenSSL refused the AES-256-XTS operation");
  return NULL;
}

typedef struct {
  xts_job_t job;
  napi_async_work work;
  napi_deferred deferred;
  napi_ref src_ref;
  napi_ref dst_ref;
  napi_ref crcs_ref;
  int rc;
} xts_async_t;

static void xts_execute(napi_env env, void *data) {
  (void)env;
  xts_async_t *w = data;
  w->rc = xts_run(&w->job);
}

static void xts_free(napi_env env, xts_async_t *w) {
  if (w->src_ref != NULL) napi_delete_reference(env, w->src_ref);
  if (w->dst_ref != NULL) napi_delete_reference(env, w->dst_ref);
  if (w->crcs_ref != NULL) napi_delete_reference(env, w->crcs_ref);
  if (w->work != NULL) napi_delete_async_work(env, w->work);
  OPENSSL_cleanse(w->job.key, sizeof w->job.key);
  free(w);
}

/** Resolves a finished job's promise, or rejects it naming the call (`who`) and why. */
static void settle_job(napi_env env, napi_deferred deferred, napi_status status, int rc, const char *who) {
  napi_value result;
  if (status == napi_ok && rc == 0) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, deferred, result);
    return;
  }
  char text[128];
  snprintf(text, sizeof text, "%s: %s", who, status == napi_ok ? "OpenSSL refused the AES-256-XTS operation" : "cancelled");
  napi_value message;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &result);
  napi_reject_deferred(env, deferred, result);
}

/**
 * Creates the promise and queues `data`'s work on the thread pool. False after throwing (naming
 * `who`): the caller frees `data`; no promise is left pending.
 */
static bool queue_job(napi_env env, const char *who, napi_async_execute_callback execute, napi_async_complete_callback complete, void *data,
                      napi_async_work *work, napi_deferred *deferred, napi_value *promise) {
  napi_value name;
  if (napi_create_string_utf8(env, who, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, data, work) != napi_ok ||
      napi_create_promise(env, deferred, promise) != napi_ok) {
    napi_throw_error(env, NULL, "AES-256-XTS: could not start the work");
    return false;
  }
  if (napi_queue_async_work(env, *work) != napi_ok) {
    // This promise, never returned, is settled; the caller gets the throw.
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, *deferred, undefined);
    napi_throw_error(env, NULL, "AES-256-XTS: could not queue the work");
    return false;
  }
  return true;
}

static void xts_complete(napi_env env, napi_status status, void *data) {
  xts_async_t *w = data;
  settle_job(env, w->deferred, status, w->rc, "xtsBlocksAsync");
  xts_free(env, w);
}

static napi_value xts_blocks_async(napi_env env, napi_callback_info info) {
  xts_async_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "xtsBlocksAsync: out of memory");
    return NULL;
  }
  napi_value src_value, dst_value, crcs_value, promise;
  // Raw keys only: a handle could be collected while a pool thread still used its expansion.
  if (!parse_job(env, info, &w->job, &src_value, &dst_value, &crcs_value, false)) {
    xts_free(env, w);
    return NULL;
  }
  // The references keep src and dst (and their memory) alive while a pool thread works on them.
  if (napi_create_reference(env, src_value, 1, &w->src_ref) != napi_ok ||
      napi_create_reference(env, dst_value, 1, &w->dst_ref) != napi_ok ||
      (crcs_value != NULL && napi_create_reference(env, crcs_value, 1, &w->crcs_ref) != napi_ok)) {
    xts_free(env, w);
    napi_throw_error(env, NULL, "xtsBlocksAsync: could not start the work");
    return NULL;
  }
  if (!queue_job(env, "xtsBlocksAsync", xts_execute, xts_complete, w, &w->work, &w->deferred, &promise)) {
    xts_free(env, w);
    return NULL;
  }
  return promise;
}

// xtsSealPiecesAsync(key, pieces, firstBlocks, dst, domain, crcs): encrypts pieces[i] (whole 4 KiB
// blocks, Uint8Arrays) one after another into dst (as long as all of them together, overlapping none),
// block j of piece i with the tweak (firstBlocks[i] + j, domain), then puts the crc32c of each block of
// dst (the ciphertext, still in cache) into crcs[k]. One job on the thread pool for a write whose data
// lands in several physical runs: each run on its own was below the size worth a hand-off and was
// encrypted, then summed, on the event loop. Exported only where cairn_crc_blocks runs.
typedef struct {
  uint8_t key[XTS_KEY_BYTES];
  size_t count;
  const uint8_t **src;
  size_t *bytes;
  double *first_block;
  uint8_t *dst;
  double domain;
  uint32_t *crcs;
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[4];
  int rc;
} xts_seal_t;

static void seal_free(napi_env env, xts_seal_t *w) {
  for (int i = 0; i < 4; i++) if (w->refs[i] != NULL) napi_delete_reference(env, w->refs[i]);
  if (w->work != NULL) napi_delete_async_work(env, w->work);
  OPENSSL_cleanse(w->key, sizeof w->key);
  free(w->src);
  free(w->bytes);
  free(w->first_block);
  free(w);
}

static void seal_execute(napi_env env, void *data) {
  (void)env;
  xts_seal_t *w = data;
  size_t out = 0;
  w->rc = 0;
  for (size_t i = 0; i < w->count && w->rc == 0; i++) {
    // Each piece's ciphertext is summed as it is made (xts_run), into its blocks' slots.
    xts_job_t job = { .src = w->src[i], .dst = w->dst + out, .length_bytes = w->bytes[i], .first_block = w->first_block[i], .domain = w->domain,
                      .encrypt = 1, .crcs = w->crcs + out / XTS_BLOCK_BYTES };
    memcpy(job.key, w->key, XTS_KEY_BYTES);
    w->rc = xts_run(&job);
    OPENSSL_cleanse(job.key, sizeof job.key);
    out += w->bytes[i];
  }
}

static void seal_complete(napi_env env, napi_status status, void *data) {
  xts_seal_t *w = data;
  settle_job(env, w->deferred, status, w->rc, "xtsSealPiecesAsync");
  seal_free(env, w);
}


/** Reads and checks the arguments into `w`; on a bad one throws RangeError and returns false. */
static bool parse_seal(napi_env env, napi_callback_info info, xts_seal_t *w, napi_value argv[6]) {
  size_t argc = 6;
  uint8_t *key, *dst;
  size_t key_length, dst_length, first_count, crc_count;
  uint32_t count = 0;
  bool is_array = false;
  void *first = NULL, *crcs = NULL;
  const char *bad = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) bad = "xtsSealPiecesAsync(key, pieces, firstBlocks, dst, domain, crcs)";
  else if (!get_bytes(env, argv[0], &key, &key_length) || key_length != XTS_KEY_BYTES) bad = "key must be a 64-byte Uint8Array";
  else if (memcmp(key, key + XTS_KEY_BYTES / 2, XTS_KEY_BYTES / 2) == 0) bad = "the two halves of an XTS key must differ";
  else if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[1], &count) != napi_ok || count == 0) bad = "pieces must be a non-empty array";
  else if (!get_typed(env, argv[2], napi_float64_array, &first, &first_count) || first_count != count) bad = "firstBlocks must be a Float64Array with a number per piece";
  else if (!get_bytes(env, argv[3], &dst, &dst_length) || dst_length == 0 || dst_length % XTS_BLOCK_BYTES != 0) bad = "dst must be whole 4 KiB blocks";
  else if (!get_index(env, argv[4], &w->domain)) bad = "domain must be an integer in [0, 2^53 - 1]";
  else if (!get_typed(env, argv[5], napi_uint32_array, &crcs, &crc_count) || crc_count != dst_length / XTS_BLOCK_BYTES) bad = "crcs must be a Uint32Array with a slot per block of dst";
  if (bad == NULL) {
    w->count = count;
    w->src = calloc(count, sizeof *w->src);
    w->bytes = calloc(count, sizeof *w->bytes);
    w->first_block = calloc(count, sizeof *w->first_block);
    if (w->src == NULL || w->bytes == NULL || w->first_block == NULL) bad = "out of memory";
  }
  size_t total = 0;
  for (uint32_t i = 0; bad == NULL && i < count; i++) {
    napi_value piece;
    uint8_t *p;
    size_t length;
    double block = ((double *)first)[i];
    if (napi_get_element(env, argv[1], i, &piece) != napi_ok || !get_bytes(env, piece, &p, &length)) bad = "each piece must be a Uint8Array";
    else if (length == 0 || length % XTS_BLOCK_BYTES != 0) bad = "each piece must be one or more whole 4 KiB blocks";
    else if (p < dst + dst_length && dst < p + length) bad = "dst must not overlap a piece";
    else if (!(block >= 0 && block <= XTS_NUMBER_MAX && block == (double)(uint64_t)block) || block + (double)(length / XTS_BLOCK_BYTES - 1) > XTS_NUMBER_MAX) bad = "each first block must be an integer, its piece's last at most 2^53 - 1";
    else {
      w->src[i] = p;
      w->bytes[i] = length;
      w->first_block[i] = block;
      total += length;
    }
  }
  if (bad == NULL && total != dst_length) bad = "dst must be as long as the pieces together";
  if (bad != NULL) {
    throw_range(env, bad);
    return false;
  }
  memcpy(w->key, key, XTS_KEY_BYTES);
  w->dst = dst;
  w->crcs = crcs;
  return true;
}

static napi_value xts_seal_pieces_async(napi_env env, napi_callback_info info) {
  xts_seal_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "xtsSealPiecesAsync: out of memory");
    return NULL;
  }
  napi_value argv[6], promise;
  if (!parse_seal(env, info, w, argv)) {
    seal_free(env, w);
    return NULL;
  }
  // The references keep the pieces (through their array), firstBlocks, dst and crcs alive meanwhile.
  const int kept[4] = { 1, 2, 3, 5 };
  for (int i = 0; i < 4; i++) {
    if (napi_create_reference(env, argv[kept[i]], 1, &w->refs[i]) != napi_ok) {
      seal_free(env, w);
      napi_throw_error(env, NULL, "xtsSealPiecesAsync: could not start the work");
      return NULL;
    }
  }
  if (!queue_job(env, "xtsSealPiecesAsync", seal_execute, seal_complete, w, &w->work, &w->deferred, &promise)) {
    seal_free(env, w);
    return NULL;
  }
  return promise;
}

static void key_wipe(xts_key_t *k) {
  OPENSSL_cleanse(k, sizeof *k);
  k->wiped = true;
}

static void key_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  key_wipe(data);
  free(data);
}

/** xtsKey(key): a handle holding a copy of the 64-byte key and, where VAES runs, its expansion. */
static napi_value xts_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  uint8_t *key;
  size_t key_length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || !get_bytes(env, argv[0], &key, &key_length) ||
      key_length != XTS_KEY_BYTES) return throw_range(env, "xtsKey(key): key must be a 64-byte Uint8Array");
  if (memcmp(key, key + XTS_KEY_BYTES / 2, XTS_KEY_BYTES / 2) == 0) return throw_range(env, "the two halves of an XTS key must differ");
  // malloc aligns to 16 bytes on the platforms VAES exists on, as the schedule's round keys need.
  xts_key_t *k = malloc(sizeof *k);
  if (k == NULL) {
    napi_throw_error(env, NULL, "xtsKey: out of memory");
    return NULL;
  }
  memcpy(k->key, key, XTS_KEY_BYTES);
  k->wiped = false;
  pthread_once(&vaes_once, choose_kernel);
  k->expanded = use_vaes && cairn_xts_vaes_expand(k->key, &k->schedule);
  if (napi_create_external(env, k, key_finalize, NULL, &result) != napi_ok) {
    key_finalize(env, k, NULL);
    napi_throw_error(env, NULL, "xtsKey: could not make the handle");
    return NULL;
  }
  return result;
}

/** xtsKeyWipe(handle): zeroes the key and its expansion now; later calls with the handle throw. */
static napi_value xts_key_wipe(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  xts_key_t *k;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || (k = get_key_handle(env, argv[0])) == NULL) {
    return throw_range(env, "xtsKeyWipe(handle): a handle made by xtsKey");
  }
  key_wipe(k);
  return NULL;
}

void register_xts(napi_env env, napi_value exports) {
  export_function(env, exports, "xtsBlocks", xts_blocks);
  export_function(env, exports, "xtsKey", xts_key);
  export_function(env, exports, "xtsKeyWipe", xts_key_wipe);
  napi_value kernel;
  if (napi_create_string_utf8(env, xts_kernel(), NAPI_AUTO_LENGTH, &kernel) == napi_ok) napi_set_named_property(env, exports, "xtsKernel", kernel);
  export_function(env, exports, "xtsBlocksAsync", xts_blocks_async);
  if (cairn_crc_blocks_supported()) export_function(env, exports, "xtsSealPiecesAsync", xts_seal_pieces_async);
}
#else
void register_xts(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
