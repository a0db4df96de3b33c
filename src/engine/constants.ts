// Every bound and on-disk constant of the engine, with its unit, in one place; the relations between
// them are asserted once at load (TigerBeetle's constants.zig idea).
import { assert } from './errors.js';
import { BLOCK_SIZE_BYTES } from './types.js';

export { BLOCK_SIZE_BYTES };
/**
 * On-disk format. 2: every commit writes its superblock twice (primary, then mirror, a flush between)
 * with a crc32c over the whole block. 1: one copy per commit, crc32c over its first 512 bytes; still
 * opened, and upgraded in place when the mirror slots are free (ARCHITECTURE.md, "Superblock").
 */
export const FORMAT_VERSION = 2;
export const FORMAT_VERSION_UNMIRRORED = 1;

/** Every metadata block starts with this header (see ARCHITECTURE.md, "On-disk format"). */
export const META_HEADER_BYTES = 32;
export const META_MAGIC = 0x434e5231; // "CNR1"
export const SUPERBLOCK_MAGIC = 0x43524e53; // "CRNS"
/** Primary superblock copy of generation g: block SUPERBLOCK_SLOTS[g % 2]. */
export const SUPERBLOCK_SLOTS = [0, 1] as const;
/**
 * Mirror copy of generation g: block SUPERBLOCK_MIRROR_SLOTS[g % 2]. Half a MiB from the primaries
 * (damage to a run of blocks rarely takes both copies), inside the smallest pool (POOL_BLOCKS_MIN) and
 * at a fixed place near the start, so growing the device never moves them.
 */
export const SUPERBLOCK_MIRROR_SLOTS = [128, 129] as const;
export const FIRST_FREE_BLOCK = 2;
/** The smallest pool: 1 MiB. */
export const POOL_BLOCKS_MIN = 256;

export const META_PAYLOAD_BYTES = BLOCK_SIZE_BYTES - META_HEADER_BYTES;
/** Leaf entry: lba u64, pba u64, length u32, then one crc32c u32 per block. */
export const LEAF_ENTRY_FIXED_BYTES = 20;
export const EXTENT_BLOCKS_MAX = 64;
export const BRANCH_ENTRY_BYTES = 16;
export const BRANCH_FANOUT_MAX = Math.floor(META_PAYLOAD_BYTES / BRANCH_ENTRY_BYTES);
export const RADIX_ENTRY_BYTES = 16;
export const RADIX_FANOUT = Math.floor(META_PAYLOAD_BYTES / RADIX_ENTRY_BYTES);
export const REFCOUNTS_PER_PAGE = Math.floor(META_PAYLOAD_BYTES / 4);
export const CATALOG_RECORD_BYTES = 256;
export const CATALOG_RECORDS_PER_PAGE = Math.floor(META_PAYLOAD_BYTES / CATALOG_RECORD_BYTES);
export const CATALOG_RECORDS_MAX = 1 << 24;
export const NAME_BYTES_MAX = 160;

/** Largest single read/write the engine accepts in one call. */
export const IO_BYTES_MAX = 32 * 1024 * 1024;
/** Largest single device read or write the data path issues (physically contiguous extents merge). */
export const DEVICE_IO_BLOCKS_MAX = 1024;
/** Blocks edited in one tree mutation before the engine yields and checks its budget. */
export const EDIT_CHUNK_BLOCKS = 2048;
/**
 * A tree node left below this share of its capacity by a range edit (a leaf's payload bytes, a
 * branch's children) is merged with a neighbour when the two fit in one node: trims and deletes
 * otherwise leave metadata that never shrinks. A quarter, below the half a split leaves on each
 * side, so a node just split is never merged back (no split/merge thrash on an edit that goes back
 * and forth), and merging costs a neighbour's load only once a node is mostly empty.
 */
export const TREE_NODE_MERGE_FILL_FRACTION = 1 / 4;
/** A leaf (not the root) with fewer payload bytes than this is merged with a neighbour when they fit. */
export const LEAF_MERGE_BELOW_BYTES = Math.floor(META_PAYLOAD_BYTES * TREE_NODE_MERGE_FILL_FRACTION);
/** A branch (not the root) with fewer children than this is merged with a neighbour when they fit. */
export const BRANCH_MERGE_BELOW_CHILDREN = Math.floor(BRANCH_FANOUT_MAX * TREE_NODE_MERGE_FILL_FRACTION);
/** Volume size limit: 2^46 bytes = 64 TiB... times 4 keeps lba math inside 2^53. */
export const VOLUME_BYTES_MAX = 256 * 1024 ** 4;
/** Dead tree nodes freed per background step (bounded work per commit). */
export const DELETE_NODES_PER_STEP = 512;
export const CACHE_BYTES_DEFAULT = 256 * 1024 * 1024;
export const COMMIT_INTERVAL_MS_DEFAULT = 5000;
/** Tree nodes a commit encodes (~10 µs each) before it lets the event loop serve requests again. */
export const COMMIT_ENCODE_YIELD_BLOCKS = 64;
/** Held frees (128 MiB) that trigger a commit when there are at least FREES_PER_DIRTY_NODE_MIN per dirty node. */
export const FREES_EARLY_COMMIT_BLOCKS = 32768;
export const FREES_PER_DIRTY_NODE_MIN = 64;
/** Held frees (16 GiB of blocks) that trigger a commit whatever the pool size: bounds their list's RAM. */
export const FREES_HELD_BLOCKS_MAX = 1 << 22;

/**
 * Largest pool (2^40 blocks, 4 PiB) a grow accepts: every byte offset (block × 4096 < 2^52) stays an
 * exact double, and so do the radix arrays' free summaries.
 */
export const POOL_BLOCKS_MAX = 2 ** 40;

/** Free blocks held back from user data so that metadata of a commit can always be written. */
export function metaReserveBlocks(totalBlocks: number): number {
  return Math.min(65536, Math.max(Math.min(512, Math.floor(totalBlocks / 8)), Math.floor(totalBlocks / 64)));
}
/** Dirty metadata objects that trigger a commit: a quarter of the reserve. */
export function dirtyObjectsMax(totalBlocks: number): number {
  return Math.max(16, Math.floor(metaReserveBlocks(totalBlocks) / 4));
}

assert(LEAF_ENTRY_FIXED_BYTES + 4 * EXTENT_BLOCKS_MAX <= META_PAYLOAD_BYTES / 4, 'a leaf holds at least 4 full extents');
assert(SUPERBLOCK_MIRROR_SLOTS.every((b) => b >= FIRST_FREE_BLOCK + 2 && b < POOL_BLOCKS_MIN), 'mirror slots lie inside every pool, not next to the primaries');
assert(BRANCH_FANOUT_MAX >= 16, 'branch fanout');
assert(TREE_NODE_MERGE_FILL_FRACTION < 1 / 2 && BRANCH_MERGE_BELOW_CHILDREN >= 2, 'a split node (half full) is never merged back');
assert(CATALOG_RECORDS_PER_PAGE >= 8, 'catalog page fill');
assert(VOLUME_BYTES_MAX / BLOCK_SIZE_BYTES < Number.MAX_SAFE_INTEGER / 1024, 'lba math stays exact');
assert(IO_BYTES_MAX % BLOCK_SIZE_BYTES === 0, 'io bound is block aligned');
assert(POOL_BLOCKS_MAX * BLOCK_SIZE_BYTES <= Number.MAX_SAFE_INTEGER, 'pool byte offsets stay exact');
