// Records kept in ascending order of a numeric key (a snapshot's id or its per-volume sequence), for
// lists that are paged: seeking to "after key K" is a binary search, appending a larger key is O(1),
// and a removal leaves a tombstone that compaction clears once tombstones are half the array, so a
// removal is amortised O(1). With 100 000 snapshots a splice per delete would move ~800 KB each time.
import { KEY_ORDER_TOMBSTONES_COMPACT_MIN } from './constants.js';
import { assert } from './errors.js';

/** Tombstones tolerated before a compaction is considered (small arrays are not worth compacting). */

export class KeyOrder<T> {
  private keys: number[] = [];
  private items: (T | null)[] = [];
  private tombstones = 0;

  constructor(private readonly keyOf: (item: T) => number) {}

  get size(): number {
    assert(this.tombstones <= this.items.length && this.keys.length === this.items.length, 'a key per item, tombstones among them');
    return this.items.length - this.tombstones;
  }

  /** Adds an item; O(1) when its key is the largest (every new snapshot), else O(n) (only at load). */
  add(item: T): void {
    const key = this.keyOf(item);
    const last = this.keys.length - 1;
    if (last < 0 || key > this.keys[last]!) {
      this.keys.push(key);
      this.items.push(item);
      return;
    }
    const at = this.lowerBound(key);
    assert(this.keys[at] !== key || this.items[at] === null, 'key-order keys are unique');
    this.keys.splice(at, 0, key);
    this.items.splice(at, 0, item);
  }

  /** Removes an item that is in the order (asserted). */
  remove(item: T): void {
    const key = this.keyOf(item);
    let at = this.lowerBound(key);
    // A tombstone and a live item may share a key only if a key was reused: skip tombstones.
    while (at < this.keys.length && this.keys[at] === key && this.items[at] !== item) at++;
    assert(at < this.keys.length && this.items[at] === item, 'removing an item that is in the key order');
    this.items[at] = null;
    this.tombstones++;
    if (this.tombstones >= KEY_ORDER_TOMBSTONES_COMPACT_MIN && this.tombstones * 2 >= this.items.length) this.compact();
  }

  /** Up to `limit` items with a key greater than `afterKey`, in order, and whether more follow. */
  page(afterKey: number, limit: number): { items: T[]; more: boolean } {
    assert(limit > 0, 'a page holds at least one item');
    const out: T[] = [];
    let at = this.lowerBound(afterKey + 1);
    for (; at < this.items.length; at++) {
      const item = this.items[at];
      if (item === null || item === undefined) continue;
      if (out.length === limit) return { items: out, more: true };
      out.push(item);
    }
    assert(out.length <= limit, 'a page holds at most its limit');
    return { items: out, more: false };
  }

  /** Every item in key order (a full list: O(n)). */
  values(): T[] {
    const out: T[] = [];
    for (const item of this.items) if (item !== null) out.push(item);
    return out;
  }

  /** First index whose key is >= key. */
  private lowerBound(key: number): number {
    let lo = 0, hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid]! < key) lo = mid + 1; else hi = mid;
    }
    assert(lo <= this.keys.length, 'a lower bound inside or just past the keys');
    return lo;
  }

  private compact(): void {
    const keys: number[] = [], items: T[] = [];
    for (let i = 0; i < this.items.length; i++) {
      const item = this.items[i];
      if (item === null || item === undefined) continue;
      keys.push(this.keys[i]!);
      items.push(item);
    }
    assert(items.length === this.items.length - this.tombstones, 'compaction drops exactly the tombstones');
    this.keys = keys;
    this.items = items;
    this.tombstones = 0;
  }
}
