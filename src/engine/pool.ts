// The pool: lifecycle (create, open, close), transactions and commit, the background freeing of
// dropped trees, and the wiring of store, space map, catalog and trees. Catalog operations live in
// catalog-ops.ts and the data path in data-path.ts; both run on the PoolCore state defined here.
import { randomUUID } from 'node:crypto';
import {
  BLOCK_SIZE_BYTES, CACHE_BYTES_DEFAULT, COMMIT_ENCODE_YIELD_BLOCKS, COMMIT_INTERVAL_MS_DEFAULT, DELETE_NODES_PER_STEP, FREES_EARLY_COMMIT_BLOCKS, FREES_HELD_BLOCKS_MAX, FREES_PER_DIRTY_NODE_MIN, FIRST_FREE_BLOCK,
  FORMAT_VERSION, FORMAT_VERSION_LOGGED, FORMAT_VERSION_MIRRORED, FORMAT_VERSION_UNMIRRORED, SUPERBLOCK_MIRROR_SLOTS, DEVICE_IO_BLOCKS_MAX, LOG_REGION_SCAN_PAGES_MAX, logBlocksFor, dirtyObjectsMax, metaReserveBlocks, POOL_BLOCKS_MIN, POOL_BLOCKS_MAX,
  COMMIT_RUN_BLOCKS_MAX, COMMIT_WRITES_IN_FLIGHT_MAX, FREES_EARLY_COMMIT_BLOCKS_MIN, FREES_AVAILABLE_DIVISOR,
} from './constants.js';
import type { Device } from './device/device.js';
import { MetaStore, type CommitBlock } from './meta-store.js';
import { encodeMetaInto } from './format.js';
import { SpaceMap, type FreedBlocks } from './space-map.js';
import { Catalog, RecordKind, type CatalogRecord } from './catalog.js';
import { Trees } from './btree.js';
import { Mutex } from './mutex.js';
import { BlockWriter } from './block-writer.js';
import { DeferredData } from './deferred-data.js';
import { releaseDeviceBuffer, takeDeviceBuffer } from './device-buffers.js';
import { copyBlock, encodeSuperblock, hasIntentLog, type Superblock } from './superblock.js';
import { recoverSuperblock, type SuperblockRecovery } from './superblock-recovery.js';
import { AssertionError, CairnError, IoError, MetaCorrupt, PoolClosed, PoolCorrupt, PoolShrinkRefused, SuperblockLost, assert, fail } from './errors.js';
import type { CheckReport, PoolOptions, TargetEvent } from './types.js';
import { CairnEngine } from './engine.js';
import { checkDevice, countMetaObjects } from './check.js';
import { IntentLog, type LogCut, type LogHost } from './intent-log.js';
import { applyIntentLog, scanIntentLog } from './intent-log-replay.js';
import type { Keyring } from './keyring.js';
import { openKeyring } from './pool-keyring.js';

export class PoolCore implements LogHost {
  /** The metadata lock (the store's, so every module that changes metadata can assert it). */
  readonly mutex: Mutex;
  readonly trees: Trees;
  readonly blockWriter: BlockWriter;
  /** Data writes between their start and the switch of their mapping (for write batching). */
  writersActive = 0;
  /** The same per volume (id → count; absent: none), so a volume's lone small write may be held beside another's batch. */
  readonly volumeWriters = new Map<number, number>();
  readonly nowMs: () => number;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
  private commitChain: Promise<void> = Promise.resolve();
  private queuedCommit: Promise<void> | null = null;
  private commitTimer: NodeJS.Timeout | null = null;
  private gcScheduled = false;
  /** The read error that ended the last delete step early (freeSomeNodes), else null. */
  private gcDeferred: Error | null = null;
  private readonly listeners = new Set<(e: TargetEvent) => void>();
  /** Commits completed; reads record it at start so frees wait for them. */
  private readEpoch = 0;
  private readonly activeReads = new Map<number, number>();
  durableGeneration: number;
  /** A copy of the newest superblock is missing or damaged, or a rewind is not yet durable: the next commit runs even with nothing dirty, and rewrites both copies. */
  superblockRepair = false;
  checksumErrors = 0;
  poisoned: Error | null = null;
  closed = false;
  /** Dirty objects that trigger a commit; follows the pool's size (grow). */
  dirtyMax: number;
  readonly commitIntervalMs: number;
  /** PoolOptions.fastPaths: false makes mutateNow (and every other `...Now`) decline. */
  readonly fastPaths: boolean;
  /** The intent log (format 3); null in a pool that has none (no room for it), where a flush commits. */
  intentLog: IntentLog | null = null;
  /** The keyring (format 5, pool-keyring.ts); null until the pool's first encrypted volume. */
  keyring: Keyring | null = null;
  /** Key slots whose last record left the catalog in transaction `txn`: destroyed once that is durable. */
  private releasedKeys: { keyId: number; txn: number }[] = [];

