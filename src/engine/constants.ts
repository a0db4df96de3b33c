// Every bound and on-disk constant of the engine, with its unit, in one place; the relations between
// them are asserted once at load (TigerBeetle's constants.zig idea).
import { assert } from './errors.js';
import { BLOCK_SIZE_BYTES } from './types.js';

export { BLOCK_SIZE_BYTES };
/**
 * On-disk format. 5: format 4 with a keyring region (key slots written in place, so a deleted
 * lineage's wrapped key can be destroyed for good: ARCHITECTURE.md, "Encryption"). 4: format 3 whose catalog may hold setting records (small named values: tenants,
 * tokens, keys, QoS limits); a format-3 pool becomes format 4 in the commit that stores its first
 * setting, so a pool that never stores one still opens with the previous release. 3: format 2 plus an intent log region named by the superblock (a flush writes the
 * mapping changes since the last commit there instead of committing). 2: every commit writes its
 * superblock twice (primary, then mirror, a flush between) with a crc32c over the whole block. 1: one
 * copy per commit, crc32c over its first 512 bytes. Older formats are still opened and upgraded in
 * place where their blocks allow it (ARCHITECTURE.md, "Superblock" and "Intent log").
 */
export const FORMAT_VERSION = 5;
/** Format 4 plus a keyring region named by the superblock (encrypted volumes' wrapped data keys); a pool becomes format 5 when its first encrypted volume is created. */
export const FORMAT_VERSION_KEYRING = 5;
export const FORMAT_VERSION_SETTINGS = 4;
export const FORMAT_VERSION_LOGGED = 3;
export const FORMAT_VERSION_MIRRORED = 2;
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
/** The first block anything else may use: the blocks before it are the primary superblock slots (the mirror slots are counted as used from create). */
export const FIRST_FREE_BLOCK = 2;

/** What a metadata block holds after its header. */
export const META_PAYLOAD_BYTES = BLOCK_SIZE_BYTES - META_HEADER_BYTES;
/** Leaf entry: lba u64, pba u64, length u32, then one crc32c u32 per block. */
export const LEAF_ENTRY_FIXED_BYTES = 20;
/**
 * Blocks of one extent (256 KiB): its checksums (4 bytes each) sit in the leaf, so a leaf holds at
 * least 4 full extents (asserted below), and one extent is one device call at most.
 */
export const EXTENT_BLOCKS_MAX = 64;
/** Branch entry: first lba u64, child block u64. */
export const BRANCH_ENTRY_BYTES = 16;
/** Children of a branch: as many entries as its payload holds (254). */
export const BRANCH_FANOUT_MAX = Math.floor(META_PAYLOAD_BYTES / BRANCH_ENTRY_BYTES);
/** Radix entry: child block u64, free records below it u64. */
export const RADIX_ENTRY_BYTES = 16;
/** Children of a radix node: as many entries as its payload holds (254). */
export const RADIX_FANOUT = Math.floor(META_PAYLOAD_BYTES / RADIX_ENTRY_BYTES);
/** u32 reference counts in one count page (1016): a count never needs more than 32 bits. */
export const REFCOUNTS_PER_PAGE = Math.floor(META_PAYLOAD_BYTES / 4);
/** A catalog record: the fixed fields (80 bytes) and a name of up to NAME_BYTES_MAX bytes. */
export const CATALOG_RECORD_BYTES = 256;
/** Records in one catalog page (15). */
export const CATALOG_RECORDS_PER_PAGE = Math.floor(META_PAYLOAD_BYTES / CATALOG_RECORD_BYTES);
/** Catalog slots (16 Mi): volumes, snapshots and queued dropped nodes together; bounds the radix depth. */
export const CATALOG_RECORDS_MAX = 1 << 24;
/**
 * Catalog pages read at once while a pool opens: one await per page made opening a pool with 100 000
 * snapshots (7 000 pages) take seconds of device round trips; bounded, as each holds a 4 KiB buffer.
 */
