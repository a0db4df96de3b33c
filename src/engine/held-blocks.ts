// Which free blocks (reference count 0) may not be handed out yet, and why: reserved for a write in
// flight, freed in the open transaction, or freed in a commit that older reads may still see. Flags
// live in small per-page byte arrays created on demand, so a 1 MiB write costs 256 array stores
// instead of 256 hash-set operations, and memory follows the blocks in flux, not the pool size.
import { fail } from './errors.js';

export const RESERVED = 1;
export const PENDING_FREE = 2;
export const QUARANTINED = 4;

interface FlagPage { flags: Uint8Array; nonZero: number }

export class HeldBlocks {
  private readonly pages = new Map<number, FlagPage>();
  private lastIndex = -1;
  private lastPage: FlagPage | undefined;
  /** Blocks carrying each flag. */
  reserved = 0;
  pendingFree = 0;
  quarantined = 0;

  constructor(private readonly blocksPerPage: number) {}

  private page(block: number, create: boolean): FlagPage | undefined {
    const index = Math.floor(block / this.blocksPerPage);
    if (index === this.lastIndex && this.lastPage) return this.lastPage;
    let page = this.pages.get(index);
    if (!page && create) {
      page = { flags: new Uint8Array(this.blocksPerPage), nonZero: 0 };
      this.pages.set(index, page);
    }
    if (page) { this.lastIndex = index; this.lastPage = page; }
    return page;
  }

  flags(block: number): number {
    const page = this.page(block, false);
    return page ? page.flags[block % this.blocksPerPage]! : 0;
  }

  add(block: number, flag: number): void {
    const page = this.page(block, true)!;
    const i = block % this.blocksPerPage;
    const before = page.flags[i]!;
    if ((before & flag) !== 0) fail(`block ${block} already has flag ${flag}`);
    if (before === 0) page.nonZero++;
    page.flags[i] = before | flag;
    this.count(flag, 1);
  }

  /** Clears `flag` if set; returns whether it was. */
  remove(block: number, flag: number): boolean {
    const index = Math.floor(block / this.blocksPerPage);
    const page = this.page(block, false);
    if (!page) return false;
    const i = block % this.blocksPerPage;
    const before = page.flags[i]!;
    if ((before & flag) === 0) return false;
    page.flags[i] = before & ~flag;
    this.count(flag, -1);
    if (page.flags[i] === 0 && --page.nonZero === 0) {
      this.pages.delete(index);
      this.lastIndex = -1;
      this.lastPage = undefined;
    }
    return true;
  }

  private count(flag: number, delta: number): void {
    if (flag === RESERVED) this.reserved += delta;
    else if (flag === PENDING_FREE) this.pendingFree += delta;
    else this.quarantined += delta;
  }
}
