// The blocks the cluster simulator writes: content = f(volume, block, version), self-describing and
// checksummed, so any 4 KiB read says which write it came from (or that it is zero, or garbage).
import { crc32 } from 'node:zlib';
import { BLOCK_SIZE_BYTES } from '../../src/engine/index.js';

const MAGIC = 0x4d495343; // "CSIM" little-endian
const HEADER_BYTES = 20;

export type Decoded =
  | { kind: 'zero' }
  | { kind: 'write'; volTag: number; block: number; version: number }
  | { kind: 'garbage'; why: string };

/** A 32-bit tag of a volume name (only to tell volumes' blocks apart). */
export function volumeTag(name: string): number { return crc32(Buffer.from(name, 'utf8')) >>> 0; }

/** Block `block` of volume `name` as written by version `version` (≥ 1). */
export function blockContent(name: string, block: number, version: number): Buffer {
  const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
  const tag = volumeTag(name);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(tag, 8);
  buf.writeUInt32LE(block, 12);
  buf.writeUInt32LE(version, 16);
  // A filler that differs per (volume, block, version), so a block misplaced or half-written shows.
  let x = (tag ^ Math.imul(block + 1, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b)) >>> 0;
  for (let i = HEADER_BYTES; i < BLOCK_SIZE_BYTES; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, i);
  }
  buf.writeUInt32LE(crc32(buf.subarray(8)) >>> 0, 4);
  return buf;
}

export function decodeBlock(buf: Buffer): Decoded {
  if (buf.length !== BLOCK_SIZE_BYTES) return { kind: 'garbage', why: `length ${buf.length}` };
  if (buf.every((b) => b === 0)) return { kind: 'zero' };
  if (buf.readUInt32LE(0) !== MAGIC) return { kind: 'garbage', why: 'no magic' };
  if (buf.readUInt32LE(4) !== (crc32(buf.subarray(8)) >>> 0)) return { kind: 'garbage', why: 'checksum mismatch (torn or corrupt)' };
  return { kind: 'write', volTag: buf.readUInt32LE(8), block: buf.readUInt32LE(12), version: buf.readUInt32LE(16) };
}

/** "v7", "zero", or what is wrong, for a block read back. */
export function describeBlock(buf: Buffer): string {
  const d = decodeBlock(buf);
  if (d.kind === 'zero') return 'zero';
  if (d.kind === 'garbage') return `garbage (${d.why})`;
  return `v${d.version} (tag ${d.volTag.toString(16)} block ${d.block})`;
}
