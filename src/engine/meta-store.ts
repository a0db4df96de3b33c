// The metadata store: a bounded cache of decoded metadata blocks, the set of objects dirtied in the
// open transaction (pinned until commit), and de-duplicated loads. Nothing here allocates blocks.
import { BLOCK_SIZE_BYTES } from './constants.js';
import type { Device } from './device/device.js';
import { decodeMeta, encodeMeta, type MetaObject, type MetaType } from './format.js';
import { assert, CairnError, IoError } from './errors.js';

export class MetaStore {
  /** Generation of the open (not yet committed) transaction. */
  txn: number;
  readonly dirty = new Set<MetaObject>();
  private readonly cache = new Map<number, MetaObject>();
  private readonly loading = new Map<number, Promise<MetaObject>>();
  private readonly cacheObjectsMax: number;
  metaReads = 0;
  /** Bumped on every in-memory metadata change; a failure after a bump leaves a half-done mutation. */
  changes = 0;

  constructor(readonly device: Device, txn: number, cacheBytesMax: number) {
    this.txn = txn;
    this.cacheObjectsMax = Math.max(64, Math.floor(cacheBytesMax / (BLOCK_SIZE_BYTES * 2)));
  }

  isDirty(obj: MetaObject): boolean { return obj.txn === this.txn && this.dirty.has(obj); }

  async load<T extends MetaObject>(block: number, type: MetaType): Promise<T> {
    assert(block >= 2, `metadata load of block ${block}`);
    const hit = this.cache.get(block);
    if (hit) {
      this.cache.delete(block); this.cache.set(block, hit); // LRU touch
      return hit as T;
    }
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
    const buf = Buffer.allocUnsafe(BLOCK_SIZE_BYTES);
    try {
      await this.device.read(block, buf);
    } catch (err) {
      throw err instanceof CairnError ? err : new IoError(`metadata read of block ${block} failed: ${(err as Error).message}`);
    }
    this.metaReads++;
    const obj = decodeMeta(buf, block, type);
    if (!this.cache.has(block)) this.cache.set(block, obj);
    return this.cache.get(block)!;
  }

  /** Registers a (new or relocated) object under its block. */
  put(obj: MetaObject): void {
    if (obj.block !== 0) this.cache.set(obj.block, obj);
  }

  forget(block: number): void { this.cache.delete(block); }

  markDirty(obj: MetaObject): void {
    this.changes++;
    obj.txn = this.txn;
    this.dirty.add(obj);
  }

  /** Drops least-recently-used clean objects above the bound. Called only between mutations. */
  trim(): void {
    if (this.cache.size <= this.cacheObjectsMax) return;
    for (const [block, obj] of this.cache) {
      if (this.cache.size <= this.cacheObjectsMax) break;
      if (this.dirty.has(obj)) continue;
      this.cache.delete(block);
    }
  }

  /** Serializes every dirty object (all must be located) and starts the next transaction. */
  takeDirtyForCommit(): { block: number; data: Buffer }[] {
    const out: { block: number; data: Buffer }[] = [];
    for (const obj of this.dirty) {
      assert(obj.block >= 2, 'dirty object was given a location');
      out.push({ block: obj.block, data: encodeMeta(obj) });
      this.cache.set(obj.block, obj);
    }
    this.dirty.clear();
    this.txn++;
    out.sort((a, b) => a.block - b.block);
    return out;
  }

  cachedObjects(): number { return this.cache.size; }
}
