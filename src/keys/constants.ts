// Bounds of the KEK layer, each with its unit; their relations are asserted once at load (TigerBeetle's
// constants.zig) so a bad edit fails at start-up, not when a tenant's key is first used.
import { assert } from '../engine/index.js';

/** A KEK is an AES-256 key. */
export const KEK_BYTES = 32;
/** RFC 3394 wraps whole 64-bit blocks, at least two of them (§2: n >= 2). */
export const WRAP_BLOCK_BYTES = 8;
export const DEK_BYTES_MIN = 16;
/** Cairn's DEKs are 64 bytes (AES-256-XTS); anything far larger is not a data key. */
export const DEK_BYTES_MAX = 1024;
/** RFC 3394 adds one block (the integrity check value) to the key data. */
export const WRAPPED_BYTES_MIN = DEK_BYTES_MIN + WRAP_BLOCK_BYTES;
export const WRAPPED_BYTES_MAX = DEK_BYTES_MAX + WRAP_BLOCK_BYTES;
/** A KEK file holds 32 raw bytes, or 64 hex characters and one optional newline. */
export const KEK_FILE_HEX_CHARS = KEK_BYTES * 2;
export const KEK_FILE_BYTES_MAX = KEK_FILE_HEX_CHARS + 1;
/** A PIN file is read up to this many bytes (PKCS#11 tokens bound PINs far lower; SoftHSM: 255). */
export const PIN_BYTES_MAX = 256;
/** A reference is stored and logged with the tenant; a longer one is junk. */
export const REF_CHARS_MAX = 4096;
/** A fingerprint is the first 8 bytes of a digest, in hex. */
export const FINGERPRINT_HEX_CHARS = 16;
/** Objects fetched per C_FindObjects: 2 tells "exactly one" from "ambiguous". */
export const FIND_OBJECTS_MAX = 2;

assert(KEK_FILE_BYTES_MAX > KEK_BYTES, 'the hex form of a KEK file is its longest');
assert(DEK_BYTES_MIN % WRAP_BLOCK_BYTES === 0 && DEK_BYTES_MAX % WRAP_BLOCK_BYTES === 0, 'DEK bounds are whole RFC 3394 blocks');
assert(DEK_BYTES_MIN >= 2 * WRAP_BLOCK_BYTES, 'RFC 3394 wraps at least two blocks');
assert(DEK_BYTES_MAX >= 64, "Cairn's 64-byte XTS DEK fits");
assert(FINGERPRINT_HEX_CHARS === 16, 'the interface promises 16 hex characters');
