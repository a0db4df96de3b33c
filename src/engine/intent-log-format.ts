// The intent log's on-disk blocks: a 64-byte header (magic, crc32c of the whole block, sequence
// number, the first sequence number of the flush that wrote it, whether it ends that flush, the pool's
// uuid) and records of mapping changes, each whole inside one block. A flush that carries data inline
// (deferred-data.ts) writes its blocks in format 2, one of them holding the inline index: a record of
// volume 0 mapping page positions [0, n) to data blocks; its n pages follow the flush's last block.
// Layout in ARCHITECTURE.md, "Intent log". Encoding is checked before write, decoding returns null for anything not a whole,
// valid block of this pool at this place.
import { crc32c } from '@node-rs/crc32';
import {
  BLOCK_SIZE_BYTES, EXTENT_BLOCKS_MAX, LOG_ENTRY_FIXED_BYTES, LOG_HEADER_BYTES, LOG_MAGIC, LOG_RECORD_FIXED_BYTES,
} from './constants.js';
import { getU64, setU64, viewOf, type LeafEntry } from './format.js';
import { assert, fail } from './errors.js';
import { isOneBitApart, singleBitFlipOf } from './crc-syndrome.js';

const LOG_FORMAT = 1;
/** Blocks of a flush with inline pages: a reader that knows only format 1 stops there, never misreads pages. */
const LOG_FORMAT_INLINE = 2;
/** The volume id of the inline index record (volume ids start at 1). */
export const INLINE_INDEX_VOLUME = 0;
const FLAG_FLUSH_END = 1;
const OFFSET_MAGIC = 0, OFFSET_CRC = 4, OFFSET_FORMAT = 8, OFFSET_FLAGS = 10, OFFSET_RECORDS = 12;
const OFFSET_SEQ = 16, OFFSET_FIRST_SEQ = 24, OFFSET_UUID = 32, OFFSET_USED = 48;

/** One mapping change: [startLba, endLba) of a volume now maps to `entries` (holes between them). */
export interface LogRecord {
  volumeId: number;
  /** The transaction the change was made in (the generation whose commit will contain it). */
  txn: number;
  startLba: number;
  endLba: number;
  entries: LeafEntry[];
}

/** A decoded log block. */
export interface LogBlock {
  seq: number;
  /** Sequence number of the first block of the flush that wrote this one. */
  firstSeq: number;
  /** The last block of its flush. */
  flushEnd: boolean;
  records: LogRecord[];
}

export function uuidBytes(poolUuid: string): Buffer {
  const bytes = Buffer.from(poolUuid.replace(/-/g, ''), 'hex');
  assert(bytes.length === 16, 'a pool uuid is 16 bytes');
  return bytes;
}

/** Bytes `entry` takes in a record. */
export function entryBytes(entry: LeafEntry): number {
  assert(entry.lengthBlocks > 0 && entry.lengthBlocks <= EXTENT_BLOCKS_MAX, 'a logged extent is one leaf extent');
  return LOG_ENTRY_FIXED_BYTES + 4 * entry.lengthBlocks;
}

/** What a reset block is compared with. */
const EMPTY_BLOCK = Buffer.alloc(BLOCK_SIZE_BYTES);

/**
 * A block being filled with records; its header is written when a flush seals it. Records are
 * appended at the mapping switch, so their order is the order the changes were made in.
 */
export class OpenLogBlock {
  readonly buf = Buffer.alloc(BLOCK_SIZE_BYTES);
  /** One view for the block's life: appends run on every write's mapping switch. */
  private readonly view = viewOf(this.buf);
  used = LOG_HEADER_BYTES;
  records = 0;

  /** Empties the block for another round, as a new one is (zeros past the header: no old record's bytes reach the disk again). */
  reset(): void {
    this.buf.fill(0);
    this.used = LOG_HEADER_BYTES;
    this.records = 0;
    assert(this.buf.equals(EMPTY_BLOCK), 'a reset block holds nothing');
  }