export const CATALOG_LOAD_PAGES_IN_FLIGHT = 64;
/** Longest volume or snapshot name in UTF-8 bytes: what a record has room for after its fixed fields. */
export const NAME_BYTES_MAX = 160;
/** A setting record's key: printable ASCII, at most this long. */
export const SETTING_KEY_BYTES_MAX = 120;
/** A setting record's key and value together (the record's bytes after its 8-byte head). */
export const SETTING_BYTES_MAX = 248;

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
/** Volume size limit: 2^48 bytes (256 TiB, the issue asked for 64 TiB); its lba math stays far inside 2^53. */
export const VOLUME_BYTES_MAX = 256 * 1024 ** 4;
/** The same limit in blocks (2^36): the most leaves' worth of logical blocks one tree can map. */
export const VOLUME_BLOCKS_MAX = VOLUME_BYTES_MAX / BLOCK_SIZE_BYTES;
/**
 * Largest pool: 2^40 blocks (4 PiB). Bounds the depth of the space map's radix array, and keeps every
 * block number (u64 on disk) an exact JavaScript number with room to add lengths.
 */
export const POOL_BLOCKS_MAX = 2 ** 40;
/** Smallest pool: 256 blocks (1 MiB), room for the superblocks, a metadata reserve and some data. */
export const POOL_BLOCKS_MIN = 256;
/** Dead tree nodes freed per background step (bounded work per commit). */
export const DELETE_NODES_PER_STEP = 512;
/** Metadata cache bound unless configured (`--cache-bytes-max`): decoded blocks kept, in estimated heap bytes. */
export const CACHE_BYTES_DEFAULT = 256 * 1024 * 1024;
/** Dirty metadata is committed at least this often (also the longest a write without FLUSH may wait). */
export const COMMIT_INTERVAL_MS_DEFAULT = 5000;
/** Tree nodes a commit encodes (~10 µs each) before it lets the event loop serve requests again. */
export const COMMIT_ENCODE_YIELD_BLOCKS = 64;
/** Held frees (128 MiB) that trigger a commit when there are at least FREES_PER_DIRTY_NODE_MIN per dirty node. */
export const FREES_EARLY_COMMIT_BLOCKS = 32768;
/** ... and only when at least this many frees come per dirty node: large overwrites, cheap to release. */
export const FREES_PER_DIRTY_NODE_MIN = 64;
/** Held frees (16 GiB of blocks) that trigger a commit whatever the pool size: bounds their list's RAM. */
export const FREES_HELD_BLOCKS_MAX = 1 << 22;

/** Flatten copies a clone's shared blocks in steps of this many logical blocks, one lock hold each. */
export const FLATTEN_CHUNK_BLOCKS = 256;
/** `check` keeps at most this many problems: a badly damaged pool would otherwise report millions. */
export const CHECK_PROBLEMS_MAX = 200;

// ---- the bounds of every descent (a damaged pool must fail a walk, never loop or recurse forever) ----

/**
 * Levels of a mapping tree, leaf included. A branch splits only past BRANCH_FANOUT_MAX children, so a
 * tree grows a level only when its root overflows; even if every branch then kept only 2 children, a
 * tree mapping VOLUME_BLOCKS_MAX blocks (one per leaf at worst) has log2(2^36) + 1 = 37 levels. A
 * half-full tree has 6 (log127(2^36) + 1 rounded up): so a walk past this bound is a cycle or damage.
 */
export const TREE_DEPTH_MAX = Math.ceil(Math.log2(VOLUME_BLOCKS_MAX)) + 1;
/**
 * Levels of a radix array (space map, catalog) above its pages: the most the largest array needs,
 * log254(POOL_BLOCKS_MAX / REFCOUNTS_PER_PAGE) rounded up (4 for 2^40 blocks; the catalog needs 3).
 */
export const RADIX_DEPTH_MAX = radixDepth(Math.ceil(POOL_BLOCKS_MAX / REFCOUNTS_PER_PAGE));

/** Radix levels above the pages of an array of `pages` pages (each level multiplies by RADIX_FANOUT). */
export function radixDepth(pages: number): number {
  let depth = 1;
  while (RADIX_FANOUT ** depth < pages) depth++;
  return depth;
}

// ---- device I/O ----

/**
 * Data writes in flight at once (block-writer.ts): a buffered write holds the file's inode lock, so
 * more only spin on it (3, 4 or 8 measured within noise of 2; ARCHITECTURE.md, third session).
 */
export const DATA_WRITES_IN_FLIGHT_MAX = 2;
/** Bytes of zeros per write while a pool file is preallocated (8 MiB: few calls, bounded memory). */
export const PREALLOCATE_CHUNK_BYTES = 8 * 1024 * 1024;
/** Preallocation writes kept in flight: enough to keep a disk busy, few enough to bound memory (32 MiB). */
export const PREALLOCATE_WRITES_IN_FLIGHT_MAX = 4;

