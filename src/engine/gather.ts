// Write payloads as a gather list. A network server receives a large write as a run of socket chunks;
// taking them as they are (instead of concatenating them into one buffer) saves a copy of every byte.
// The engine locates each 4 KiB block in the list and hands the device iovecs, one per stretch of
// blocks that is contiguous in memory.
import { BLOCK_SIZE_BYTES } from './constants.js';
import { assert, fail } from './errors.js';

/** One buffer, or buffers whose concatenation is the payload. */
export type WriteData = Buffer | readonly Buffer[];

export function dataLength(data: WriteData): number {
  if (Buffer.isBuffer(data)) return data.length;
  let n = 0;
  for (const b of data) n += b.length;
  return n;
}

export function concatData(data: WriteData): Buffer {
  return Buffer.isBuffer(data) ? data : data.length === 1 ? data[0]! : Buffer.concat(data);
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE_BYTES);

/**
 * A block-aligned payload as the position of each block in the buffers that hold it: the payload's
 * chunks (neighbours in memory merged first) and, for a block that straddles two chunks, a copy of
 * it (the only bytes copied). No view per block: a 1 MiB write was 256 views made and 512 `.buffer`
 * lookups to join them again, a visible part of the event loop's time per request.
 */
export class PayloadBlocks {
  /** The buffer holding block i. */
  private readonly bufs: Buffer[] = [];
  /** Byte offset of block i in bufs[i]. */
  private readonly offs: number[] = [];

  constructor(data: WriteData) {
    let partial: Buffer | null = null;
    let partialFill = 0;
    for (const part of mergeAdjacent(Buffer.isBuffer(data) ? [data] : data)) {
      let at = 0;
      if (partial) {
        const n = Math.min(BLOCK_SIZE_BYTES - partialFill, part.length);
        part.copy(partial, partialFill, 0, n);
        partialFill += n;
        at = n;
        if (partialFill < BLOCK_SIZE_BYTES) continue;
        this.bufs.push(partial); this.offs.push(0);
        partial = null;
      }
      for (; at + BLOCK_SIZE_BYTES <= part.length; at += BLOCK_SIZE_BYTES) { this.bufs.push(part); this.offs.push(at); }
      if (at < part.length) {
        partial = Buffer.allocUnsafe(BLOCK_SIZE_BYTES);
        partialFill = part.copy(partial, 0, at);
      }
    }
    assert(partial === null, 'payload is whole blocks');
  }

  get count(): number {
    assert(this.bufs.length === this.offs.length, 'an offset per block');
    return this.bufs.length;
  }

  /** Block i as a view (for tests and rare paths). */
  block(i: number): Buffer {
    if (!(i >= 0 && i < this.bufs.length)) fail(`payload block ${i} of ${this.bufs.length}`);
    return this.bufs[i]!.subarray(this.offs[i]!, this.offs[i]! + BLOCK_SIZE_BYTES); }

  /** Whether block i is all zeros. Most data has a non-zero first or last byte: only the rest is compared whole. */
  isZero(i: number): boolean {
    if (!(i >= 0 && i < this.bufs.length)) fail(`payload block ${i} of ${this.bufs.length}`);
    const b = this.bufs[i]!, o = this.offs[i]!;
    return b[o] === 0 && b[o + BLOCK_SIZE_BYTES - 1] === 0 && this.block(i).equals(ZERO_BLOCK);
  }

  /** Blocks [from, to) as few buffers as possible (an iovec per stretch that is contiguous in memory). */
  pieces(from: number, to: number): Buffer[] {
    assert(from >= 0 && from < to && to <= this.bufs.length, 'pieces of the payload\'s blocks');
    const out: Buffer[] = [];
    let i = from;
    while (i < to) {
      const buf = this.bufs[i]!, off = this.offs[i]!;
      let j = i + 1;
      while (j < to && this.bufs[j] === buf && this.offs[j] === off + (j - i) * BLOCK_SIZE_BYTES) j++;
      out.push(off === 0 && j - i === buf.length / BLOCK_SIZE_BYTES ? buf : buf.subarray(off, off + (j - i) * BLOCK_SIZE_BYTES));
      i = j;
    }
    assert(out.length > 0 && out.length <= to - from, 'at most one piece per block');
    return out;
  }
}

/** Chunks that sit side by side in one ArrayBuffer (successive socket reads into one slab) as one. */
function mergeAdjacent(parts: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  for (const part of parts) {
    const last = out[out.length - 1];
    if (last && last.buffer === part.buffer && last.byteOffset + last.length === part.byteOffset) {
      out[out.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + part.length);
    } else if (part.length > 0) {
      out.push(part);
    }
  }
  assert(out.length <= parts.length, 'merging never adds chunks');
  return out;
}
