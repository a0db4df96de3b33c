// The intent log at run time (ZFS's ZIL, Btrfs's log tree): every mapping switch appends a record of
// the change to an open block in memory; a flush writes the blocks gathered since the last one to the
// log region and syncs the device once, which makes both the data written before the switches and the
// records durable. The tree commit runs later (interval, dirty bound, catalog operations, a half-full
// region) and retires the log up to the sequence number its superblock names.
//
// Switches are numbered in the order they were made; a flush waits until every switch made before it
// is durable, through whichever of three things holds it: a commit that took it (the commit in flight,
// when it cleared records a flush would otherwise have written), the flush round in flight, or the next
// round, which takes every record waiting when it starts. Rounds run one at a time, so only the newest
// round can be torn by a power cut (replay relies on it: intent-log-replay.ts).
//
// Eager rounds: a client that writes and then flushes, one request at a time (a database committing),
// leaves the device idle while its flush travels. Once LOG_EAGER_STREAK_MIN flushes in a row each found
// exactly one new switch, the next lone switch starts its round in the event loop's check phase (after
// the write's reply has gone), and the flush finds it in flight or done. A second switch before a flush
// ends the streak, so plain writes and batched flushes never pay for a round they did not ask for.
import {
  BLOCK_SIZE_BYTES, DEVICE_IO_BLOCKS_MAX, EXTENT_BLOCKS_MAX, LOG_COMMIT_FILL_FRACTION, LOG_EAGER_STREAK_MIN, LOG_HEADER_BYTES, LOG_INLINE_BLOCKS_MAX, LOG_RECORD_FIXED_BYTES, LOG_ROUND_BLOCKS_MAX, LOG_SPARE_BLOCKS_MAX,
} from './constants.js';
import type { DeferredData } from './deferred-data.js';
import type { LeafEntry } from './format.js';
import { OpenLogBlock, entryBytes, recordBytes, uuidBytes } from './intent-log-format.js';
import { blockChecksums } from './checksum.js';
import { IoError, asIoError, assert, fail } from './errors.js';

/** What the log needs of its pool. */
export interface LogHost {
  readonly device: DeferredData;
  ensureUsable(): void;
  /** A full commit (covers every switch made before it prepares). */
  commit(): Promise<void>;
  commitInBackground(): void;
  /** Stops the pool after a failed log write: the page cache can no longer be trusted. */
  stop(err: Error, event: string, fields: Record<string, unknown>): void;
}

export interface LogRegion { startBlock: number; blocks: number }

/** What a commit took from the log when it prepared; settled when the commit is durable or failed. */
export interface LogCut {
  /** The superblock's tail: the first block the commit does not contain. */
  tailSeq: number;
  /** Switches [clearedFrom, clearedTo) were waiting for a flush and now wait for this commit instead. */
  clearedFrom: number;
  clearedTo: number;
  done: Promise<void>;
  settle(err: Error | null): void;
}

interface Round { from: number; to: number; started: boolean; promise: Promise<void> }

export class IntentLog {
  private readonly uuid: Buffer;
  /** Switches made (each appended a record, or would have, had the records not overflowed). */
  private appended = 0;
  /** The first switch whose record waits in `pending`; earlier ones are in a round or a commit. */
  private pendingFrom = 0;
  private pending: OpenLogBlock[] = [];
  /** Runs of data blocks the pending records name, as (pba, length) pairs: held ones go inline. */
  private pendingNamed: number[] = [];
  /** The transaction of the newest pending record (the inline index is logged in it). */
  private pendingTxn = 0;
  /** Records outgrew LOG_ROUND_BLOCKS_MAX: the next flush commits instead of writing them. */
  private overflowed = false;
  /** Every switch before this is in a durable commit. */
  private committedThrough = 0;
  private commitInFlight: LogCut | null = null;
  private roundInFlight: Round | null = null;
  private nextRound: Round | null = null;
  /**
   * Blocks of finished rounds, and the buffer the last round was written from, reused: a new 4 KiB
   * block and an 8 KiB buffer per QD-1 flush were ~5 % of the loop's CPU with the garbage collection
   * they caused. Rounds run one at a time and each has finished its device writes before the next.
   */
  private readonly spareBlocks: OpenLogBlock[] = [];
  private roundBuffer: Buffer | null = null;
  /** Rounds that wrote the log and synced it (for stats and tests). */
  rounds = 0;
  /** Flushes that committed instead (records overflowed, or the region had no room). */
  roundsCommitted = 0;
  /** Rounds started by a lone switch before its flush came (see the header). */
  eagerRounds = 0;
  /** The switch count the last flush waited for, and how many flushes in a row found exactly one new switch. */
  private lastFlushTarget = 0;
  private loneStreak = 0;
  private eagerQueued = false;

