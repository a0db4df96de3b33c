// The write schedule of the kill -9 crash test, shared by the child that writes it and the parent
// that checks it: batch k of seed s is a fixed list of disjoint block writes, and every block's
// content is derived from (seed, batch, write, block), so the parent recomputes what was written.

import { Prng } from '../src/engine/device/prng.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';

export const crashVolumeName = 'crashvol';
export const crashVolumeBytes = 16 * 1024 * 1024;
export const crashPoolBytes = 128 * 1024 * 1024;
/** Writes per batch are at most this; a batch is followed by one flush. */
export const crashBatchWritesMax = 16;
export const crashWriteBlocksMax = 8;
/** Every this many batches the child takes a snapshot, keeping at most `crashSnapshotsKept`. */
export const crashSnapshotEveryBatches = 7;
export const crashSnapshotsKept = 2;

export interface ScheduledWrite { blockNumber: number; lengthBlocks: number; writeIndex: number }

export function batchWrites(seed: number, batch: number): ScheduledWrite[] {
  const p = new Prng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(batch + 1, 0x85ebca77)) >>> 0);
  const sizeBlocks = crashVolumeBytes / BLOCK_SIZE_BYTES;
  const taken = new Set<number>();
  const out: ScheduledWrite[] = [];
  const count = p.int(1, crashBatchWritesMax);
  for (let i = 0; i < count; i++) {
    const lengthBlocks = p.int(1, crashWriteBlocksMax);
    // Half the writes land in a small hot area so that blocks are overwritten across batches.
    const hi = p.chance(0.5) ? 256 : sizeBlocks;
    const blockNumber = p.int(0, hi - lengthBlocks);
    let overlaps = false;
    for (let b = blockNumber; b < blockNumber + lengthBlocks; b++) if (taken.has(b)) overlaps = true;
    if (overlaps) continue; // writes in flight together must be disjoint: their order is undefined
    for (let b = blockNumber; b < blockNumber + lengthBlocks; b++) taken.add(b);
    out.push({ blockNumber, lengthBlocks, writeIndex: i });
  }
  return out;
}

/** Content of one block of one scheduled write; starts with a readable header for debugging. */
export function blockContent(seed: number, batch: number, writeIndex: number, blockIndex: number): Buffer {
  const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
  new Prng((seed ^ Math.imul(batch, 0x27d4eb2d) ^ Math.imul(writeIndex + 1, 0x165667b1) ^ Math.imul(blockIndex + 7, 0xd3a2646c)) >>> 0).fill(buf);
  buf.writeUInt32LE(seed >>> 0, 0);
  buf.writeUInt32LE(batch, 4);
  buf.writeUInt32LE(writeIndex, 8);
  buf.writeUInt32LE(blockIndex, 12);
  return buf;
}

export function writeData(seed: number, batch: number, w: ScheduledWrite): Buffer {
  return Buffer.concat(Array.from({ length: w.lengthBlocks }, (_, i) => blockContent(seed, batch, w.writeIndex, i)));
}
