// The space map: a reference count per physical block (u32, paged through the metadata cache) and
// the allocator. A block whose count drops to 0 is "pending free" until the commit that freed it is
// durable and no read that might still use it is in flight; only then can it be handed out again.
import {
  REFCOUNTS_PER_PAGE, FIRST_FREE_BLOCK, SYNC_RESERVE_PAGES_MAX, LARGE_RUN_BLOCKS, LARGE_SCAN_PAGES_MAX, META_ARENA_BLOCKS,
  META_ARENA_HEADROOM_RUNS, WHOLE_RUN_WANTED_BLOCKS_MIN, WHOLE_RUN_WANTED_BLOCKS_MAX, WHOLE_RUN_BLOCKS_MAX, WHOLE_SCAN_PAGES_MAX,
} from './constants.js';
import { MetaType, countPageOf, type CountPage } from './format.js';
import type { MetaStore } from './meta-store.js';
import { RadixArray } from './radix.js';
import { assert, fail, MetaBadStructure, PoolFull } from './errors.js';
import { HeldBlocks, PENDING_FREE, QUARANTINED, RESERVED, pushRun } from './held-blocks.js';

export interface Run { pba: number; lengthBlocks: number }

// The allocator's bounds (SYNC_RESERVE_PAGES_MAX, LARGE_RUN_BLOCKS, LARGE_SCAN_PAGES_MAX,
// META_ARENA_BLOCKS, WHOLE_RUN_*, WHOLE_SCAN_PAGES_MAX) live in constants.ts with their reasons; re-exported for the tests that use them.
export { LARGE_RUN_BLOCKS, META_ARENA_BLOCKS, WHOLE_RUN_WANTED_BLOCKS_MIN, WHOLE_RUN_BLOCKS_MAX };

/**
 * Blocks freed by one transaction, reusable once it is durable and reads older than `readEpoch` end:
 * runs as flat (first block, length) pairs, `blocks` in all.
 */
export interface FreedBlocks { readEpoch: number; runs: number[]; blocks: number }

export class SpaceMap {
  /** PoolOptions.fastPaths: false makes tryAddRange and tryReserveSync decline (the awaited paths run). */
  fastPaths = true;
  readonly array: RadixArray<CountPage>;
  /**
   * Free blocks that cannot be handed out: reserved for data being written (count still 0), freed in
   * the open transaction (not reusable until it is durable), or freed in a committed one and waiting
   * for reads begun before the commit.
   */
  private readonly held = new HeldBlocks(REFCOUNTS_PER_PAGE);
  /**
   * Blocks freed in the open transaction, as flat (first block, length) pairs; a block whose flag was
   * cleared again (referenced anew) is skipped when they are sealed.
   */
  private pendingRuns: number[] = [];
  private readonly quarantine: FreedBlocks[] = [];
  private cursor = FIRST_FREE_BLOCK;
  /** Where large reservations look for long runs; rewound with `cursor`, never behind it for long. */
  private largeCursor = FIRST_FREE_BLOCK;
  /** Where large reservations look for whole runs (reserveWholeRuns); rewound likewise, parked at the pool's end when none is left. */
  private wholeCursor = FIRST_FREE_BLOCK;
  private freeCount = 0;
  /**
   * Blocks holding metadata objects (allocMeta'd, count not yet back to 0): the superblock's
   * metaObjects. null when the opened generation did not say and no walk counted them.
   */
  metaObjects: number | null = null;
  /** The rest of the metadata run: blocks [pba, pba + left), reserved (count 0) until handed out. */
  private metaArena = { pba: 0, left: 0 };
  /** Metadata blocks still to take one at a time after a search for a run failed (a scan is not free). */
  private metaArenaSkip = 0;
  /** Count pages found dirty in the open transaction, by page index (referencedPage); each checked dirty again before use. */
  private readonly dirtyPages: (CountPage | undefined)[] = [];
  /** tryIncrefReferencedExtents' first pass: each extent's count array and offset in it (reused). */
  private extentPages: Uint32Array[] = [];
  private extentOffsets = new Float64Array(0);

