// The pool: lifecycle (create, open, close), transactions and commit, the background freeing of
// dropped trees, and the wiring of store, space map, catalog and trees. Catalog operations live in
// catalog-ops.ts and the data path in data-path.ts; both run on the PoolCore state defined here.
import { randomUUID } from 'node:crypto';
import {
  BLOCK_SIZE_BYTES, CACHE_BYTES_DEFAULT, COMMIT_ENCODE_YIELD_BLOCKS, COMMIT_INTERVAL_MS_DEFAULT, DELETE_NODES_PER_STEP, FREES_EARLY_COMMIT_BLOCKS, FREES_HELD_BLOCKS_MAX, FREES_PER_DIRTY_NODE_MIN, FIRST_FREE_BLOCK,
  dirtyObjectsMax, metaReserveBlocks,
} from './constants.js';
import type { Device } from './device/device.js';
import { MetaStore, type CommitBlock } from './meta-store.js';
import { encodeMetaInto } from './format.js';
import { SpaceMap, type FreedBlocks } from './space-map.js';
import { Catalog, RecordKind, type CatalogRecord } from './catalog.js';
import { Trees } from './btree.js';
import { Mutex } from './mutex.js';
import { BlockWriter } from './block-writer.js';
import { encodeSuperblock, readSuperblock, type Superblock } from './superblock.js';
import { AssertionError, CairnError, IoError, PoolClosed, PoolCorrupt, assert, fail } from './errors.js';
import type { CheckReport, PoolOptions, TargetEvent } from './types.js';
import { CairnEngine } from './engine.js';
import { checkDevice } from './check.js';

export class PoolCore {
  readonly mutex = new Mutex();
  readonly trees: Trees;
  readonly blockWriter: BlockWriter;
  /** Data writes between their start and the switch of their mapping (for write batching). */
  writersActive = 0;
  readonly nowMs: () => number;
  readonly log: (event: string, fields: Record<string, unknown>) => void;
  private commitChain: Promise<void> = Promise.resolve();
  private queuedCommit: Promise<void> | null = null;
  private commitTimer: NodeJS.Timeout | null = null;
  private gcScheduled = false;
  private readonly listeners = new Set<(e: TargetEvent) => void>();
  /** Commits completed; reads record it at start so frees wait for them. */
  private readEpoch = 0;
  private readonly activeReads = new Map<number, number>();
  durableGeneration: number;
  checksumErrors = 0;
  poisoned: Error | null = null;
  closed = false;
  readonly dirtyMax: number;
  readonly commitIntervalMs: number;
  /** PoolOptions.fastPaths: false makes mutateNow (and every other `...Now`) decline. */
  readonly fastPaths: boolean;

  constructor(
    readonly device: Device,
    readonly store: MetaStore,
    readonly space: SpaceMap,
    readonly catalog: Catalog,
    public sb: Superblock,
    opts: PoolOptions,
  ) {
    this.trees = new Trees(store, space);
    this.fastPaths = opts.fastPaths ?? true;
    this.trees.fastPaths = this.fastPaths;
    space.fastPaths = this.fastPaths;
    catalog.fastPaths = this.fastPaths;
    this.blockWriter = new BlockWriter(device, () => this.writersActive);
    this.nowMs = opts.nowMs ?? Date.now;
    this.log = opts.log ?? (() => undefined);
    this.durableGeneration = sb.generation;
    this.dirtyMax = dirtyObjectsMax(sb.totalBlocks);
    this.commitIntervalMs = opts.commitIntervalMs ?? COMMIT_INTERVAL_MS_DEFAULT;
  }

  // ---- lifecycle ----

  static async create(device: Device, opts: PoolOptions = {}): Promise<PoolCore> {
    const totalBlocks = device.sizeBlocks;
    if (totalBlocks < 256) throw new CairnError('invalid_size', `pool needs at least 1 MiB, device has ${totalBlocks} blocks`);
    await device.write(0, Buffer.alloc(BLOCK_SIZE_BYTES * FIRST_FREE_BLOCK));
    const sb: Superblock = { generation: 0, totalBlocks, spaceRoot: 0, catalogRoot: 0, catalogSlots: 0, nextId: 1, poolUuid: randomUUID() };
    const core = await PoolCore.assemble(device, sb, opts);
    await core.mutex.run(async () => {
      for (let b = 0; b < FIRST_FREE_BLOCK; b++) await core.space.incref(b);
      await core.catalog.array.page(0, true); // materialize an (empty) catalog so the root exists
    });
    await core.commit();
    return core;
  }

  static async open(device: Device, opts: PoolOptions = {}): Promise<PoolCore> {
    const sb = await readSuperblock(device);
    if (sb.totalBlocks > device.sizeBlocks) throw new PoolCorrupt(`pool claims ${sb.totalBlocks} blocks, device has ${device.sizeBlocks}`);
    const core = await PoolCore.assemble(device, sb, opts);
    await core.catalog.load();
    core.scheduleGc();
    return core;
  }

