// A paged array on disk: fixed-size pages of records under a radix tree of pointer blocks whose
// entries also carry a per-subtree free-record count (so free space is found without scanning).
// Used for the space map (reference counts) and the catalog. Pages and radix nodes are never shared;
// a dirtied one gets a new location at commit (assignLocations), so nothing durable is overwritten.
import { RADIX_DEPTH_MAX, RADIX_FANOUT, radixDepth } from './constants.js';
import { MetaType, radixOf, type RadixNode, type CountPage, type CatalogPage, type MetaObject } from './format.js';
import type { MetaStore } from './meta-store.js';
import { assert, fail } from './errors.js';

export type Page = CountPage | CatalogPage;
type Child = RadixNode | Page;

interface DirtyRadix extends RadixNode { kids?: (Child | undefined)[] }

export class RadixArray<P extends Page> {
  private root: DirtyRadix | null = null;
  /** Geometry; changes only when the array grows (grow()). */
  depth: number;
  pagesCapacity: number;

  constructor(
    private readonly store: MetaStore,
    public rootBlock: number,
    public totalRecords: number,
    readonly recordsPerPage: number,
    private readonly pageType: MetaType.CountPage | MetaType.CatalogPage,
    private readonly newPage: () => P,
    /** Called when an existing object's old location stops being referenced (space-map decref). */
    private readonly releaseOld: (block: number) => Promise<void>,
  ) {
    assert(Number.isSafeInteger(totalRecords) && totalRecords > 0 && recordsPerPage > 0, 'a radix array holds records');
    this.pagesCapacity = Math.ceil(totalRecords / recordsPerPage);
    this.depth = radixDepth(this.pagesCapacity);
    // Every descent below walks exactly `depth` levels; the bound keeps them few whatever the pool.
    assert(this.depth <= RADIX_DEPTH_MAX, 'radix depth within RADIX_DEPTH_MAX');
  }

  /** Records covered by child `i` of a node at `level` whose first page is `firstPage` (in an array of `totalRecords`). */
  private childRecords(level: number, firstPage: number, i: number, totalRecords = this.totalRecords): number {
    assert(level >= 1 && i >= 0 && i < RADIX_FANOUT, 'a child of a radix level');
    const spanPages = RADIX_FANOUT ** (level - 1);
    const firstRecord = (firstPage + i * spanPages) * this.recordsPerPage;
    return Math.max(0, Math.min(spanPages * this.recordsPerPage, totalRecords - firstRecord));
  }

  /**
   * Grows the array to `totalRecords`, the new records free, in the open transaction (call under the
   * lock): the path to the old last page is made dirty, new levels go on top while the root's span is
   * too small (the old root becomes child 0), and the free summaries along that right edge gain the
   * records now covered. Everything past the old end was absent, so nothing else changes; a crash
   * before the commit leaves the old array, which never pointed past its end.
   */
  async grow(totalRecords: number): Promise<void> {
    const oldTotal = this.totalRecords, oldPages = this.pagesCapacity, oldDepth = this.depth;
    assert(totalRecords >= oldTotal, 'a radix array only grows');
    if (totalRecords === oldTotal) return;
    const exists = this.root !== null || this.rootBlock !== 0;
    if (exists) await this.page(oldPages - 1, true);
    this.totalRecords = totalRecords;
    this.pagesCapacity = Math.ceil(totalRecords / this.recordsPerPage);
    this.depth = radixDepth(this.pagesCapacity);
    if (!exists) return; // an absent array is all free, whatever its size
    for (let level = oldDepth + 1; level <= this.depth; level++) {
      const old = this.root!;
      const top: DirtyRadix = radixOf(0, 0, new Float64Array(RADIX_FANOUT), new Float64Array(RADIX_FANOUT));
      top.free[0] = sumOf(old.free);
      top.kids = new Array<Child | undefined>(RADIX_FANOUT);
      top.kids[0] = old;
      this.store.markDirty(top);
      this.root = top;
    }
    let node = this.root!;
    let firstPage = 0;
    for (let level = this.depth; level >= 1; level--) {
      assert(this.store.isDirty(node), 'the grown edge is dirty');
      const spanPages = RADIX_FANOUT ** (level - 1);
      const edge = Math.floor((oldPages - 1 - firstPage) / spanPages);
      for (let i = edge; i < RADIX_FANOUT; i++) {
        if (i > edge && (node.ptrs[i]! !== 0 || node.kids?.[i] !== undefined)) fail(`radix child ${i} at level ${level} past the old end is absent`);
        node.free[i] = node.free[i]! + this.childRecords(level, firstPage, i) - this.childRecords(level, firstPage, i, oldTotal);
      }
      if (level === 1) break;
      const child = node.kids?.[edge];
      assert(child !== undefined && child.type === MetaType.Radix, 'dirty path to the old last page');
      node = child as DirtyRadix;
      firstPage += edge * spanPages;
    }
  }

