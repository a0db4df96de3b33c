// Encoding and decoding of every metadata block: the common header (magic, type, crc32c, own block
// number, generation) and the payload of each type. Checked right before a write and right after a read.
import {
  BLOCK_SIZE_BYTES, META_HEADER_BYTES, META_MAGIC, META_PAYLOAD_BYTES, LEAF_ENTRY_FIXED_BYTES, EXTENT_BLOCKS_MAX,
  BRANCH_FANOUT_MAX, RADIX_FANOUT, REFCOUNTS_PER_PAGE, CATALOG_RECORDS_PER_PAGE, CATALOG_RECORD_BYTES,
} from './constants.js';
import { assert, fail, ChecksumError } from './errors.js';
import { blockChecksum } from './checksum.js';
import { LeafExtents } from './leaf-extents.js';

export const enum MetaType { Leaf = 1, Branch = 2, Radix = 3, CountPage = 4, CatalogPage = 5 }

/** One mapping: `lengthBlocks` logical blocks from `lba` live at physical blocks from `pba`. */
export interface LeafEntry { lba: number; pba: number; lengthBlocks: number; crcs: Uint32Array }

/**
 * What every metadata object carries. `used`: touched since the cache's clock hand passed (second
 * chance at eviction). `dirty`: in the open transaction's dirty set (a flag: a Set lookup per tree
 * level and write showed in profiles). Objects are made with every field, in the order of the
 * `...Of` functions below, so each type keeps one hidden class: fields added later, or in another
 * order, gave tree nodes half a dozen shapes and every access to them V8's slow, megamorphic path.
 */
interface MetaCommon { block: number; txn: number; used: boolean; dirty: boolean }
export interface LeafNode extends MetaCommon { type: MetaType.Leaf; ext: LeafExtents }
export interface BranchNode extends MetaCommon { type: MetaType.Branch; keys: number[]; children: number[] }
export interface RadixNode extends MetaCommon { type: MetaType.Radix; ptrs: Float64Array; free: Float64Array }
export interface CountPage extends MetaCommon { type: MetaType.CountPage; counts: Uint32Array }
export interface CatalogPage extends MetaCommon { type: MetaType.CatalogPage; records: Buffer }
export type TreeNode = LeafNode | BranchNode;
export type MetaObject = TreeNode | RadixNode | CountPage | CatalogPage;

export function leafOf(block: number, txn: number, ext: LeafExtents): LeafNode {
  return { type: MetaType.Leaf, block, txn, used: false, dirty: false, ext };
}
export function branchOf(block: number, txn: number, keys: number[], children: number[]): BranchNode {
  return { type: MetaType.Branch, block, txn, used: false, dirty: false, keys, children };
}
export function radixOf(block: number, txn: number, ptrs: Float64Array, free: Float64Array): RadixNode {
  return { type: MetaType.Radix, block, txn, used: false, dirty: false, ptrs, free };
}
export function countPageOf(block: number, txn: number, counts: Uint32Array): CountPage {
  return { type: MetaType.CountPage, block, txn, used: false, dirty: false, counts };
}
export function catalogPageOf(block: number, txn: number, records: Buffer): CatalogPage {
  return { type: MetaType.CatalogPage, block, txn, used: false, dirty: false, records };
}

export function leafEntryBytes(entry: LeafEntry): number { return LEAF_ENTRY_FIXED_BYTES + 4 * entry.lengthBlocks; }

// Little-endian u64 fields (below 2^53) through a DataView: Buffer's writeUInt32LE/readUInt32LE check
// their arguments on every call, which made encoding a leaf of 145 entries cost ~25 µs, under the
// commit's lock for every dirty leaf.
export function setU64(view: DataView, off: number, value: number): void {
  const low = value >>> 0; // ToUint32 is the value modulo 2^32, without a floating-point remainder
  view.setUint32(off, low, true);
  view.setUint32(off + 4, (value - low) / 0x100000000, true);
}
export function getU64(view: DataView, off: number): number {
  return view.getUint32(off, true) + view.getUint32(off + 4, true) * 0x100000000;
}
export function viewOf(buf: Buffer): DataView { return new DataView(buf.buffer, buf.byteOffset, buf.length); }

function payloadCount(obj: MetaObject): number {
  switch (obj.type) {
    case MetaType.Leaf: return obj.ext.count;
    case MetaType.Branch: return obj.children.length;
    default: return 0;
  }
}

/** Serializes an object into a fresh block with header and checksum; asserts its invariants first. */
export function encodeMeta(obj: MetaObject): Buffer {
  return encodeMetaInto(obj, Buffer.allocUnsafe(BLOCK_SIZE_BYTES));
}

