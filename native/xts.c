// AES-256-XTS of whole 4 KiB blocks (IEEE 1619: data unit = one block) with OpenSSL's EVP API, the
// OpenSSL inside Node itself (its headers in Node's include dir, its symbols exported by the node binary).
//
// Why: Node's crypto.createCipheriv per 4 KiB block costs ~9-15 us, mostly the setup of a cipher object
// and its key schedule. Here one EVP_CIPHER_CTX per call takes the key once, and each block re-inits
// only the IV (the tweak), so a run of blocks costs the AES work and little else.
//
// xtsBlocks(key, src, dst, firstBlock, domain, encrypt): key is 64 bytes (two AES-256 keys, halves
// different); src a positive multiple of 4096 bytes; dst as long, and either src itself (in place) or
// not overlapping it. Block i uses the tweak: bytes 0..7 = u64 LE (firstBlock + i), bytes 8..15 = u64
// LE domain. xtsBlocksAsync(...the same...) does it on libuv's thread pool and returns a promise; it
// holds references to src and dst until done (the caller must not change them meanwhile) and a copy
// of the key, wiped afterwards. Bad arguments throw RangeError.
#include <node_api.h>
#include <stdint.h>
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

#define XTS_BLOCK_BYTES 4096
#define XTS_KEY_BYTES 64
#define XTS_TWEAK_BYTES 16
// Block numbers and domains arrive as JavaScript numbers: exact up to 2^53 - 1.
#define XTS_NUMBER_MAX 9007199254740991.0

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <pthread.h>
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
} xts_job_t;

static void put_u64_le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/** Runs the job; 0 on success, -1 when OpenSSL refused (its error queue is cleared: Node's is shared). */
static int xts_run(const xts_job_t *job) {
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
  if (!ok) ERR_clear_error();
  return ok ? 0 : -1;
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

/** A JavaScript number that is an integer in [0, 2^53 - 1]. */
static bool get_index(napi_env env, napi_value value, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, value, &t) != napi_ok || t != napi_number) return false;
  if (napi_get_value_double(env, value, out) != napi_ok) return false;
  return *out >= 0 && *out <= XTS_NUMBER_MAX && *out == (double)(uint64_t)*out;
}

/** Reads and checks the six arguments into `job`; on a bad one throws RangeError and returns false. */
static bool parse_job(napi_env env, napi_callback_info info, xts_job_t *job, napi_value *src_value, napi_value *dst_value) {
  size_t argc = 6;
  napi_value argv[6];
  uint8_t *key, *src, *dst;
  size_t key_length, src_length, dst_length;
  bool encrypt;
  const char *bad = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) bad = "xtsBlocks(key, src, dst, firstBlock, domain, encrypt)";
  else if (!get_bytes(env, argv[0], &key, &key_length) || key_length != XTS_KEY_BYTES) bad = "key must be a 64-byte Uint8Array";
  else if (memcmp(key, key + XTS_KEY_BYTES / 2, XTS_KEY_BYTES / 2) == 0) bad = "the two halves of an XTS key must differ";
  else if (!get_bytes(env, argv[1], &src, &src_length)) bad = "src must be a Uint8Array";
  else if (src_length == 0 || src_length % XTS_BLOCK_BYTES != 0) bad = "src must be one or more whole 4 KiB blocks";
  else if (!get_bytes(env, argv[2], &dst, &dst_length) || dst_length != src_length) bad = "dst must be a Uint8Array as long as src";
  else if (dst != src && dst < src + src_length && src < dst + dst_length) bad = "dst must be src itself or not overlap it";
  else if (!get_index(env, argv[3], &job->first_block)) bad = "firstBlock must be an integer in [0, 2^53 - 1]";
  else if (job->first_block + (double)(src_length / XTS_BLOCK_BYTES - 1) > XTS_NUMBER_MAX) bad = "the last block number passes 2^53 - 1";
  else if (!get_index(env, argv[4], &job->domain)) bad = "domain must be an integer in [0, 2^53 - 1]";
  else if (napi_typeof(env, argv[5], &t) != napi_ok || t != napi_boolean || napi_get_value_bool(env, argv[5], &encrypt) != napi_ok) bad = "encrypt must be a boolean";
  if (bad != NULL) {
    throw_range(env, bad);
    return false;
  }
  memcpy(job->key, key, XTS_KEY_BYTES);
  job->src = src;
  job->dst = dst;
  job->length_bytes = src_length;
  job->encrypt = encrypt ? 1 : 0;
  *src_value = argv[1];
  *dst_value = argv[2];
  return true;
}

static napi_value xts_blocks(napi_env env, napi_callback_info info) {
  xts_job_t job;
  napi_value src_value, dst_value;
  if (!parse_job(env, info, &job, &src_value, &dst_value)) return NULL;
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
  if (w->work != NULL) napi_delete_async_work(env, w->work);
  OPENSSL_cleanse(w->job.key, sizeof w->job.key);
  free(w);
}

static void xts_complete(napi_env env, napi_status status, void *data) {
  xts_async_t *w = data;
  napi_value result;
  if (status == napi_ok && w->rc == 0) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    napi_value message;
    const char *text = status == napi_ok ? "xtsBlocksAsync: OpenSSL refused the AES-256-XTS operation" : "xtsBlocksAsync: cancelled";
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &result);
    napi_reject_deferred(env, w->deferred, result);
  }
  xts_free(env, w);
}

static napi_value xts_blocks_async(napi_env env, napi_callback_info info) {
  xts_async_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, NULL, "xtsBlocksAsync: out of memory");
    return NULL;
  }
  napi_value src_value, dst_value, promise, name;
  if (!parse_job(env, info, &w->job, &src_value, &dst_value)) {
    xts_free(env, w);
    return NULL;
  }
  // The references keep src and dst (and their memory) alive while a pool thread works on them.
  if (napi_create_reference(env, src_value, 1, &w->src_ref) != napi_ok ||
      napi_create_reference(env, dst_value, 1, &w->dst_ref) != napi_ok ||
      napi_create_string_utf8(env, "cairn:xts", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, xts_execute, xts_complete, w, &w->work) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    xts_free(env, w);
    napi_throw_error(env, NULL, "xtsBlocksAsync: could not start the work");
    return NULL;
  }
  if (napi_queue_async_work(env, w->work) != napi_ok) {
    // No promise is left pending: this one, never returned, is settled, and the caller gets the throw.
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, w->deferred, undefined);
    xts_free(env, w);
    napi_throw_error(env, NULL, "xtsBlocksAsync: could not queue the work");
    return NULL;
  }
  return promise;
}

void register_xts(napi_env env, napi_value exports) {
  export_function(env, exports, "xtsBlocks", xts_blocks);
  export_function(env, exports, "xtsBlocksAsync", xts_blocks_async);
}
#else
void register_xts(napi_env env, napi_value exports) { (void)env; (void)exports; }
#endif
