// The metadata store: a bounded cache of decoded metadata blocks, the set of objects dirtied in the
// open transaction (pinned until commit), and de-duplicated loads. Nothing here allocates blocks.
import { BLOCK_SIZE_BYTES } from './constants.js';
import type { Device } from './device/device.js';
import { decodeMeta, encodeMeta, MetaType, type MetaLimits, type MetaObject } from './format.js';
import { assert, fail, CairnError, IoError } from './errors.js';
import { Mutex } from './mutex.js';

/** A block of a commit: its object, and its bytes when they had to be encoded under the lock. */
export interface CommitBlock { block: number; obj: MetaObject; encoded: Buffer | null }

export class MetaStore {
  /** Generation of the open (not yet committed) transaction. */
  txn: number;
  readonly dirty = new Set<MetaObject>();
  private readonly cache = new Map<number, MetaObject>();
  private readonly loading = new Map<number, Promise<MetaObject>>();
  /** Estimated heap bytes of the cached objects (decoded blocks are larger than 4 KiB on disk). */
  private cacheBytes = 0;
  private readonly sizes = new Map<number, number>();
  /**
   * Objects of a commit whose blocks are still being written: clean for the new transaction but not
   * yet on disk, so a load must find them here even if the cache has evicted them.
   */
  private readonly committing = new Map<number, MetaObject>();
  metaReads = 0;
  /** Bumped on every in-memory metadata change; a failure after a bump leaves a half-done mutation. */
  changes = 0;
  /**
   * The metadata lock. It lives here, beside the state it guards, so that every module changing
   * metadata (trees, space map, catalog, radix arrays) can assert it is held (LevelDB's AssertHeld).
   */
  readonly mutex = new Mutex();
  /** Blocks of the pool: a metadata block may point only below this (set by the pool; grows with it). */
  totalBlocks: number;

  constructor(readonly device: Device, txn: number, private readonly cacheBytesMax: number) {
    assert(Number.isSafeInteger(txn) && txn >= 1, 'the open transaction follows a commit');
    this.txn = txn;
    this.totalBlocks = device.sizeBlocks;
  }

  /** Metadata may only be changed by the holder of the lock (a mutation, or a commit's first phase). */
  assertHeld(): void { this.mutex.assertHeld(); }

  /**
   * What a block read from the device may refer to: the pool's blocks, and generations up to the
   * last commit (a durable block from the open transaction's future is damage or another pool's).
   */
  readLimits(): MetaLimits {
    assert(this.txn >= 1, 'the open transaction follows a commit');
    return { totalBlocks: this.totalBlocks, generationMax: this.txn - 1 };
  }
  /** What a block about to be written may refer to: the pool's blocks, generations up to the open one. */
  writeLimits(): MetaLimits {
    assert(this.totalBlocks > 0, 'blocks are written inside a pool of some size');
    return { totalBlocks: this.totalBlocks, generationMax: this.txn };
  }

  private cacheSet(block: number, obj: MetaObject): void {
    assert(block >= 2 && obj.block === block, 'an object is cached under its own block');
    this.cacheDelete(block);
    const bytes = heapBytes(obj);
    this.cache.set(block, obj);
    this.sizes.set(block, bytes);
    this.cacheBytes += bytes;
  }

  private cacheDelete(block: number): void {
    const bytes = this.sizes.get(block);
    if (bytes === undefined) return;
    assert(this.cacheBytes >= bytes, 'the cache\'s byte count covers its objects');
    this.cache.delete(block);
    this.sizes.delete(block);
    this.cacheBytes -= bytes;
  }

  isDirty(obj: MetaObject): boolean { return obj.dirty && obj.txn === this.txn; }

  /** The object at `block` from the device, verified (a failed read is an IoError naming the block). */

  async load<T extends MetaObject>(block: number, type: MetaType): Promise<T> {
    // Callers pass pointers that passed their block's validator: one outside the pool is a bug here.
    if (!(block >= 2 && block < this.totalBlocks)) fail(`metadata load of block ${block} outside the pool (${this.totalBlocks} blocks)`);
    const hit = this.cache.get(block);
    if (hit) {
      hit.used = true; // second chance at eviction (a CLOCK approximation of LRU, cheaper per hit)
      return hit as T;
    }
    const writing = this.committing.get(block);
    if (writing) return writing as T;
    let pending = this.loading.get(block);
    if (!pending) {
      pending = this.readFromDevice(block, type);
      this.loading.set(block, pending);
    }
    try {
      return (await pending) as T;
    } finally {
      this.loading.delete(block);
    }
  }