  private static async assemble(device: Device, sb: Superblock, opts: PoolOptions): Promise<PoolCore> {
    const store = new MetaStore(device, sb.generation + 1, opts.cacheBytesMax ?? CACHE_BYTES_DEFAULT);
    const space = new SpaceMap(store, sb.spaceRoot, sb.totalBlocks, metaReserveBlocks(sb.totalBlocks));
    await space.init();
    const catalog = new Catalog(store, sb.catalogRoot, sb.catalogSlots, (old) => space.decref(old));
    return new PoolCore(device, store, space, catalog, sb, opts);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.poisoned) await this.flush();
    await this.mutex.run(async () => {
      this.closed = true;
      this.cancelCommitTimer();
    });
    await this.commitChain;
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
  emit(event: TargetEvent): void { for (const l of this.listeners) l(event); }

  beginRead(): number {
    const epoch = this.readEpoch;
    this.activeReads.set(epoch, (this.activeReads.get(epoch) ?? 0) + 1);
    return epoch;
  }
  endRead(epoch: number): void {
    const n = this.activeReads.get(epoch)! - 1;
    if (n === 0) this.activeReads.delete(epoch); else this.activeReads.set(epoch, n);
    this.space.releaseQuarantine(this.oldestReadEpoch());
  }
  private oldestReadEpoch(): number {
    let oldest = Infinity;
    for (const e of this.activeReads.keys()) oldest = Math.min(oldest, e);
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
    const changesBefore = this.store.changes;
    try {
      this.ensureUsable();
      return await fn();
    } catch (err) {
      this.poisonIfChanged(err, changesBefore);
      throw err;
    } finally {
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
      result = fn();
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
    if (err instanceof AssertionError || this.store.changes !== changesBefore) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('engine_stopped', { message: this.poisoned.message });
    }
  }

  private afterMutation(): void {
    // Commit early when dirty metadata passes its bound, or when blocks freed by overwrites (reusable
    // only after a commit) grow past a quarter of what is still free, or past 128 MiB when they are
    // cheap to release: many frees per dirty node means large overwrites, and releasing their blocks
    // sooner keeps a pool file's footprint small (blocks in a sparse file's holes cost ~2x to write).
    // Random 4 KiB overwrites free about one block per dirty leaf; committing those every 128 MiB
    // rewrote so many leaves that IOPS fell by a quarter (measured), so they wait for the quarter.
    const frees = this.space.pendingFreeBlocks;
    // The absolute bound keeps the list of held frees (8 bytes each) small in a huge pool.
    const freesHeld = frees > Math.max(64, Math.min(FREES_HELD_BLOCKS_MAX, this.space.availableBlocks / 4)) ||
      (frees >= FREES_EARLY_COMMIT_BLOCKS && frees >= FREES_PER_DIRTY_NODE_MIN * this.store.dirty.size);
    if (this.store.dirty.size >= this.dirtyMax || freesHeld) void this.commit().catch(() => undefined);
    else if (this.commitIntervalMs > 0 && !this.commitTimer && this.store.dirty.size > 0 && !this.closed) {
      this.commitTimer = setTimeout(() => {
        this.commitTimer = null;
        void this.commit().catch(() => undefined);
      }, this.commitIntervalMs);
      this.commitTimer.unref();
    }
  }

  private cancelCommitTimer(): void {
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = null;
  }

  /** Every write completed before this call is durable when it resolves (group commit). */
  flush(): Promise<void> {
    this.ensureUsable();
    return this.commit();
  }

