// Which single flipped bit explains a crc32c mismatch of a 4 KiB block. CRC-32C (Castagnoli) keeps a
// Hamming distance of 4 far past 4 KiB (Koopman's tables), so every one-bit change of a block has its
// own syndrome (stored crc xor computed crc) and no other change of fewer than three bits shares it.
// The intent log's replay uses it to tell a block that was written and then damaged (one bit off)
// from one that never reached the disk (a torn flush): a whole block of old content is not one bit
// away from the new content's checksum but by a 2^-17 chance (32768 syndromes of 2^32).
import { BLOCK_SIZE_BYTES } from './types.js';
import { assert } from './errors.js';

/** CRC-32C's polynomial, bit-reflected (as crc32c processes bytes least significant bit first). */
const CRC32C_POLY_REFLECTED = 0x82f63b78;
const BLOCK_BITS = BLOCK_SIZE_BYTES * 8;

/** syndrome → bit index (byte * 8 + bit, least significant first) in a 4 KiB block; built on first use. */
let syndromes: Map<number, number> | null = null;

/**
 * crc32c is affine over GF(2): flipping bit b of byte k changes the final crc by that bit pushed
 * through the register for the rest of the message, 8 * (n - k) shift steps; the initial value and
 * the final xor cancel out.
 */
function buildSyndromes(): Map<number, number> {
  const map = new Map<number, number>();
  for (let bit = 0; bit < 8; bit++) {
    let d = 1 << bit;
    for (let k = BLOCK_SIZE_BYTES - 1; k >= 0; k--) {
      for (let step = 0; step < 8; step++) d = (d & 1) !== 0 ? (d >>> 1) ^ CRC32C_POLY_REFLECTED : d >>> 1;
      assert(!map.has(d >>> 0), 'every one-bit change of a block has its own crc32c syndrome');
      map.set(d >>> 0, k * 8 + bit);
    }
  }
  assert(map.size === BLOCK_BITS, 'a syndrome per bit of a block');
  return map;
}

/**
 * The bit index whose flip turns a block with crc32c `found` into one with crc32c `wanted`, or null
 * when no single bit of the block does (`found === wanted` is no flip and also null).
 */
export function singleBitFlipOf(wanted: number, found: number): number | null {
  syndromes ??= buildSyndromes();
  return syndromes.get((wanted ^ found) >>> 0) ?? null;
}

/**
 * A stored checksum that differs from the computed one in exactly one bit: the flip hit the checksum
 * field itself, not the block's content.
 */
export function isOneBitApart(a: number, b: number): boolean {
  const x = (a ^ b) >>> 0;
  return x !== 0 && (x & (x - 1)) === 0;
}
