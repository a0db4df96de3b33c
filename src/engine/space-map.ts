// The space map: a reference count per physical block (u32, paged through the metadata cache) and
// the allocator. A block whose count drops to 0 is "pending free" until the commit that freed it is
// durable and no read that might still use it is in flight; only then can it be handed out again.
import { REFCOUNTS_PER_PAGE, FIRST_FREE_BLOCK } from './constants.js';
import { MetaType, type CountPage } from './format.js';
import type { MetaStore } from './meta-store.js';
import { RadixArray } from './radix.js';
import { assert, PoolFull } from './errors.js';

export interface Run { pba: number; lengthBlocks: number }

export class SpaceMap {
  readonly array: RadixArray<CountPage>;
  /** Freed in the open transaction: not reusable until it is durable. */
  pendingFree = new Set<number>();
  /** Freed in committed transactions, waiting for in-flight reads begun before the commit. */
  private readonly quarantine: { readEpoch: number; blocks: Set<number> }[] = [];
  /** Allocated for data being written, not yet referenced by a tree (count still 0 on disk). */
  readonly reserved = new Set<number>();
  private cursor = FIRST_FREE_BLOCK;
  private freeCount = 0;

  constructor(private readonly store: MetaStore, rootBlock: number, readonly totalBlocks: number, readonly reserveBlocks: number) {
    this.array = new RadixArray<CountPage>(
      store, rootBlock, totalBlocks, REFCOUNTS_PER_PAGE, MetaType.CountPage,
      () => ({ type: MetaType.CountPage, block: 0, txn: 0, counts: new Uint32Array(REFCOUNTS_PER_PAGE) }),
      (old) => this.decref(old).then(() => undefined),
    );
  }

  async init(): Promise<void> { this.freeCount = await this.array.freeTotal(); }

  /** Free blocks on the map (includes pending and quarantined ones). */
  get freeBlocks(): number { return this.freeCount; }
  /** Blocks an allocation can actually take now. */
  get availableBlocks(): number {
    let held = this.pendingFree.size + this.reserved.size;
    for (const q of this.quarantine) held += q.blocks.size;
    return this.freeCount - held;
  }

  /** Whether some free blocks are only waiting for a commit (or for older reads) to be reusable. */
  hasHeldFrees(): boolean {
    return this.pendingFree.size > 0 || this.quarantine.length > 0;
  }

  /** Free blocks waiting for the open transaction's commit. */
  get pendingFreeBlocks(): number { return this.pendingFree.size; }

  async get(block: number): Promise<number> {
    const page = await this.array.page(Math.floor(block / REFCOUNTS_PER_PAGE), false);
    return page ? page.counts[block % REFCOUNTS_PER_PAGE]! : 0;
  }

  /** Adds `delta` to the counts of blocks [pba, pba+length). */
  async addRange(pba: number, lengthBlocks: number, delta: 1 | -1): Promise<void> {
    let block = pba;
    const end = pba + lengthBlocks;
    this.store.changes++;
    while (block < end) {
      const pageIndex = Math.floor(block / REFCOUNTS_PER_PAGE);
      const page = (await this.array.page(pageIndex, true))!;
      const pageEnd = Math.min(end, (pageIndex + 1) * REFCOUNTS_PER_PAGE);
      let freeDelta = 0;
      for (; block < pageEnd; block++) {
        assert(block >= 0 && block < this.totalBlocks, `block ${block} inside the pool`);
        const i = block % REFCOUNTS_PER_PAGE;
        const before = page.counts[i]!;
        if (delta > 0) {
          assert(before < 0xffffffff, 'refcount overflow');
          if (before === 0) { freeDelta--; this.reserved.delete(block); this.pendingFree.delete(block); }
          page.counts[i] = before + 1;
        } else {
          assert(before > 0, `refcount of block ${block} underflows`);
          page.counts[i] = before - 1;
          if (before === 1) { freeDelta++; this.pendingFree.add(block); }
        }
      }
      if (freeDelta !== 0) { this.array.adjustFree(pageIndex, freeDelta); this.freeCount += freeDelta; }
    }
  }

  async incref(block: number): Promise<void> { await this.addRange(block, 1, 1); }
  async decref(block: number): Promise<void> { await this.addRange(block, 1, -1); }

  private usable(block: number): boolean {
    if (this.pendingFree.has(block) || this.reserved.has(block)) return false;
    for (const q of this.quarantine) if (q.blocks.has(block)) return false;
    return true;
  }