  constructor(
    private readonly host: LogHost,
    readonly region: LogRegion,
    poolUuid: string,
    /** Sequence number of the next block to write. */
    private nextSeq: number,
    /** The durable superblock's tail: positions of blocks before it may be written over. */
    private durableTailSeq: number,
  ) {
    assert(region.blocks > 0 && region.startBlock > 0 && nextSeq >= durableTailSeq, 'a log region and its sequence');
    this.uuid = uuidBytes(poolUuid);
  }

  /** An empty log block: a spare one of an earlier round, or a new one. */
  private takeBlock(): OpenLogBlock {
    const block = this.spareBlocks.pop();
    if (block === undefined) return new OpenLogBlock();
    block.reset();
    return block;
  }

  /** Keeps a few blocks of a round that has written them (its device writes are over) for later rounds. */
  private keepBlocks(blocks: OpenLogBlock[]): void {
    assert(this.roundInFlight !== null, 'blocks are kept by the round that wrote them');
    for (const block of blocks) if (this.spareBlocks.length < LOG_SPARE_BLOCKS_MAX) this.spareBlocks.push(block);
  }

  /** Blocks written and not yet retired by a durable commit. */
  get blocksInUse(): number {
    assert(this.nextSeq >= this.durableTailSeq, 'the log\'s head is not behind its tail');
    return this.nextSeq - this.durableTailSeq;
  }

  /**
   * Records the switch of [startLba, endLba) of volume `volumeId` to `entries` in transaction `txn`.
   * Called inside the mutation that made it, so records keep the order of the switches.
   */
  append(volumeId: number, txn: number, startLba: number, endLba: number, entries: readonly LeafEntry[]): void {
    assert(volumeId > 0 && startLba < endLba, 'a switch of a volume\'s range');
    this.appended++;
    // Only the first switch since a flush: a second one means this client is not flushing each write.
    if (this.appended - this.lastFlushTarget === 1 && this.loneStreak >= LOG_EAGER_STREAK_MIN && !this.eagerQueued) {
      this.eagerQueued = true;
      setImmediate(this.eagerRound);
    }
    if (this.overflowed) return;
    for (const e of entries) this.pendingNamed.push(e.pba, e.lengthBlocks);
    this.pendingTxn = txn;
    let from = 0, cursor = startLba;
    // A record lies whole in one block: a switch with more extents than a block holds is cut at an
    // extent boundary into records of consecutive ranges, all in the same flush.
    while (from < entries.length || cursor === startLba) {
      let block = this.pending[this.pending.length - 1];
      if (block === undefined || !block.fits(LOG_RECORD_FIXED_BYTES + (from < entries.length ? entryBytes(entries[from]!) : 0))) {
        if (this.pending.length >= LOG_ROUND_BLOCKS_MAX) { this.overflow(); return; }
        block = this.takeBlock();
        this.pending.push(block);
      }
      let to = from, bytes = LOG_RECORD_FIXED_BYTES;
      while (to < entries.length && block.fits(bytes + entryBytes(entries[to]!))) bytes += entryBytes(entries[to++]!);
      const end = to < entries.length ? entries[to]!.lba : endLba;
      if (end <= cursor) fail(`a log record of [${cursor}, ${end}) makes no progress`);
      block.append(volumeId, txn, cursor, end, entries, from, to);
      cursor = end;
      from = to;
      if (cursor >= endLba) break;
    }
  }

