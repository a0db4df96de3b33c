// Opening a pool replays its intent log: the mapping changes flushed after the last commit. The region
// is read whole; from the superblock's tail, blocks are taken while each is valid and carries the next
// sequence number, grouped by the flush that wrote them. Only whole flushes are applied. Flushes are
// written one after another, each after the previous one's sync returned, so only the newest can be
// torn by a power cut: a flush that is incomplete, or whose data does not match the checksums its
// records carry (the data and the records share one sync), is discarded as never acknowledged. Damage
// before the newest flush (a later flush is whole) would lose acknowledged writes: the pool is refused
// (LogDamaged) unless opened with rewind. A block one bit away from its checksum (crc-syndrome.ts) was
// written whole, so it is damage too, even in the newest flush: a log block so damaged refuses the pool
// the same way; a data block so damaged lets its flush apply, and reading it answers checksum_error.
// Records are validated (volume, range, transaction, and that every block they name is free in the
// committed state) and applied through the normal tree edit. A flush's inline pages (data held in
// memory when it was written, deferred-data.ts) follow its last block; they are checked against the
// checksums of its inline index and written to their blocks before the records apply.
import { BLOCK_SIZE_BYTES, DEVICE_IO_BLOCKS_MAX, FIRST_FREE_BLOCK, LOG_DAMAGED_BLOCKS_LISTED_MAX, SUPERBLOCK_MIRROR_SLOTS } from './constants.js';
import type { PoolCore } from './pool.js';
import { INLINE_INDEX_VOLUME, decodeLogBlock, decodeOneBitDamagedLogBlock, uuidBytes, type LogBlock, type LogRecord } from './intent-log-format.js';
import { RecordKind, FLAG_DELETED } from './catalog.js';
import type { Run } from './space-map.js';
import { blockChecksums } from './checksum.js';
import { singleBitFlipOf } from './crc-syndrome.js';
import { LogDamaged, PoolCorrupt, asIoError, assert, fail } from './errors.js';

/** A data block's content carried inline by a flush. */
interface InlinePage { pba: number; page: Buffer; crc: number }

/** A flush as found in the log: its blocks in order, and the pages it carried inline. */
interface Flush { firstSeq: number; blocks: LogBlock[]; inline: InlinePage[] }

export interface LogScan {
  /** Whole flushes from the tail, in order, to apply. */
  flushes: Flush[];
  /** The sequence number the next flush writes: past every valid block the region holds. */
  nextSeq: number;
  /** A valid block at or past the tail exists: the replay must be committed (retiring it) before new flushes. */
  foundPastTail: boolean;
  /** Why the log's end was cut, when it was (torn or mismatching newest flush, or damage under rewind). */
  discarded: string | null;
}

/**
 * Reads and decodes the region, and decides which flushes to apply (no change to the pool). `txnMax`:
 * after a superblock rewind, the generation that was lost; changes made after its commit prepared may
 * name blocks it freed, which the older generation that opened still uses, so they are not applied.
 */
