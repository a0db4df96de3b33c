// Encoding and decoding of every metadata block: the common header (magic, type, crc32c, own block
// number, generation) and the payload of each type. Checked right before a write and right after a read.
import {
  BLOCK_SIZE_BYTES, META_HEADER_BYTES, META_MAGIC, META_PAYLOAD_BYTES, LEAF_ENTRY_FIXED_BYTES, EXTENT_BLOCKS_MAX,
  BRANCH_FANOUT_MAX, RADIX_FANOUT, REFCOUNTS_PER_PAGE, CATALOG_RECORDS_PER_PAGE, CATALOG_RECORD_BYTES, FIRST_FREE_BLOCK,
  KEY_ID_MAX, POOL_BLOCKS_MAX, VOLUME_BLOCKS_MAX, VOLUME_BYTES_MAX, NAME_BYTES_MAX, CATALOG_RECORDS_MAX, SETTING_BYTES_MAX, SETTING_KEY_BYTES_MAX,
} from './constants.js';
import {
  assert, fail, MetaBadChecksum, MetaBadMagic, MetaBadStructure, MetaWrongLocation, MetaWrongType,
} from './errors.js';
import { blockChecksum } from './checksum.js';
import { LeafExtents, LEAF_EXTENTS_MAX } from './leaf-extents.js';

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
  assert(txn >= 0 && ext.count >= 0, 'a leaf of a generation');
  return { type: MetaType.Leaf, block, txn, used: false, dirty: false, ext };
}
export function branchOf(block: number, txn: number, keys: number[], children: number[]): BranchNode {
  assert(keys.length === children.length, 'a key per child');
  return { type: MetaType.Branch, block, txn, used: false, dirty: false, keys, children };
}
export function radixOf(block: number, txn: number, ptrs: Float64Array, free: Float64Array): RadixNode {
  assert(ptrs.length === RADIX_FANOUT && free.length === RADIX_FANOUT, 'a radix node of RADIX_FANOUT entries');
  return { type: MetaType.Radix, block, txn, used: false, dirty: false, ptrs, free };
}
export function countPageOf(block: number, txn: number, counts: Uint32Array): CountPage {
  assert(counts.length === REFCOUNTS_PER_PAGE, 'a count page of REFCOUNTS_PER_PAGE counts');
  return { type: MetaType.CountPage, block, txn, used: false, dirty: false, counts };
}
export function catalogPageOf(block: number, txn: number, records: Buffer): CatalogPage {
  assert(records.length === CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES, 'a catalog page of whole records');
  return { type: MetaType.CatalogPage, block, txn, used: false, dirty: false, records };
}

export function leafEntryBytes(entry: LeafEntry): number {
  if (!(entry.lengthBlocks > 0)) fail(`leaf entry of ${entry.lengthBlocks} blocks`);
  return LEAF_ENTRY_FIXED_BYTES + 4 * entry.lengthBlocks;
}

// Little-endian u64 fields (below 2^53) through a DataView: Buffer's writeUInt32LE/readUInt32LE check
// their arguments on every call, which made encoding a leaf of 145 entries cost ~25 µs, under the
// commit's lock for every dirty leaf.
export function setU64(view: DataView, off: number, value: number): void {
  // Only exact, non-negative integers survive the split into two u32 (block numbers, lbas, sizes, ids).
  if (!(value >= 0 && value <= Number.MAX_SAFE_INTEGER)) fail(`u64 field at ${off} set to ${value}`);
  const low = value >>> 0; // ToUint32 is the value modulo 2^32, without a floating-point remainder
  view.setUint32(off, low, true);
  view.setUint32(off + 4, (value - low) / 0x100000000, true);
}
export function getU64(view: DataView, off: number): number {
  return view.getUint32(off, true) + view.getUint32(off + 4, true) * 0x100000000;
}
export function viewOf(buf: Buffer): DataView { return new DataView(buf.buffer, buf.byteOffset, buf.length); }

function payloadCount(obj: MetaObject): number {
  const count = obj.type === MetaType.Leaf ? obj.ext.count : obj.type === MetaType.Branch ? obj.children.length : 0;
  assert(count <= 0xffff, 'the entry count fits its u16 header field');
  return count;
}

/**
 * What a metadata block may refer to: block numbers below `totalBlocks` (the pool's size) and
 * generations up to `generationMax` (the newest commit: a block from a later one cannot be reachable).
 */