  /**
   * Finds up to `wanted` free blocks as runs, marking them reserved (count untouched). `forMeta`
   * may dip into the reserve kept for metadata; data may not.
   */
  async reserve(wanted: number, forMeta: boolean): Promise<Run[]> {
    const floor = forMeta ? 0 : this.reserveBlocks;
    if (this.availableBlocks - wanted < floor) throw new PoolFull();
    const runs: Run[] = [];
    let got = 0;
    let wrapped = false;
    let pageIndex = Math.floor(this.cursor / REFCOUNTS_PER_PAGE);
    while (got < wanted) {
      const next = await this.array.nextPageWithFree(pageIndex);
      if (next < 0) {
        if (wrapped) break;
        wrapped = true; pageIndex = 0; this.cursor = 0; continue;
      }
      if (next !== pageIndex) this.cursor = next * REFCOUNTS_PER_PAGE;
      pageIndex = next;
      const page = await this.array.page(pageIndex, false);
      const pageFirst = pageIndex * REFCOUNTS_PER_PAGE;
      const pageEnd = Math.min(this.totalBlocks, pageFirst + REFCOUNTS_PER_PAGE);
      for (let block = Math.max(this.cursor, pageFirst, FIRST_FREE_BLOCK); block < pageEnd && got < wanted; block++) {
        if (page && page.counts[block - pageFirst]! !== 0) continue;
        if (!this.usable(block)) continue;
        this.reserved.add(block);
        const last = runs[runs.length - 1];
        if (last && last.pba + last.lengthBlocks === block) last.lengthBlocks++;
        else runs.push({ pba: block, lengthBlocks: 1 });
        got++;
        this.cursor = block + 1;
      }
      if (got < wanted) {
        pageIndex++;
        this.cursor = pageIndex * REFCOUNTS_PER_PAGE;
        if (pageIndex * REFCOUNTS_PER_PAGE >= this.totalBlocks) {
          if (wrapped) break;
          wrapped = true; pageIndex = 0; this.cursor = 0;
        }
      }
    }
    if (got < wanted) {
      this.unreserve(runs);
      throw new PoolFull();
    }
    return runs;
  }

  /**
   * The common case of a data reservation without the metadata lock: every block comes from the
   * cursor's page, which is in memory. Fully synchronous, so nothing can interleave; null otherwise.
   */
  tryReserveSync(wanted: number): Run[] | null {
    if (this.availableBlocks - wanted < this.reserveBlocks) return null;
    const pageIndex = Math.floor(this.cursor / REFCOUNTS_PER_PAGE);
    const pageFirst = pageIndex * REFCOUNTS_PER_PAGE;
    if (pageFirst >= this.totalBlocks) return null;
    const page = this.array.pageIfLoaded(pageIndex);
    if (page === undefined) return null;
    const pageEnd = Math.min(this.totalBlocks, pageFirst + REFCOUNTS_PER_PAGE);
    const runs: Run[] = [];
    let got = 0, block = Math.max(this.cursor, FIRST_FREE_BLOCK);
    for (; block < pageEnd && got < wanted; block++) {
      if (page && page.counts[block - pageFirst]! !== 0) continue;
      if (!this.usable(block)) continue;
      const last = runs[runs.length - 1];
      if (last && last.pba + last.lengthBlocks === block) last.lengthBlocks++;
      else runs.push({ pba: block, lengthBlocks: 1 });
      got++;
    }
    if (got < wanted) return null;
    for (const r of runs) for (let b = r.pba; b < r.pba + r.lengthBlocks; b++) this.reserved.add(b);
    this.cursor = block;
    return runs;
  }

  unreserve(runs: Run[]): void {
    for (const r of runs) for (let b = r.pba; b < r.pba + r.lengthBlocks; b++) this.reserved.delete(b);
  }

  /** One metadata block, counted at once. */
  async allocMeta(): Promise<number> {
    const [run] = await this.reserve(1, true);
    await this.incref(run!.pba);
    return run!.pba;
  }

  /** Called when a commit becomes durable: its frees wait only for older reads now. */
  /**
   * Phase 1 of a commit: the open transaction's frees stay held, with no release epoch yet, while
   * its blocks are written. Until its superblock is durable the previous state still references
   * them, so handing one out to a write racing the commit would overwrite the last durable state.
   */
  sealPendingFrees(): { readEpoch: number; blocks: Set<number> } {
    const entry = { readEpoch: Infinity, blocks: this.pendingFree };
    this.pendingFree = new Set();
    this.quarantine.push(entry);
    return entry;
  }

  /** The commit is durable: its frees now wait only for reads begun before it. */
  committed(entry: { readEpoch: number }, readEpoch: number): void {
    entry.readEpoch = readEpoch;
  }

  /** Releases quarantined frees that no running read can still reference. */
  releaseQuarantine(oldestActiveReadEpoch: number): void {
    // In commit order: an entry whose commit is not durable yet (epoch Infinity) holds back later ones.
    while (this.quarantine.length > 0 && this.quarantine[0]!.readEpoch !== Infinity && this.quarantine[0]!.readEpoch <= oldestActiveReadEpoch) this.quarantine.shift();
  }
}