// ---- commits ----

/** Contiguous metadata blocks a commit writes with one device write (1 MiB). */
export const COMMIT_RUN_BLOCKS_MAX = 256;
/** Device writes a commit keeps in flight before it waits for them (more only queue in the kernel). */
export const COMMIT_WRITES_IN_FLIGHT_MAX = 16;
/**
 * Held frees below this many blocks never trigger an early commit on their own: in a tiny pool a
 * quarter of the free space is a handful of blocks, and a commit per write would follow.
 */
export const FREES_EARLY_COMMIT_BLOCKS_MIN = 64;
/** Held frees that trigger a commit: this fraction (1/4) of the blocks still available. */
export const FREES_AVAILABLE_DIVISOR = 4;

// ---- the metadata reserve ----

/**
 * Free blocks held back from user data so that the metadata of a commit can always be written: 1/64
 * of the pool (METADATA_RESERVE_DIVISOR), at least 512 blocks or 1/8 of a small pool, at most 65536
 * blocks (256 MiB; a commit never dirties that much metadata: it is bounded by dirtyObjectsMax).
 */
export const METADATA_RESERVE_DIVISOR = 64;
export const METADATA_RESERVE_BLOCKS_MIN = 512;
export const METADATA_RESERVE_SMALL_POOL_DIVISOR = 8;
export const METADATA_RESERVE_BLOCKS_MAX = 65536;
/** Dirty metadata objects that trigger a commit: a quarter (1/DIRTY_OBJECTS_RESERVE_DIVISOR) of the reserve, at least 16. */
export const DIRTY_OBJECTS_RESERVE_DIVISOR = 4;
export const DIRTY_OBJECTS_MIN = 16;

export function metaReserveBlocks(totalBlocks: number): number {
  return Math.min(METADATA_RESERVE_BLOCKS_MAX, Math.max(
    Math.min(METADATA_RESERVE_BLOCKS_MIN, Math.floor(totalBlocks / METADATA_RESERVE_SMALL_POOL_DIVISOR)),
    Math.floor(totalBlocks / METADATA_RESERVE_DIVISOR)));
}
export function dirtyObjectsMax(totalBlocks: number): number {
  return Math.max(DIRTY_OBJECTS_MIN, Math.floor(metaReserveBlocks(totalBlocks) / DIRTY_OBJECTS_RESERVE_DIVISOR));
}

// ---- device I/O on the event loop or the thread pool (device/inline-io.ts, device/file-device.ts) ----

/** Device I/O up to this size may run inline on the event loop (device/inline-io.ts). */
export const INLINE_IO_BYTES_MAX = 256 * 1024;
/**
 * "Too slow for the page cache": a fixed part plus a per-byte part (a copy at ≥ 2 GB/s). Reads use a
 * tight bound, since a read from disk (≥ 80 µs on NVMe) is exactly what must not block the loop.
 * Writes use a loose one: a write into a page the commit's fdatasync is writing back may wait a few
 * hundred µs, which costs less than sending every write through the thread pool; what must be
 * avoided is dirty-page throttling, which sleeps for milliseconds.
 */
export const READ_SLOW_FIXED_NS = 60_000;
export const WRITE_SLOW_FIXED_NS = 2_000_000;
/** A durable (O_DSYNC) write on the loop slower than this sends them to the thread pool for a while (a sync write on an SSD or a VM disk takes 0.1-2 ms; on a disk with heads, more). */
export const DURABLE_WRITE_SLOW_FIXED_NS = 3_000_000;
/** The per-byte part of "too slow": a copy at 2 GB/s. */
export const INLINE_IO_SLOW_NS_PER_BYTE = 0.5;
/**
 * After a slow inline call, I/O goes to the thread pool for this long, doubling per slow call up to the
 * maximum: long enough that a cache miss storm is not retried inline call after call, short enough
 * that a cache warm again is used within a second.
 */
export const INLINE_IO_BACKOFF_MS_MIN = 50;
export const INLINE_IO_BACKOFF_MS_MAX = 1_000;

/**
 * Written bytes after which the file device starts write-back (sync_file_range). Small enough that a commit's fdatasync finds at
 * most a few of these left (a 1 MiB-write stream starts one every ~10 ms), large enough that the call,
 * which walks the file's dirty pages, stays rare per write.
 */
export const WRITEBACK_START_BYTES = 16 * 1024 * 1024;

