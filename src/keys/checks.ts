// The size rules of RFC 3394 key data and wrapped blobs, shared by every provider so a file KEK and an
// HSM KEK accept and refuse exactly the same inputs.
import { fail } from '../engine/index.js';
import { DEK_BYTES_MAX, DEK_BYTES_MIN, WRAP_BLOCK_BYTES, WRAPPED_BYTES_MAX, WRAPPED_BYTES_MIN } from './constants.js';
import { KekWrongKey } from './errors.js';

/** A DEK comes from the layer above, never from a user: a wrong size is a bug there, so an assertion. */
export function checkDek(dek: Buffer): void {
  if (!Buffer.isBuffer(dek) || dek.length < DEK_BYTES_MIN || dek.length > DEK_BYTES_MAX || dek.length % WRAP_BLOCK_BYTES !== 0) {
    fail(`a DEK to wrap is ${DEK_BYTES_MIN}..${DEK_BYTES_MAX} bytes in whole ${WRAP_BLOCK_BYTES}-byte blocks, got ${Buffer.isBuffer(dek) ? dek.length : typeof dek}`);
  }
}

/** A wrapped blob comes from storage: a wrong size means damage, reported as its integrity check would. */
export function checkWrapped(wrapped: Buffer): void {
  if (!Buffer.isBuffer(wrapped)) fail(`a wrapped key is a Buffer, got ${typeof wrapped}`);
  if (wrapped.length < WRAPPED_BYTES_MIN || wrapped.length > WRAPPED_BYTES_MAX || wrapped.length % WRAP_BLOCK_BYTES !== 0) {
    throw new KekWrongKey(`the wrapped key is damaged: ${wrapped.length} bytes is not an RFC 3394 blob ` +
      `(${WRAPPED_BYTES_MIN}..${WRAPPED_BYTES_MAX} bytes in whole ${WRAP_BLOCK_BYTES}-byte blocks)`);
  }
}
