// The superblock and its on-disk copies. Format 2: generation g is written twice, the primary at block
// SUPERBLOCK_SLOTS[g % 2], then (after a flush) the mirror at SUPERBLOCK_MIRROR_SLOTS[g % 2], each with
// a crc32c over the whole block and the number of the block it belongs at. Format 1 (older pools): the
// primary only, crc32c over its first 512 bytes. Which copy to open is decided in superblock-recovery.ts.
import { crc32c } from '@node-rs/crc32';
import {
  BLOCK_SIZE_BYTES, FORMAT_VERSION, FORMAT_VERSION_KEYRING, FORMAT_VERSION_LOGGED, FORMAT_VERSION_SETTINGS, FORMAT_VERSION_MIRRORED, FORMAT_VERSION_UNMIRRORED, SUPERBLOCK_MAGIC, SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS,
} from './constants.js';
import { getU64, setU64, viewOf } from './format.js';
import { assert } from './errors.js';

export interface Superblock {
  /** FORMAT_VERSION (mirrored) or FORMAT_VERSION_UNMIRRORED (a format-1 pool not yet upgraded). */
  formatVersion: number;
  generation: number;
  totalBlocks: number;
  spaceRoot: number;
  catalogRoot: number;
  /** Catalog slots ever used (records live in slots [0, catalogSlots)). */
  catalogSlots: number;
  nextId: number;
  /** Random identity of the pool, fixed at create. */
  poolUuid: string;
  /**
   * The first generation written with a mirror (1 for a pool created in format 2, the upgrade's
   * generation for an upgraded one): a mirror slot of a parity no mirrored commit used yet is empty
   * by design, not damaged. 0 in format 1.
   */
  firstMirroredGeneration: number;
  /**
   * Format 3: the intent log region [logStartBlock, logStartBlock + logBlocks) and the sequence number
   * of the first log block this generation does not contain (replay starts there). 0 in formats 1, 2.
   */
  logStartBlock: number;
  logBlocks: number;
  logTailSeq: number;
  /**
   * Format 5: the keyring region, two copies of keyringBlocks blocks from keyringStartBlock (keyring.ts).
   * 0 in older formats (a pool becomes format 5 in the commit that names its new keyring).
   */
  keyringStartBlock: number;
  keyringBlocks: number;
  /**
   * Blocks holding metadata objects (tree nodes, radix nodes, space-map and catalog pages) in this
   * generation; null when not known (written by a version that did not count them: the next open
   * counts them by a walk). Stored as count + 1, so the zero an older version leaves there means null
   * and no format change is needed either way.
   */
  metaObjects: number | null;
}

/** Format 1 covered only the head of the block by its checksum. */
const CRC_SPAN_V1_BYTES = 512;
const OFFSET_MAGIC = 0, OFFSET_VERSION = 4, OFFSET_CRC = 8, OFFSET_BLOCK_SIZE = 12;
const OFFSET_UUID = 64, OFFSET_HOME_BLOCK = 80, OFFSET_FIRST_MIRRORED = 88;
const OFFSET_LOG_START = 96, OFFSET_LOG_BLOCKS = 104, OFFSET_LOG_TAIL_SEQ = 112;
const OFFSET_KEYRING_START = 120, OFFSET_KEYRING_BLOCKS = 128, OFFSET_META_OBJECTS = 136;
const KNOWN_VERSIONS: readonly number[] = [FORMAT_VERSION_UNMIRRORED, FORMAT_VERSION_MIRRORED, FORMAT_VERSION_LOGGED, FORMAT_VERSION_SETTINGS, FORMAT_VERSION_KEYRING];
assert(KNOWN_VERSIONS.includes(FORMAT_VERSION), 'the current format is known');

/** Formats 3 and later have an intent log. */
export function hasIntentLog(formatVersion: number): boolean { return formatVersion >= FORMAT_VERSION_LOGGED; }

/** Format 5 and later have a keyring. */
export function hasKeyring(formatVersion: number): boolean { return formatVersion >= FORMAT_VERSION_KEYRING; }

export type CopyRole = 'primary' | 'mirror';

/** The block a copy of `generation` belongs at. */
export function copyBlock(role: CopyRole, generation: number): number {
  assert(Number.isSafeInteger(generation) && generation >= 0, 'a generation number');
  const parity = generation % 2;
  return role === 'primary' ? SUPERBLOCK_SLOTS[parity === 0 ? 0 : 1] : SUPERBLOCK_MIRROR_SLOTS[parity === 0 ? 0 : 1];
}

