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
  for (let i = 0, o = 0; o < data.length; i++, o += BLOCK_SIZE_BYTES) out[at + i] = crc32c(data.subarray(o, o + BLOCK_SIZE_BYTES));
}

const native = process.env.CAIRN_CHECKSUM === 'library' ? undefined : nativeAddon.crc32cBlocks;
const kernel: BlocksKernel = native ?? libraryKernel;

/** Which implementation computes block checksums ('native' or 'library'), for logs and tests. */
export const checksumKernel: 'native' | 'library' = native ? 'native' : 'library';

/** Writes the crc32c of each 4 KiB block of `data` to out[at], out[at + 1], ... */
export function blockChecksums(data: Buffer, out: Uint32Array, at = 0): void {
  assert(data.length % BLOCK_SIZE_BYTES === 0 && at + data.length / BLOCK_SIZE_BYTES <= out.length, 'checksummed data is whole blocks that fit the output');
  kernel(data, out, at);
}

const single = new Uint32Array(1);

/** The crc32c of one 4 KiB block. */
export function blockChecksum(block: Buffer): number {
  blockChecksums(block, single, 0);
  return single[0]!;
}