/** encodeMeta into `buf` (one block, any previous content), so a commit can fill a run's buffer. */
export function encodeMetaInto(obj: MetaObject, buf: Buffer): Buffer {
  if (buf.length !== BLOCK_SIZE_BYTES) fail(`metadata encoded into ${buf.length} bytes`);
  buf.fill(0);
  const view = viewOf(buf);
  buf.writeUInt32LE(META_MAGIC, 0);
  buf.writeUInt8(obj.type, 4);
  buf.writeUInt16LE(payloadCount(obj), 6);
  setU64(view, 16, obj.block);
  setU64(view, 24, obj.txn);
  let off = META_HEADER_BYTES;
  switch (obj.type) {
    case MetaType.Leaf: {
      const x = obj.ext;
      assert(x.bytes <= META_PAYLOAD_BYTES, 'leaf overflows its block');
      let prevEnd = -1, c = 0;
      for (let i = 0; i < x.count; i++) {
        const lba = x.lbas[i]!, len = x.lens[i]!;
        assert(lba >= prevEnd && len > 0 && x.crcAt[i] === c, 'leaf extents sorted, non-overlapping, checksums in order');
        prevEnd = lba + len;
        setU64(view, off, lba); setU64(view, off + 8, x.pbas[i]!); view.setUint32(off + 16, len, true);
        off += LEAF_ENTRY_FIXED_BYTES;
        for (let j = 0; j < len; j++, off += 4) view.setUint32(off, x.crcs[c++]!, true);
      }
      assert(c === x.crcUsed, 'leaf checksum count');
      break;
    }
    case MetaType.Branch: {
      assert(obj.children.length > 0 && obj.children.length <= BRANCH_FANOUT_MAX, 'branch fill bounds');
      for (let i = 0; i < obj.children.length; i++, off += 16) {
        assert(i === 0 || obj.keys[i]! > obj.keys[i - 1]!, 'branch keys sorted');
        assert(obj.children[i]! >= 2, 'branch child is a real block');
        setU64(view, off, obj.keys[i]!); setU64(view, off + 8, obj.children[i]!);
      }
      break;
    }
    case MetaType.Radix:
      for (let i = 0; i < RADIX_FANOUT; i++, off += 16) { setU64(view, off, obj.ptrs[i]!); setU64(view, off + 8, obj.free[i]!); }
      break;
    case MetaType.CountPage:
      Buffer.from(obj.counts.buffer, obj.counts.byteOffset, REFCOUNTS_PER_PAGE * 4).copy(buf, off);
      break;
    case MetaType.CatalogPage:
      obj.records.copy(buf, off, 0, CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES);
      break;
  }
  buf.writeUInt32LE(blockChecksum(buf), 8);
  return buf;
}

/** Verifies header and checksum of a block read from `block`, then decodes it. */
export function decodeMeta(buf: Buffer, block: number, expectType?: MetaType): MetaObject {
  const view = viewOf(buf);
  const stored = buf.readUInt32LE(8);
  buf.writeUInt32LE(0, 8);
  const actual = blockChecksum(buf);
  buf.writeUInt32LE(stored, 8);
  if (buf.readUInt32LE(0) !== META_MAGIC || stored !== actual || getU64(view, 16) !== block) {
    throw new ChecksumError(block, 'metadata block');
  }
  const type = buf.readUInt8(4) as MetaType;
  if (expectType !== undefined && type !== expectType && !(expectType === MetaType.Leaf && type === MetaType.Branch)) {
    throw new ChecksumError(block, `metadata block (type ${type}, expected ${expectType})`);
  }
  const txn = getU64(view, 24);
  const count = buf.readUInt16LE(6);
  let off = META_HEADER_BYTES;
  switch (type) {
    case MetaType.Leaf: {
      const x = new LeafExtents();
      let c = 0, prevEnd = -1;
      if (count > x.lbas.length) throw new ChecksumError(block, `leaf of ${count} extents`);
      for (let i = 0; i < count; i++) {
        const lba = getU64(view, off), len = view.getUint32(off + 16, true);
        // A block whose checksum matches can still hold nonsense (a bug that wrote it, or another
        // format): refuse it here rather than let the tree index past its arrays.
        if (len < 1 || len > EXTENT_BLOCKS_MAX || lba < prevEnd || off + LEAF_ENTRY_FIXED_BYTES + 4 * len > META_HEADER_BYTES + META_PAYLOAD_BYTES) {
          throw new ChecksumError(block, 'leaf extent out of bounds');
        }
        x.lbas[i] = lba; x.pbas[i] = getU64(view, off + 8); x.lens[i] = len; x.crcAt[i] = c;
        prevEnd = lba + len;
        off += LEAF_ENTRY_FIXED_BYTES;
        for (let j = 0; j < len; j++, off += 4) x.crcs[c++] = view.getUint32(off, true);
      }
      x.count = count;
      x.crcUsed = c;
      return leafOf(block, txn, x);
    }
    case MetaType.Branch: {
      const keys: number[] = [], children: number[] = [];
      for (let i = 0; i < count; i++, off += 16) { keys.push(getU64(view, off)); children.push(getU64(view, off + 8)); }
      return branchOf(block, txn, keys, children);
    }
    case MetaType.Radix: {
      const ptrs = new Float64Array(RADIX_FANOUT), free = new Float64Array(RADIX_FANOUT);
      for (let i = 0; i < RADIX_FANOUT; i++, off += 16) { ptrs[i] = getU64(view, off); free[i] = getU64(view, off + 8); }
      return radixOf(block, txn, ptrs, free);
    }
    case MetaType.CountPage: {
      const counts = new Uint32Array(REFCOUNTS_PER_PAGE);
      for (let i = 0; i < REFCOUNTS_PER_PAGE; i++, off += 4) counts[i] = view.getUint32(off, true);
      return countPageOf(block, txn, counts);
    }
    case MetaType.CatalogPage: {
      const records = Buffer.alloc(CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES);
      buf.copy(records, 0, off, off + records.length);
      return catalogPageOf(block, txn, records);
    }
    default:
      throw new ChecksumError(block, `metadata block of unknown type ${type}`);
  }
}