  constructor(private readonly store: MetaStore, rootBlock: number, public totalBlocks: number, public reserveBlocks: number) {
    assert(Number.isSafeInteger(totalBlocks) && totalBlocks > 0 && reserveBlocks >= 0, 'a space map of the pool\'s blocks');
    this.array = new RadixArray<CountPage>(
      store, rootBlock, totalBlocks, REFCOUNTS_PER_PAGE, MetaType.CountPage,
      () => countPageOf(0, 0, new Uint32Array(REFCOUNTS_PER_PAGE)),
      (old) => this.decrefMeta(old),
    );
  }

  async init(): Promise<void> {
    this.freeCount = await this.array.freeTotal();
    // The summary is read from disk: a count above the pool is damage (its radix node's validator
    // bounds each entry, not their sum).
    if (!(this.freeCount >= 0 && this.freeCount <= this.totalBlocks)) {
      throw new MetaBadStructure(this.array.rootBlock, 'space map: free blocks of the pool', `0..${this.totalBlocks}`, this.freeCount);
    }
  }

  /**
   * The pool grew to `totalBlocks` (the device holds them already): the new blocks are free and can
   * be handed out at once; counts and summaries change in the open transaction, so the commit that
   * writes the new size writes them too. Call under the lock.
   */
  async grow(totalBlocks: number, reserveBlocks: number): Promise<void> {
    assert(totalBlocks >= this.totalBlocks, 'the space map only grows');
    const added = totalBlocks - this.totalBlocks;
    this.store.changes++;
    await this.array.grow(totalBlocks);
    // A whole-run search parked at the old end resumes there: the new blocks are one long run.
    this.wholeCursor = Math.min(this.wholeCursor, this.totalBlocks);
    this.totalBlocks = totalBlocks;
    this.reserveBlocks = reserveBlocks;
    this.freeCount += added;
  }

  /** Free blocks on the map (includes pending and quarantined ones). */
  get freeBlocks(): number {
    assert(this.freeCount >= 0, 'free blocks are a count');
    return this.freeCount;
  }
  /** Blocks an allocation can actually take now. */
  get availableBlocks(): number {
    return this.freeCount - this.held.reserved - this.held.pendingFree - this.held.quarantined;
  }

  /** Whether some free blocks are only waiting for a commit (or for older reads) to be reusable. */
  hasHeldFrees(): boolean {
    assert(this.held.pendingFree >= 0, 'pending frees are a count');
    return this.held.pendingFree > 0 || this.quarantine.length > 0;
  }

  /** Free blocks waiting for the open transaction's commit. */
  get pendingFreeBlocks(): number {
    assert(this.held.pendingFree >= 0, 'pending frees are a count');
    return this.held.pendingFree;
  }

  isPendingFree(block: number): boolean {
    if (!(block >= 0 && block < this.totalBlocks)) fail(`block ${block} outside the pool`);
    return (this.held.flags(block) & PENDING_FREE) !== 0;
  }

  async get(block: number): Promise<number> {
    if (!(block >= 0 && block < this.totalBlocks)) fail(`count of block ${block} outside the pool`);
    const page = await this.array.page(Math.floor(block / REFCOUNTS_PER_PAGE), false);
    return page ? page.counts[block % REFCOUNTS_PER_PAGE]! : 0;
  }

  /** The count of `block` if its page is in memory (0 for a page never written), else undefined. */
  getIfLoaded(block: number): number | undefined {
    if (!(block >= 0 && block < this.totalBlocks)) fail(`count of block ${block} outside the pool`);
    const page = this.array.pageIfLoaded(Math.floor(block / REFCOUNTS_PER_PAGE));
    if (page === undefined) return undefined;
    return page === null ? 0 : page.counts[block % REFCOUNTS_PER_PAGE]!;
  }