/** Removed items a paged list (key-order.ts) keeps as tombstones before it compacts, at most half its length. */
export const KEY_ORDER_TOMBSTONES_COMPACT_MIN = 64;

// ---- the allocator (space-map.ts) ----

/** Count pages the lock-free reservation path may scan (a full page costs a pass over its counts). */
export const SYNC_RESERVE_PAGES_MAX = 4;
/**
 * A reservation of at least this many blocks (64 KiB) takes only free runs at least this long while
 * it finds them: after random overwrites, first fit handed a 1 MiB write ~75 runs of a few blocks, so
 * ~75 extents and ~75 device writes, and the next sequential pass ran at half speed (measured).
 */
export const LARGE_RUN_BLOCKS = 16;
/** Count pages the search for long runs may scan before large writes settle for first fit. */
export const LARGE_SCAN_PAGES_MAX = 32;
/**
 * Metadata blocks are handed out from a reserved run of this many (1 MiB), so a commit's blocks sit
 * side by side and go out in a few large writes. Taken one by one from the cursor, they lay between
 * data blocks: a commit of ~3,000 blocks after random writes took 300-2,800 device writes (measured).
 */
export const META_ARENA_BLOCKS = 256;
/** A metadata run is reserved only while this many runs' worth of blocks is available beyond the reserve. */
export const META_ARENA_HEADROOM_RUNS = 4;

assert(LEAF_ENTRY_FIXED_BYTES + 4 * EXTENT_BLOCKS_MAX <= META_PAYLOAD_BYTES / 4, 'a leaf holds at least 4 full extents');
assert(SUPERBLOCK_MIRROR_SLOTS.every((b) => b >= FIRST_FREE_BLOCK + 2 && b < POOL_BLOCKS_MIN), 'mirror slots lie inside every pool, not next to the primaries');
assert(BRANCH_FANOUT_MAX >= 16, 'branch fanout');
assert(TREE_NODE_MERGE_FILL_FRACTION < 1 / 2 && BRANCH_MERGE_BELOW_CHILDREN >= 2, 'a split node (half full) is never merged back');
assert(CATALOG_RECORDS_PER_PAGE >= 8, 'catalog page fill');
assert(80 + NAME_BYTES_MAX <= CATALOG_RECORD_BYTES, 'a record holds its fixed fields and the longest name');
assert(VOLUME_BYTES_MAX / BLOCK_SIZE_BYTES < Number.MAX_SAFE_INTEGER / 1024, 'lba math stays exact');
assert(IO_BYTES_MAX % BLOCK_SIZE_BYTES === 0, 'io bound is block aligned');
assert(POOL_BLOCKS_MAX * BLOCK_SIZE_BYTES <= Number.MAX_SAFE_INTEGER, 'pool byte offsets stay exact');
assert(POOL_BLOCKS_MIN * BLOCK_SIZE_BYTES === 1024 * 1024, 'the smallest pool is 1 MiB');
assert(POOL_BLOCKS_MIN > FIRST_FREE_BLOCK + DIRTY_OBJECTS_MIN, 'a smallest pool holds a commit beside its superblocks');
assert(POOL_BLOCKS_MAX < Number.MAX_SAFE_INTEGER / 1024, 'block numbers stay exact');
assert(TREE_DEPTH_MAX >= 2 && TREE_DEPTH_MAX <= 64, 'tree depth bound is small and allows a branch');
assert(RADIX_DEPTH_MAX >= radixDepth(Math.ceil(CATALOG_RECORDS_MAX / CATALOG_RECORDS_PER_PAGE)), 'the catalog fits the radix depth bound');
assert(PREALLOCATE_CHUNK_BYTES % BLOCK_SIZE_BYTES === 0, 'preallocation writes whole blocks');
assert(COMMIT_RUN_BLOCKS_MAX <= DEVICE_IO_BLOCKS_MAX, 'a commit write is no larger than a data write');
assert(LARGE_RUN_BLOCKS <= EXTENT_BLOCKS_MAX, 'a long run fills at most one extent');
assert(META_ARENA_BLOCKS <= COMMIT_RUN_BLOCKS_MAX, 'a metadata run goes out in one commit write');
assert(metaReserveBlocks(POOL_BLOCKS_MIN) >= DIRTY_OBJECTS_MIN, 'the reserve of the smallest pool holds a commit');

