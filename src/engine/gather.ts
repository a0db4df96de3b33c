// Write payloads as a gather list. A network server receives a large write as a run of socket chunks;
// taking them as they are (instead of concatenating them into one buffer) saves a copy of every byte.
// The engine works on 4 KiB block views of the list and hands the device iovecs, rejoined wherever
// neighbouring views sit side by side in one chunk.
import { BLOCK_SIZE_BYTES } from './constants.js';
import { assert } from './errors.js';

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

/**
 * One view per block of a block-aligned payload. A block that straddles two chunks is the only
 * thing copied.
 */
export function blockViews(data: WriteData): Buffer[] {
  const parts = Buffer.isBuffer(data) ? [data] : data;
  const views: Buffer[] = [];
  let partial: Buffer | null = null;
  let partialFill = 0;
  for (const part of parts) {
    let at = 0;
    if (partial) {
      const n = Math.min(BLOCK_SIZE_BYTES - partialFill, part.length);
      part.copy(partial, partialFill, 0, n);
      partialFill += n;
      at = n;
      if (partialFill < BLOCK_SIZE_BYTES) continue;
      views.push(partial);
      partial = null;
    }
    for (; at + BLOCK_SIZE_BYTES <= part.length; at += BLOCK_SIZE_BYTES) views.push(part.subarray(at, at + BLOCK_SIZE_BYTES));
    if (at < part.length) {
      partial = Buffer.allocUnsafe(BLOCK_SIZE_BYTES);
      partialFill = part.copy(partial, 0, at);
    }
  }
  assert(partial === null, 'payload is whole blocks');
  return views;
}

/** views[from, to) as few buffers as possible: views adjacent in memory become one. */
export function joinViews(views: readonly Buffer[], from: number, to: number): Buffer[] {
  const out: Buffer[] = [];
  let start = views[from]!;
  let length = start.length;
  for (let i = from + 1; i < to; i++) {
    const v = views[i]!;
    if (v.buffer === start.buffer && v.byteOffset === start.byteOffset + length) {
      length += v.length;
    } else {
      out.push(length === start.length ? start : Buffer.from(start.buffer, start.byteOffset, length));
      start = v;
      length = v.length;
    }
  }
  out.push(length === start.length ? start : Buffer.from(start.buffer, start.byteOffset, length));
  return out;
}