  /** Adds `delta` to the counts of blocks [pba, pba+length). */
  async addRange(pba: number, lengthBlocks: number, delta: 1 | -1): Promise<void> {
    this.store.assertHeld();
    if (this.tryAddRange(pba, lengthBlocks, delta)) return;
    let block = pba;
    const end = pba + lengthBlocks;
    this.store.changes++;
    while (block < end) {
      const pageIndex = Math.floor(block / REFCOUNTS_PER_PAGE);
      const page = (await this.array.page(pageIndex, true))!;
      const pageEnd = Math.min(end, (pageIndex + 1) * REFCOUNTS_PER_PAGE);
      this.applyToPage(page, pageIndex, block, pageEnd, delta);
      block = pageEnd;
    }
  }

  /** Whether every count page of [pba, pba+length) is dirty in this transaction (tryAddRange would succeed). */
  rangeDirtyNow(pba: number, lengthBlocks: number): boolean {
    if (!(lengthBlocks > 0 && pba >= 0 && pba + lengthBlocks <= this.totalBlocks)) fail(`count range [${pba}, ${pba + lengthBlocks}) inside the pool`);
    const lastPage = Math.floor((pba + lengthBlocks - 1) / REFCOUNTS_PER_PAGE);
    for (let i = Math.floor(pba / REFCOUNTS_PER_PAGE); i <= lastPage; i++) if (this.array.pageIfDirty(i) === undefined) return false;
    return true;
  }

  /**
   * addRange without awaiting, when every page of the range is already dirty in this transaction
   * (the common case inside a write: hot pages). Returns false, having changed nothing, otherwise.
   */
  tryAddRange(pba: number, lengthBlocks: number, delta: 1 | -1): boolean {
    this.store.assertHeld();
    if (!this.fastPaths) return false;
    const pageIndex = Math.floor(pba / REFCOUNTS_PER_PAGE);
    if (lengthBlocks > 0 && pba >= 0 && pba + lengthBlocks <= Math.min(this.totalBlocks, (pageIndex + 1) * REFCOUNTS_PER_PAGE)) {
      // The usual range lies in one page (an overwrite after random writes frees ~256 single blocks
      // per 1 MiB): one walk to the page, not one to check it and one to change it.
      const page = this.array.pageIfDirty(pageIndex);
      if (page === undefined) return false;
      this.store.changes++;
      this.applyToPage(page, pageIndex, pba, pba + lengthBlocks, delta);
      return true;
    }
    if (!this.rangeDirtyNow(pba, lengthBlocks)) return false;
    this.addRangeDirty(pba, lengthBlocks, delta);
    return true;
  }

  /** tryAddRange for a range the caller found dirty with rangeDirtyNow, in the same synchronous step. */
  addRangeDirty(pba: number, lengthBlocks: number, delta: 1 | -1): void {
    this.store.assertHeld();
    this.store.changes++;
    const end = pba + lengthBlocks;
    for (let i = Math.floor(pba / REFCOUNTS_PER_PAGE), block = pba; block < end; i++) {
      const page = this.array.pageIfDirty(i);
      if (page === undefined) fail(`count page ${i} checked dirty is dirty`);
      const pageEnd = Math.min(end, (i + 1) * REFCOUNTS_PER_PAGE);
      this.applyToPage(page, i, block, pageEnd, delta);
      block = pageEnd;
    }
  }

  /**
   * +1 on [pba, pba+length), blocks a node being shadowed points to (so each counts 1 or more), without
   * awaiting, when the range lies on one count page that is dirty already: no count crosses 0, so no
   * hold and no free total changes, and one page lookup serves the extent (tryAddRange looks the page
   * up twice and tracks zero crossings block by block). False, having changed nothing, otherwise (the
   * caller takes addRange).
   */
  tryIncrefReferenced(pba: number, lengthBlocks: number): boolean {
    this.store.assertHeld();
    if (!this.fastPaths) return false;
    const page = this.referencedPage(pba, lengthBlocks);
    if (page === undefined) return false;
    this.store.changes++;
    const base = Math.floor(pba / REFCOUNTS_PER_PAGE) * REFCOUNTS_PER_PAGE;
    increfReferenced(page.counts, base, pba - base, pba - base + lengthBlocks);
    return true;
  }