// ---- the intent log (intent-log*.ts) ----
/** Every intent-log block starts with this magic ("CLOG"). */
export const LOG_MAGIC = 0x434c4f47;
/** Header of an intent-log block (ARCHITECTURE.md, "Intent log"). */
export const LOG_HEADER_BYTES = 64;
/** Fixed part of a log record: volume id, transaction, first and end lba (u64 each), entry count u16, pad u16. */
export const LOG_RECORD_FIXED_BYTES = 36;
/** Fixed part of a record's extent: lba u64, pba u64, length u16, pad u16; then length x crc32c u32. */
export const LOG_ENTRY_FIXED_BYTES = 20;
/**
 * The log region: 1/64 of the pool, at least LOG_BLOCKS_MIN and at most LOG_BLOCKS_MAX (16 MiB). A
 * flush takes one block or more; a commit starts in the background when the region is half used, so
 * a full region means a commit is due anyway.
 */
export const LOG_BLOCKS_MAX = 4096;
export const LOG_BLOCKS_MIN = 16;
export const LOG_POOL_DIVISOR = 64;
/** Blocks of the log region of a new pool of `totalBlocks`. */
export function logBlocksFor(totalBlocks: number): number {
  assert(Number.isSafeInteger(totalBlocks) && totalBlocks >= POOL_BLOCKS_MIN, 'a pool size in blocks');
  return Math.min(LOG_BLOCKS_MAX, Math.max(LOG_BLOCKS_MIN, Math.floor(totalBlocks / LOG_POOL_DIVISOR)));
}
/** A commit starts in the background once this share of the region holds blocks it has not retired. */
export const LOG_COMMIT_FILL_FRACTION = 0.5;
/**
 * Log blocks one flush may write (1 MiB of records): past it, or when the records waiting for a flush
 * grow past it, the flush commits instead. Bounds the memory records take and the data replay verifies.
 */
export const LOG_ROUND_BLOCKS_MAX = 256;
/** Damaged data blocks of a replayed flush that its `log_data_damaged` event lists; the rest are counted only by check. */
/**
 * Lone writes of at most this many blocks are held in memory (deferred-data.ts) and go into the next
 * flush's log round as inline pages (ZFS: zfs_immediate_write_sz, 32 KiB); larger ones go home at once.
 */
export const DEFERRED_WRITE_BLOCKS_MAX = 8;
/** Held blocks beyond this are drained home without waiting for a commit (memory bound, 4 MiB). */
export const DEFERRED_DATA_BLOCKS_MAX = 1024;
export const DEFERRED_DRAIN_WRITES_IN_FLIGHT = 4;
/** Log blocks of finished rounds kept for reuse (a QD-1 flush writes one or two). */
export const LOG_SPARE_BLOCKS_MAX = 8;
/**
 * Flushes in a row that each found exactly one new switch (a client writing, then flushing, one
 * request at a time: a database's commit) before a lone switch starts its log round at once, while
 * the client is still sending its flush (intent-log.ts, eager rounds).
 */
export const LOG_EAGER_STREAK_MIN = 8;
/** Inline pages one log round carries at most; held blocks past it go home before the round's sync. */
export const LOG_INLINE_BLOCKS_MAX = 64;
export const LOG_DAMAGED_BLOCKS_LISTED_MAX = 64;
/** Count pages searched for a free run to hold the log when an older pool is upgraded (~16 GiB of blocks). */
export const LOG_REGION_SCAN_PAGES_MAX = 4096;

assert(LOG_HEADER_BYTES + LOG_RECORD_FIXED_BYTES + LOG_ENTRY_FIXED_BYTES + 4 * EXTENT_BLOCKS_MAX <= BLOCK_SIZE_BYTES, 'a log block holds a record of one longest extent');
assert(LOG_BLOCKS_MIN >= 4 && LOG_BLOCKS_MIN <= POOL_BLOCKS_MIN / 8, 'the smallest pool holds a log and room beside it');
assert(LOG_ROUND_BLOCKS_MAX <= DEVICE_IO_BLOCKS_MAX && LOG_ROUND_BLOCKS_MAX < LOG_BLOCKS_MAX, 'a flush writes its log blocks in one device write per wrap');
assert(LOG_COMMIT_FILL_FRACTION > 0 && LOG_COMMIT_FILL_FRACTION < 1, 'a commit starts before the region is full');

// ---- large writes on fragmented free space (space-map.ts, after the allocator's block above) ----

