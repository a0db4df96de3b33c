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
// committed state) and applied through the normal tree edit.
import { BLOCK_SIZE_BYTES, DEVICE_IO_BLOCKS_MAX, FIRST_FREE_BLOCK, LOG_DAMAGED_BLOCKS_LISTED_MAX, SUPERBLOCK_MIRROR_SLOTS } from './constants.js';
import type { PoolCore } from './pool.js';
import { decodeLogBlock, decodeOneBitDamagedLogBlock, uuidBytes, type LogBlock, type LogRecord } from './intent-log-format.js';
import { RecordKind, FLAG_DELETED } from './catalog.js';
import type { Run } from './space-map.js';
import { blockChecksums } from './checksum.js';
import { singleBitFlipOf } from './crc-syndrome.js';
import { LogDamaged, PoolCorrupt, asIoError, assert, fail } from './errors.js';

/** A flush as found in the log: its blocks in order. */
interface Flush { firstSeq: number; blocks: LogBlock[] }

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
  /** Blocks of this log (at or past the tail) that were written whole and then had one bit flipped. */
  const damagedSeqs: number[] = [];
  let maxSeq = -1;
  for (let at = 0; at < size; at += DEVICE_IO_BLOCKS_MAX) {
    const n = Math.min(DEVICE_IO_BLOCKS_MAX, size - at);
    const buf = Buffer.allocUnsafe(n * BLOCK_SIZE_BYTES);
    try { await core.device.read(start + at, buf); } catch (err) { throw asIoError(err, `reading the intent log at block ${start + at} failed`); }
    for (let i = 0; i < n; i++) {
      const raw = buf.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES);
      const block = decodeLogBlock(raw, at + i, size, uuid);
      blocks[at + i] = block;
      if (block) maxSeq = Math.max(maxSeq, block.seq);
      const damaged = block ? null : decodeOneBitDamagedLogBlock(raw, at + i, size, uuid);
      if (damaged && damaged.seq >= tail) {
        damagedSeqs.push(damaged.seq);
        maxSeq = Math.max(maxSeq, damaged.seq);
      }
    }
  }
  const flushes: Flush[] = [];
  let current: Flush | null = null;
  let seq = tail;
  for (; seq < tail + size; seq++) {
    const b = blocks[seq % size];
    if (!b || b.seq !== seq) break;
    if (current === null) {
      if (b.firstSeq !== seq) break; // not the start of a flush: the tail's block was written over
      current = { firstSeq: seq, blocks: [] };
    } else if (b.firstSeq !== current.firstSeq) break;
    current.blocks.push(b);
    if (b.flushEnd) { flushes.push(current); current = null; }
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
  return { flushes, nextSeq: Math.max(tail, maxSeq + 1), foundPastTail, discarded };
}

/**
 * Compares the data the flush's records name with their checksums. `torn`: the first block whose
 * content is not its record's (it never became durable), or null. `damaged`: blocks one flipped bit
 * away from their checksum (crc-syndrome.ts): they were written whole, so the flush's sync completed.
 */
async function checkFlushData(core: PoolCore, flush: Flush): Promise<{ torn: string | null; damaged: number[] }> {
  assert(flush.blocks.length > 0, 'a flush has blocks');
  const damaged: number[] = [];
  for (const block of flush.blocks) {
    for (const rec of block.records) {
      for (const e of rec.entries) {
        if (!(e.pba >= FIRST_FREE_BLOCK && e.pba + e.lengthBlocks <= core.sb.totalBlocks)) return { torn: `block ${e.pba} outside the pool`, damaged };
        const buf = Buffer.allocUnsafe(e.lengthBlocks * BLOCK_SIZE_BYTES);
        try { await core.device.read(e.pba, buf); } catch (err) { throw asIoError(err, `reading data block ${e.pba} named by the intent log failed`); }
        const crcs = new Uint32Array(e.lengthBlocks);
        blockChecksums(buf, crcs, 0);
        for (let i = 0; i < e.lengthBlocks; i++) {
          if (crcs[i] === e.crcs[i]) continue;
          if (singleBitFlipOf(e.crcs[i]!, crcs[i]!) === null) return { torn: `block ${e.pba + i}`, damaged };
          if (damaged.length < LOG_DAMAGED_BLOCKS_LISTED_MAX) damaged.push(e.pba + i);
        }
      }
    }
  }
  return { torn: null, damaged };
}

export interface ReplayResult { flushes: number; records: number; skipped: number }

/**
 * Applies the scanned flushes in one mutation (no commit can start half-way: the caller attached the
 * running log first, so any commit names the log's new head as its tail). Call while nothing else
 * runs on the pool (open).
 */
export async function applyIntentLog(core: PoolCore, scan: LogScan): Promise<ReplayResult> {
  const result: ReplayResult = { flushes: scan.flushes.length, records: 0, skipped: 0 };
  if (scan.flushes.length === 0) return result;
  await core.mutate(async () => {
    // Every block the records name is reserved before the first edit: an edit allocates tree nodes,
    // and the allocator must not hand one of those blocks out (it holds data a later record maps).
    const runs: Run[] = [];
    try {
      for (const flush of scan.flushes) for (const block of flush.blocks) for (const rec of block.records) await reserveNamed(core, rec, block.seq, runs);
      for (const flush of scan.flushes) for (const block of flush.blocks) for (const rec of block.records) {
        if (await applyRecord(core, rec, block.seq)) result.records++; else result.skipped++;
      }
    } finally {
      if (runs.length > 0) core.space.unreserve(runs);
    }
  });
  assert(result.records + result.skipped > 0 || scan.flushes.every((f) => f.blocks.every((b) => b.records.length === 0)), 'every record is applied or skipped');
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
  const { root, mappedDelta } = await core.trees.edit(vol.root, rec.startLba, rec.endLba, rec.entries);
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