  /**
   * tryIncrefReferenced for every extent of a leaf being shadowed while shared, all or nothing: after
   * a snapshot every leaf is shared, and the first write to each one counts its ~110 extents up.
   * Their blocks are scattered, so each count is a cache (and TLB) miss; done one extent at a time,
   * each miss waited behind the page lookup of its extent (~255 ns an extent inside the daemon). The
   * pages are found first and the counts changed in a second pass, whose loads do not depend on each
   * other, so the CPU has several misses under way at once (~120 ns an extent; periodic-snapshot
   * bench in docs/performance.md). False, having changed nothing, when an extent crosses a count page
   * or its page is not dirty yet (the caller takes the per-extent path).
   */
  tryIncrefReferencedExtents(pbas: Float64Array, lens: Uint8Array, count: number): boolean {
    this.store.assertHeld();
    if (!this.fastPaths) return false;
    assert(count <= pbas.length && count <= lens.length, 'extents of the leaf');
    if (this.extentPages.length < count) {
      this.extentPages = new Array<Uint32Array>(count);
      this.extentOffsets = new Float64Array(count);
    }
    const pages = this.extentPages, offsets = this.extentOffsets;
    for (let k = 0; k < count; k++) {
      const pba = pbas[k]!;
      const page = this.referencedPage(pba, lens[k]!);
      if (page === undefined) return false;
      pages[k] = page.counts;
      offsets[k] = pba % REFCOUNTS_PER_PAGE;
    }
    this.store.changes++;
    for (let k = 0; k < count; k++) {
      const from = offsets[k]!;
      increfReferenced(pages[k]!, pbas[k]! - from, from, from + lens[k]!);
    }
    return true;
  }

  /**
   * The dirty count page holding all of [pba, pba+length), else undefined (it spans two pages or its
   * page is not dirty in this transaction). Pages found dirty are remembered by index: a radix walk per
   * extent was a third of an extent's cost. A remembered page is used only while it is dirty in the open
   * transaction (the radix keeps one object per page within a transaction, so that is the page the tree
   * holds), and all are forgotten when a commit ends the transaction (sealPendingFrees).
   */
  private referencedPage(pba: number, lengthBlocks: number): CountPage | undefined {
    const end = pba + lengthBlocks;
    if (!(lengthBlocks > 0 && pba >= 0 && end <= this.totalBlocks)) fail(`count range [${pba}, ${end}) inside the pool`);
    const pageIndex = Math.floor(pba / REFCOUNTS_PER_PAGE);
    if (Math.floor((end - 1) / REFCOUNTS_PER_PAGE) !== pageIndex) return undefined;
    const known = this.dirtyPages[pageIndex];
    if (known !== undefined && this.store.isDirty(known)) return known;
    const page = this.array.pageIfDirty(pageIndex);
    if (page !== undefined) this.dirtyPages[pageIndex] = page;
    return page;
  }

  /**
   * Counts of [from, to), all on `page`. Blocks crossing 0 change their hold as runs: on the way up
   * (a reserved block gets its data, a pending free a reference again), on the way down (pending
   * free until the commit).
   */
  private applyToPage(page: CountPage, pageIndex: number, from: number, to: number, delta: 1 | -1): void {
    if (!(from >= 0 && to <= this.totalBlocks && from < to)) fail(`blocks [${from}, ${to}) inside the pool`);
    const counts = page.counts;
    const base = pageIndex * REFCOUNTS_PER_PAGE;
    let crossed = 0, runStart = -1;
    for (let i = from - base; i < to - base; i++) {
      const before = counts[i]!;
      // A run of blocks crossing 0 is closed by the first block that does not.
      const crosses = delta > 0 ? before === 0 : before === 1;
      if (crosses) {
        if (runStart < 0) runStart = i;
        crossed++;
      } else if (runStart >= 0) {
        this.crossZero(base + runStart, base + i, delta);
        runStart = -1;
      }
      if (delta > 0) assert(before < 0xffffffff, 'refcount overflow');
      else if (!(before > 0)) fail(`refcount of block ${base + i} underflows`);
      counts[i] = before + delta;
    }
    if (runStart >= 0) this.crossZero(base + runStart, to, delta);
    if (crossed !== 0) {
      const freeDelta = delta > 0 ? -crossed : crossed;
      this.array.adjustFree(pageIndex, freeDelta);
      this.freeCount += freeDelta;
    }
  }

