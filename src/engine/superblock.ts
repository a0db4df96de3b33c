// The two superblock slots (blocks 0 and 1). The valid slot with the highest generation is the pool's
// state; a commit writes the slot the previous commit did not use, so a torn write loses nothing.
import { crc32c } from '@node-rs/crc32';
import { BLOCK_SIZE_BYTES, SUPERBLOCK_MAGIC, FORMAT_VERSION } from './constants.js';
import { getU64, setU64, viewOf } from './format.js';
import type { Device } from './device/device.js';
import { IoError, PoolCorrupt } from './errors.js';

export interface Superblock {
  generation: number;
  totalBlocks: number;
  spaceRoot: number;
  catalogRoot: number;
  /** Catalog slots ever used (records live in slots [0, catalogSlots)). */
  catalogSlots: number;
  nextId: number;
  /** Random identity of the pool, fixed at create. */
  poolUuid: string;
}

const CRC_SPAN_BYTES = 512;

export function encodeSuperblock(sb: Superblock): Buffer {
  const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
  buf.writeUInt32LE(SUPERBLOCK_MAGIC, 0);
  buf.writeUInt32LE(FORMAT_VERSION, 4);
  buf.writeUInt32LE(BLOCK_SIZE_BYTES, 12);
  const view = viewOf(buf);
  setU64(view, 16, sb.generation);
  setU64(view, 24, sb.totalBlocks);
  setU64(view, 32, sb.spaceRoot);
  setU64(view, 40, sb.catalogRoot);
  setU64(view, 48, sb.catalogSlots);
  setU64(view, 56, sb.nextId);
  Buffer.from(sb.poolUuid.replace(/-/g, ''), 'hex').copy(buf, 64);
  buf.writeUInt32LE(crc32c(buf.subarray(0, CRC_SPAN_BYTES)), 8);
  return buf;
}

export function decodeSuperblock(buf: Buffer): Superblock | null {
  if (buf.readUInt32LE(0) !== SUPERBLOCK_MAGIC) return null;
  const stored = buf.readUInt32LE(8);
  const copy = Buffer.from(buf.subarray(0, CRC_SPAN_BYTES));
  copy.writeUInt32LE(0, 8);
  if (crc32c(copy) !== stored) return null;
  if (buf.readUInt32LE(4) !== FORMAT_VERSION || buf.readUInt32LE(12) !== BLOCK_SIZE_BYTES) return null;
  const hex = buf.subarray(64, 80).toString('hex');
  const view = viewOf(buf);
  return {
    generation: getU64(view, 16),
    totalBlocks: getU64(view, 24),
    spaceRoot: getU64(view, 32),
    catalogRoot: getU64(view, 40),
    catalogSlots: getU64(view, 48),
    nextId: getU64(view, 56),
    poolUuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
  };
}

/** Reads both slots; returns the valid one with the highest generation. */
export async function readSuperblock(device: Device): Promise<Superblock> {
  let best: Superblock | null = null;
  let readError: Error | null = null;
  for (const slot of [0, 1]) {
    const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
    try { await device.read(slot, buf); } catch (err) { readError = err as Error; continue; }
    const sb = decodeSuperblock(buf);
    if (sb && (!best || sb.generation > best.generation)) best = sb;
  }
  // A slot we could not read may hold the newest state: never open an older one in its place.
  if (readError) throw new IoError(`cannot read the superblocks: ${readError.message}`);
  if (!best) throw new PoolCorrupt('no valid superblock: not a Cairn pool, or both superblocks are damaged');
  return best;
}