  private emptyRadix(level: number, firstPage: number): DirtyRadix {
    assert(level >= 1 && level <= this.depth && firstPage < this.pagesCapacity, 'an empty radix node inside the array');
    const ptrs = new Float64Array(RADIX_FANOUT), free = new Float64Array(RADIX_FANOUT);
    for (let i = 0; i < RADIX_FANOUT; i++) free[i] = this.childRecords(level, firstPage, i);
    return radixOf(0, 0, ptrs, free);
  }

  private async loadRoot(forWrite: boolean): Promise<DirtyRadix | null> {
    if (forWrite) this.store.assertHeld();
    if (this.root && (this.store.isDirty(this.root) || !forWrite)) return this.root;
    let node: DirtyRadix | null = this.root;
    if (!node && this.rootBlock !== 0) node = await this.store.load<RadixNode>(this.rootBlock, MetaType.Radix);
    if (!node) {
      if (!forWrite) return null;
      node = this.emptyRadix(this.depth, 0);
    }
    if (forWrite && !this.store.isDirty(node)) {
      const old = node.block;
      this.store.markDirty(node);
      node.block = 0;
      node.kids = undefined;
      this.root = node;
      if (old !== 0) { this.store.forget(old); await this.releaseOld(old); }
    }
    this.root = node;
    return node;
  }

  /** The page holding `pageIndex`; with forWrite the whole path is dirty in this transaction. */
  async page(pageIndex: number, forWrite: boolean): Promise<P | null> {
    if (!(pageIndex >= 0 && pageIndex < this.pagesCapacity)) fail(`page index ${pageIndex} in range`);
    if (forWrite) this.store.assertHeld();
    let node = await this.loadRoot(forWrite);
    if (!node) return null;
    let firstPage = 0;
    for (let level = this.depth; level >= 1; level--) {
      const spanPages = RADIX_FANOUT ** (level - 1);
      const i = Math.floor((pageIndex - firstPage) / spanPages);
      const childFirst = firstPage + i * spanPages;
      let child: Child | null = node.kids?.[i] ?? null;
      if (!child && node.ptrs[i]! !== 0) {
        child = await this.store.load<Child>(node.ptrs[i]!, level === 1 ? this.pageType : MetaType.Radix);
      }
      if (!child) {
        if (!forWrite) return null;
        child = level === 1 ? this.newPage() : this.emptyRadix(level - 1, childFirst);
      }
      if (forWrite && !this.store.isDirty(child)) {
        const old = child.block;
        this.store.markDirty(child);
        child.block = 0;
        if (child.type === MetaType.Radix) (child as DirtyRadix).kids = undefined;
        (node.kids ??= new Array<Child | undefined>(RADIX_FANOUT))[i] = child;
        if (old !== 0) { this.store.forget(old); await this.releaseOld(old); }
      } else if (forWrite) {
        (node.kids ??= new Array<Child | undefined>(RADIX_FANOUT))[i] = child;
      }
      if (level === 1) return child as P;
      node = child as DirtyRadix;
      firstPage = childFirst;
    }
    return fail('a radix descent ends at level 1');
  }

  /**
   * The page at `pageIndex` if every block on its path is in memory: the page, null when it is absent
   * (all records free), undefined when finding out would need a read.
   */
  pageIfLoaded(pageIndex: number): P | null | undefined {
    if (!(pageIndex >= 0 && pageIndex < this.pagesCapacity)) fail(`page index ${pageIndex} in range`);
    let node: DirtyRadix | null | undefined = this.root ?? (this.rootBlock === 0 ? null : this.store.peek(this.rootBlock) as DirtyRadix | undefined);
    if (node === null) return null;
    if (node === undefined) return undefined;
    let firstPage = 0;
    for (let level = this.depth; level >= 1; level--) {
      const spanPages = RADIX_FANOUT ** (level - 1);
      const i = Math.floor((pageIndex - firstPage) / spanPages);
      const ptr = node.ptrs[i]!;
      const child: Child | undefined = node.kids?.[i] ?? (ptr !== 0 ? this.store.peek(ptr) as Child | undefined : undefined);
      if (child === undefined) return ptr === 0 ? null : undefined;
      if (level === 1) return child as P;
      node = child as DirtyRadix;
      firstPage += i * spanPages;
    }
    return undefined;
  }

  /**
   * The page at `pageIndex` if it and its whole path are already dirty in this transaction (so a
   * change needs no load and no shadowing): the synchronous fast path of page(i, true).
   */
  pageIfDirty(pageIndex: number): P | undefined {
    if (!(pageIndex >= 0 && pageIndex < this.pagesCapacity)) fail(`page index ${pageIndex} in range`);
    let node: DirtyRadix | null = this.root;
    if (node === null || !this.store.isDirty(node)) return undefined;
    let firstPage = 0;
    for (let level = this.depth; level >= 1; level--) {
      const spanPages = RADIX_FANOUT ** (level - 1);
      const i = Math.floor((pageIndex - firstPage) / spanPages);
      const child: Child | undefined = node.kids?.[i];
      if (child === undefined || !this.store.isDirty(child)) return undefined;
      if (level === 1) return child as P;
      node = child as DirtyRadix;
      firstPage += i * spanPages;
    }
    return undefined;
  }