  private crossZero(from: number, to: number, delta: 1 | -1): void {
    assert(from < to, 'a run crossing zero is not empty');
    if (delta > 0) { this.held.claimRange(from, to); return; }
    this.held.addRange(from, to, PENDING_FREE);
    pushRun(this.pendingRuns, from, to - from);
  }

  async incref(block: number): Promise<void> {
    if (!(block >= 0 && block < this.totalBlocks)) fail(`incref of block ${block} outside the pool`);
    await this.addRange(block, 1, 1);
  }
  async decref(block: number): Promise<void> {
    if (!(block >= 0 && block < this.totalBlocks)) fail(`decref of block ${block} outside the pool`);
    await this.addRange(block, 1, -1);
  }

  /**
   * Finds up to `wanted` free blocks as runs, marking them reserved (count untouched). `forMeta`
   * may dip into the reserve kept for metadata; data may not.
   */
  async reserve(wanted: number, forMeta: boolean): Promise<Run[]> {
    this.store.assertHeld();
    assert(Number.isSafeInteger(wanted) && wanted > 0, 'a reservation of whole blocks');
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
      const flags = this.held.pageFlags(pageIndex);
      for (let block = Math.max(this.cursor, pageFirst, FIRST_FREE_BLOCK); block < pageEnd && got < wanted; block++) {
        const i = block - pageFirst;
        if ((page && page.counts[i]! !== 0) || (flags && flags[i]! !== 0)) continue;
        // The scan only moves forward, so `flags` (possibly created by this mark) need not show it.
        this.held.addRange(block, block + 1, RESERVED);
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
   * cursor's page and the few after it, all in memory. Fully synchronous, so nothing can interleave;
   * null (having reserved nothing) otherwise. A large reservation first looks for whole runs, then for
   * long free runs, each from a cursor of its own, and falls back to first fit when the pages it may
   * scan have none.
   */
  tryReserveSync(wanted: number): Run[] | null {
    // No lock: this runs without awaiting, so nothing interleaves with it (see the comment above).
    assert(Number.isSafeInteger(wanted) && wanted > 0, 'a reservation of whole blocks');
    if (!this.fastPaths || this.availableBlocks - wanted < this.reserveBlocks) return null;
    if (wanted >= WHOLE_RUN_WANTED_BLOCKS_MIN && wanted <= WHOLE_RUN_WANTED_BLOCKS_MAX) {
      const whole = this.reserveWholeRuns(wanted);
      if (whole) return whole;
    }
    if (wanted >= LARGE_RUN_BLOCKS) {
      const large = this.reserveLongRuns(wanted, LARGE_RUN_BLOCKS);
      if (large) return large;
    }
    const firstFit = this.scanRuns(Math.max(this.cursor, FIRST_FREE_BLOCK), wanted, 1, SYNC_RESERVE_PAGES_MAX);
    if (!firstFit.runs) return null;
    this.markReserved(firstFit.runs);
    this.cursor = firstFit.end;
    return firstFit.runs;
  }

  /**
   * Reserves `wanted` blocks in free runs of at least `minRun` from the large-write cursor, through
   * the count pages in memory; null, having reserved nothing, when they hold too few. Either way the
   * next search resumes where this one stopped, past a fragmented stretch instead of scanning it again.
   */
  private reserveLongRuns(wanted: number, minRun: number): Run[] | null {
    assert(minRun >= 1 && minRun <= wanted, 'long runs no longer than the request');
    const found = this.scanRuns(Math.max(this.largeCursor, this.cursor, FIRST_FREE_BLOCK), wanted, minRun, LARGE_SCAN_PAGES_MAX);
    if (!found.runs) {
      this.largeCursor = found.end < this.totalBlocks ? found.end : this.cursor;
      return null;
    }
    this.markReserved(found.runs);
    this.largeCursor = found.end;
    return found.runs;
  }

  /**
   * Reserves `wanted` blocks in free runs of at least min(wanted, WHOLE_RUN_BLOCKS_MAX), from a
   * cursor of its own through the count pages in memory: a 1 MiB write then becomes one extent run
   * and one device write. Null, having reserved nothing, when the pages it may scan hold too few. A
   * search that reaches the pool's end parks the cursor there: no whole run is searched for again
   * until freed blocks are released (rewindTo) or the pool grows.
   */
  private reserveWholeRuns(wanted: number): Run[] | null {
    assert(wanted >= WHOLE_RUN_WANTED_BLOCKS_MIN && wanted <= WHOLE_RUN_WANTED_BLOCKS_MAX, 'whole runs for one large request');
    const from = Math.max(this.wholeCursor, this.cursor, FIRST_FREE_BLOCK);
    if (from >= this.totalBlocks) return null;
    const found = this.scanRuns(from, wanted, Math.min(wanted, WHOLE_RUN_BLOCKS_MAX), WHOLE_SCAN_PAGES_MAX);
    this.wholeCursor = found.runs || found.end < this.totalBlocks ? found.end : this.totalBlocks;
    if (!found.runs) return null;
    this.markReserved(found.runs);
    return found.runs;
  }

  /**
   * Free, usable runs of at least `minRun` blocks (a shorter run only if it completes the request)
   * from `from` on, through at most `pagesMax` count pages that are in memory. `runs` is null when
   * they hold fewer than `wanted` such blocks; `end` is where the scan stopped. Reserves nothing.
   */
  private scanRuns(from: number, wanted: number, minRun: number, pagesMax: number): { runs: Run[] | null; end: number } {
    assert(from >= FIRST_FREE_BLOCK && wanted > 0 && pagesMax > 0, 'a bounded scan past the superblocks');
    const runs: Run[] = [];
    let got = 0, runStart = -1, block = from;
    // A run ends at a used or held block, at the last page scanned, or once it completes the request.
    const close = (end: number): void => {
      if (runStart >= 0 && (end - runStart >= minRun || end - runStart === wanted - got)) {
        runs.push({ pba: runStart, lengthBlocks: end - runStart });
        got += end - runStart;
      }
      runStart = -1;
    };
    for (let pages = 0; got < wanted && pages < pagesMax; pages++) {
      const pageIndex = Math.floor(block / REFCOUNTS_PER_PAGE);
      const pageFirst = pageIndex * REFCOUNTS_PER_PAGE;
      if (pageFirst >= this.totalBlocks) break;
      const page = this.array.pageIfLoaded(pageIndex);
      if (page === undefined) break;
      const pageEnd = Math.min(this.totalBlocks, pageFirst + REFCOUNTS_PER_PAGE);
      const counts = page ? page.counts : null;
      const flags = this.held.pageFlags(pageIndex);
      for (; block < pageEnd; block++) {
        const i = block - pageFirst;
        // Only an open run needs closing: a page of used blocks then costs no call per block.
        if ((counts && counts[i]! !== 0) || (flags && flags[i]! !== 0)) { if (runStart >= 0) close(block); continue; }
        if (runStart < 0) runStart = block;
        if (block + 1 - runStart === wanted - got) { close(block + 1); block++; break; }
      }
    }
    close(block);
    return { runs: got === wanted ? runs : null, end: block };
  }

  private markReserved(runs: Run[]): void {
    assert(runs.length > 0, 'a reservation found blocks');
    for (const r of runs) this.held.addRange(r.pba, r.pba + r.lengthBlocks, RESERVED);
  }

  /** Releases what is left of reservations (blocks that got their data are no longer reserved). */
  unreserve(runs: Run[]): void {
    // Without the lock: synchronous (see held-blocks.ts); only blocks inside the pool were reserved.
    for (const r of runs) if (!(r.lengthBlocks > 0 && r.pba + r.lengthBlocks <= this.totalBlocks)) fail(`unreserving [${r.pba}, ${r.pba + r.lengthBlocks})`);
    for (const r of runs) this.held.removeRange(r.pba, r.pba + r.lengthBlocks, RESERVED);
  }

  /**
   * Reserves exactly [pba, pba + length) when every block of it is free and not held (log replay: the
   * blocks a logged change names must be ones no durable state uses); false, reserving nothing, else.
   */
  async reserveExact(pba: number, length: number): Promise<boolean> {
    this.store.assertHeld();
    if (!(length > 0 && pba >= FIRST_FREE_BLOCK && pba + length <= this.totalBlocks)) return false;
    for (let b = pba; b < pba + length; b++) if (this.held.flags(b) !== 0 || await this.get(b) !== 0) return false;
    this.held.addRange(pba, pba + length, RESERVED);
    return true;
  }

  /**
   * The first block of a free, unheld run of `length` blocks, searching count pages from the start of
   * the pool and at most `pagesMax` of them; null when none was found. Reserves nothing.
   */
  async findFreeRun(length: number, pagesMax: number): Promise<number | null> {
    this.store.assertHeld();
    assert(length > 0 && pagesMax > 0, 'a search for a run within a bound');
    let start = FIRST_FREE_BLOCK, pages = 0;
    for (let pageIndex = 0; pageIndex * REFCOUNTS_PER_PAGE < this.totalBlocks && pages < pagesMax; pageIndex++, pages++) {
      const page = await this.array.page(pageIndex, false);
      const first = pageIndex * REFCOUNTS_PER_PAGE;
      const end = Math.min(this.totalBlocks, first + REFCOUNTS_PER_PAGE);
      for (let b = Math.max(first, FIRST_FREE_BLOCK); b < end; b++) {
        if ((page && page.counts[b - first]! !== 0) || this.held.flags(b) !== 0) { start = b + 1; continue; }
        if (b + 1 - start >= length) return start;
      }
    }
    return null;
  }

  /** One metadata block, counted at once: the next of the metadata run, or any free block. */
  async allocMeta(): Promise<number> {
    this.store.assertHeld();
    if (this.metaArena.left === 0) {
      if (this.metaArenaSkip > 0) this.metaArenaSkip--;
      else this.refillMetaArena();
    }
    let block: number;
    if (this.metaArena.left > 0) {
      block = this.metaArena.pba++;
      this.metaArena.left--;
    } else {
      block = (await this.reserve(1, true))[0]!.pba;
    }
    await this.incref(block);
    if (this.metaObjects !== null) this.metaObjects++;
    return block;
  }

  /**
   * A metadata block given up unread (a damaged node of a deleted tree, leaked with its count kept):
   * no longer a metadata object, so the superblock's count stays what a walk of the trees finds.
   */
  forgetMetaObject(): void {
    this.store.assertHeld();
    if (this.metaObjects === null) return;
    this.metaObjects--;
    assert(this.metaObjects >= 0, 'metadata objects are a count');
  }

  /** Drops a reference to a metadata block: when it was the last, one metadata object fewer. */
  async decrefMeta(block: number): Promise<void> {
    await this.decref(block);
    // The decref just changed the block's count page: it is in memory, so no await on the write path.
    if (this.metaObjects !== null && (this.getIfLoaded(block) ?? await this.get(block)) === 0) {
      this.metaObjects--;
      assert(this.metaObjects >= 0, 'metadata objects are a count');
    }
  }

  /**
   * Reserves the next metadata run: a free run of META_ARENA_BLOCKS among the count pages in memory,
   * searched like a large write's. Only while space is plentiful (the run is held from data); when
   * none is found, metadata blocks come one at a time.
   */
  private refillMetaArena(): void {
    assert(this.metaArena.left === 0, 'the metadata run is used up before the next');
    if (this.availableBlocks < this.reserveBlocks + META_ARENA_HEADROOM_RUNS * META_ARENA_BLOCKS) return;
    const run = this.reserveLongRuns(META_ARENA_BLOCKS, META_ARENA_BLOCKS)?.[0];
    if (run) this.metaArena = { pba: run.pba, left: run.lengthBlocks };
    else this.metaArenaSkip = META_ARENA_BLOCKS;
  }

  /**
   * Phase 1 of a commit: the open transaction's frees stay held, with no release epoch yet, while
   * its blocks are written. Until its superblock is durable the previous state still references
   * them, so handing one out to a write racing the commit would overwrite the last durable state.
   */
  sealPendingFrees(): FreedBlocks {
    this.store.assertHeld();
    const runs: number[] = [];
    const pending = this.pendingRuns;
    const before = this.held.quarantined;
    for (let i = 0; i < pending.length; i += 2) this.held.moveRange(pending[i]!, pending[i]! + pending[i + 1]!, PENDING_FREE, QUARANTINED, runs);
    this.pendingRuns = [];
    // The transaction ends here: no page remembered as dirty in it is dirty any more, and keeping them
    // would keep count pages alive after the metadata cache evicts them (a TiB of pool has 1 GiB).
    this.dirtyPages.length = 0;
    this.extentPages = [];
    assert(this.held.pendingFree === 0, 'every pending free is sealed');
    const entry = { readEpoch: Infinity, runs, blocks: this.held.quarantined - before };
    this.quarantine.push(entry);
    return entry;
  }

  /** The commit is durable: its frees now wait only for reads begun before it. */
  committed(entry: FreedBlocks, readEpoch: number): void {
    assert(entry.readEpoch === Infinity && readEpoch > 0, 'a commit\'s frees are released once, after it');
    entry.readEpoch = readEpoch;
  }

  /** Releases quarantined frees that no running read can still reference. */
  releaseQuarantine(oldestActiveReadEpoch: number): void {
    // In commit order: an entry whose commit is not durable yet (epoch Infinity) holds back later ones.
    while (this.quarantine.length > 0 && this.quarantine[0]!.readEpoch !== Infinity && this.quarantine[0]!.readEpoch <= oldestActiveReadEpoch) {
      const { runs, blocks } = this.quarantine.shift()!;
      let released = 0;
      for (let i = 0; i < runs.length; i += 2) released += this.held.removeRange(runs[i]!, runs[i]! + runs[i + 1]!, QUARANTINED);
      assert(released === blocks, 'a sealed commit releases exactly the blocks it quarantined');
      this.rewindTo(runs);
    }
  }

  /**
   * Allocation goes back to the lowest block made reusable. Filling the pool from its start keeps a
   * pool file's footprint near the space in use (a thin pool on a sparse file stays thin), and reuses
   * blocks the file system has allocated and the page cache holds: on ext4 a 1 MiB write into a
   * never-written part of a sparse file costs ~1 ms against ~0.1 ms into a written, cached one.
   */
  private rewindTo(releasedRuns: number[]): void {
    assert(releasedRuns.length % 2 === 0, 'runs are (first, length) pairs');
    let lowest = this.cursor;
    for (let i = 0; i < releasedRuns.length; i += 2) if (releasedRuns[i]! < lowest) lowest = releasedRuns[i]!;
    this.cursor = lowest;
    this.largeCursor = Math.min(this.largeCursor, lowest);
    this.wholeCursor = Math.min(this.wholeCursor, lowest);
  }
}

/** counts[from, to) + 1, blocks already referenced: 0 there is a count lost somewhere (the pool stops), never a block to claim. */
function increfReferenced(counts: Uint32Array, base: number, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const before = counts[i]!;
    if (before === 0 || before === 0xffffffff) fail(`block ${base + i} referenced by a shadowed node has count ${before}`);
    counts[i] = before + 1;
  }
}