  /** Room for a record with `entries` of these sizes? */
  fits(recordBytes: number): boolean {
    assert(recordBytes >= LOG_RECORD_FIXED_BYTES, 'a record has its fixed part');
    return this.used + recordBytes <= BLOCK_SIZE_BYTES;
  }

  /** Appends the record of [startLba, endLba) -> entries[from, to); the caller checked it fits. */
  append(volumeId: number, txn: number, startLba: number, endLba: number, entries: readonly LeafEntry[], from: number, to: number): void {
    assert(startLba >= 0 && startLba < endLba && from <= to && to - from <= 0xffff, 'a record of a forward range');
    const view = this.view;
    let at = this.used;
    setU64(view, at, volumeId); setU64(view, at + 8, txn); setU64(view, at + 16, startLba); setU64(view, at + 24, endLba);
    view.setUint16(at + 32, to - from, true);
    at += LOG_RECORD_FIXED_BYTES;
    for (let i = from; i < to; i++) {
      const e = entries[i]!;
      if (!(e.lba >= startLba && e.lba + e.lengthBlocks <= endLba)) fail(`logged extent [${e.lba}, ${e.lba + e.lengthBlocks}) outside its record [${startLba}, ${endLba})`);
      setU64(view, at, e.lba); setU64(view, at + 8, e.pba);
      view.setUint16(at + 16, e.lengthBlocks, true);
      at += LOG_ENTRY_FIXED_BYTES;
      for (let k = 0; k < e.lengthBlocks; k++, at += 4) view.setUint32(at, e.crcs[k]!, true);
    }
    if (at > BLOCK_SIZE_BYTES) fail(`a log record overran its block (${at} bytes)`);
    this.used = at;
    this.records++;
  }

  /** Writes the header: the block is `seq` of a flush that began at `firstSeq`. */
  seal(seq: number, firstSeq: number, flushEnd: boolean, uuid: Buffer, format: 'plain' | 'inline'): Buffer {
    assert(firstSeq <= seq && this.records <= 0xffff && uuid.length === 16, 'a sealed block of its flush');
    const buf = this.buf, view = this.view;
    buf.writeUInt32LE(LOG_MAGIC, OFFSET_MAGIC);
    buf.writeUInt16LE(format === 'inline' ? LOG_FORMAT_INLINE : LOG_FORMAT, OFFSET_FORMAT);
    buf.writeUInt16LE(flushEnd ? FLAG_FLUSH_END : 0, OFFSET_FLAGS);
    buf.writeUInt16LE(this.records, OFFSET_RECORDS);
    setU64(view, OFFSET_SEQ, seq);
    setU64(view, OFFSET_FIRST_SEQ, firstSeq);
    uuid.copy(buf, OFFSET_UUID);
    buf.writeUInt32LE(this.used, OFFSET_USED);
    buf.writeUInt32LE(0, OFFSET_CRC);
    buf.writeUInt32LE(crc32c(buf), OFFSET_CRC);
    return buf;
  }
}

/** Bytes the record of `entries[from, to)` takes. */
export function recordBytes(entries: readonly LeafEntry[], from: number, to: number): number {
  assert(from <= to && to <= entries.length, 'a slice of the entries');
  let bytes = LOG_RECORD_FIXED_BYTES;
  for (let i = from; i < to; i++) bytes += entryBytes(entries[i]!);
  return bytes;
}

/**
 * The block read at region position `position` of a region of `regionBlocks`, or null when it is not a
 * whole, valid log block of this pool written for that position (never written, torn, from another
 * pool, or damaged). A block that passes its checksum but breaks the layout is damage too.
 */
