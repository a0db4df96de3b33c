// Block checksums: crc32c of every 4 KiB block (data blocks, and metadata blocks with their crc field
// zeroed), computed for a whole run of blocks in one call. The native kernel (native/block-checksums.c,
// in the addon of native.ts) is ~6x faster per block than the crc32c library; where it was not built
// (no C compiler, not x86-64) or CAIRN_CHECKSUM=library asks for it, the library computes the same
// values block by block.
import { crc32c } from '@node-rs/crc32';
import { BLOCK_SIZE_BYTES } from './types.js';
import { assert } from './errors.js';
import { nativeAddon } from './native.js';

type BlocksKernel = (data: Buffer, out: Uint32Array, at: number) => void;

function libraryKernel(data: Buffer, out: Uint32Array, at: number): void {
  assert(data.length % BLOCK_SIZE_BYTES === 0, 'checksummed data is whole blocks');
  for (let i = 0, o = 0; o < data.length; i++, o += BLOCK_SIZE_BYTES) out[at + i] = crc32c(data.subarray(o, o + BLOCK_SIZE_BYTES));
}

const native = process.env.CAIRN_CHECKSUM === 'library' ? undefined : nativeAddon.crc32cBlocks;
const kernel: BlocksKernel = native ?? libraryKernel;

/** Which implementation computes block checksums ('native' or 'library'), for logs and tests. */
export const checksumKernel: 'native' | 'library' = native ? 'native' : 'library';

/**
 * Typed arrays up to this many u32 live inside V8's heap (V8 keeps arrays of at most 64 bytes there).
 * Native code, or a view of one, needs an off-heap buffer and V8 then gives the array one of its own:
 * a malloc and two more objects for the GC to track, per write, for as long as a leaf keeps the
 * array. Such outputs go through `scratch` instead.
 */
const ON_HEAP_U32_MAX = 16;
const scratch = new Uint32Array(ON_HEAP_U32_MAX);

/** Writes the crc32c of each 4 KiB block of `data` to out[at], out[at + 1], ... */
export function blockChecksums(data: Buffer, out: Uint32Array, at = 0): void {
  const blocks = data.length / BLOCK_SIZE_BYTES;
  assert(data.length % BLOCK_SIZE_BYTES === 0 && at + blocks <= out.length, 'checksummed data is whole blocks that fit the output');
  if (out.length > ON_HEAP_U32_MAX) { kernel(data, out, at); return; }
  kernel(data, scratch, 0);
  for (let i = 0; i < blocks; i++) out[at + i] = scratch[i]!;
}

/** The crc32c of one 4 KiB block. */
export function blockChecksum(block: Buffer): number {
  assert(block.length === BLOCK_SIZE_BYTES, 'one whole block');
  kernel(block, scratch, 0);
  return scratch[0]!;
}
