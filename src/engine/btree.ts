// The copy-on-write B+tree mapping logical blocks to {physical block, crc32c} extents (Rodeh 2008,
// dm-thin). Sharing is by reference count: a snapshot or clone is another reference to a root; a
// change to a shared node shadows it (copy, children +1, original -1). Data is never copied.
import { BRANCH_FANOUT_MAX, LEAF_ENTRY_FIXED_BYTES, META_PAYLOAD_BYTES } from './constants.js';
import { MetaType, branchOf, leafEntryBytes, leafOf, type BranchNode, type LeafEntry, type LeafNode, type TreeNode } from './format.js';
import { LeafExtents } from './leaf-extents.js';
import type { MetaStore } from './meta-store.js';
import type { SpaceMap } from './space-map.js';
import { assert, fail } from './errors.js';

interface Part { key: number; node: TreeNode }

/**
 * What a leaf edit will do, worked out before anything changes: entries [first, last) of the leaf
 * give way to `replacement`; `counts` are the reference-count changes, in order (the ranges that lose
 * their reference, then the new entries).
 */
interface LeafPlan {
  first: number;
  last: number;
  replacement: LeafEntry[];
  counts: { pba: number; lengthBlocks: number; delta: 1 | -1 }[];
  mappedDelta: number;
  /** Payload bytes of the leaf after the splice, before neighbouring extents merge. */
  bytes: number;
}

/** The part of `e` covering [from, to) (inside e). */
function sliceEntry(e: LeafEntry, from: number, to: number): LeafEntry {
  const skip = from - e.lba;
  return { lba: from, pba: e.pba + skip, lengthBlocks: to - from, crcs: e.crcs.subarray(skip, skip + to - from) };
}

function clipEntries(entries: LeafEntry[], from: number, to: number): LeafEntry[] {
  const out: LeafEntry[] = [];
  for (const e of entries) {
    const s = Math.max(from, e.lba), t = Math.min(to, e.lba + e.lengthBlocks);
    if (s < t) out.push(s === e.lba && t === e.lba + e.lengthBlocks ? e : sliceEntry(e, s, t));
  }
  return out;
}

export class Trees {
  /** PoolOptions.fastPaths: false makes lookupCached and editNow decline (the awaited paths run). */
  fastPaths = true;

  constructor(private readonly store: MetaStore, private readonly space: SpaceMap) {}

  load(block: number): Promise<TreeNode> { return this.store.load<TreeNode>(block, MetaType.Leaf); }

  // Synchronous fast paths. Nearly every node a write or read touches is cached, and an await per
  // tree level (a promise and a microtask each) was a visible share of a 4 KiB request's time; each
  // `...Now` method does the whole job without awaiting, or reports that it needs the async path.

  /** The node at `block` if it is in memory (marked used, as a load would), else undefined. */
  private cached(block: number): TreeNode | undefined {
    const hit = this.store.peek(block);
    if (hit) hit.used = true;
    return hit as TreeNode | undefined;
  }

  /** `node` itself when it is already writable in this transaction and its count is in memory. */
  private writableNow(node: TreeNode): TreeNode | undefined {
    return this.store.isDirty(node) && this.space.getIfLoaded(node.block) === 1 ? node : undefined;
  }

  private async writableChild(block: number): Promise<TreeNode> {
    const node = this.cached(block) ?? await this.load(block);
    return this.writableNow(node) ?? await this.writable(node);
  }

  /** Makes `node` writable in this transaction (shadowing it if it is shared or already durable). */
  async writable(node: TreeNode): Promise<TreeNode> {
    const rc = await this.space.get(node.block);
    if (rc < 1) fail(`tree node ${node.block} is referenced`);
    // A node made in this transaction is changed in place only while nothing else references it: a
    // snapshot taken in the same transaction shares it, and then it must be shadowed like any other.
    if (rc === 1 && this.store.isDirty(node)) return node;
    const block = await this.space.allocMeta();
    const copy: TreeNode = node.type === MetaType.Leaf
      ? leafOf(block, 0, node.ext.copyRange())
      : branchOf(block, 0, node.keys.slice(), node.children.slice());
    this.store.markDirty(copy);
    this.store.put(copy);
    if (rc > 1) await this.refChildren(copy, 1);
    else this.store.forget(node.block);
    await this.space.decref(node.block);
    return copy;
  }

  /** Counts of everything `node` points to, +1 or -1; without awaiting where the count page is dirty already. */
  private async refChildren(node: TreeNode, delta: 1 | -1): Promise<void> {
    if (node.type === MetaType.Leaf) {
      const x = node.ext;
      for (let i = 0; i < x.count; i++) if (!this.space.tryAddRange(x.pbas[i]!, x.lens[i]!, delta)) await this.space.addRange(x.pbas[i]!, x.lens[i]!, delta);
    } else {
      for (const c of node.children) if (!this.space.tryAddRange(c, 1, delta)) await this.space.addRange(c, 1, delta);
    }
  }