  constructor(
    readonly device: DeferredData,
    readonly store: MetaStore,
    readonly space: SpaceMap,
    readonly catalog: Catalog,
    public sb: Superblock,
    opts: PoolOptions,
  ) {
    assert(store.totalBlocks === sb.totalBlocks && space.totalBlocks === sb.totalBlocks, 'store, space map and superblock agree on the pool size');
    this.mutex = store.mutex;
    this.trees = new Trees(store, space);
    this.fastPaths = opts.fastPaths ?? true;
    this.trees.fastPaths = this.fastPaths;
    space.fastPaths = this.fastPaths;
    catalog.fastPaths = this.fastPaths;
    // Lone small writes are held for the log's inline pages; without a log every flush commits anyway.
    this.blockWriter = new BlockWriter(device, () => this.writersActive, () => this.intentLog !== null);
    this.nowMs = opts.nowMs ?? Date.now;
    this.log = opts.log ?? (() => undefined);
    this.durableGeneration = sb.generation;
    this.dirtyMax = dirtyObjectsMax(sb.totalBlocks);
    this.commitIntervalMs = opts.commitIntervalMs ?? COMMIT_INTERVAL_MS_DEFAULT;
    catalog.onKeyReleased = (keyId) => { this.releasedKeys.push({ keyId, txn: this.store.txn }); };
  }

  // ---- lifecycle ----

  static async create(device: Device, opts: PoolOptions = {}): Promise<PoolCore> {
    const totalBlocks = device.sizeBlocks;
    if (totalBlocks < POOL_BLOCKS_MIN) throw new CairnError('invalid_size', `pool needs at least ${POOL_BLOCKS_MIN} blocks (1 MiB), device has ${totalBlocks} blocks`);
    if (totalBlocks > POOL_BLOCKS_MAX) throw new CairnError('invalid_size', `pool may have at most ${POOL_BLOCKS_MAX} blocks, device has ${totalBlocks} blocks`);
    // Every slot zeroed (made durable by the commit's first flush): a device that held another pool
    // must not leave a copy of it behind for recovery to find.
    await device.write(0, Buffer.alloc(BLOCK_SIZE_BYTES * FIRST_FREE_BLOCK));
    await PoolCore.zeroMirrorSlots(device);
    const sb: Superblock = {
      formatVersion: FORMAT_VERSION_MIRRORED, generation: 0, totalBlocks, spaceRoot: 0, catalogRoot: 0, catalogSlots: 0, nextId: 1,
      poolUuid: randomUUID(), firstMirroredGeneration: 1, logStartBlock: 0, logBlocks: 0, logTailSeq: 0, keyringStartBlock: 0, keyringBlocks: 0, metaObjects: 0,
    };
    const core = await PoolCore.assemble(device, sb, opts);
    await core.mutex.run(async () => {
      for (let b = 0; b < FIRST_FREE_BLOCK; b++) await core.space.incref(b);
      for (const b of SUPERBLOCK_MIRROR_SLOTS) await core.space.incref(b);
      await core.catalog.array.page(0, true); // materialize an (empty) catalog so the root exists
    });
    assert(await core.attachNewLog(), 'a new pool has room for its log');
    await core.commit();
    // Generation 2 as well, so both parities hold a generation from the start: from then on two empty
    // slots of a parity are never "not yet used" but damage, and recovery can say a generation is lost.
    core.superblockRepair = true;
    await core.commit();
    assert(core.durableGeneration === 2, 'a new pool holds generations 1 and 2');
    return core;
  }

  static async open(device: Device, opts: PoolOptions = {}): Promise<PoolCore> {
    const log = opts.log ?? (() => undefined);
    const recovery = await recoverSuperblock(device);
    const sb = PoolCore.chooseSuperblock(recovery, opts.rewind === true, log);
    // The superblock passed its checksum: the pool it describes starts past the superblocks.
    if (!(sb.spaceRoot === 0 || (sb.spaceRoot >= FIRST_FREE_BLOCK && sb.spaceRoot < sb.totalBlocks))) throw new PoolCorrupt(`superblock names space map root ${sb.spaceRoot} outside the pool`);
    if (!(sb.catalogRoot === 0 || (sb.catalogRoot >= FIRST_FREE_BLOCK && sb.catalogRoot < sb.totalBlocks))) throw new PoolCorrupt(`superblock names catalog root ${sb.catalogRoot} outside the pool`);
    if (sb.totalBlocks > device.sizeBlocks) throw new PoolCorrupt(`pool claims ${sb.totalBlocks} blocks, device has ${device.sizeBlocks}`);
    if (recovery.lostGeneration === null && sb.formatVersion !== FORMAT_VERSION_UNMIRRORED) await PoolCore.restoreNewestCopies(device, recovery, sb);
    const core = await PoolCore.assemble(device, sb, opts);
    await core.catalog.load();
    core.superblockRepair = recovery.repairNeeded || recovery.lostGeneration !== null;
    // Written by a version that did not count metadata: counted once here, on the generation that
    // opened (replay then counts what it changes); the next commit stores the count.
    if (core.space.metaObjects === null) {
      core.space.metaObjects = await countMetaObjects(device, sb);
      core.superblockRepair ||= core.space.metaObjects !== null;
    }
    // Replay first, against the generation that opened: the records past its tail were made after it.
    if (hasIntentLog(sb.formatVersion)) await core.replayLog(opts.rewind === true, recovery.lostGeneration ?? Infinity);
    await openKeyring(core);
    // Older formats are upgraded in place as far as their blocks allow, in one commit.
    const from = core.sb.formatVersion;
    const mirrored = from !== FORMAT_VERSION_UNMIRRORED || await core.upgradeToMirrored();
    const logged = mirrored && (hasIntentLog(from) || await core.upgradeToLogged());
    if (core.sb.formatVersion !== from) {
      assert(mirrored && core.sb.formatVersion > from, 'an upgrade moves the format forward');
      await core.commit();
      core.log('pool_format_upgraded', { from, to: core.sb.formatVersion, generation: core.durableGeneration, intentLog: logged });
    }
    // A rewind is made durable at once: the next open must not need to be told again.
    if (recovery.lostGeneration !== null) await core.commit();
    assert(core.durableGeneration >= sb.generation, 'an opened pool is at least at the generation it opened');
    core.scheduleGc();
    return core;
  }