export async function scanIntentLog(core: PoolCore, rewind: boolean, txnMax: number): Promise<LogScan> {
  const { logStartBlock: start, logBlocks: size, logTailSeq: tail } = core.sb;
  assert(size > 0 && start >= FIRST_FREE_BLOCK && start + size <= core.sb.totalBlocks, 'the superblock names a log region inside the pool');
  const uuid = uuidBytes(core.sb.poolUuid);
  const blocks: Array<LogBlock | null> = new Array<LogBlock | null>(size).fill(null);
  /** Each position's content as read (an inline page is no log block). */
  const raw: Buffer[] = new Array<Buffer>(size);
  /** Blocks of this log (at or past the tail) that were written whole and then had one bit flipped. */
  const damagedSeqs: number[] = [];
  let maxSeq = -1;
  for (let at = 0; at < size; at += DEVICE_IO_BLOCKS_MAX) {
    const n = Math.min(DEVICE_IO_BLOCKS_MAX, size - at);
    const buf = Buffer.allocUnsafe(n * BLOCK_SIZE_BYTES);
    try { await core.device.read(start + at, buf); } catch (err) { throw asIoError(err, `reading the intent log at block ${start + at} failed`); }
    for (let i = 0; i < n; i++) {
      const page = buf.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES);
      raw[at + i] = page;
      const block = decodeLogBlock(page, at + i, size, uuid);
      blocks[at + i] = block;
      if (block) maxSeq = Math.max(maxSeq, block.seq);
      const damaged = block ? null : decodeOneBitDamagedLogBlock(page, at + i, size, uuid);
      if (damaged && damaged.seq >= tail) {
        damagedSeqs.push(damaged.seq);
        maxSeq = Math.max(maxSeq, damaged.seq);
      }
    }
  }
  const flushes: Flush[] = [];
  let current: Flush | null = null;
  let seq = tail;
  while (seq < tail + size) {
    const b = blocks[seq % size];
    if (!b || b.seq !== seq) break;
    if (current === null) {
      if (b.firstSeq !== seq) break; // not the start of a flush: the tail's block was written over
      current = { firstSeq: seq, blocks: [], inline: [] };
    } else if (b.firstSeq !== current.firstSeq) break;
    current.blocks.push(b);
    seq++;
    if (b.flushEnd) {
      const pages = inlinePagesOf(current, seq, size, raw);
      if (pages === null) break; // its pages would run past the region: never written whole
      current.inline = pages;
      seq += pages.length;
      flushes.push(current);
      current = null;
    }
  }
  const end = current ? current.firstSeq : seq;
  let discarded: string | null = current ? `flush at log block ${current.firstSeq} is incomplete (${current.blocks.length} blocks whole, torn at ${seq})` : null;
  // A later flush's block proves the flush at `end` completed its sync: its loss is damage, not a tear.
  let rewound = false;
  for (const b of blocks) {
    if (!b || b.seq <= end || b.firstSeq <= end) continue;
    if (!rewind) throw new LogDamaged(end, b.seq);
    discarded = `log damaged at block ${end}; rewound: flushes from there on discarded`;
    core.log('log_rewind', { damagedSeq: end, laterSeq: b.seq });
    rewound = true;
    break;
  }
  // A block one bit away from a whole block of this log was written whole: the log does not end there
  // (a tear), it is damaged there, even when it is the newest flush's, which was then acknowledged.
  // The scan stopped at or before it (the block does not decode), so what it cut is discarded.
  if (damagedSeqs.length > 0 && !rewound) {
    const damagedSeq = Math.min(...damagedSeqs);
    assert(damagedSeq >= end, 'the scan stops at the first damaged block of the log');
    if (!rewind) throw LogDamaged.bitFlip(damagedSeq);
    discarded = `log block ${damagedSeq} has a flipped bit; rewound: flushes from log block ${end} on discarded`;
    core.log('log_rewind', { damagedSeq, laterSeq: null });
  }
  // Each flush holds the changes of one transaction (a commit's prepare empties what waits for a flush).
  const past = flushes.findIndex((f) => f.blocks.some((b) => b.records.some((r) => r.txn > txnMax)));
  if (past >= 0) {
    discarded = `flushes from log block ${flushes[past]!.firstSeq} on were made after generation ${txnMax}, which the rewind discards`;
    flushes.length = past;
  }
  // Inline pages of a flush before the newest were synced (a later flush was written after that
  // sync returned): one that fails its checksum was damaged since. It is written home as it is, so
  // reading it answers checksum_error, never data; the log says which.
  for (const f of flushes.slice(0, -1)) {
    const damaged = damagedInlinePages(f);
    if (damaged.length > 0) core.log('log_data_damaged', { firstSeq: f.firstSeq, physicalBlocks: damaged });
  }
  const last = flushes[flushes.length - 1];
  if (last && discarded === null) {
    const { torn, damaged } = await checkFlushData(core, last);
    if (torn !== null) {
      flushes.pop();
      discarded = `newest flush at log block ${last.firstSeq} names data that never became durable (${torn})`;
    } else if (damaged.length > 0) {
      // Written, synced, then damaged: the flush was acknowledged and applies; the damaged blocks
      // keep the checksums their records carry, so reading them answers checksum_error, never data.
      core.log('log_data_damaged', { firstSeq: last.firstSeq, physicalBlocks: damaged });
    }
  }
  const foundPastTail = maxSeq >= tail;
  return { flushes, nextSeq: Math.max(tail, maxSeq + 1, seq), foundPastTail, discarded };
}

/**
 * The pages a whole flush carried inline (positions from `seq` on), by its index; null when they would
 * run past the region. An index that passed its block's checksum but breaks its layout, or names a
 * block no record of its flush maps, is corruption: writing such a page would overwrite live data.
 */