  private overflow(): void {
    assert(!this.overflowed, 'records overflow once per commit');
    this.overflowed = true;
    this.pending = [];
    this.pendingNamed = [];
  }

  /** Resolves when every switch made before the call is durable. */
  async flush(): Promise<void> {
    this.host.ensureUsable();
    const target = this.appended;
    this.loneStreak = target - this.lastFlushTarget === 1 ? this.loneStreak + 1 : 0;
    this.lastFlushTarget = target;
    if (target <= this.committedThrough) return;
    const waits: Promise<void>[] = [];
    const c = this.commitInFlight;
    if (c && c.clearedTo > c.clearedFrom && target > c.clearedFrom) waits.push(c.done);
    const r = this.roundInFlight;
    if (r && target > r.from) waits.push(r.promise);
    if (target > this.pendingFrom) waits.push(this.queueRound());
    await Promise.all(waits);
  }

  /** Starts the round of a lone switch whose flush has not come yet (see the header). */
  private readonly eagerRound = (): void => {
    this.eagerQueued = false;
    // The flush came first and queued the round itself, a second switch broke the pattern, a commit
    // took the record, or a round is already on its way.
    if (this.appended - this.lastFlushTarget !== 1 || this.pendingFrom >= this.appended || this.nextRound !== null || this.roundInFlight !== null) return;
    this.eagerRounds++;
    // A failure stopped the pool (runRound): the flush that comes for this switch reports it.
    this.queueRound().catch(() => undefined);
  };

  private queueRound(): Promise<void> {
    if (this.nextRound) return this.nextRound.promise;
    const before = this.roundInFlight?.promise ?? Promise.resolve();
    const round: Round = { from: -1, to: -1, started: false, promise: Promise.resolve() };
    // A failed round stopped the pool: the next one then fails at ensureUsable with the cause.
    round.promise = before.catch(() => undefined).then(() => this.runRound(round));
    this.nextRound = round;
    return round.promise;
  }

  private async runRound(round: Round): Promise<void> {
    assert(this.nextRound === round && !round.started, 'rounds run in the order they were queued');
    this.nextRound = null;
    round.started = true;
    this.host.ensureUsable();
    const room = this.commitToMakeRoom();
    if (room !== null) {
      // In flight while it waits: flushes that come meanwhile queue behind it. Cleared in the same
      // step as the wait ends, and set again below before any other await, so no round can start in
      // between and write out of order.
      this.roundInFlight = round;
      try {
        await room;
      } catch {
        // That commit's failure stopped the pool: ensureUsable reports it below.
      } finally {
        if (this.roundInFlight === round) this.roundInFlight = null;
      }
      this.host.ensureUsable();
    }
    // A commit that prepared after this round was queued may have taken records its waiters need.
    const c = this.commitInFlight;
    const commitWait = c && c.clearedTo > c.clearedFrom ? c.done : null;
    if (this.overflowed) {
      this.roundsCommitted++;
      await this.host.commit();
      return;
    }
    const blocks = this.pending;
    round.from = this.pendingFrom;
    round.to = this.appended;
    if (round.from === round.to) {
      if (commitWait) await commitWait;
      return;
    }
    assert(blocks.length > 0 && blocks.length <= LOG_ROUND_BLOCKS_MAX, 'a round writes its records');
    const inline = this.inlinePages(this.pendingNamed, blocks.length);
    const indexBlocks = inline.pages.length > 0 && !blocks[blocks.length - 1]!.fits(recordBytes(inline.index, 0, inline.index.length)) ? 1 : 0;
    const total = blocks.length + indexBlocks + inline.pages.length;
    if (this.blocksInUse + total > this.region.blocks) {
      // No room until a commit retires the log: that commit covers these records as well.
      this.roundsCommitted++;
      await this.host.commit();
      return;
    }
    this.pending = [];
    this.pendingNamed = [];
    this.pendingFrom = round.to;
    if (inline.pages.length > 0) {
      if (indexBlocks > 0) blocks.push(this.takeBlock());
      // The index: record of volume 0 whose extents map inline page positions [0, n) to the blocks
      // whose data they carry, with that data's checksums (replay checks the pages by them).
      blocks[blocks.length - 1]!.append(0, this.pendingTxn, 0, inline.pages.length, inline.index, 0, inline.index.length);
    }
    const firstSeq = this.nextSeq;
    this.nextSeq += total;
    this.roundInFlight = round;
    try {
      // More held blocks named than a round carries: they go home, and this sync takes them there.
      if (inline.overflow) await this.host.device.drainAll();
      await this.writeBlocks(blocks, inline.pages, firstSeq, inline.complete);
      this.keepBlocks(blocks);
      if (!inline.complete) await this.host.device.syncKeepingHeld();
      this.host.device.inlined += inline.pages.length;
    } catch (err) {
      const cause = err instanceof Error ? err : new Error(String(err));
      this.host.stop(cause, 'log_write_failed', { firstSeq, blocks: blocks.length });
      throw new IoError(`intent log write failed: ${cause.message}`);
    } finally {
      if (this.roundInFlight === round) this.roundInFlight = null;
    }
    this.rounds++;
    if (commitWait) await commitWait;
    // Counted from the tail a commit under way will leave: measured from the durable tail, every round
    // during a commit asked for another one, which then ran at once for the few writes since (three
    // syncs, and the space-map pages of the first one's frees, ~400 blocks, for nothing).
    const tail = this.commitInFlight?.tailSeq ?? this.durableTailSeq;
    assert(tail >= this.durableTailSeq && tail <= this.nextSeq, 'a commit under way retires part of the log');
    if (this.nextSeq - tail > this.region.blocks * LOG_COMMIT_FILL_FRACTION) this.host.commitInBackground();
  }