  /**
   * Rewrites a copy of the newest generation that is damaged or behind (a crash between its two writes)
   * from the one that opened. Only a commit of the same parity would otherwise, and a crash in that
   * commit before its mirror write would leave its generation with one copy and the damage in place.
   */
  private static async restoreNewestCopies(device: Device, recovery: SuperblockRecovery, sb: Superblock): Promise<void> {
    const stale = recovery.copies.filter((c) => c.parity === sb.generation % 2
      && !(c.decoded.state === 'valid' && c.decoded.sb.generation === sb.generation));
    assert(stale.length < 2, 'the generation that opens has a valid copy');
    for (const c of stale) await device.write(c.blockNumber, encodeSuperblock(sb, c.blockNumber));
    if (stale.length > 0) await device.flush();
  }

  /** The superblock to open, refusing (SuperblockLost) one that would silently drop a generation. */
  private static chooseSuperblock(recovery: SuperblockRecovery, rewind: boolean, log: PoolCore['log']): Superblock {
    const { sb, lostGeneration, findings } = recovery;
    if (sb === null) throw new PoolCorrupt(`no valid superblock: not a Cairn pool, or every copy is damaged (${findings.map((f) => f.message).join('; ')})`);
    // Recovery reports as lost only the generation after the newest valid one.
    assert(lostGeneration === null || lostGeneration === sb.generation + 1, 'a lost generation follows the newest valid one');
    for (const f of findings) log(f.problem ? 'superblock_copy_corrupt' : 'superblock_copy_torn', { block: f.blockNumber, message: f.message });
    if (lostGeneration === null) return sb;
    if (!rewind) {
      const blocks = [copyBlock('primary', lostGeneration), copyBlock('mirror', lostGeneration)];
      throw new SuperblockLost(lostGeneration, sb.generation, `neither copy of its superblock (blocks ${blocks.join(' and ')}) is valid`);
    }
    log('pool_rewind', {
      lostGeneration, generation: sb.generation,
      message: `rewinding to generation ${sb.generation}: generation ${lostGeneration} is discarded, with every write and change it committed (those acknowledged after generation ${sb.generation} was durable)`,
    });
    return sb;
  }

  /**
   * A format-1 pool becomes format 2 when its mirror slots are free: they are taken in the space map
   * and zeroed, and the next commit (open runs it) writes both copies. Otherwise it stays format 1 (one
   * copy per generation), which is logged; moving the blocks that hold the slots is not worth its risk.
   */
  private async upgradeToMirrored(): Promise<boolean> {
    assert(this.sb.formatVersion === FORMAT_VERSION_UNMIRRORED, 'only a format-1 pool is upgraded');
    const upgraded = await this.mutate(async () => {
      for (const b of SUPERBLOCK_MIRROR_SLOTS) if (await this.space.get(b) !== 0) return false;
      for (const b of SUPERBLOCK_MIRROR_SLOTS) await this.space.incref(b);
      await PoolCore.zeroMirrorSlots(this.device);
      this.sb = { ...this.sb, formatVersion: FORMAT_VERSION_MIRRORED, firstMirroredGeneration: this.store.txn };
      return true;
    });
    if (!upgraded) {
      this.log('superblock_unmirrored_warning', {
        message: `format ${FORMAT_VERSION_UNMIRRORED} pool kept as it is: blocks ${SUPERBLOCK_MIRROR_SLOTS.join(' and ')} are in use, so each generation keeps one superblock copy and damage to the newest cannot be told from a torn write`,
      });
    }
    return upgraded;
  }

  /**
   * A format-2 pool gets an intent log when a free run of blocks can hold it: taken, zeroed, and named
   * by the next superblock (format 3; open commits it). Otherwise it stays format 2 and every flush
   * commits, which is logged.
   */
  private async upgradeToLogged(): Promise<boolean> {
    assert(this.sb.formatVersion === FORMAT_VERSION_MIRRORED && this.intentLog === null, 'only a format-2 pool gets a log');
    if (await this.attachNewLog()) return true;
    this.log('intent_log_unavailable_warning', {
      message: `no free run of ${logBlocksFor(this.sb.totalBlocks)} blocks for an intent log: the pool stays format ${FORMAT_VERSION_MIRRORED} and every flush commits`,
    });
    return false;
  }

