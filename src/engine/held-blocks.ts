// Which free blocks (reference count 0) may not be handed out yet, and why: reserved for a write in
// flight, freed in the open transaction, or freed in a commit that older reads may still see. Flags
// live in small per-page byte arrays created on demand, so memory follows the blocks in flux, not the
// pool size. Every change takes a range of blocks: a 1 MiB write's blocks pass through four flag
// changes, and one tight loop per page costs a fraction of 256 calls that each find their page
// (with per-block calls the space map was ~11 % of the event loop under 1 MiB writes, now ~3 %; perf).
import { assert, fail } from './errors.js';

// Flags change from both locked and lock-free code (tryReserveSync, unreserve after a write,
// releaseQuarantine when a read ends): each change runs to completion without awaiting, so no other
// change can interleave; these methods therefore assert their ranges, not the metadata lock.

export const RESERVED = 1;
export const PENDING_FREE = 2;
export const QUARANTINED = 4;

interface FlagPage { flags: Uint8Array; nonZero: number }

export class HeldBlocks {
  private readonly pages = new Map<number, FlagPage>();
  /** Blocks carrying each flag. */
  reserved = 0;
  pendingFree = 0;
  quarantined = 0;

  constructor(private readonly blocksPerPage: number) {
    assert(Number.isSafeInteger(blocksPerPage) && blocksPerPage > 0, 'flag pages of some blocks');
  }

  flags(block: number): number {
    if (!(block >= 0)) fail(`flags of block ${block}`);
    const page = this.pages.get(Math.floor(block / this.blocksPerPage));
    return page ? page.flags[block % this.blocksPerPage]! : 0;
  }

  /** The flags of page `index` to read (undefined: no block of it is held). Valid until the next change. */
  pageFlags(index: number): Uint8Array | undefined {
    if (!(index >= 0)) fail(`flags of page ${index}`);
    return this.pages.get(index)?.flags;
  }

  /** Sets `flag` on every block of [from, to); a block that already has it is a broken invariant. */
  addRange(from: number, to: number, flag: number): void {
    if (!(from >= 0 && from < to)) fail(`flag ${flag} set on blocks [${from}, ${to})`);
    // One block (a free of one extent block after random writes): no page walk and no closure.
    if (to === from + 1) {
      const index = Math.floor(from / this.blocksPerPage);
      const base = index * this.blocksPerPage;
      this.setIn(this.pages.get(index) ?? this.newPage(index), from - base, from - base + 1, base, flag);
      return;
    }
    this.eachPage(from, to, true, (page, lo, hi, base) => this.setIn(page, lo, hi, base, flag));
  }

  /** Sets `flag` on blocks [lo, hi) of `page` (whose first block is `base`). */
  private setIn(page: FlagPage, lo: number, hi: number, base: number, flag: number): void {
    assert(lo < hi && hi <= this.blocksPerPage, 'a flag range inside its page');
    const flags = page.flags;
    let nonZero = page.nonZero;
    for (let i = lo; i < hi; i++) {
      const before = flags[i]!;
      if ((before & flag) !== 0) fail(`block ${base + i} already has flag ${flag}`);
      if (before === 0) nonZero++;
      flags[i] = before | flag;
    }
    page.nonZero = nonZero;
    this.count(flag, hi - lo);
  }

  /** Clears `flag` on the blocks of [from, to) that have it; returns how many did. */
  removeRange(from: number, to: number, flag: number): number {
    assert(from >= 0 && from <= to, 'flags cleared over a forward range');
    let removed = 0;
    this.eachPage(from, to, false, (page, lo, hi, _base, index) => {
      const flags = page.flags;
      let cleared = 0, emptied = 0;
      for (let i = lo; i < hi; i++) {
        const before = flags[i]!;
        if ((before & flag) === 0) continue;
        const after = before & ~flag;
        flags[i] = after;
        cleared++;
        if (after === 0) emptied++;
      }
      this.settle(index, page, emptied);
      this.count(flag, -cleared);
      removed += cleared;
    });
    return removed;
  }