/** The superblock as written at `homeBlock` (the checksum and the home block tie it to that place). */
export function encodeSuperblock(sb: Superblock, homeBlock: number): Buffer {
  const v1 = sb.formatVersion === FORMAT_VERSION_UNMIRRORED;
  assert(KNOWN_VERSIONS.includes(sb.formatVersion), 'known superblock format');
  assert(hasIntentLog(sb.formatVersion) ? sb.logBlocks > 0 : sb.logBlocks === 0 && sb.logStartBlock === 0 && sb.logTailSeq === 0, 'formats 3 and later, and only they, have a log');
  assert(hasKeyring(sb.formatVersion) ? sb.keyringBlocks > 0 : sb.keyringBlocks === 0 && sb.keyringStartBlock === 0, 'format 5 and later, and only they, have a keyring');
  assert(homeBlock === copyBlock('primary', sb.generation) || (!v1 && homeBlock === copyBlock('mirror', sb.generation)), 'superblock copy in its slot');
  const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
  buf.writeUInt32LE(SUPERBLOCK_MAGIC, OFFSET_MAGIC);
  buf.writeUInt32LE(sb.formatVersion, OFFSET_VERSION);
  buf.writeUInt32LE(BLOCK_SIZE_BYTES, OFFSET_BLOCK_SIZE);
  const view = viewOf(buf);
  setU64(view, 16, sb.generation);
  setU64(view, 24, sb.totalBlocks);
  setU64(view, 32, sb.spaceRoot);
  setU64(view, 40, sb.catalogRoot);
  setU64(view, 48, sb.catalogSlots);
  setU64(view, 56, sb.nextId);
  Buffer.from(sb.poolUuid.replace(/-/g, ''), 'hex').copy(buf, OFFSET_UUID);
  if (!v1) {
    setU64(view, OFFSET_HOME_BLOCK, homeBlock);
    setU64(view, OFFSET_FIRST_MIRRORED, sb.firstMirroredGeneration);
  }
  if (hasIntentLog(sb.formatVersion)) {
    setU64(view, OFFSET_LOG_START, sb.logStartBlock);
    setU64(view, OFFSET_LOG_BLOCKS, sb.logBlocks);
    setU64(view, OFFSET_LOG_TAIL_SEQ, sb.logTailSeq);
  }
  if (hasKeyring(sb.formatVersion)) {
    setU64(view, OFFSET_KEYRING_START, sb.keyringStartBlock);
    setU64(view, OFFSET_KEYRING_BLOCKS, sb.keyringBlocks);
  }
  // Format 1 stays byte for byte what it was (its old readers checksum only the head).
  if (!v1) setU64(view, OFFSET_META_OBJECTS, sb.metaObjects === null ? 0 : sb.metaObjects + 1);
  buf.writeUInt32LE(crc32c(v1 ? buf.subarray(0, CRC_SPAN_V1_BYTES) : buf), OFFSET_CRC);
  return buf;
}

/** What one superblock slot holds. */
export type DecodedCopy =
  | { state: 'valid'; sb: Superblock }
  | { state: 'empty' }
  | { state: 'damaged'; cause: string };

/** Decodes the copy read from `blockNumber`; anything but a whole, valid copy at its home is damaged. */
export function decodeSuperblock(buf: Buffer, blockNumber: number): DecodedCopy {
  assert(buf.length === BLOCK_SIZE_BYTES, 'one whole block');
  if (buf.every((byte) => byte === 0)) return { state: 'empty' };
  const magic = buf.readUInt32LE(OFFSET_MAGIC);
  if (magic !== SUPERBLOCK_MAGIC) return { state: 'damaged', cause: `bad magic 0x${magic.toString(16)} (want 0x${SUPERBLOCK_MAGIC.toString(16)})` };
  const version = buf.readUInt32LE(OFFSET_VERSION);
  const v1 = version === FORMAT_VERSION_UNMIRRORED;
  const span = v1 ? buf.subarray(0, CRC_SPAN_V1_BYTES) : buf;
  const copy = Buffer.from(span);
  copy.writeUInt32LE(0, OFFSET_CRC);
  const stored = buf.readUInt32LE(OFFSET_CRC), actual = crc32c(copy);
  if (!KNOWN_VERSIONS.includes(version)) return { state: 'damaged', cause: `unknown format version ${version}` };
  if (actual !== stored) return { state: 'damaged', cause: `bad checksum 0x${stored.toString(16)} (block has 0x${actual.toString(16)})` };
  const blockSize = buf.readUInt32LE(OFFSET_BLOCK_SIZE);
  if (blockSize !== BLOCK_SIZE_BYTES) return { state: 'damaged', cause: `block size ${blockSize} (want ${BLOCK_SIZE_BYTES})` };
  const view = viewOf(buf);
  const hex = buf.subarray(OFFSET_UUID, OFFSET_UUID + 16).toString('hex');
  const sb: Superblock = {
    formatVersion: version,
    generation: getU64(view, 16),
    totalBlocks: getU64(view, 24),
    spaceRoot: getU64(view, 32),
    catalogRoot: getU64(view, 40),
    catalogSlots: getU64(view, 48),
    nextId: getU64(view, 56),
    poolUuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    firstMirroredGeneration: v1 ? 0 : getU64(view, OFFSET_FIRST_MIRRORED),
    logStartBlock: hasIntentLog(version) ? getU64(view, OFFSET_LOG_START) : 0,
    logBlocks: hasIntentLog(version) ? getU64(view, OFFSET_LOG_BLOCKS) : 0,
    logTailSeq: hasIntentLog(version) ? getU64(view, OFFSET_LOG_TAIL_SEQ) : 0,
    keyringStartBlock: hasKeyring(version) ? getU64(view, OFFSET_KEYRING_START) : 0,
    keyringBlocks: hasKeyring(version) ? getU64(view, OFFSET_KEYRING_BLOCKS) : 0,
    metaObjects: v1 || getU64(view, OFFSET_META_OBJECTS) === 0 ? null : getU64(view, OFFSET_META_OBJECTS) - 1,
  };
  // A valid block at the wrong place (a misdirected write, blocks swapped) is not this slot's copy.
  const home = v1 ? copyBlock('primary', sb.generation) : getU64(view, OFFSET_HOME_BLOCK);
  if (home !== blockNumber) return { state: 'damaged', cause: `a copy of generation ${sb.generation} written for block ${home}` };
  if (home !== copyBlock('primary', sb.generation) && home !== copyBlock('mirror', sb.generation)) {
    return { state: 'damaged', cause: `generation ${sb.generation} does not belong in block ${home}` };
  }
  return { state: 'valid', sb };
}