  /**
   * Takes a free run for the log region (counted as used, like the superblock slots), zeroes it so
   * nothing left in those blocks can pass for a log block, and starts the log; the next commit's
   * superblock names it (its first flush makes the zeroes durable before that). False when no run is free.
   */
  private async attachNewLog(): Promise<boolean> {
    const blocks = logBlocksFor(this.sb.totalBlocks);
    const start = await this.mutate(async () => {
      const at = await this.space.findFreeRun(blocks, LOG_REGION_SCAN_PAGES_MAX);
      if (at === null) return null;
      await this.space.addRange(at, blocks, 1);
      return at;
    });
    if (start === null) return false;
    for (let at = 0; at < blocks; at += DEVICE_IO_BLOCKS_MAX) {
      await this.device.write(start + at, Buffer.alloc(Math.min(DEVICE_IO_BLOCKS_MAX, blocks - at) * BLOCK_SIZE_BYTES));
    }
    this.sb = { ...this.sb, formatVersion: FORMAT_VERSION_LOGGED, logStartBlock: start, logBlocks: blocks, logTailSeq: 0 };
    this.intentLog = new IntentLog(this, { startBlock: start, blocks }, this.sb.poolUuid, 0, 0);
    return true;
  }

  /**
   * Replays the intent log (intent-log-replay.ts) and commits what it applied or discarded, so the
   * region's blocks past the old tail are retired before any new flush writes after them.
   */
  private async replayLog(rewind: boolean, txnMax: number): Promise<void> {
    assert(hasIntentLog(this.sb.formatVersion) && this.intentLog === null, 'a format-3 or later pool replays its log once, at open');
    const started = Date.now();
    const scan = await scanIntentLog(this, rewind, txnMax);
    // Attached before the records are applied: any commit from here on names the log's new head as its tail.
    this.intentLog = new IntentLog(this, { startBlock: this.sb.logStartBlock, blocks: this.sb.logBlocks }, this.sb.poolUuid, scan.nextSeq, this.sb.logTailSeq);
    const result = await applyIntentLog(this, scan);
    if (scan.discarded !== null) this.log('log_flush_discarded', { reason: scan.discarded });
    if (!scan.foundPastTail) return;
    this.superblockRepair = true; // commit even when only discarded blocks moved the tail
    await this.commit();
    this.log('log_replayed', { ...result, generation: this.durableGeneration, durationMs: Date.now() - started });
  }

  private static async zeroMirrorSlots(device: Device): Promise<void> {
    // Called once the device's size was checked against POOL_BLOCKS_MIN, which holds the slots.
    assert(device.sizeBlocks >= POOL_BLOCKS_MIN, 'the mirror slots lie inside the device');
    for (const b of SUPERBLOCK_MIRROR_SLOTS) await device.write(b, Buffer.alloc(BLOCK_SIZE_BYTES));
  }

  private static async assemble(device: Device, sb: Superblock, opts: PoolOptions): Promise<PoolCore> {
    assert(sb.totalBlocks <= device.sizeBlocks, 'the pool fits its device (checked by create and open)');
    if (!(sb.totalBlocks >= POOL_BLOCKS_MIN && sb.totalBlocks <= POOL_BLOCKS_MAX)) {
      throw new PoolCorrupt(`superblock claims ${sb.totalBlocks} blocks, outside [${POOL_BLOCKS_MIN}, ${POOL_BLOCKS_MAX}]`);
    }
    // Every write of the pool goes through the deferring layer: held small writes are never shadowed.
    const deferred = new DeferredData(device);
    const store = new MetaStore(deferred, sb.generation + 1, opts.cacheBytesMax ?? CACHE_BYTES_DEFAULT);
    store.totalBlocks = sb.totalBlocks;
    const space = new SpaceMap(store, sb.spaceRoot, sb.totalBlocks, metaReserveBlocks(sb.totalBlocks));
    await space.init();
    space.metaObjects = sb.metaObjects;
    const catalog = new Catalog(store, sb.catalogRoot, sb.catalogSlots, (old) => space.decrefMeta(old));
    return new PoolCore(deferred, store, space, catalog, sb, opts);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // A full commit, not a log flush: a closed pool opens without replay.
    if (!this.poisoned) await this.commit();
    await this.mutex.run(async () => {
      this.assertHeld();
      this.closed = true;
      this.cancelCommitTimer();
    });
    await this.commitChain;
    this.keyring?.close();
    await this.device.close();
  }

  ensureUsable(): void {
    if (this.closed) throw new PoolClosed();
    if (this.poisoned) throw new IoError(`pool stopped after a failed commit (${this.poisoned.message}); reopen it`);
  }

  // ---- events and reads in flight ----