  /**
   * Blocks of [from, to) that carry `oldFlag` carry `newFlag` instead. Appends the runs that moved to
   * `out` as (first block, length) pairs: only those, so a later release of the runs cannot touch a
   * block of the range that left `oldFlag` earlier and was flagged again by someone else.
   */
  moveRange(from: number, to: number, oldFlag: number, newFlag: number, out: number[]): void {
    assert(oldFlag !== newFlag && from <= to, 'a move between two flags over a forward range');
    this.eachPage(from, to, false, (page, lo, hi, base) => {
      const flags = page.flags;
      let moved = 0, runStart = -1;
      for (let i = lo; i < hi; i++) {
        const before = flags[i]!;
        if ((before & oldFlag) === 0) {
          if (runStart >= 0) { pushRun(out, base + runStart, i - runStart); runStart = -1; }
          continue;
        }
        if ((before & newFlag) !== 0) fail(`block ${base + i} already has flag ${newFlag}`);
        flags[i] = (before & ~oldFlag) | newFlag;
        moved++;
        if (runStart < 0) runStart = i;
      }
      if (runStart >= 0) pushRun(out, base + runStart, hi - runStart);
      this.count(oldFlag, -moved);
      this.count(newFlag, moved);
    });
  }

  /**
   * The blocks of [from, to) get their first reference: a reserved block its data, a block freed
   * earlier in the open transaction a reference again. A quarantined block is unreachable from any
   * live tree, so a reference to it is a broken invariant.
   */
  claimRange(from: number, to: number): void {
    assert(from >= 0 && from < to, 'a claimed range of blocks');
    this.eachPage(from, to, false, (page, lo, hi, base, index) => {
      const flags = page.flags;
      let reserved = 0, pending = 0, emptied = 0;
      for (let i = lo; i < hi; i++) {
        const before = flags[i]!;
        if (before === 0) continue;
        if ((before & QUARANTINED) !== 0) fail(`quarantined block ${base + i} referenced again`);
        const after = (before & RESERVED) !== 0 ? before & ~RESERVED : before & ~PENDING_FREE;
        if (after === before) continue;
        if ((before & RESERVED) !== 0) reserved++; else pending++;
        flags[i] = after;
        if (after === 0) emptied++;
      }
      this.settle(index, page, emptied);
      this.reserved -= reserved;
      this.pendingFree -= pending;
    });
  }

  /**
   * Calls `visit` once per flag page that [from, to) touches (creating missing pages if `create`,
   * skipping them otherwise) with the range's indices [lo, hi) inside the page and its first block.
   */
  private eachPage(from: number, to: number, create: boolean,
    visit: (page: FlagPage, lo: number, hi: number, base: number, index: number) => void): void {
    assert(from <= to, 'a page walk over a forward range');
    for (let block = from; block < to;) {
      const index = Math.floor(block / this.blocksPerPage);
      const base = index * this.blocksPerPage;
      const end = Math.min(to, base + this.blocksPerPage);
      const page = this.pages.get(index) ?? (create ? this.newPage(index) : undefined);
      if (page) visit(page, block - base, end - base, base, index);
      block = end;
    }
  }

  private newPage(index: number): FlagPage {
    assert(!this.pages.has(index), 'a flag page is made once');
    const page = { flags: new Uint8Array(this.blocksPerPage), nonZero: 0 };
    this.pages.set(index, page);
    return page;
  }

  /** Drops a page once none of its blocks is held. */
  private settle(index: number, page: FlagPage, emptied: number): void {
    assert(emptied >= 0 && emptied <= page.nonZero, 'a page empties only blocks it counted');
    page.nonZero -= emptied;
    if (page.nonZero === 0) this.pages.delete(index);
  }

  private count(flag: number, delta: number): void {
    if (flag === RESERVED) this.reserved += delta;
    else if (flag === PENDING_FREE) this.pendingFree += delta;
    else this.quarantined += delta;
    // The totals feed availableBlocks: one below zero would hand out blocks that are not free.
    if (this.reserved < 0 || this.pendingFree < 0 || this.quarantined < 0) fail(`held block totals ${this.reserved}/${this.pendingFree}/${this.quarantined}`);
  }
}

/** Appends the run (first, length) to flat pairs, extending the last run when it ends at `first`. */
export function pushRun(runs: number[], first: number, length: number): void {
  assert(length > 0 && first >= 0, 'a run of blocks');
  const n = runs.length;
  if (n > 0 && runs[n - 2]! + runs[n - 1]! === first) runs[n - 1] = runs[n - 1]! + length;
  else runs.push(first, length);
}