export interface MetaLimits { totalBlocks: number; generationMax: number }
/** Limits for a caller that knows no pool (tests encoding a block on its own). */
export const LIMITS_NONE: MetaLimits = { totalBlocks: POOL_BLOCKS_MAX, generationMax: Number.MAX_SAFE_INTEGER };

/** A rule of a block type that a block breaks, with what the rule wants and what the block holds. */
export interface Violation { rule: string; expected: string | number; found: string | number }

function violation(rule: string, expected: string | number, found: string | number): Violation {
  return { rule, expected, found };
}

/** Whether `block` may be pointed at by metadata: past the superblocks, inside the pool. */
function pointerOk(block: number, limits: MetaLimits): boolean {
  return block >= FIRST_FREE_BLOCK && block < limits.totalBlocks;
}

// ---- one validator per block type: run before every write (a failure is an engine bug) and after
// every read (a failure is damage on disk): dm-thin's dm_block_validator, prepare_for_write + check ----

/** A leaf: extents sorted and not overlapping, 1..EXTENT_BLOCKS_MAX blocks, inside the volume and the pool. */
function leafViolation(x: LeafExtents, limits: MetaLimits): Violation | null {
  if (x.bytes > META_PAYLOAD_BYTES) return violation('leaf fits its block', `<= ${META_PAYLOAD_BYTES} bytes`, x.bytes);
  let prevEnd = 0, c = 0;
  for (let i = 0; i < x.count; i++) {
    const lba = x.lbas[i]!, len = x.lens[i]!, pba = x.pbas[i]!;
    if (len < 1 || len > EXTENT_BLOCKS_MAX) return violation(`extent ${i} length`, `1..${EXTENT_BLOCKS_MAX} blocks`, len);
    if (lba < prevEnd) return violation(`extent ${i} sorted and not overlapping`, `lba >= ${prevEnd}`, lba);
    if (lba + len > VOLUME_BLOCKS_MAX) return violation(`extent ${i} inside a volume`, `end <= ${VOLUME_BLOCKS_MAX}`, lba + len);
    if (!pointerOk(pba, limits) || pba + len > limits.totalBlocks) {
      return violation(`extent ${i} inside the pool`, `blocks [${FIRST_FREE_BLOCK}, ${limits.totalBlocks})`, `[${pba}, ${pba + len})`);
    }
    if (x.crcAt[i] !== c) return violation(`extent ${i} checksums in order`, c, x.crcAt[i]!);
    prevEnd = lba + len;
    c += len;
  }
  if (c !== x.crcUsed) return violation('leaf checksum count', c, x.crcUsed);
  return null;
}

/** A branch: 1..BRANCH_FANOUT_MAX children, keys strictly increasing, children distinct blocks inside the pool, not itself. */
function branchViolation(block: number, keys: readonly number[], children: readonly number[], limits: MetaLimits): Violation | null {
  const n = children.length;
  if (n < 1 || n > BRANCH_FANOUT_MAX) return violation('branch fill', `1..${BRANCH_FANOUT_MAX} children`, n);
  if (keys.length !== n) return violation('a key per child', n, keys.length);
  for (let i = 0; i < n; i++) {
    const key = keys[i]!, child = children[i]!;
    if (i > 0 && !(key > keys[i - 1]!)) return violation(`key ${i} sorted`, `> ${keys[i - 1]!}`, key);
    if (key >= VOLUME_BLOCKS_MAX) return violation(`key ${i} inside a volume`, `< ${VOLUME_BLOCKS_MAX}`, key);
    if (!pointerOk(child, limits)) return violation(`child ${i} inside the pool`, `[${FIRST_FREE_BLOCK}, ${limits.totalBlocks})`, child);
    if (child === block) return violation(`child ${i} is another block`, `not ${block}`, child);
  }
  if (n > 1 && new Set(children).size !== n) return violation('children distinct', `${n} blocks`, `${new Set(children).size}`);
  return null;
}

