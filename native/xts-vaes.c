// AES-256-XTS of whole 4 KiB data units with VAES on 512-bit registers (four AES blocks per
// instruction, eight registers in flight), for CPUs that have it (Intel Ice Lake and later, AMD Zen 4).
//
// Why: the OpenSSL inside Node 20 (3.0) runs XTS with 128-bit AES-NI (~4-4.5 GiB/s on one core here);
// its VAES path arrived in OpenSSL 3.2. Decrypting a 1 MiB read cost ~45 % of a plain read's CPU. The
// Linux kernel took the same step (arch/x86/crypto/aes-xts-avx-x86_64.S, 6.10). The cipher is the
// standard one, the bytes are OpenSSL's: xts.c checks this kernel against OpenSSL on a known block
// before it ever uses it, and test/engine-xts.test.ts compares them on random keys, runs and tweaks.
//
// Layout of the work: the tweak of AES block j of a unit is T * x^j in GF(2^128) (IEEE 1619, T the
// AES-256 encryption of the unit's 16-byte IV under the second key). A 512-bit register holds the
// tweaks of four consecutive AES blocks; register i of eight holds blocks 4i..4i+3 of a 512-byte
// stride, and moving to the next stride multiplies each by x^32, eight independent chains.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "native.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define VAES_TARGET __attribute__((target("aes,sse4.1,avx512f,avx512bw,vaes")))
#define UNIT_BYTES 4096
#define ROUNDS 14
#define STRIDE_REGS 8
// Registers, not stack slots: every loop over rounds and registers is unrolled whole.
#define UNROLL _Pragma("GCC unroll 16")

typedef struct {
  __m128i enc[ROUNDS + 1];   // data key, encryption schedule
  __m128i dec[ROUNDS + 1];   // data key, decryption schedule (equivalent inverse cipher)
  __m128i tweak[ROUNDS + 1]; // tweak key, encryption schedule
} xts_vaes_keys_t;

bool cairn_xts_vaes_supported(void) {
  __builtin_cpu_init();
  // libgcc also checks that the OS saves the 512-bit state (XCR0) before it reports avx512f.
  return __builtin_cpu_supports("aes") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("vaes");
}

/** Each 32-bit word of v XORed with every word below it (a prefix XOR): the word chaining of FIPS 197's key expansion. */
VAES_TARGET static inline __m128i prefix_xor(__m128i v) {
  v = _mm_xor_si128(v, _mm_slli_si128(v, 4));
  return _mm_xor_si128(v, _mm_slli_si128(v, 8));
}

VAES_TARGET static inline __m128i expand_even(__m128i prev_even, __m128i assist) {
  return _mm_xor_si128(prefix_xor(prev_even), _mm_shuffle_epi32(assist, 0xff));
}

VAES_TARGET static inline __m128i expand_odd(__m128i even, __m128i prev_odd) {
  return _mm_xor_si128(prefix_xor(prev_odd), _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0), 0xaa));
}

// The round constant of aeskeygenassist must be an immediate, hence a macro per pair of round keys.
#define EXPAND_PAIR(rk, i, rcon)                                                  \
  do {                                                                            \
    rk[i] = expand_even(rk[i - 2], _mm_aeskeygenassist_si128(rk[i - 1], rcon));   \
    rk[i + 1] = expand_odd(rk[i], rk[i - 1]);                                     \
  } while (0)

/** The AES-256 encryption schedule of a 32-byte key (FIPS 197, with AES-NI's key-generation assist). */
VAES_TARGET static void expand_key(const uint8_t key[32], __m128i rk[ROUNDS + 1]) {
  rk[0] = _mm_loadu_si128((const __m128i *)key);
  rk[1] = _mm_loadu_si128((const __m128i *)(key + 16));
  EXPAND_PAIR(rk, 2, 0x01);
  EXPAND_PAIR(rk, 4, 0x02);
  EXPAND_PAIR(rk, 6, 0x04);
  EXPAND_PAIR(rk, 8, 0x08);
  EXPAND_PAIR(rk, 10, 0x10);
  EXPAND_PAIR(rk, 12, 0x20);
  rk[14] = expand_even(rk[12], _mm_aeskeygenassist_si128(rk[13], 0x40));
}