  /**
   * Writers can fill the region while a commit runs (a commit drains the held blocks and syncs: a few
   * hundred ms on a busy VM disk, ~1 000 rounds of QD-1 flushes). A round that may not fit waits for
   * the commit under way to retire its part, rather than commit once more right after it (three syncs
   * and ~400 metadata blocks for the few records since): that commit's promise, or null.
   */
  private commitToMakeRoom(): Promise<void> | null {
    const c = this.commitInFlight;
    const worst = this.pending.length + 1 + LOG_INLINE_BLOCKS_MAX;
    if (c === null || this.overflowed || this.blocksInUse + worst <= this.region.blocks) return null;
    assert(this.roundInFlight === null, 'rounds run one at a time');
    return c.done;
  }

  /**
   * The held data the round's records name, to go inline after them: pages in order, and the index
   * extents (position → block) over them. `overflow`: more than a round carries is held; then nothing
   * goes inline and the round drains what is held before its sync.
   */
  private inlinePages(named: number[], recordBlocks: number): { pages: Buffer[]; index: LeafEntry[]; overflow: boolean; complete: boolean } {
    // `complete`: every block the records name is carried inline (or they name none): the round's
    // own write, made durable alone, is all the flush needs; nothing else must reach the disk.
    const none = { pages: [], index: [], overflow: false, complete: named.length === 0 };
    const held = this.host.device;
    if (held.heldBlocks === 0) return none;
    let complete = true;
    const max = Math.min(LOG_INLINE_BLOCKS_MAX, DEVICE_IO_BLOCKS_MAX - recordBlocks - 1, Math.floor(this.region.blocks / 4));
    const pages: Buffer[] = [], pbas: number[] = [];
    for (let i = 0; i < named.length; i += 2) {
      for (let k = 0; k < named[i + 1]!; k++) {
        const page = held.peek(named[i]! + k);
        if (page === undefined) { complete = false; continue; }
        if (pages.length >= max) return { ...none, overflow: true, complete: false };
        pages.push(page);
        pbas.push(named[i]! + k);
      }
    }
    assert(pages.length === pbas.length && pages.length <= max, 'inline pages are bounded');
    const crcs = new Uint32Array(pages.length);
    for (let i = 0; i < pages.length; i++) blockChecksums(pages[i]!, crcs, i);
    const index: LeafEntry[] = [];
    for (let i = 0; i < pbas.length;) {
      let n = 1;
      while (i + n < pbas.length && pbas[i + n] === pbas[i]! + n && n < EXTENT_BLOCKS_MAX) n++;
      index.push({ lba: i, pba: pbas[i]!, lengthBlocks: n, crcs: crcs.subarray(i, i + n) });
      i += n;
    }
    assert(index.reduce((n, e) => n + e.lengthBlocks, 0) === pages.length, 'the inline index covers every page once');
    return { pages, index, overflow: false, complete };
  }