/** A radix node: pointers 0 (absent) or inside the pool and not itself; free counts whole and bounded. */
function radixViolation(block: number, ptrs: Float64Array, free: Float64Array, limits: MetaLimits): Violation | null {
  // Free counts are records of the subtree: at most a whole pool's blocks (space map) or catalog slots.
  const freeMax = Math.max(limits.totalBlocks, CATALOG_RECORDS_MAX);
  for (let i = 0; i < RADIX_FANOUT; i++) {
    const ptr = ptrs[i]!, f = free[i]!;
    if (ptr !== 0 && (!pointerOk(ptr, limits) || ptr === block)) {
      return violation(`pointer ${i} inside the pool`, `0 or [${FIRST_FREE_BLOCK}, ${limits.totalBlocks}) but not ${block}`, ptr);
    }
    if (!(Number.isInteger(f) && f >= 0 && f <= freeMax)) return violation(`free count ${i}`, `0..${freeMax}`, f);
  }
  return null;
}

// The catalog record layout (catalog.ts encodeRecord): kind u8 at 0, flags u8 at 1, name length u16
// at 2, key slot u32 at 4 (format 5), root u64 at 16, size u64 at 24; an empty slot is all zeros. A setting (kind 4): key length u16
// at 2, value length u16 at 4, key and value from byte 8.
const RECORD_KIND_MAX = 4;
const RECORD_KIND_SETTING = 4;
const RECORD_FLAGS_KNOWN = 1;

/** A catalog page: every record of a known kind and flags, its name and size in bounds, its root inside the pool. */
function catalogPageViolation(records: Buffer, limits: MetaLimits): Violation | null {
  const view = viewOf(records);
  for (let i = 0; i < CATALOG_RECORDS_PER_PAGE; i++) {
    const off = i * CATALOG_RECORD_BYTES;
    const kind = records.readUInt8(off);
    if (kind === 0) continue;
    if (kind > RECORD_KIND_MAX) return violation(`record ${i} kind`, `0..${RECORD_KIND_MAX}`, kind);
    if (kind === RECORD_KIND_SETTING) {
      const keyBytes = records.readUInt16LE(off + 2), valueBytes = records.readUInt16LE(off + 4);
      if (keyBytes < 1 || keyBytes > SETTING_KEY_BYTES_MAX) return violation(`record ${i} setting key length`, `1..${SETTING_KEY_BYTES_MAX} bytes`, keyBytes);
      if (keyBytes + valueBytes > SETTING_BYTES_MAX) return violation(`record ${i} setting length`, `<= ${SETTING_BYTES_MAX} bytes`, keyBytes + valueBytes);
      continue;
    }
    const flags = records.readUInt8(off + 1);
    const keyId = records.readUInt32LE(off + 4);
    if (keyId > KEY_ID_MAX || (keyId !== 0 && kind === 3)) return violation(`record ${i} key slot`, `0..${KEY_ID_MAX} (0 for a dropped node)`, keyId);
    if ((flags & ~RECORD_FLAGS_KNOWN) !== 0) return violation(`record ${i} flags`, `within 0x${RECORD_FLAGS_KNOWN.toString(16)}`, flags);
    const nameBytes = records.readUInt16LE(off + 2);
    if (nameBytes > NAME_BYTES_MAX) return violation(`record ${i} name length`, `<= ${NAME_BYTES_MAX} bytes`, nameBytes);
    const root = getU64(view, off + 16);
    if (root !== 0 && !pointerOk(root, limits)) return violation(`record ${i} root inside the pool`, `0 or [${FIRST_FREE_BLOCK}, ${limits.totalBlocks})`, root);
    const sizeBytes = getU64(view, off + 24);
    if (sizeBytes > VOLUME_BYTES_MAX || sizeBytes % BLOCK_SIZE_BYTES !== 0) return violation(`record ${i} size`, `whole blocks <= ${VOLUME_BYTES_MAX} bytes`, sizeBytes);
  }
  return null;
}

/** The rule `obj` breaks, or null: the one validator of every block type, for both sides of the disk. */
export function metaViolation(obj: MetaObject, limits: MetaLimits): Violation | null {
  if (obj.txn > limits.generationMax) return violation('generation not after the newest commit', `<= ${limits.generationMax}`, obj.txn);
  switch (obj.type) {
    case MetaType.Leaf: return leafViolation(obj.ext, limits);
    case MetaType.Branch: return branchViolation(obj.block, obj.keys, obj.children, limits);
    case MetaType.Radix: return radixViolation(obj.block, obj.ptrs, obj.free, limits);
    case MetaType.CountPage: return null; // any u32 is a count; the checker compares counts with the trees
    case MetaType.CatalogPage: return catalogPageViolation(obj.records, limits);
  }
}