  private async readFromDevice(block: number, type: MetaType): Promise<MetaObject> {
    assert(!this.cache.has(block) || this.loading.has(block), 'a cached block is not read again');
    const buf = Buffer.allocUnsafe(BLOCK_SIZE_BYTES);
    try {
      await this.device.read(block, buf);
    } catch (err) {
      throw err instanceof CairnError ? err : new IoError(`metadata read of block ${block} failed: ${(err as Error).message}`);
    }
    this.metaReads++;
    const obj = decodeMeta(buf, block, type, this.readLimits());
    if (!this.cache.has(block)) this.cacheSet(block, obj);
    return this.cache.get(block)!;
  }

  /** The cached object at `block`, without I/O (undefined if it would need a read). */
  peek(block: number): MetaObject | undefined {
    // No assertion here: the hot read path peeks at every level. Callers pass validated pointers.
    return this.cache.get(block) ?? this.committing.get(block);
  }

  /** Registers a (new or relocated) object under its block. */
  put(obj: MetaObject): void {
    assert(obj.block === 0 || obj.block >= 2, 'an object lives past the superblocks');
    if (obj.block !== 0) this.cacheSet(obj.block, obj);
  }

  forget(block: number): void {
    // A dirty object stays pinned until its commit: forgetting it would lose the transaction's change.
    const obj = this.cache.get(block);
    if (obj !== undefined && obj.block === block && this.isDirty(obj) && this.dirty.has(obj)) fail(`forgetting dirty metadata block ${block}`);
    this.cacheDelete(block);
  }

  markDirty(obj: MetaObject): void {
    this.assertHeld();
    this.changes++;
    obj.txn = this.txn;
    obj.dirty = true;
    this.dirty.add(obj);
  }

  /** Takes an object this transaction made back out of the dirty set (it is being freed). */
  undirty(obj: MetaObject): void {
    this.assertHeld();
    if (!(obj.dirty || !this.dirty.has(obj))) fail(`metadata block ${obj.block} in the dirty set without its flag`);
    obj.dirty = false;
    this.dirty.delete(obj);
  }

  /** Drops least-recently-used clean objects above the bound. Called only between mutations. */
  trim(): void {
    assert(this.cacheBytes >= 0, 'the cache\'s byte count');
    if (this.cacheBytes <= this.cacheBytesMax) return;
    let visited = 0;
    const size = this.cache.size;
    for (const [block, obj] of this.cache) {
      if (this.cacheBytes <= this.cacheBytesMax || visited++ > 2 * size) break;
      if (obj.dirty) continue;
      if (obj.used) {
        obj.used = false;
        this.cache.delete(block); this.cache.set(block, obj); // to the back of the clock
        continue;
      }
      this.cacheDelete(block);
    }
  }

  /**
   * Takes every dirty object (all must be located) for the commit and starts the next transaction.
   * Radix, count and catalog pages are encoded now: the next transaction re-dirties them in place.
   * Tree nodes are left for the commit to encode after the lock is released (`encoded` null): the
   * tree shadows every node not dirty in the open transaction (btree.ts `writable`), so nothing changes
   * them after this, and encoding ~4,000 leaves (~60 ms) no longer holds every writer back.
   */
  takeDirtyForCommit(): CommitBlock[] {
    this.assertHeld();
    const out: CommitBlock[] = [];
    const limits = this.writeLimits();
    for (const obj of this.dirty) {
      if (obj.block < 2) fail(`dirty metadata object of type ${obj.type} has no location at commit`);
      if (obj.txn !== this.txn) fail(`dirty metadata block ${obj.block} carries generation ${obj.txn}, not the open ${this.txn}`);
      const frozen = obj.type === MetaType.Leaf || obj.type === MetaType.Branch;
      out.push({ block: obj.block, obj, encoded: frozen ? null : encodeMeta(obj, limits) });
      this.cacheSet(obj.block, obj); // re-estimate: it changed while dirty
      this.committing.set(obj.block, obj);
      obj.dirty = false;
    }
    this.dirty.clear();
    this.txn++;
    out.sort((a, b) => a.block - b.block);
    return out;
  }

  /** The commit's blocks are durable on disk: loads may read them from the device again. */
  committed(): void {
    // Nothing commits twice: every object handed to the commit is clean in the open transaction.
    for (const obj of this.committing.values()) if (obj.dirty && obj.txn !== this.txn) fail(`committed block ${obj.block} still dirty from ${obj.txn}`);
    this.committing.clear();
  }

  cachedObjects(): number {
    assert(this.cache.size === this.sizes.size, 'every cached object has its size counted');
    return this.cache.size;
  }
  cachedBytes(): number {
    assert(this.cacheBytes >= 0, 'the cache\'s byte count is non-negative');
    return this.cacheBytes;
  }
}

/** Rough V8 heap size of a decoded block (objects, arrays and typed-array headers included). */
function heapBytes(obj: MetaObject): number {
  switch (obj.type) {
    case MetaType.Leaf: return obj.ext.heapBytes;
    case MetaType.Branch: return 128 + 24 * obj.children.length;
    default: return BLOCK_SIZE_BYTES + 512;
  }
}