VAES_TARGET static void expand_keys(const uint8_t key[64], xts_vaes_keys_t *keys) {
  expand_key(key, keys->enc);
  expand_key(key + 32, keys->tweak);
  keys->dec[0] = keys->enc[ROUNDS];
  for (int r = 1; r < ROUNDS; r++) keys->dec[r] = _mm_aesimc_si128(keys->enc[ROUNDS - r]);
  keys->dec[ROUNDS] = keys->enc[0];
}

/** T * x^k in GF(2^128), IEEE 1619's little-endian convention, in each 128-bit lane; 1 <= k <= 57. */
#define MULX_512(v, k)                                                                                 \
  ({                                                                                                   \
    __m512i top_ = _mm512_srli_epi64((v), 64 - (k));                                                   \
    __m512i c_ = _mm512_bsrli_epi128(top_, 8); /* bits leaving the high half: reduced into the low */ \
    __m512i red_ = _mm512_xor_si512(_mm512_xor_si512(c_, _mm512_slli_epi64(c_, 1)),                   \
                                    _mm512_xor_si512(_mm512_slli_epi64(c_, 2), _mm512_slli_epi64(c_, 7))); \
    _mm512_xor_si512(_mm512_xor_si512(_mm512_slli_epi64((v), (k)), _mm512_bslli_epi128(top_, 8)), red_); \
  })

VAES_TARGET static inline __m128i mulx_128(__m128i v) {
  __m128i top = _mm_srli_epi64(v, 63);
  __m128i c = _mm_bsrli_si128(top, 8);
  __m128i red = _mm_xor_si128(_mm_xor_si128(c, _mm_slli_epi64(c, 1)), _mm_xor_si128(_mm_slli_epi64(c, 2), _mm_slli_epi64(c, 7)));
  return _mm_xor_si128(_mm_xor_si128(_mm_slli_epi64(v, 1), _mm_bslli_si128(top, 8)), red);
}

VAES_TARGET static inline __m128i encrypt_128(__m128i x, const __m128i rk[ROUNDS + 1]) {
  x = _mm_xor_si128(x, rk[0]);
  UNROLL for (int r = 1; r < ROUNDS; r++) x = _mm_aesenc_si128(x, rk[r]);
  return _mm_aesenclast_si128(x, rk[ROUNDS]);
}

/** One 4 KiB data unit; `iv` its 16-byte tweak before encryption. */
VAES_TARGET static void xts_unit(const xts_vaes_keys_t *keys, const __m512i rk[ROUNDS + 1], const uint8_t *src, uint8_t *dst,
                                 __m128i iv, bool encrypt) {
  __m128i t0 = encrypt_128(iv, keys->tweak);
  __m128i t1 = mulx_128(t0), t2 = mulx_128(t1), t3 = mulx_128(t2);
  __m512i tw[STRIDE_REGS];
  tw[0] = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(t0), t1, 1), t2, 2), t3, 3);
  UNROLL for (int i = 1; i < STRIDE_REGS; i++) tw[i] = MULX_512(tw[i - 1], 4);
  for (size_t at = 0; at < UNIT_BYTES; at += STRIDE_REGS * 64) {
    __m512i b[STRIDE_REGS];
    // 0x96: a ^ b ^ c, the tweak and round key 0 folded into one instruction.
    UNROLL for (int i = 0; i < STRIDE_REGS; i++) b[i] = _mm512_ternarylogic_epi64(_mm512_loadu_si512(src + at + 64 * i), tw[i], rk[0], 0x96);
    if (encrypt) {
      UNROLL for (int r = 1; r < ROUNDS; r++)
        UNROLL for (int i = 0; i < STRIDE_REGS; i++) b[i] = _mm512_aesenc_epi128(b[i], rk[r]);
      UNROLL for (int i = 0; i < STRIDE_REGS; i++) b[i] = _mm512_aesenclast_epi128(b[i], rk[ROUNDS]);
    } else {
      UNROLL for (int r = 1; r < ROUNDS; r++)
        UNROLL for (int i = 0; i < STRIDE_REGS; i++) b[i] = _mm512_aesdec_epi128(b[i], rk[r]);
      UNROLL for (int i = 0; i < STRIDE_REGS; i++) b[i] = _mm512_aesdeclast_epi128(b[i], rk[ROUNDS]);
    }
    UNROLL for (int i = 0; i < STRIDE_REGS; i++) {
      _mm512_storeu_si512(dst + at + 64 * i, _mm512_xor_si512(b[i], tw[i]));
      tw[i] = MULX_512(tw[i], 32);
    }
  }
}

