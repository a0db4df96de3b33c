// A leaf's extents as parallel typed arrays, edited in place. As one object (and one checksum array)
// per extent, a cached leaf of ~165 single-block extents was ~330 heap objects and ~51 KB: the
// garbage collector marked and moved all of them, and the metadata cache, which counted ~27 KB per
// leaf, held twice its budget. Here a leaf is five arrays of fixed capacity over one 7.6 KB buffer,
// and an extent's checksums sit right after the previous extent's, in order.
import { EXTENT_BLOCKS_MAX, LEAF_ENTRY_FIXED_BYTES, META_PAYLOAD_BYTES } from './constants.js';
import { assert, fail } from './errors.js';
import type { LeafEntry } from './format.js';

/** Extents a full leaf block can hold (each has at least one checksum). */
export const LEAF_EXTENTS_MAX = Math.floor(META_PAYLOAD_BYTES / (LEAF_ENTRY_FIXED_BYTES + 4));
/** Checksums a full leaf block can hold. */
const LEAF_CRCS_MAX = Math.floor((META_PAYLOAD_BYTES - LEAF_ENTRY_FIXED_BYTES) / 4);

export class LeafExtents {
  /** Number of extents. */
  count = 0;
  /** Checksums in use: crcs[0, crcUsed). */
  crcUsed = 0;
  lbas: Float64Array;
  pbas: Float64Array;
  lens: Uint8Array;
  /** Index into `crcs` of each extent's first checksum: the sum of the lengths before it. */
  crcAt: Uint32Array;
  crcs: Uint32Array;

  constructor(extents = LEAF_EXTENTS_MAX, crcs = LEAF_CRCS_MAX) {
    assert(extents > 0 && crcs >= extents, 'a leaf has room for an extent and its checksums');
    // One backing store for the five arrays (widest elements first, for alignment): each store of
    // its own is a malloc and an object V8's collector tracks, five per cached leaf.
    const store = new ArrayBuffer(16 * extents + 4 * extents + 4 * crcs + extents);
    let at = 0;
    this.lbas = new Float64Array(store, at, extents); at += 8 * extents;
    this.pbas = new Float64Array(store, at, extents); at += 8 * extents;
    this.crcAt = new Uint32Array(store, at, extents); at += 4 * extents;
    this.crcs = new Uint32Array(store, at, crcs); at += 4 * crcs;
    this.lens = new Uint8Array(store, at, extents);
  }

  static of(entries: readonly LeafEntry[]): LeafExtents {
    const leaf = new LeafExtents();
    leaf.splice(0, 0, entries);
    assert(leaf.count <= entries.length, 'an extent per entry at most');
    return leaf;
  }

  /** Payload bytes of the leaf as stored on disk. */
  get bytes(): number {
    assert(this.crcUsed >= this.count, 'a checksum per block, so at least one per extent');
    return this.count * LEAF_ENTRY_FIXED_BYTES + this.crcUsed * 4;
  }

  end(i: number): number { return this.lbas[i]! + this.lens[i]!; }

  /** A copy of extent i's part [from, to) (inside it) as an entry of its own. */
  entry(i: number, from = this.lbas[i]!, to = this.end(i)): LeafEntry {
    // A part of extent i: asked outside it, the checksums below would be another extent's.
    if (!(i < this.count && from >= this.lbas[i]! && from < to && to <= this.end(i))) fail(`part [${from}, ${to}) of leaf extent ${i}`);
    const skip = from - this.lbas[i]!;
    const c = this.crcAt[i]! + skip;
    return { lba: from, pba: this.pbas[i]! + skip, lengthBlocks: to - from, crcs: this.crcs.slice(c, c + to - from) };
  }