/** Serializes an object into a fresh block with header and checksum; asserts its invariants first. */
export function encodeMeta(obj: MetaObject, limits: MetaLimits = LIMITS_NONE): Buffer {
  return encodeMetaInto(obj, Buffer.allocUnsafe(BLOCK_SIZE_BYTES), limits);
}

/**
 * encodeMeta into `buf` (one block, any previous content), so a commit can fill a run's buffer. The
 * block's validator runs first: a block that breaks a rule of its type is an engine bug, never written.
 */
export function encodeMetaInto(obj: MetaObject, buf: Buffer, limits: MetaLimits = LIMITS_NONE): Buffer {
  if (buf.length !== BLOCK_SIZE_BYTES) fail(`metadata encoded into ${buf.length} bytes`);
  if (!pointerOk(obj.block, limits)) fail(`metadata block encoded for block ${obj.block}, outside [${FIRST_FREE_BLOCK}, ${limits.totalBlocks})`);
  const broken = metaViolation(obj, limits);
  if (broken) fail(`metadata block ${obj.block} of type ${obj.type} breaks "${broken.rule}": expected ${broken.expected}, found ${broken.found}`);
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
      let c = 0;
      for (let i = 0; i < x.count; i++) {
        const len = x.lens[i]!;
        setU64(view, off, x.lbas[i]!); setU64(view, off + 8, x.pbas[i]!); view.setUint32(off + 16, len, true);
        off += LEAF_ENTRY_FIXED_BYTES;
        for (let j = 0; j < len; j++, off += 4) view.setUint32(off, x.crcs[c++]!, true);
      }
      break;
    }
    case MetaType.Branch: {
      for (let i = 0; i < obj.children.length; i++, off += 16) { setU64(view, off, obj.keys[i]!); setU64(view, off + 8, obj.children[i]!); }
      break;
    }
    case MetaType.Radix:
      for (let i = 0; i < RADIX_FANOUT; i++, off += 16) { setU64(view, off, obj.ptrs[i]!); setU64(view, off + 8, obj.free[i]!); }
      break;
    case MetaType.CountPage:
      assert(obj.counts.length === REFCOUNTS_PER_PAGE, 'a count page holds REFCOUNTS_PER_PAGE counts');
      Buffer.from(obj.counts.buffer, obj.counts.byteOffset, REFCOUNTS_PER_PAGE * 4).copy(buf, off);
      break;
    case MetaType.CatalogPage:
      assert(obj.records.length >= CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES, 'a catalog page holds its records');
      obj.records.copy(buf, off, 0, CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES);
      break;
  }
  buf.writeUInt32LE(blockChecksum(buf), 8);
  return buf;
}

const TYPE_NAMES = ['', 'leaf', 'branch', 'radix node', 'count page', 'catalog page'];
function typeName(type: MetaType): string { return TYPE_NAMES[type] ?? `type ${type}`; }

/**
 * Verifies a block read from `block` and decodes it: header (magic, checksum, own block number, type),
 * then the payload, then the validator of its type. Each failure is its own typed error (errors.ts
 * MetaCorrupt) naming the block and what was expected and found. `expectType` Leaf accepts a branch
 * (a tree pointer may lead to either).
 */
export function decodeMeta(buf: Buffer, block: number, expectType?: MetaType, limits: MetaLimits = LIMITS_NONE): MetaObject {
  if (buf.length !== BLOCK_SIZE_BYTES) fail(`metadata decoded from ${buf.length} bytes`);
  const view = viewOf(buf);
  const magic = buf.readUInt32LE(0);
  if (magic !== META_MAGIC) throw new MetaBadMagic(block, META_MAGIC, magic);
  const stored = buf.readUInt32LE(8);
  buf.writeUInt32LE(0, 8);
  const actual = blockChecksum(buf);
  buf.writeUInt32LE(stored, 8);
  if (stored !== actual) throw new MetaBadChecksum(block, actual, stored);
  // Checked after the checksum: a valid block with another number was written for another place
  // (a misdirected write, or two blocks swapped), not damaged in place.
  const own = getU64(view, 16);
  if (own !== block) throw new MetaWrongLocation(block, own);
  const type = buf.readUInt8(4) as MetaType;
  if (type < MetaType.Leaf || type > MetaType.CatalogPage) throw new MetaWrongType(block, expectType === undefined ? 'a known type' : typeName(expectType), type);
  if (expectType !== undefined && type !== expectType && !(expectType === MetaType.Leaf && type === MetaType.Branch)) {
    throw new MetaWrongType(block, expectType === MetaType.Leaf ? 'leaf or branch' : typeName(expectType), type);
  }
  const obj = decodePayload(buf, view, block, type);
  const broken = metaViolation(obj, limits);
  if (broken) throw new MetaBadStructure(block, `${typeName(type)}: ${broken.rule}`, broken.expected, broken.found);
  return obj;
}