function inlinePagesOf(flush: Flush, seq: number, size: number, raw: Buffer[]): InlinePage[] | null {
  assert(flush.blocks.length > 0 && flush.inline.length === 0, 'a whole flush, its pages not yet found');
  assert(raw.length === size, 'every log position was read');
  const records = flush.blocks.flatMap((b) => b.records);
  const indexes = records.filter((r) => r.volumeId === INLINE_INDEX_VOLUME);
  if (indexes.length === 0) return [];
  const index = indexes[0]!;
  const count = index.endLba;
  if (indexes.length > 1 || index.startLba !== 0) throw new PoolCorrupt(`intent log flush at block ${flush.firstSeq} has a malformed inline index`);
  if (seq + count > flush.firstSeq + size) return null;
  const named = new Set<number>();
  for (const r of records) if (r.volumeId !== INLINE_INDEX_VOLUME) for (const e of r.entries) for (let k = 0; k < e.lengthBlocks; k++) named.add(e.pba + k);
  const pages: InlinePage[] = [];
  for (const e of index.entries) {
    if (e.lba !== pages.length) throw new PoolCorrupt(`intent log flush at block ${flush.firstSeq}: its inline index skips page ${pages.length}`);
    for (let k = 0; k < e.lengthBlocks; k++) {
      if (!named.has(e.pba + k)) throw new PoolCorrupt(`intent log flush at block ${flush.firstSeq} carries block ${e.pba + k} inline, which none of its records maps`);
      pages.push({ pba: e.pba + k, page: raw[(seq + pages.length) % size]!, crc: e.crcs[k]! });
    }
  }
  assert(pages.every((p) => p.page !== undefined), 'every inline page was read');
  if (pages.length !== count) throw new PoolCorrupt(`intent log flush at block ${flush.firstSeq}: its inline index covers ${pages.length} of ${count} pages`);
  return pages;
}

/** Blocks whose inline page in `flush` does not match its checksum (at most the listed maximum). */
function damagedInlinePages(flush: Flush): number[] {
  const damaged: number[] = [];
  const crc = new Uint32Array(1);
  for (const p of flush.inline) {
    assert(p.page.length === BLOCK_SIZE_BYTES, 'an inline page is one block');
    blockChecksums(p.page, crc, 0);
    if (crc[0] !== p.crc && damaged.length < LOG_DAMAGED_BLOCKS_LISTED_MAX) damaged.push(p.pba);
  }
  return damaged;
}

/**
 * Compares the data the flush's records name with their checksums. `torn`: the first block whose
 * content is not its record's (it never became durable), or null. `damaged`: blocks one flipped bit
 * away from their checksum (crc-syndrome.ts): they were written whole, so the flush's sync completed.
 */
async function checkFlushData(core: PoolCore, flush: Flush): Promise<{ torn: string | null; damaged: number[] }> {
  assert(flush.blocks.length > 0, 'a flush has blocks');
  const damaged: number[] = [];
  const inline = new Set<number>();
  const pageCrcs = new Uint32Array(1);
  for (const p of flush.inline) {
    inline.add(p.pba);
    blockChecksums(p.page, pageCrcs, 0);
    if (pageCrcs[0] === p.crc) continue;
    if (singleBitFlipOf(p.crc, pageCrcs[0]!) === null) return { torn: `inline page of block ${p.pba}`, damaged };
    if (damaged.length < LOG_DAMAGED_BLOCKS_LISTED_MAX) damaged.push(p.pba);
  }
  for (const block of flush.blocks) {
    for (const rec of block.records) {
      if (rec.volumeId === INLINE_INDEX_VOLUME) continue;
      for (const e of rec.entries) {
        if (!(e.pba >= FIRST_FREE_BLOCK && e.pba + e.lengthBlocks <= core.sb.totalBlocks)) return { torn: `block ${e.pba} outside the pool`, damaged };
        const buf = Buffer.allocUnsafe(e.lengthBlocks * BLOCK_SIZE_BYTES);
        try { await core.device.read(e.pba, buf); } catch (err) { throw asIoError(err, `reading data block ${e.pba} named by the intent log failed`); }
        const crcs = new Uint32Array(e.lengthBlocks);
        blockChecksums(buf, crcs, 0);
        for (let i = 0; i < e.lengthBlocks; i++) {
          // An inline block was checked above, by its page (its home block was written later, if at all).
          if (crcs[i] === e.crcs[i] || inline.has(e.pba + i)) continue;
          if (singleBitFlipOf(e.crcs[i]!, crcs[i]!) === null) return { torn: `block ${e.pba + i}`, damaged };
          if (damaged.length < LOG_DAMAGED_BLOCKS_LISTED_MAX) damaged.push(e.pba + i);
        }
      }
    }
  }
  return { torn: null, damaged };
}