  onTargetEvent(listener: (e: TargetEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(event: TargetEvent): void {
    assert(event.id > 0, 'an event names its target');
    for (const l of this.listeners) l(event);
  }

  beginRead(): number {
    const epoch = this.readEpoch;
    assert(Number.isSafeInteger(epoch) && epoch >= 0, 'read epochs count commits');
    this.activeReads.set(epoch, (this.activeReads.get(epoch) ?? 0) + 1);
    return epoch;
  }
  endRead(epoch: number): void {
    const count = this.activeReads.get(epoch);
    // Each beginRead has one endRead: an unmatched one would release blocks a read still uses.
    if (count === undefined || count < 1) fail(`read of epoch ${epoch} ended without beginning`);
    const n = count - 1;
    if (n === 0) this.activeReads.delete(epoch); else this.activeReads.set(epoch, n);
    this.space.releaseQuarantine(this.oldestReadEpoch());
  }
  private oldestReadEpoch(): number {
    let oldest = Infinity;
    for (const e of this.activeReads.keys()) oldest = Math.min(oldest, e);
    // A read begun at a later epoch than the current one would release frees before their commit.
    if (oldest !== Infinity && oldest > this.readEpoch) fail(`a read of epoch ${oldest} is ahead of epoch ${this.readEpoch}`);
    return oldest;
  }

  // ---- mutations and commit ----

  /**
   * Runs a metadata mutation under the lock. An assertion failure inside stops the pool: the
   * in-memory state can no longer be trusted, and the durable state is still intact.
   */
  async mutate<T>(fn: () => Promise<T>): Promise<T> {
    this.ensureUsable();
    const release = await this.mutex.lock();
    this.assertHeld();
    const changesBefore = this.store.changes;
    try {
      this.ensureUsable();
      return await fn();
    } catch (err) {
      this.poisonIfChanged(err, changesBefore);
      throw err;
    } finally {
      this.trees.endEdits();
      this.store.trim();
      release();
      this.afterMutation();
    }
  }

  /**
   * mutate() for a change made without awaiting, when the lock is free: it runs at once, without the
   * lock's promise round trips (each write's mapping switch: ~7 % less event-loop time per 4 KiB write).
   * `fn` returns undefined, having changed nothing, when it cannot finish synchronously; so does this
   * when the lock is held or awaited. The caller then takes mutate().
   */
  mutateNow<T>(fn: () => T | undefined): T | undefined {
    this.ensureUsable();
    if (!this.fastPaths || !this.mutex.idle) return undefined;
    const changesBefore = this.store.changes;
    let result: T | undefined;
    try {
      // Held for fn's synchronous run: nothing can interleave, and the modules' assertHeld() pass.
      result = this.mutex.runNow(fn);
    } catch (err) {
      this.poisonIfChanged(err, changesBefore);
      throw err;
    } finally {
      this.store.trim();
      this.afterMutation();
    }
    return result;
  }

  /**
   * A failure after a mutation began changing metadata (a bad metadata block met half-way, an I/O
   * error, an engine bug) leaves the in-memory state half-done: stop before it is committed. The
   * durable state is intact; reopening the pool recovers it.
   */
  private poisonIfChanged(err: unknown, changesBefore: number): void {
    assert(this.store.changes >= changesBefore, 'the change counter only grows');
    if (err instanceof AssertionError || this.store.changes !== changesBefore) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('engine_stopped', { message: this.poisoned.message });
    }
  }

  private afterMutation(): void {
    // Runs after the lock is released (mutate) or after the synchronous run (mutateNow).
    assert(!this.mutex.held, 'after a mutation the lock is released');
    // Commit early when dirty metadata passes its bound, or when blocks freed by overwrites (reusable
    // only after a commit) grow past a quarter of what is still free, or past 128 MiB when they are
    // cheap to release: many frees per dirty node means large overwrites, and releasing their blocks
    // sooner keeps a pool file's footprint small (blocks in a sparse file's holes cost ~2x to write).
    // Random 4 KiB overwrites free about one block per dirty leaf; committing those every 128 MiB
    // rewrote so many leaves that IOPS fell by a quarter (measured), so they wait for the quarter.
    const frees = this.space.pendingFreeBlocks;
    // The absolute bound keeps the list of held frees (8 bytes each) small in a huge pool.
    const freesHeld = frees > Math.max(FREES_EARLY_COMMIT_BLOCKS_MIN, Math.min(FREES_HELD_BLOCKS_MAX, this.space.availableBlocks / FREES_AVAILABLE_DIVISOR)) ||
      (frees >= FREES_EARLY_COMMIT_BLOCKS && frees >= FREES_PER_DIRTY_NODE_MIN * this.store.dirty.size);
    if (this.store.dirty.size >= this.dirtyMax || freesHeld) this.commitInBackground();
    else if (this.commitIntervalMs > 0 && !this.commitTimer && this.store.dirty.size > 0 && !this.closed) {
      this.commitTimer = setTimeout(() => {
        this.commitTimer = null;
        this.commitInBackground();
      }, this.commitIntervalMs);
      this.commitTimer.unref();
    }
  }

  /**
   * A commit nobody awaits. commitNow logs every failure of a commit it started ('commit_failed') and
   * stops the pool, so the next request fails with the cause; a commit refused because the pool had
   * already stopped was logged when it stopped ('engine_stopped' or 'commit_failed'). Logging here too
   * would say the same thing twice.
   */
  commitInBackground(): void {
    void this.commit().catch(() => undefined);
  }

  private cancelCommitTimer(): void {
    assert(this.commitIntervalMs >= 0, 'a commit interval');
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = null;
  }

  /**
   * Every write completed before this call is durable when it resolves: through the intent log (one
   * device sync for the data and the records), or a commit in a pool without one. Concurrent flushes
   * share a round (group commit).
   */
  flush(): Promise<void> {
    this.ensureUsable();
    assert(this.durableGeneration <= this.store.txn, 'the durable generation is not ahead of the open one');
    return this.intentLog ? this.intentLog.flush() : this.commit();
  }

  /** LogHost: a failed log write stops the pool like a failed commit. */
  stop(err: Error, event: string, fields: Record<string, unknown>): void {
    assert(event.length > 0, 'a stop names its cause');
    if (this.poisoned === null) this.poisoned = err;
    this.log(event, { ...fields, error: err.message });
  }

  commit(): Promise<void> {
    if (this.queuedCommit) return this.queuedCommit;
    assert(this.durableGeneration < this.store.txn, 'the open transaction follows the last durable one');
    const run = this.commitChain.then(() => this.commitNow());
    this.queuedCommit = run;
    // The chain only orders commits: this one's failure reaches its callers through `run`, and was
    // logged by commitNow; the next commit must still wait for it, whatever its outcome.
    this.commitChain = run.catch(() => undefined);
    return run;
  }

  private async commitNow(): Promise<void> {
    if (this.poisoned) {
      this.queuedCommit = null;
      throw new IoError(`pool stopped after a failed commit (${this.poisoned.message}); reopen it`);
    }
    const started = Date.now();
    const release = await this.mutex.lock();
    this.assertHeld();
    // Until now this commit would still take every write completed so far, so commit() callers
    // joined it. While it waited for the lock, the writes that had raced past the dirty bound in the
    // same tick each asked for a commit: when the queue was released before the wait, the second of
    // them queued one more, which ran ~20-35 ms later for the ~1,000-1,700 nodes dirtied meanwhile
    // (two more fdatasyncs, and those nodes shadowed again by the next writes).
    this.queuedCommit = null;
    let writes: CommitBlock[];
    let freed: FreedBlocks;
    let sb: Superblock;
    let cut: LogCut | null = null;
    try {
      if (this.store.dirty.size === 0 && this.space.pendingFreeBlocks === 0 && !this.superblockRepair) return;
      // The log's records so far are this commit's: its superblock's tail is the log's next block.
      cut = this.intentLog?.commitPrepared() ?? null;
      // Pages of the space map and catalog get their new locations now; allocating one may dirty
      // another page, so repeat until every dirty object has a place.
      for (;;) {
        const unlocated = [...this.space.array.unlocated(), ...this.catalog.array.unlocated()];
        if (unlocated.length === 0) break;
        for (const obj of unlocated) {
          obj.block = await this.space.allocMeta();
          this.store.put(obj);
        }
      }
      this.space.array.fillPointers();
      this.catalog.array.fillPointers();
      const generation = this.store.txn;
      // A failed commit stops the pool (poisoned, checked above): commits are never skipped.
      assert(generation === this.durableGeneration + 1, 'a commit writes the generation after the durable one');
      writes = this.store.takeDirtyForCommit();
      // The interval bounds the age of dirty metadata: this commit takes all of it, so the next
      // timer starts with the next dirty object. A timer left running from before fired within
      // moments of a commit the dirty bound had started and queued a second one for the ~2,000 nodes
      // dirtied meanwhile (two more fdatasyncs, and those nodes shadowed again).
      this.cancelCommitTimer();
      this.space.array.afterCommit();
      this.catalog.array.afterCommit();
      freed = this.space.sealPendingFrees();
      sb = {
        ...this.sb, generation, spaceRoot: this.space.array.rootBlock, catalogRoot: this.catalog.array.rootBlock,
        catalogSlots: this.catalog.slotsUsed, logTailSeq: cut?.tailSeq ?? this.sb.logTailSeq, metaObjects: this.space.metaObjects,
      };
      this.sb = sb;
    } catch (err) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('commit_failed', { generation: this.store.txn, phase: 'prepare', error: this.poisoned.message });
      if (cut) this.intentLog!.commitSettled(cut, this.poisoned);
      throw err;
    } finally {
      release();
    }
    try {
      await this.writeCoalesced(writes, sb.generation);
      await this.device.flush();
      await this.writeSuperblockCopies(sb);
      this.store.committed();
      this.superblockRepair = false;
    } catch (err) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('commit_failed', { generation: sb.generation, error: this.poisoned.message });
      if (cut) this.intentLog!.commitSettled(cut, this.poisoned);
      throw new IoError(`commit failed: ${this.poisoned.message}`);
    }
    if (cut) this.intentLog!.commitSettled(cut, null);
    this.durableGeneration = sb.generation;
    this.readEpoch++;
    this.space.committed(freed, this.readEpoch);
    this.space.releaseQuarantine(this.oldestReadEpoch());
    this.log('commit', { generation: sb.generation, metaBlocks: writes.length, freedBlocks: freed.blocks, durationMs: Date.now() - started });
    await this.shredReleasedKeys(sb.generation);
    this.scheduleGc();
  }

  /**
   * Destroys the keys whose last record's removal is now durable, before the commit that made it so
   * resolves: a delete that returned has shredded its lineage's key. A crash before this is caught up
   * at open (pool-keyring.ts: a slot no record names is shredded).
   */
  private async shredReleasedKeys(generation: number): Promise<void> {
    if (this.releasedKeys.length === 0) return;
    const due = this.releasedKeys.filter((k) => k.txn <= generation && this.catalog.keyUsers.get(k.keyId) === undefined);
    this.releasedKeys = this.releasedKeys.filter((k) => k.txn > generation);
    if (due.length === 0) return;
    assert(this.keyring !== null, 'a pool with released keys has a keyring');
    try {
      await this.keyring.shred(due.map((k) => k.keyId));
    } catch (err) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('key_shred_failed', { keyIds: due.map((k) => k.keyId), error: this.poisoned.message });
      throw new IoError(`destroying a deleted lineage's key failed: ${this.poisoned.message}`);
    }
    this.log('key_shredded', { keyIds: due.map((k) => k.keyId), generation });
  }

  /**
   * engine.md: the superblock goes last, in the slots the previous commit did not use: the primary,
   * a flush, then the mirror and a flush. The order is what recovery reasons with: a mirror of g
   * proves the primary of g was durable, so a generation whose copies are both bad was complete (and
   * is reported lost), while a torn primary with an older mirror is a commit never acknowledged.
   */
  private async writeSuperblockCopies(sb: Superblock): Promise<void> {
    assert(sb.generation > this.durableGeneration, 'a superblock is written for a new generation');
    const primary = copyBlock('primary', sb.generation);
    await this.device.write(primary, encodeSuperblock(sb, primary));
    await this.device.flush();
    if (sb.formatVersion === FORMAT_VERSION_UNMIRRORED) return;
    const mirror = copyBlock('mirror', sb.generation);
    await this.device.write(mirror, encodeSuperblock(sb, mirror));
    await this.device.flush();
  }

  /**
   * Writes the commit's blocks, contiguous ones as one write of up to 1 MiB, encoding the tree nodes
   * the lock left unencoded straight into each run's buffer. Every COMMIT_ENCODE_YIELD_BLOCKS encoded
   * it yields, so requests keep being served while a large commit is encoded.
   */
  private async writeCoalesced(writes: CommitBlock[], generation: number): Promise<void> {
    let i = 0, encodedSinceYield = 0;
    const pending: Promise<void>[] = [];
    const limits = this.store.writeLimits();
    while (i < writes.length) {
      let j = i + 1;
      while (j < writes.length && writes[j]!.block === writes[j - 1]!.block + 1 && j - i < COMMIT_RUN_BLOCKS_MAX) j++;
      assert(j - i <= COMMIT_RUN_BLOCKS_MAX, 'a commit write is at most one run');
      const run = takeDeviceBuffer((j - i) * BLOCK_SIZE_BYTES);
      for (let k = i; k < j; k++) {
        const { block, obj, encoded } = writes[k]!;
        const at = run.subarray((k - i) * BLOCK_SIZE_BYTES, (k - i + 1) * BLOCK_SIZE_BYTES);
        if (encoded) { encoded.copy(at); continue; }
        // A node re-dirtied in place by a later transaction would carry that transaction's number.
        if (obj.txn !== generation || obj.block !== block) fail(`metadata block ${block} changed after its commit took it`);
        encodeMetaInto(obj, at, limits);
        encodedSinceYield++;
      }
      // Back to the pool once the device is done with it, whatever the outcome (a failed commit stops the pool).
      pending.push(this.device.write(writes[i]!.block, run).finally(() => releaseDeviceBuffer(run)));
      i = j;
      if (pending.length >= COMMIT_WRITES_IN_FLIGHT_MAX) await Promise.all(pending.splice(0));
      if (encodedSinceYield >= COMMIT_ENCODE_YIELD_BLOCKS) {
        encodedSinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await Promise.all(pending);
  }

  // ---- growing ----

  /**
   * Grows the pool to `totalBlocks` (the device holds them already, durably): the space map's new
   * blocks, its summaries, the metadata reserve and the superblock's size all change in one
   * transaction, committed before this resolves. A power cut at any point leaves the old size or the
   * new one, each consistent: until the superblock is written nothing durable points past the old end.
   */
  async grow(totalBlocks: number): Promise<void> {
    await this.mutate(async () => {
      const current = this.sb.totalBlocks;
      if (totalBlocks < current) throw new PoolShrinkRefused(current * BLOCK_SIZE_BYTES, totalBlocks * BLOCK_SIZE_BYTES);
      if (totalBlocks > this.device.sizeBlocks) fail(`pool of ${totalBlocks} blocks fits its device of ${this.device.sizeBlocks}`);
      if (totalBlocks === current) return;
      await this.space.grow(totalBlocks, metaReserveBlocks(totalBlocks));
      this.sb = { ...this.sb, totalBlocks };
      // Reads validate every block number against the pool's size: the new blocks are now inside it.
      this.store.totalBlocks = totalBlocks;
      this.dirtyMax = dirtyObjectsMax(totalBlocks);
      this.log('pool_grown', { fromBlocks: current, toBlocks: totalBlocks });
    });
    // Grows run one at a time (the engine's growChain): no other grow moved the size meanwhile.
    assert(this.sb.totalBlocks === totalBlocks, 'the pool has its new size');
    await this.commit();
  }

  // ---- dropping trees ----

  /** Queues one reference to a tree root for freeing (in the catalog, so it survives a crash). */
  async dropTree(root: number): Promise<void> {
    this.assertHeld();
    if (root === 0) return;
    // A root is a tree node: inside the pool, past the superblocks (a catalog record passed its validator).
    if (!(root >= FIRST_FREE_BLOCK && root < this.sb.totalBlocks)) fail(`dropping tree root ${root} outside the pool`);
    await this.catalog.add({
      kind: RecordKind.DeadNode, flags: 0, id: 0, root, sizeBytes: 0, mappedBlocks: 0, createdMs: 0,
      parentId: 0, originSnapId: 0, flattenCursor: 0, seq: 0, name: '', keyId: 0,
    });
  }

  /**
   * Frees up to `nodesMax` queued nodes; returns how many remain. Call under the lock.
   *
   * A queued node that cannot be read must not stop the pool: it belongs to something already deleted,
   * and every live volume is fine. dropRef reads the node before it changes anything, so when it fails
   * with nothing changed the state is whole: a damaged node (MetaCorrupt) is given up, its subtree
   * leaked (`gc_node_leaked`; `cairn check` reports the leak), as ZFS leaks what an async destroy cannot
   * read; a read error (EIO) ends the step and the node is tried again after a later commit.
   */
  async freeSomeNodes(nodesMax: number): Promise<number> {
    this.assertHeld();
    assert(nodesMax > 0, 'a delete step frees at least one node');
    let done = 0;
    this.gcDeferred = null;
    while (done < nodesMax && this.catalog.deadNodes.length > 0) {
      const rec: CatalogRecord = this.catalog.deadNodes[this.catalog.deadNodes.length - 1]!;
      assert(rec.kind === RecordKind.DeadNode, 'the dead-node queue holds dead nodes');
      const changesBefore = this.store.changes;
      let children: number[];
      try {
        children = await this.trees.dropRef(rec.root);
      } catch (err) {
        if (!(err instanceof CairnError) || err instanceof AssertionError || this.store.changes !== changesBefore) throw err;
        if (!(err instanceof MetaCorrupt)) {
          this.log('gc_deferred', { block: rec.root, error: err.message });
          this.gcDeferred = err;
          break;
        }
        this.log('gc_node_leaked', { block: rec.root, error: err.message });
        this.space.forgetMetaObject();
        children = [];
      }
      await this.catalog.remove(rec);
      for (const c of children) await this.dropTree(c);
      done++;
    }
    return this.catalog.deadNodes.length;
  }

  scheduleGc(): void {
    if (this.gcScheduled || this.catalog.deadNodes.length === 0 || this.closed || this.poisoned) return;
    this.gcScheduled = true;
    setImmediate(() => {
      this.gcScheduled = false;
      if (this.closed || this.poisoned) return;
      void this.mutate(() => this.freeSomeNodes(DELETE_NODES_PER_STEP))
        .then(() => this.commit())
        .catch((err: unknown) => this.log('gc_failed', { error: err instanceof Error ? err.message : String(err) }));
    });
  }

  /** Frees every queued node now (tests); an IoError when a node cannot be read (freeSomeNodes). */
  async drainDeletes(): Promise<void> {
    this.ensureUsable();
    while (this.catalog.deadNodes.length > 0) {
      await this.mutate(() => this.freeSomeNodes(DELETE_NODES_PER_STEP));
      await this.commit();
      if (this.gcDeferred) throw new IoError(`freeing deleted metadata stopped: ${this.gcDeferred.message} (tried again after a later commit)`);
    }
  }

  /** Fails unless the metadata lock is held (by a mutation, a commit's first phase, or mutateNow). */
  assertHeld(): void { this.mutex.assertHeld(); }
}

// ---- device-level entry points (files: pool-file.ts) ----

/** Creates a new, empty pool on `device` (its whole size). */
export async function createPool(device: Device, opts: PoolOptions = {}): Promise<CairnEngine> {
  return new CairnEngine(await PoolCore.create(device, opts));
}

/** Opens the pool on `device`: reads the superblocks and the catalog, no data blocks, no repair. */
export async function openPool(device: Device, opts: PoolOptions = {}): Promise<CairnEngine> {
  const engine = new CairnEngine(await PoolCore.open(device, opts));
  engine.resumeFlattens();
  return engine;
}

/** Offline consistency check of the pool on `device` (nothing else may hold it). */
export function checkPool(device: Device): Promise<CheckReport> { return checkDevice(device); }