/** The payload of a block whose header checked out; refuses what would index past its arrays. */
function decodePayload(buf: Buffer, view: DataView, block: number, type: MetaType): MetaObject {
  assert(type >= MetaType.Leaf && type <= MetaType.CatalogPage, 'a payload of a known type (the header was checked)');
  const txn = getU64(view, 24);
  const count = buf.readUInt16LE(6);
  let off = META_HEADER_BYTES;
  switch (type) {
    case MetaType.Leaf: {
      if (count > LEAF_EXTENTS_MAX) throw new MetaBadStructure(block, 'leaf: extent count', `<= ${LEAF_EXTENTS_MAX}`, count);
      const x = new LeafExtents();
      let c = 0;
      for (let i = 0; i < count; i++) {
        const len = view.getUint32(off + 16, true);
        // A block whose checksum matches can still hold nonsense (a bug that wrote it, or another
        // format): refuse it here rather than let the tree index past its arrays.
        if (len < 1 || len > EXTENT_BLOCKS_MAX) throw new MetaBadStructure(block, `leaf: extent ${i} length`, `1..${EXTENT_BLOCKS_MAX} blocks`, len);
        if (off + LEAF_ENTRY_FIXED_BYTES + 4 * len > BLOCK_SIZE_BYTES) throw new MetaBadStructure(block, `leaf: extent ${i} inside the block`, `end <= ${BLOCK_SIZE_BYTES}`, off + LEAF_ENTRY_FIXED_BYTES + 4 * len);
        x.lbas[i] = getU64(view, off); x.pbas[i] = getU64(view, off + 8); x.lens[i] = len; x.crcAt[i] = c;
        off += LEAF_ENTRY_FIXED_BYTES;
        for (let j = 0; j < len; j++, off += 4) x.crcs[c++] = view.getUint32(off, true);
      }
      x.count = count;
      x.crcUsed = c;
      return leafOf(block, txn, x);
    }
    case MetaType.Branch: {
      if (count > BRANCH_FANOUT_MAX) throw new MetaBadStructure(block, 'branch: child count', `<= ${BRANCH_FANOUT_MAX}`, count);
      const keys: number[] = [], children: number[] = [];
      for (let i = 0; i < count; i++, off += 16) { keys.push(getU64(view, off)); children.push(getU64(view, off + 8)); }
      return branchOf(block, txn, keys, children);
    }
    case MetaType.Radix: {
      if (count !== 0) throw new MetaBadStructure(block, 'radix node: header count', 0, count);
      const ptrs = new Float64Array(RADIX_FANOUT), free = new Float64Array(RADIX_FANOUT);
      for (let i = 0; i < RADIX_FANOUT; i++, off += 16) { ptrs[i] = getU64(view, off); free[i] = getU64(view, off + 8); }
      return radixOf(block, txn, ptrs, free);
    }
    case MetaType.CountPage: {
      if (count !== 0) throw new MetaBadStructure(block, 'count page: header count', 0, count);
      const counts = new Uint32Array(REFCOUNTS_PER_PAGE);
      for (let i = 0; i < REFCOUNTS_PER_PAGE; i++, off += 4) counts[i] = view.getUint32(off, true);
      return countPageOf(block, txn, counts);
    }
    case MetaType.CatalogPage: {
      if (count !== 0) throw new MetaBadStructure(block, 'catalog page: header count', 0, count);
      const records = Buffer.alloc(CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES);
      buf.copy(records, 0, off, off + records.length);
      return catalogPageOf(block, txn, records);
    }
    default:
      throw new MetaWrongType(block, 'a known type', type);
  }
}