/** Zeroes key material; the empty asm that reads the memory keeps the compiler from dropping the memset. */
static void wipe(void *p, size_t n) {
  memset(p, 0, n);
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

_Static_assert(sizeof(xts_vaes_keys_t) == CAIRN_XTS_SCHEDULE_BYTES, "the opaque schedule holds the expanded keys");
_Static_assert(_Alignof(cairn_xts_schedule_t) >= _Alignof(xts_vaes_keys_t), "the opaque schedule is aligned for them");

VAES_TARGET static void xts_units(const xts_vaes_keys_t *keys, const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit,
                                  uint64_t domain, bool encrypt) {
  __m512i rk[ROUNDS + 1];
  for (int r = 0; r <= ROUNDS; r++) rk[r] = _mm512_broadcast_i32x4(encrypt ? keys->enc[r] : keys->dec[r]);
  for (size_t u = 0; u < units; u++) {
    __m128i iv = _mm_set_epi64x((long long)domain, (long long)(first_unit + u));
    xts_unit(keys, rk, src + u * UNIT_BYTES, dst + u * UNIT_BYTES, iv, encrypt);
  }
  // The broadcast round keys are key material: not left on the stack.
  wipe(rk, sizeof rk);
}

bool cairn_xts_vaes_expand(const uint8_t key[64], cairn_xts_schedule_t *out) {
  if (!cairn_xts_vaes_supported()) return false;
  expand_keys(key, (xts_vaes_keys_t *)out->bytes);
  return true;
}

void cairn_xts_vaes_with(const cairn_xts_schedule_t *schedule, const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit,
                         uint64_t domain, bool encrypt) {
  xts_units((const xts_vaes_keys_t *)schedule->bytes, src, dst, units, first_unit, domain, encrypt);
}

bool cairn_xts_vaes(const uint8_t key[64], const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit, uint64_t domain,
                    bool encrypt) {
  cairn_xts_schedule_t schedule;
  if (!cairn_xts_vaes_expand(key, &schedule)) return false;
  cairn_xts_vaes_with(&schedule, src, dst, units, first_unit, domain, encrypt);
  // The schedule is key material: not left on the stack.
  wipe(&schedule, sizeof schedule);
  return true;
}

#else
bool cairn_xts_vaes_supported(void) { return false; }
bool cairn_xts_vaes_expand(const uint8_t key[64], cairn_xts_schedule_t *out) {
  (void)key, (void)out;
  return false;
}
void cairn_xts_vaes_with(const cairn_xts_schedule_t *schedule, const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit,
                         uint64_t domain, bool encrypt) {
  (void)schedule, (void)src, (void)dst, (void)units, (void)first_unit, (void)domain, (void)encrypt;
}
bool cairn_xts_vaes(const uint8_t key[64], const uint8_t *src, uint8_t *dst, size_t units, uint64_t first_unit, uint64_t domain,
                    bool encrypt) {
  (void)key, (void)src, (void)dst, (void)units, (void)first_unit, (void)domain, (void)encrypt;
  return false;
}
#endif