  /** Adjusts the free-record summary on the (dirty) path to `pageIndex`. */
  adjustFree(pageIndex: number, delta: number): void {
    this.store.assertHeld();
    let node = this.root;
    assert(node !== null && this.store.isDirty(node), 'free summary adjusted on a dirty path');
    let firstPage = 0;
    for (let level = this.depth; level >= 1; level--) {
      const spanPages = RADIX_FANOUT ** (level - 1);
      const i = Math.floor((pageIndex - firstPage) / spanPages);
      node.free[i] = node.free[i]! + delta;
      assert(node.free[i]! >= 0, 'free summary stays non-negative');
      if (level === 1) return;
      const child = node.kids?.[i];
      assert(child !== undefined && child.type === MetaType.Radix, 'dirty path to page');
      node = child as DirtyRadix;
      firstPage += i * spanPages;
    }
  }

  /** Total free records (sum of the root summary). */
  async freeTotal(): Promise<number> {
    const root = await this.loadRoot(false);
    if (!root) return this.totalRecords;
    const total = sumOf(root.free);
    // Each summary entry passed its node's validator (0..span): the sum is a count.
    assert(total >= 0, 'free records are a count');
    return total;
  }

  /**
   * First page index ≥ `fromPage` whose subtree reports free records, or -1. Absent subtrees are
   * wholly free. Walks the summaries only.
   */
  async nextPageWithFree(fromPage: number): Promise<number> {
    assert(fromPage >= 0, 'a search from a page');
    const root = await this.loadRoot(false);
    if (!root) return fromPage < this.pagesCapacity ? fromPage : -1;
    return this.searchFree(root, this.depth, 0, fromPage);
  }

  private async searchFree(node: DirtyRadix, level: number, firstPage: number, fromPage: number): Promise<number> {
    assert(level >= 1 && level <= this.depth, 'a free-space search stays inside the array\'s levels');
    const spanPages = RADIX_FANOUT ** (level - 1);
    const start = Math.max(0, Math.floor((fromPage - firstPage) / spanPages));
    for (let i = start; i < RADIX_FANOUT; i++) {
      const childFirst = firstPage + i * spanPages;
      if (childFirst >= this.pagesCapacity) return -1;
      if (node.free[i]! <= 0) continue;
      if (level === 1) return Math.max(childFirst, fromPage);
      let child: Child | null = node.kids?.[i] ?? null;
      if (!child && node.ptrs[i]! !== 0) child = await this.store.load<RadixNode>(node.ptrs[i]!, MetaType.Radix);
      if (!child) return Math.max(childFirst, fromPage);
      const found = await this.searchFree(child as DirtyRadix, level - 1, childFirst, Math.max(childFirst, fromPage));
      if (found >= 0) return found;
    }
    return -1;
  }

  /** Dirty objects of this array that still need a location. */
  unlocated(): MetaObject[] {
    this.store.assertHeld();
    const out: MetaObject[] = [];
    if (this.root) this.collectUnlocated(this.root, out);
    return out;
  }

  // Recursion through methods, not closures made per call: a closure created at every commit was
  // compiled again by TurboFan at every commit (seen with --trace-opt).
  private collectUnlocated(node: DirtyRadix, out: MetaObject[]): void {
    assert(node.type === MetaType.Radix, 'the walk descends radix nodes');
    if (!this.store.isDirty(node)) return;
    if (node.block === 0) out.push(node);
    for (const kid of node.kids ?? []) {
      if (!kid || !this.store.isDirty(kid)) continue;
      if (kid.type === MetaType.Radix) this.collectUnlocated(kid as DirtyRadix, out);
      else if (kid.block === 0) out.push(kid);
    }
  }

  /** After every dirty object has a location: write child locations into the parents. */
  fillPointers(): void {
    this.store.assertHeld();
    if (this.root && this.store.isDirty(this.root)) {
      this.fillPointersBelow(this.root);
      assert(this.root.block >= 2, 'located root');
      this.rootBlock = this.root.block;
    }
  }

  private fillPointersBelow(node: DirtyRadix): void {
    if (!this.store.isDirty(node) || !node.kids) return;
    for (let i = 0; i < node.kids.length; i++) {
      const kid = node.kids[i];
      if (!kid) continue;
      assert(kid.block >= 2, 'located child');
      node.ptrs[i] = kid.block;
      if (kid.type === MetaType.Radix) this.fillPointersBelow(kid as DirtyRadix);
    }
  }

  /** Drops in-memory child links once committed; children stay reachable through ptrs and the cache. */
  afterCommit(): void {
    this.store.assertHeld();
    if (this.root) this.dropKids(this.root);
  }

  private dropKids(node: DirtyRadix): void {
    assert(node.type === MetaType.Radix, 'the walk descends radix nodes');
    if (!node.kids) return;
    for (const kid of node.kids) if (kid && kid.type === MetaType.Radix) this.dropKids(kid as DirtyRadix);
    node.kids = undefined;
  }
}

/** Levels of a radix over `pages` pages: the fewest whose span holds them all (at least 1). */
function sumOf(values: Float64Array): number {
  assert(values.length > 0, 'a summary of some entries');
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  return sum;
}