export interface ReplayResult { flushes: number; records: number; skipped: number; inlinePages: number }

/** The block's records of mapping changes (its inline index, if any, left out). */
function changes(block: LogBlock): LogRecord[] {
  return block.records.filter((r) => r.volumeId !== INLINE_INDEX_VOLUME);
}

/**
 * Applies the scanned flushes in one mutation (no commit can start half-way: the caller attached the
 * running log first, so any commit names the log's new head as its tail). Call while nothing else
 * runs on the pool (open).
 */
export async function applyIntentLog(core: PoolCore, scan: LogScan): Promise<ReplayResult> {
  const result: ReplayResult = { flushes: scan.flushes.length, records: 0, skipped: 0, inlinePages: 0 };
  if (scan.flushes.length === 0) return result;
  await core.mutate(async () => {
    // Every block the records name is reserved before the first edit: an edit allocates tree nodes,
    // and the allocator must not hand one of those blocks out (it holds data a later record maps).
    const runs: Run[] = [];
    try {
      for (const flush of scan.flushes) for (const block of flush.blocks) for (const rec of changes(block)) await reserveNamed(core, rec, block.seq, runs);
      // Data before the mappings that name it; the replay's commit syncs both before its superblock.
      for (const flush of scan.flushes) for (const p of flush.inline) {
        try { await core.device.write(p.pba, p.page); } catch (err) { throw asIoError(err, `writing data block ${p.pba} from the intent log failed`); }
        result.inlinePages++;
      }
      for (const flush of scan.flushes) for (const block of flush.blocks) for (const rec of changes(block)) {
        if (await applyRecord(core, rec, block.seq)) result.records++; else result.skipped++;
      }
    } finally {
      if (runs.length > 0) core.space.unreserve(runs);
    }
  });
  assert(result.records + result.skipped > 0 || scan.flushes.every((f) => f.blocks.every((b) => changes(b).length === 0)), 'every record is applied or skipped');
  return result;
}

/**
 * Reserves the blocks a record maps, each of which must be free in the committed state and named by
 * no other record (a block is reused only after a commit, which retires the records naming it).
 */
async function reserveNamed(core: PoolCore, rec: LogRecord, seq: number, runs: Run[]): Promise<void> {
  core.assertHeld();
  // Records past the tail were made after the committed generation's commit prepared.
  if (rec.txn <= core.sb.generation) throw new PoolCorrupt(`intent log block ${seq} holds a change of transaction ${rec.txn}, already in the committed generation ${core.sb.generation}`);
  for (const e of rec.entries) {
    if (inLogOrSuperblocks(core, e.pba, e.lengthBlocks) || !await core.space.reserveExact(e.pba, e.lengthBlocks)) {
      throw new PoolCorrupt(`intent log block ${seq} maps volume #${rec.volumeId} [${e.lba}, ${e.lba + e.lengthBlocks}) to blocks [${e.pba}, ${e.pba + e.lengthBlocks}) that are not free`);
    }
    runs.push({ pba: e.pba, lengthBlocks: e.lengthBlocks });
  }
}

/** Applies one record; false when its volume is gone or smaller (a change of a catalog state never committed). */
async function applyRecord(core: PoolCore, rec: LogRecord, seq: number): Promise<boolean> {
  core.assertHeld();
  const vol = core.catalog.byId.get(rec.volumeId);
  if (!vol || vol.kind !== RecordKind.Volume || (vol.flags & FLAG_DELETED) !== 0 || rec.endLba * BLOCK_SIZE_BYTES > vol.sizeBytes) {
    core.log('log_record_skipped', { seq, volumeId: rec.volumeId, startLba: rec.startLba, endLba: rec.endLba, reason: vol ? 'range past the volume' : 'no such volume' });
    return false;
  }
  const { root, mappedDelta } = await core.trees.edit(vol.root, rec.startLba, rec.endLba, rec.entries, vol);
  vol.root = root;
  vol.mappedBlocks += mappedDelta;
  await core.catalog.saveMapping(vol);
  return true;
}

function inLogOrSuperblocks(core: PoolCore, pba: number, length: number): boolean {
  assert(length > 0, 'a run of blocks');
  const { logStartBlock: s, logBlocks: n } = core.sb;
  if (pba < s + n && s < pba + length) return true;
  for (const b of SUPERBLOCK_MIRROR_SLOTS) if (b >= pba && b < pba + length) return true;
  if (pba < FIRST_FREE_BLOCK) fail(`a logged extent at block ${pba}`);
  return false;
}