/**
 * A reservation of at least this many blocks (256 KiB) first looks for whole runs: one free run for
 * the request, or runs of at least WHOLE_RUN_BLOCKS_MAX for a longer one. After random overwrites, runs of LARGE_RUN_BLOCKS
 * still cut a 1 MiB write into ~11 extents and device writes of tens of KiB, each below the inline
 * I/O bound, so the copy into the page cache ran on the event loop (measured).
 */
export const WHOLE_RUN_WANTED_BLOCKS_MIN = 64;
/** ... and at most one request's blocks (32 MiB): the wide search is for a request, not a bulk reservation. */
export const WHOLE_RUN_WANTED_BLOCKS_MAX = IO_BYTES_MAX / BLOCK_SIZE_BYTES;
/** The longest run a large request insists on (1 MiB): a longer request takes runs at least this long. */
export const WHOLE_RUN_BLOCKS_MAX = 256;
/**
 * Count pages (~1 GiB of pool) the search for whole runs may scan per request. Each failed search
 * moves its cursor past what it scanned, so a commit's rewind costs about one pass over the pool.
 */
export const WHOLE_SCAN_PAGES_MAX = 256;

assert(WHOLE_RUN_WANTED_BLOCKS_MIN >= LARGE_RUN_BLOCKS && WHOLE_RUN_WANTED_BLOCKS_MIN <= WHOLE_RUN_BLOCKS_MAX && WHOLE_RUN_BLOCKS_MAX <= WHOLE_RUN_WANTED_BLOCKS_MAX, 'whole runs are longer than long runs');
assert(WHOLE_RUN_BLOCKS_MAX * BLOCK_SIZE_BYTES > INLINE_IO_BYTES_MAX, 'a whole run goes to the thread pool');

// ---- the keyring (keyring.ts): wrapped data keys of encrypted lineages, in place, two copies ----

/** One key slot: magic, crc32c, slot number, copy, lengths, pool uuid, key-check value, version, wrapped key. */
export const KEY_SLOT_BYTES = 256;
/** Key slots in one 4 KiB block (16). */
export const KEY_SLOTS_PER_BLOCK = BLOCK_SIZE_BYTES / KEY_SLOT_BYTES;
/** Where the wrapped key starts in a slot, and the most it may hold (an RFC 3394 wrap of 64 bytes takes 72, plus a provider's header). */
export const KEY_SLOT_WRAPPED_OFFSET = 64;
export const KEY_WRAPPED_BYTES_MAX = KEY_SLOT_BYTES - KEY_SLOT_WRAPPED_OFFSET;
/** A data key: AES-256-XTS takes two AES-256 keys. */
export const DATA_KEY_BYTES = 64;
/** Key-check value kept per lineage: a truncated HMAC of the data key, so a wrong key is refused, never used. */
export const KEY_CHECK_BYTES = 16;
/** Key slot numbers run from 1 (0 in a catalog record: not encrypted) to the largest keyring's slot count. */
/**
 * Blocks of each of the keyring's two copies: one per KEYRING_POOL_BLOCKS_PER_BLOCK blocks of the pool,
 * at least KEYRING_BLOCKS_MIN and at most KEYRING_BLOCKS_MAX (4096 lineages); fixed when the keyring is
 * made (the first encrypted volume), so growing the pool later does not add slots.
 */
export const KEYRING_BLOCKS_MIN = 2;
export const KEYRING_BLOCKS_MAX = 256;
export const KEYRING_POOL_BLOCKS_PER_BLOCK = 4096;
export function keyringBlocksFor(totalBlocks: number): number {
  assert(Number.isSafeInteger(totalBlocks) && totalBlocks >= POOL_BLOCKS_MIN, 'a pool size in blocks');
  return Math.min(KEYRING_BLOCKS_MAX, Math.max(KEYRING_BLOCKS_MIN, Math.floor(totalBlocks / KEYRING_POOL_BLOCKS_PER_BLOCK)));
}
export const KEY_ID_MAX = KEYRING_BLOCKS_MAX * KEY_SLOTS_PER_BLOCK;

assert(KEY_SLOTS_PER_BLOCK * KEY_SLOT_BYTES === BLOCK_SIZE_BYTES, 'key slots tile a block');
assert(KEY_WRAPPED_BYTES_MAX >= 72 + 32, 'a slot holds a wrapped data key and a provider header');
assert(2 * KEYRING_BLOCKS_MIN <= POOL_BLOCKS_MIN / 8, 'the smallest pool holds a keyring and room beside it');