  /**
   * Index of the first extent that ends after `lba` (count if none). The binary search reads only
   * `lbas` (extents are sorted and do not overlap, so only the last one starting at or before `lba`
   * can still cover it): under random I/O the leaf is cold in the CPU cache, and a probe that read
   * `lens` too cost a second cache miss.
   */
  firstEndingAfter(lba: number): number {
    const lbas = this.lbas;
    let lo = 0, hi = this.count;
    // lo ends as the number of extents starting at or before lba.
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (lbas[mid]! <= lba) lo = mid + 1; else hi = mid;
    }
    if (lo > this.count) fail(`search ended at ${lo} of ${this.count} extents`);
    return lo > 0 && lbas[lo - 1]! + this.lens[lo - 1]! > lba ? lo - 1 : lo;
  }

  /** Copies of the extents overlapping [start, end), clipped, appended to `out` up to `limit` in all. */
  collect(start: number, end: number, out: LeafEntry[], limit = Infinity): void {
    assert(start < end, 'extents collected over a range');
    for (let i = this.firstEndingAfter(start); i < this.count; i++) {
      const lba = this.lbas[i]!;
      if (lba >= end || out.length >= limit) break;
      out.push(this.entry(i, Math.max(lba, start), Math.min(this.end(i), end)));
    }
  }

  /** Replaces extents [first, last) with `entries` (sorted, and fitting between their neighbours). */
  splice(first: number, last: number, entries: readonly LeafEntry[]): void {
    assert(first >= 0 && first <= last && last <= this.count, 'leaf splice inside the leaf');
    const crcFrom = first < this.count ? this.crcAt[first]! : this.crcUsed;
    const crcTo = last < this.count ? this.crcAt[last]! : this.crcUsed;
    let added = 0;
    for (const e of entries) added += e.lengthBlocks;
    const shift = entries.length - (last - first), crcShift = added - (crcTo - crcFrom);
    const count = this.count + shift, crcUsed = this.crcUsed + crcShift;
    this.reserve(count, crcUsed);
    if (shift !== 0 && last < this.count) {
      const to = first + entries.length;
      this.lbas.copyWithin(to, last, this.count);
      this.pbas.copyWithin(to, last, this.count);
      this.lens.copyWithin(to, last, this.count);
      this.crcAt.copyWithin(to, last, this.count);
    }
    if (crcShift !== 0 && crcTo < this.crcUsed) this.crcs.copyWithin(crcFrom + added, crcTo, this.crcUsed);
    if (crcShift !== 0) for (let i = first + entries.length; i < count; i++) this.crcAt[i] = this.crcAt[i]! + crcShift;
    let i = first, c = crcFrom;
    for (const e of entries) {
      assert(e.lengthBlocks > 0 && e.lengthBlocks <= EXTENT_BLOCKS_MAX && e.crcs.length === e.lengthBlocks, 'leaf extent length');
      this.lbas[i] = e.lba; this.pbas[i] = e.pba; this.lens[i] = e.lengthBlocks; this.crcAt[i] = c;
      this.crcs.set(e.crcs, c);
      i++; c += e.lengthBlocks;
    }
    this.count = count;
    this.crcUsed = crcUsed;
  }

  /**
   * Merges logically and physically contiguous neighbours among extents [from, to] (inclusive);
   * returns the number of merges. Their checksums are adjacent already, so only the index moves.
   */
  mergeAround(from: number, to: number): number {
    assert(to < this.count + 1 && from >= -1, 'merge window around an edit of this leaf');
    let merges = 0;
    let i = Math.max(0, from);
    while (i < to && i + 1 < this.count) {
      const end = this.end(i);
      assert(end <= this.lbas[i + 1]!, 'leaf extents do not overlap');
      const len = this.lens[i]! + this.lens[i + 1]!;
      if (end === this.lbas[i + 1]! && this.pbas[i]! + this.lens[i]! === this.pbas[i + 1]! && len <= EXTENT_BLOCKS_MAX) {
        this.lens[i] = len;
        this.lbas.copyWithin(i + 1, i + 2, this.count);
        this.pbas.copyWithin(i + 1, i + 2, this.count);
        this.lens.copyWithin(i + 1, i + 2, this.count);
        this.crcAt.copyWithin(i + 1, i + 2, this.count);
        this.count--;
        to--;
        merges++;
      } else {
        i++;
      }
    }
    return merges;
  }

  /** A copy of extents [from, to) as a leaf of its own, with capacity for a full block or the one asked. */
  copyRange(from = 0, to = this.count, extents = LEAF_EXTENTS_MAX, crcs = LEAF_CRCS_MAX): LeafExtents {
    assert(from >= 0 && from <= to && to <= this.count, 'a copy of extents inside the leaf');
    const c0 = this.crcEnd(from), c1 = this.crcEnd(to);
    const out = new LeafExtents(Math.max(extents, to - from), Math.max(crcs, c1 - c0));
    out.lbas.set(this.lbas.subarray(from, to));
    out.pbas.set(this.pbas.subarray(from, to));
    out.lens.set(this.lens.subarray(from, to));
    for (let i = from; i < to; i++) out.crcAt[i - from] = this.crcAt[i]! - c0;
    out.crcs.set(this.crcs.subarray(c0, c1));
    out.count = to - from;
    out.crcUsed = c1 - c0;
    return out;
  }

  /** Where extent i's checksums start (crcUsed for i = count). */
  crcEnd(i: number): number {
    if (!(i >= 0 && i <= this.count)) fail(`checksums of extent ${i} of ${this.count}`);
    return i < this.count ? this.crcAt[i]! : this.crcUsed;
  }

  /** Keeps extents [0, n), back in arrays of a block's capacity if an edit grew them. */
  truncate(n: number): void {
    assert(n >= 0 && n <= this.count, 'leaf truncated inside the leaf');
    this.crcUsed = this.crcEnd(n);
    this.count = n;
    if (this.lbas.length > LEAF_EXTENTS_MAX || this.crcs.length > LEAF_CRCS_MAX) {
      this.adopt(this.copyRange(0, n));
    }
  }

  /** Grows the arrays (past a block's capacity) for an edit that overfills the leaf before it splits. */
  private reserve(count: number, crcUsed: number): void {
    assert(count >= 0 && crcUsed >= count, 'a leaf of extents with a checksum each at least');
    if (count <= this.lbas.length && crcUsed <= this.crcs.length) return;
    const extents = count > this.lbas.length ? Math.max(count, 2 * this.lbas.length) : this.lbas.length;
    const crcs = crcUsed > this.crcs.length ? Math.max(crcUsed, 2 * this.crcs.length) : this.crcs.length;
    this.adopt(this.copyRange(0, this.count, extents, crcs));
  }

  /** Takes over the arrays of `other` (a copy of this leaf's extents in arrays of another size). */
  private adopt(other: LeafExtents): void {
    assert(other.count === this.count && other.crcUsed === this.crcUsed, 'adopting a copy of the same extents');
    this.lbas = other.lbas; this.pbas = other.pbas; this.lens = other.lens; this.crcAt = other.crcAt; this.crcs = other.crcs;
  }

  /** Heap bytes held (for the cache's budget). */
  get heapBytes(): number { return 400 + this.lbas.buffer.byteLength; }
}