  /** Frees a dirty node this transaction made and no longer needs (its children stay referenced). */
  private async discard(node: TreeNode): Promise<void> {
    this.store.undirty(node);
    this.store.forget(node.block);
    await this.space.decref(node.block);
  }

  /** A new node at a newly allocated block: `make` builds it there. */
  private async newNode<T extends TreeNode>(make: (block: number) => T): Promise<T> {
    const node = make(await this.space.allocMeta());
    this.store.markDirty(node);
    this.store.put(node);
    return node;
  }

  /** Extents of [start, end) mapped under `root`, clipped and sorted (at most `limit` of them). */
  async lookup(root: number, start: number, end: number, limit = Infinity): Promise<LeafEntry[]> {
    return this.lookupCached(root, start, end, limit) ?? this.lookupLoading(root, start, end, [], limit);
  }

  /** lookup() when every node it needs is in memory, without awaiting; undefined otherwise. */
  lookupCached(root: number, start: number, end: number, limit = Infinity): LeafEntry[] | undefined {
    if (!this.fastPaths) return undefined;
    const out: LeafEntry[] = [];
    return this.lookupNow(root, start, end, out, limit) ? out : undefined;
  }

  /** lookup() over cached nodes only; false (with `out` partly filled) when a node needs a read. */
  private lookupNow(root: number, start: number, end: number, out: LeafEntry[], limit: number): boolean {
    if (root === 0 || start >= end || out.length >= limit) return true;
    const node = this.cached(root);
    if (!node) return false;
    if (node.type === MetaType.Leaf) {
      node.ext.collect(start, end, out, limit);
      return true;
    }
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (out.length >= limit) break;
      if (!this.lookupNow(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), out, limit)) return false;
    }
    return true;
  }

  /** lookup() that loads the nodes it needs (for a caller that tried lookupCached already). */
  async lookupLoading(root: number, start: number, end: number, out: LeafEntry[] = [], limit = Infinity): Promise<LeafEntry[]> {
    if (root === 0 || start >= end || out.length >= limit) return out;
    const node = await this.load(root);
    if (node.type === MetaType.Leaf) {
      node.ext.collect(start, end, out, limit);
      return out;
    }
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (out.length >= limit) break;
      await this.lookupLoading(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), out, limit);
    }
    return out;
  }

  /** Whether every node covering [start, end) is in memory already. */
  private loadedNow(root: number, start: number, end: number): boolean {
    if (root === 0 || start >= end) return true;
    const node = this.cached(root);
    if (!node) return false;
    if (node.type === MetaType.Leaf) return true;
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (!this.loadedNow(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)))) return false;
    }
    return true;
  }

  /** Loads every node covering [start, end) (leaves included) without collecting entries. */
  private async preload(root: number, start: number, end: number): Promise<void> {
    if (root === 0 || start >= end) return;
    const node = await this.load(root);
    if (node.type === MetaType.Leaf) return;
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      await this.preload(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)));
    }
  }

  /**
   * Replaces everything mapped in [start, end) under `root` with `entries` (sorted, inside the range,
   * their data blocks reserved and not yet counted). Returns the new root and the change in mapped blocks.
   */
  async edit(root: number, start: number, end: number, entries: LeafEntry[]): Promise<{ root: number; mappedDelta: number }> {
    const now = this.editNow(root, start, end, entries);
    if (now) return now;
    const delta = { mapped: 0 };
    // Load (and verify) every node the edit will touch before changing anything, so a damaged node
    // fails the edit cleanly instead of half-way through.
    if (!this.loadedNow(root, start, end)) await this.preload(root, start, end);
    let parts: Part[];
    if (root === 0) {
      if (entries.length === 0) return { root: 0, mappedDelta: 0 };
      const leaf = await this.newNode((block) => leafOf(block, 0, new LeafExtents()));
      parts = await this.editNode(leaf, start, end, entries, delta);
    } else {
      parts = await this.editNode(await this.writableChild(root), start, end, entries, delta);
    }
    while (parts.length > 1) parts = await this.packBranches(parts);
    let top = parts[0]?.node ?? null;
    // Collapse a root with one child so the height shrinks again after large trims.
    while (top && top.type === MetaType.Branch && top.children.length === 1 && this.store.isDirty(top)) {
      const childBlock = top.children[0]!;
      await this.discard(top); // its reference to the child passes to the root holder
      top = await this.load(childBlock);
    }
    return { root: top ? top.block : 0, mappedDelta: delta.mapped };
  }

  /**
   * edit() without awaiting, for the common write: every node on the path in memory and writable in
   * this transaction, one child per level, every touched count page dirty, and a leaf that neither
   * splits nor empties. Then nothing is shadowed and the root stays. Returns undefined, having changed
   * nothing, when any of that does not hold (edit() then takes the general path).
   */
  editNow(root: number, start: number, end: number, entries: LeafEntry[]): { root: number; mappedDelta: number } | undefined {
    if (!this.fastPaths || root === 0 || start >= end) return undefined;
    let node = this.cached(root);
    // A branch with one child is collapsed by the general path.
    if (node?.type === MetaType.Branch && node.children.length === 1) return undefined;
    while (node && node.type === MetaType.Branch) {
      if (!this.writableNow(node)) return undefined;
      const i = childIndex(node, start);
      if (i !== childIndex(node, end - 1)) return undefined;
      node = this.cached(node.children[i]!);
    }
    if (!node || !this.writableNow(node)) return undefined;
    const plan = planLeafEdit(node, start, end, entries);
    if (plan.bytes > META_PAYLOAD_BYTES || (plan.replacement.length === 0 && plan.last - plan.first === node.ext.count)) return undefined;
    for (const r of plan.counts) if (!this.space.rangeDirtyNow(r.pba, r.lengthBlocks)) return undefined;
    for (const r of plan.counts) this.space.addRangeDirty(r.pba, r.lengthBlocks, r.delta);
    applyLeafPlan(node, plan);
    return { root, mappedDelta: plan.mappedDelta };
  }

  private async packBranches(parts: Part[]): Promise<Part[]> {
    const out: Part[] = [];
    const per = Math.ceil(parts.length / Math.ceil(parts.length / BRANCH_FANOUT_MAX));
    for (let i = 0; i < parts.length; i += per) {
      const chunk = parts.slice(i, i + per);
      const node = await this.newNode((block) => branchOf(block, 0, chunk.map((p) => p.key), chunk.map((p) => p.node.block)));
      out.push({ key: chunk[0]!.key, node });
    }
    return out;
  }

  private async editNode(node: TreeNode, start: number, end: number, entries: LeafEntry[], delta: { mapped: number }): Promise<Part[]> {
    if (node.type === MetaType.Leaf) return this.editLeaf(node, start, end, entries, delta);
    const first = childIndex(node, start), last = childIndex(node, end - 1);
    for (let i = last; i >= first; i--) {
      const s = Math.max(start, childStart(node, i)), t = Math.min(end, childEnd(node, i));
      if (s >= t) continue;
      const child = await this.writableChild(node.children[i]!);
      node.children[i] = child.block;
      // The entries need clipping only where the edit spans several children.
      const parts = await this.editNode(child, s, t, s === start && t === end ? entries : clipEntries(entries, s, t), delta);
      // The usual edit leaves one part under the child's key: then no new arrays are needed.
      if (parts.length === 1) { node.children[i] = parts[0]!.node.block; continue; }
      // Child 0 routes everything below keys[1], so its key is 0: a part split off it may start
      // below the old keys[0].
      const keys = parts.map((p, j) => (j === 0 ? (i === 0 ? 0 : node.keys[i]!) : p.key));
      node.keys.splice(i, 1, ...keys);
      node.children.splice(i, 1, ...parts.map((p) => p.node.block));
    }
    if (node.children.length === 0) { await this.discard(node); return []; }
    if (node.children.length <= BRANCH_FANOUT_MAX) return [{ key: node.keys[0]!, node }];
    // Split: the first part stays in this node, the rest go to new nodes.
    const pieces = Math.ceil(node.children.length / BRANCH_FANOUT_MAX);
    const per = Math.ceil(node.children.length / pieces);
    const keys = node.keys.splice(per), children = node.children.splice(per);
    const out: Part[] = [{ key: node.keys[0]!, node }];
    for (let i = 0; i < keys.length; i += per) {
      const sib = await this.newNode((block) => branchOf(block, 0, keys.slice(i, i + per), children.slice(i, i + per)));
      out.push({ key: keys[i]!, node: sib });
    }
    return out;
  }

  private async editLeaf(node: LeafNode, start: number, end: number, entries: LeafEntry[], delta: { mapped: number }): Promise<Part[]> {
    const plan = planLeafEdit(node, start, end, entries);
    for (const r of plan.counts) if (!this.space.tryAddRange(r.pba, r.lengthBlocks, r.delta)) await this.space.addRange(r.pba, r.lengthBlocks, r.delta);
    delta.mapped += plan.mappedDelta;
    const bytes = applyLeafPlan(node, plan);
    const x = node.ext;
    if (x.count === 0) { await this.discard(node); return []; }
    if (bytes <= META_PAYLOAD_BYTES) return [{ key: x.lbas[0]!, node }];
    // An append (the edit is past every old entry) fills the left leaf completely, so sequential
    // data packs leaves full; a split in the middle halves, leaving room on both sides.
    const fill = entries.length > 0 && entries[entries.length - 1]!.lba === x.lbas[x.count - 1]! ? META_PAYLOAD_BYTES : META_PAYLOAD_BYTES / 2;
    const cuts = [0];
    let groupBytes = 0;
    for (let i = 0; i < x.count; i++) {
      const b = LEAF_ENTRY_FIXED_BYTES + 4 * x.lens[i]!;
      if (groupBytes + b > fill && i > cuts[cuts.length - 1]!) { cuts.push(i); groupBytes = 0; }
      groupBytes += b;
    }
    cuts.push(x.count);
    const pieces: LeafExtents[] = [];
    for (let k = 1; k + 1 < cuts.length; k++) pieces.push(x.copyRange(cuts[k]!, cuts[k + 1]!));
    x.truncate(cuts[1]!);
    const out: Part[] = [{ key: x.lbas[0]!, node }];
    for (const piece of pieces) out.push({ key: piece.lbas[0]!, node: await this.newNode((block) => leafOf(block, 0, piece)) });
    return out;
  }

  /** Drops one reference to a node; if that was the last, returns its children (to drop in turn). */
  async dropRef(block: number): Promise<number[]> {
    const rc = await this.space.get(block);
    if (rc < 1) fail(`dropping unreferenced node ${block}`);
    if (rc > 1) { await this.space.decref(block); return []; }
    const node = await this.load(block);
    let children: number[] = [];
    if (node.type === MetaType.Leaf) await this.refChildren(node, -1);
    else children = node.children.slice();
    this.store.undirty(node);
    this.store.forget(block);
    await this.space.decref(block);
    return children;
  }
}