export function decodeLogBlock(buf: Buffer, position: number, regionBlocks: number, uuid: Buffer): LogBlock | null {
  assert(buf.length === BLOCK_SIZE_BYTES && position >= 0 && position < regionBlocks, 'one block of the region');
  const format = buf.readUInt16LE(OFFSET_FORMAT);
  if (buf.readUInt32LE(OFFSET_MAGIC) !== LOG_MAGIC || (format !== LOG_FORMAT && format !== LOG_FORMAT_INLINE)) return null;
  const stored = buf.readUInt32LE(OFFSET_CRC);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, OFFSET_CRC);
  if (crc32c(copy) !== stored || !buf.subarray(OFFSET_UUID, OFFSET_UUID + 16).equals(uuid)) return null;
  const view = viewOf(buf);
  const seq = getU64(view, OFFSET_SEQ), firstSeq = getU64(view, OFFSET_FIRST_SEQ);
  const used = buf.readUInt32LE(OFFSET_USED), count = buf.readUInt16LE(OFFSET_RECORDS);
  if (seq % regionBlocks !== position || firstSeq > seq || used < LOG_HEADER_BYTES || used > BLOCK_SIZE_BYTES) return null;
  const records: LogRecord[] = [];
  let at = LOG_HEADER_BYTES;
  for (let r = 0; r < count; r++) {
    if (at + LOG_RECORD_FIXED_BYTES > used) return null;
    const rec: LogRecord = {
      volumeId: getU64(view, at), txn: getU64(view, at + 8), startLba: getU64(view, at + 16), endLba: getU64(view, at + 24), entries: [],
    };
    const n = view.getUint16(at + 32, true);
    at += LOG_RECORD_FIXED_BYTES;
    if (!(rec.startLba < rec.endLba) || (rec.volumeId === INLINE_INDEX_VOLUME && format !== LOG_FORMAT_INLINE)) return null;
    let cursor = rec.startLba;
    for (let i = 0; i < n; i++) {
      if (at + LOG_ENTRY_FIXED_BYTES > used) return null;
      const lba = getU64(view, at), pba = getU64(view, at + 8), lengthBlocks = view.getUint16(at + 16, true);
      at += LOG_ENTRY_FIXED_BYTES;
      // Extents sorted, disjoint and inside the record, each one leaf extent long.
      if (lengthBlocks < 1 || lengthBlocks > EXTENT_BLOCKS_MAX || lba < cursor || lba + lengthBlocks > rec.endLba || at + 4 * lengthBlocks > used) return null;
      const crcs = new Uint32Array(lengthBlocks);
      for (let k = 0; k < lengthBlocks; k++, at += 4) crcs[k] = view.getUint32(at, true);
      rec.entries.push({ lba, pba, lengthBlocks, crcs });
      cursor = lba + lengthBlocks;
    }
    records.push(rec);
  }
  if (at !== used) return null;
  return { seq, firstSeq, flushEnd: (buf.readUInt16LE(OFFSET_FLAGS) & FLAG_FLUSH_END) !== 0, records };
}

/**
 * A block that fails to decode only because one of its bits flipped after it was written whole: the
 * block as it was written, or null. Replay reports such a block as damage (it was written, so the
 * log does not simply end there); it never applies what this returns.
 */
export function decodeOneBitDamagedLogBlock(buf: Buffer, position: number, regionBlocks: number, uuid: Buffer): LogBlock | null {
  assert(buf.length === BLOCK_SIZE_BYTES, 'one block of the region');
  const stored = buf.readUInt32LE(OFFSET_CRC);
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(0, OFFSET_CRC);
  const computed = crc32c(copy);
  if (computed === stored) return null; // the checksum holds: not damaged, just not a block of this log
  if (isOneBitApart(stored, computed)) {
    copy.writeUInt32LE(computed, OFFSET_CRC); // the flip is in the checksum field itself
  } else {
    const bit = singleBitFlipOf(stored, computed);
    const byte = bit === null ? -1 : bit >>> 3;
    // The field is zero in `copy`: a syndrome pointing into it is a coincidence of some other content.
    if (bit === null || (byte >= OFFSET_CRC && byte < OFFSET_CRC + 4)) return null;
    copy[byte] = copy[byte]! ^ (1 << (bit & 7));
    copy.writeUInt32LE(stored, OFFSET_CRC);
  }
  return decodeLogBlock(copy, position, regionBlocks, uuid);
}