  commit(): Promise<void> {
    if (this.queuedCommit) return this.queuedCommit;
    const run = this.commitChain.then(() => this.commitNow());
    this.queuedCommit = run;
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
    // Until now this commit would still take every write completed so far, so commit() callers
    // joined it. While it waited for the lock, the writes that had raced past the dirty bound in the
    // same tick each asked for a commit: when the queue was released before the wait, the second of
    // them queued one more, which ran ~20-35 ms later for the ~1,000-1,700 nodes dirtied meanwhile
    // (two more fdatasyncs, and those nodes shadowed again by the next writes).
    this.queuedCommit = null;
    let writes: CommitBlock[];
    let freed: FreedBlocks;
    let sb: Superblock;
    try {
      if (this.store.dirty.size === 0 && this.space.pendingFreeBlocks === 0) return;
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
        catalogSlots: this.catalog.slotsUsed,
      };
      this.sb = sb;
    } catch (err) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      throw err;
    } finally {
      release();
    }
    try {
      await this.writeCoalesced(writes, sb.generation);
      await this.device.flush();
      // engine.md: the superblock goes last, in the slot the previous commit did not use.
      await this.device.write(sb.generation % 2, encodeSuperblock(sb));
      await this.device.flush();
      this.store.committed();
    } catch (err) {
      this.poisoned = err instanceof Error ? err : new Error(String(err));
      this.log('commit_failed', { generation: sb.generation, error: this.poisoned.message });
      throw new IoError(`commit failed: ${this.poisoned.message}`);
    }
    this.durableGeneration = sb.generation;
    this.readEpoch++;
    this.space.committed(freed, this.readEpoch);
    this.space.releaseQuarantine(this.oldestReadEpoch());
    this.log('commit', { generation: sb.generation, metaBlocks: writes.length, freedBlocks: freed.blocks, durationMs: Date.now() - started });
    this.scheduleGc();
  }

  /**
   * Writes the commit's blocks, contiguous ones as one write of up to 1 MiB, encoding the tree nodes
   * the lock left unencoded straight into each run's buffer. Every COMMIT_ENCODE_YIELD_BLOCKS encoded
   * it yields, so requests keep being served while a large commit is encoded.
   */
  private async writeCoalesced(writes: CommitBlock[], generation: number): Promise<void> {
    let i = 0, encodedSinceYield = 0;
    const pending: Promise<void>[] = [];
    while (i < writes.length) {
      let j = i + 1;
      while (j < writes.length && writes[j]!.block === writes[j - 1]!.block + 1 && j - i < 256) j++;
      const run = Buffer.allocUnsafe((j - i) * BLOCK_SIZE_BYTES);
      for (let k = i; k < j; k++) {
        const { block, obj, encoded } = writes[k]!;
        const at = run.subarray((k - i) * BLOCK_SIZE_BYTES, (k - i + 1) * BLOCK_SIZE_BYTES);
        if (encoded) { encoded.copy(at); continue; }
        // A node re-dirtied in place by a later transaction would carry that transaction's number.
        if (obj.txn !== generation || obj.block !== block) fail(`metadata block ${block} changed after its commit took it`);
        encodeMetaInto(obj, at);
        encodedSinceYield++;
      }
      pending.push(this.device.write(writes[i]!.block, run));
      i = j;
      if (pending.length >= 16) await Promise.all(pending.splice(0));
      if (encodedSinceYield >= COMMIT_ENCODE_YIELD_BLOCKS) {
        encodedSinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await Promise.all(pending);
  }

  // ---- dropping trees ----

  /** Queues one reference to a tree root for freeing (in the catalog, so it survives a crash). */
  async dropTree(root: number): Promise<void> {
    if (root === 0) return;
    await this.catalog.add({
      kind: RecordKind.DeadNode, flags: 0, id: 0, root, sizeBytes: 0, mappedBlocks: 0, createdMs: 0,
      parentId: 0, originSnapId: 0, flattenCursor: 0, seq: 0, name: '',
    });
  }

  /** Frees up to `nodesMax` queued nodes; returns how many remain. Call under the lock. */
  async freeSomeNodes(nodesMax: number): Promise<number> {
    let done = 0;
    while (done < nodesMax && this.catalog.deadNodes.length > 0) {
      const rec: CatalogRecord = this.catalog.deadNodes[this.catalog.deadNodes.length - 1]!;
      const children = await this.trees.dropRef(rec.root);
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

  /** Frees every queued node now (tests, close). */
  async drainDeletes(): Promise<void> {
    while (this.catalog.deadNodes.length > 0) {
      await this.mutate(() => this.freeSomeNodes(DELETE_NODES_PER_STEP));
      await this.commit();
    }
  }

  assertLocked(): void { assert(!this.closed, 'pool open'); }
}

// ---- device-level entry points (files: pool-file.ts) ----

/** Creates a new, empty pool on `device` (its whole size). */
export async function createPool(device: Device, opts: PoolOptions = {}): Promise<CairnEngine> {
  return new CairnEngine(await PoolCore.create(device, opts));
}

/** Opens the pool on `device`: reads the superblocks and the catalog, no data blocks, no repair. */
export async function openPool(device: Device, opts: PoolOptions = {}): Promise<CairnEngine> {
  const engine = new CairnEngine(await PoolCore.open(device, opts));
  resumeFlattens(engine);
  return engine;
}

/** Offline consistency check of the pool on `device` (nothing else may hold it). */
export function checkPool(device: Device): Promise<CheckReport> { return checkDevice(device); }

function resumeFlattens(engine: CairnEngine): void {
  for (const v of engine.listVolumes()) {
    if (v.flattenProgress !== null) {
      void engine.flattenVolume(v.name).catch((err: unknown) =>
        engine.core.log('flatten_resume_failed', { volume: v.name, error: err instanceof Error ? err.message : String(err) }));
    }
  }
}