// The key range of child i of a branch is [childStart, childEnd). Walks loop over children by index
// with these rather than a generator of [child, from, to] tuples: a 4 KiB read walks 3-4 levels, and
// the generator's resumptions and tuples were a visible part of a random read's event-loop time.
function childStart(node: BranchNode, i: number): number { return i === 0 ? 0 : node.keys[i]!; }
function childEnd(node: BranchNode, i: number): number { return i + 1 < node.children.length ? node.keys[i + 1]! : Infinity; }

/** The leaf edit replacing [start, end) of `node` with `entries` (inside the range), without changing anything. */
function planLeafEdit(node: LeafNode, start: number, end: number, entries: LeafEntry[]): LeafPlan {
  const x = node.ext;
  // Only extents overlapping [start, end) are touched: the first may keep a part on the left, the
  // last a part on the right; the result is spliced in place.
  const first = x.firstEndingAfter(start);
  let last = first;
  let left: LeafEntry | undefined, right: LeafEntry | undefined;
  const counts: LeafPlan['counts'] = [];
  let mappedDelta = 0;
  let bytes = x.bytes;
  while (last < x.count && x.lbas[last]! < end) {
    const lba = x.lbas[last]!, eEnd = lba + x.lens[last]!;
    bytes -= LEAF_ENTRY_FIXED_BYTES + 4 * x.lens[last]!;
    if (lba < start) left = x.entry(last, lba, start);
    const rs = Math.max(lba, start), re = Math.min(eEnd, end);
    counts.push({ pba: x.pbas[last]! + (rs - lba), lengthBlocks: re - rs, delta: -1 });
    mappedDelta -= re - rs;
    if (eEnd > end) right = x.entry(last, end, eEnd);
    last++;
  }
  for (const e of entries) {
    counts.push({ pba: e.pba, lengthBlocks: e.lengthBlocks, delta: 1 });
    mappedDelta += e.lengthBlocks;
  }
  const replacement = !left && !right ? entries : [...(left ? [left] : []), ...entries, ...(right ? [right] : [])];
  for (const e of replacement) bytes += leafEntryBytes(e);
  return { first, last, replacement, counts, mappedDelta, bytes };
}

/** Splices a planned edit into the leaf and merges the extents it joined; returns the leaf's new size. */
function applyLeafPlan(node: LeafNode, plan: LeafPlan): number {
  const x = node.ext;
  x.splice(plan.first, plan.last, plan.replacement);
  x.mergeAround(plan.first - 1, Math.min(x.count - 1, plan.first + plan.replacement.length));
  return x.bytes;
}

/** Copies of the extents of a leaf overlapping [start, end), clipped. */
export function leafEntriesIn(node: LeafNode, start: number, end: number): LeafEntry[] {
  const out: LeafEntry[] = [];
  node.ext.collect(start, end, out);
  return out;
}

/** Index of the child whose range holds `lba`. */
export function childIndex(node: BranchNode, lba: number): number {
  let lo = 0, hi = node.keys.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (node.keys[mid]! <= lba) lo = mid; else hi = mid - 1;
  }
  return lo;
}