  /**
   * Seals the round's blocks and writes them with its inline pages after them at their positions: one
   * write, two where the region wraps; `durable`: writes that are durable alone (no sync follows).
   */
  private async writeBlocks(blocks: OpenLogBlock[], pages: Buffer[], firstSeq: number, durable: boolean): Promise<void> {
    const records = blocks.length, n = records + pages.length, size = this.region.blocks;
    assert(records > 0 && n <= size, 'a round fits the region');
    // Reused across rounds (one at a time, each awaits its writes below): kept up to the largest round so far.
    const bytes = n * BLOCK_SIZE_BYTES;
    if (this.roundBuffer === null || this.roundBuffer.length < bytes) this.roundBuffer = Buffer.allocUnsafe(bytes);
    const buf = this.roundBuffer.subarray(0, bytes);
    const format = pages.length > 0 ? 'inline' : 'plain';
    for (let i = 0; i < records; i++) {
      const block = blocks[i]!;
      assert(block.used >= LOG_HEADER_BYTES, 'a sealed block has its header');
      block.seal(firstSeq + i, firstSeq, i === records - 1, this.uuid, format).copy(buf, i * BLOCK_SIZE_BYTES);
    }
    for (let i = 0; i < pages.length; i++) pages[i]!.copy(buf, (records + i) * BLOCK_SIZE_BYTES);
    const position = firstSeq % size;
    const first = Math.min(n, size - position);
    assert(first > 0 && n - first < position + 1, 'a wrapped round does not reach its own start');
    const device = this.host.device;
    const write = (block: number, data: Buffer): Promise<void> => (durable ? device.writeDurable(block, data) : device.write(block, data));
    // Both writes settle before this returns: nothing holds `buf` once the round is over.
    const writes = [write(this.region.startBlock + position, buf.subarray(0, first * BLOCK_SIZE_BYTES))];
    if (first < n) writes.push(write(this.region.startBlock, buf.subarray(first * BLOCK_SIZE_BYTES)));
    for (const s of await Promise.allSettled(writes)) if (s.status === 'rejected') throw s.reason;
  }

  /**
   * A commit prepares (under the metadata lock): it contains every switch made so far, so the records
   * waiting for a flush are dropped, and its superblock's tail is the next block to be written.
   */
  commitPrepared(): LogCut {
    assert(this.commitInFlight === null, 'commits prepare one at a time');
    let settle!: (err: Error | null) => void;
    const done = new Promise<void>((resolve, reject) => { settle = (err) => (err ? reject(err) : resolve()); });
    // Its failure reaches the flushes waiting on it; nobody else need listen.
    done.catch(() => undefined);
    const cut: LogCut = { tailSeq: this.nextSeq, clearedFrom: this.pendingFrom, clearedTo: this.appended, done, settle };
    this.pending = [];
    this.pendingNamed = [];
    this.overflowed = false;
    this.pendingFrom = this.appended;
    this.commitInFlight = cut;
    return cut;
  }

  /** The commit of `cut` is durable (err null) or failed: its records are retired, or the pool stops. */
  commitSettled(cut: LogCut, err: Error | null): void {
    assert(this.commitInFlight === cut, 'the commit that prepared settles');
    this.commitInFlight = null;
    if (err === null) {
      assert(cut.tailSeq >= this.durableTailSeq && cut.clearedTo >= this.committedThrough, 'commits move the log forward');
      this.durableTailSeq = cut.tailSeq;
      this.committedThrough = cut.clearedTo;
    }
    // The flushes waiting on this commit get the engine's typed error: the raw device error (an EIO
    // from the file system) must not leave the engine (the simulator found one escaping here, seed 12053).
    cut.settle(err === null ? null : asIoError(err, 'commit failed'));
  }
}
