// The copy-on-write B+tree mapping logical blocks to {physical block, crc32c} extents (Rodeh 2008,
// dm-thin). Sharing is by reference count: a snapshot or clone is another reference to a root; a
// change to a shared node shadows it (copy, children +1, original -1). Data is never copied.
import { BRANCH_FANOUT_MAX, BRANCH_MERGE_BELOW_CHILDREN, LEAF_ENTRY_FIXED_BYTES, LEAF_MERGE_BELOW_BYTES, META_PAYLOAD_BYTES, TREE_DEPTH_MAX } from './constants.js';
import { MetaType, branchOf, leafEntryBytes, leafOf, type BranchNode, type LeafEntry, type LeafNode, type TreeNode } from './format.js';
import { LeafExtents } from './leaf-extents.js';
import type { MetaStore } from './meta-store.js';
import type { SpaceMap } from './space-map.js';
import { assert, fail, MetaTooDeep } from './errors.js';

interface Part { key: number; node: TreeNode }

/**
 * Every descent counts its levels: a walk that passes TREE_DEPTH_MAX is on a damaged pool (a branch
 * pointing at itself or an ancestor) and fails with a corruption error instead of never ending.
 */
function checkDepth(depth: number, block: number): void {
  assert(depth >= 0, 'a descent counts levels from the root');
  if (depth > TREE_DEPTH_MAX) throw new MetaTooDeep(block, 'mapping tree', TREE_DEPTH_MAX);
}

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
  assert(from >= e.lba && from < to && to <= e.lba + e.lengthBlocks, 'a slice inside its extent');
  const skip = from - e.lba;
  return { lba: from, pba: e.pba + skip, lengthBlocks: to - from, crcs: e.crcs.subarray(skip, skip + to - from) };
}

function clipEntries(entries: LeafEntry[], from: number, to: number): LeafEntry[] {
  assert(from < to, 'entries clipped to a range');
  const out: LeafEntry[] = [];
  for (const e of entries) {
    const s = Math.max(from, e.lba), t = Math.min(to, e.lba + e.lengthBlocks);
    if (s < t) out.push(s === e.lba && t === e.lba + e.lengthBlocks ? e : sliceEntry(e, s, t));
  }
  return out;
}

/** Unlocked walks lookupStable tries before it walks under the lock (each loads what it reads into the cache). */
export const STABLE_WALK_ATTEMPTS = 3;

export class Trees {
  /** PoolOptions.fastPaths: false makes lookupCached and editNow decline (the awaited paths run). */
  fastPaths = true;
  /**
   * Per tree owner (a volume's catalog record): open from the first change of an awaited edit until
   * the mutation that made it ends (endEdits, when its caller has set the new root). Meanwhile a node
   * of that tree may be half-changed: a leaf split is truncated before the node taking its tail
   * exists, and the parent learns of the split only after that. Readers walk trees without the lock,
   * so they wait for it (lookupStable): a walk that saw a truncated leaf read the tail as a hole, and a
   * sub-block write merged zeros over acknowledged data (nbd-tester-client's integrity test, 1 KiB
   * writes at queue depth > 2). Only that owner's readers wait: an edit changes in place only nodes
   * counted once and made in this transaction, which no other tree reaches. editNow runs without
   * awaiting, so no reader sees its edit half-done and it needs no gate.
   */
  private readonly gates = new Map<object, { promise: Promise<void>; open: () => void }>();
  /** Awaited edits begun per owner: a walk that awaited while its owner's count moved may have seen one half-done. */
  private readonly editsBegun = new WeakMap<object, number>();

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
    this.store.assertHeld();
    const node = this.cached(block) ?? await this.load(block);
    return this.writableNow(node) ?? await this.writable(node);
  }

  /** Makes `node` writable in this transaction (shadowing it if it is shared or already durable). */
  async writable(node: TreeNode): Promise<TreeNode> {
    this.store.assertHeld();
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
    await this.space.decrefMeta(node.block);
    return copy;
  }

  /** Counts of everything `node` points to, +1 or -1; without awaiting where the count page is dirty already. */
  private async refChildren(node: TreeNode, delta: 1 | -1): Promise<void> {
    this.store.assertHeld();
    if (node.type === MetaType.Leaf) {
      const x = node.ext;
      if (delta > 0 && this.space.tryIncrefReferencedExtents(x.pbas, x.lens, x.count)) return;
      // Children gaining a reference (their node shadowed or merged while shared) are referenced by
      // it already: the cheaper increment serves them.
      for (let i = 0; i < x.count; i++) {
        const pba = x.pbas[i]!, len = x.lens[i]!;
        if (delta > 0 ? this.space.tryIncrefReferenced(pba, len) : this.space.tryAddRange(pba, len, delta)) continue;
        await this.space.addRange(pba, len, delta);
      }
    } else {
      for (const c of node.children) if (!(delta > 0 ? this.space.tryIncrefReferenced(c, 1) : this.space.tryAddRange(c, 1, delta))) await this.space.addRange(c, 1, delta);
    }
  }

  /** Frees a dirty node this transaction made and no longer needs (its children stay referenced). */
  private async discard(node: TreeNode): Promise<void> {
    this.store.assertHeld();
    if (!this.store.isDirty(node)) fail(`discarding tree node ${node.block} this transaction did not make`);
    this.store.undirty(node);
    this.store.forget(node.block);
    await this.space.decrefMeta(node.block);
  }

  /** A new node at a newly allocated block: `make` builds it there. */
  private async newNode<T extends TreeNode>(make: (block: number) => T): Promise<T> {
    this.store.assertHeld();
    const node = make(await this.space.allocMeta());
    this.store.markDirty(node);
    this.store.put(node);
    return node;
  }

  /** Resolves when no awaited edit of `owner`'s tree is under way; null when none is. */
  editUnderWay(owner: object): Promise<void> | null { return this.gates.get(owner)?.promise ?? null; }

  /** Awaited edits of `owner`'s tree begun so far, for a walk that must tell whether one began while it awaited. */
  editsBegunOn(owner: object): number { return this.editsBegun.get(owner) ?? 0; }

  private beginAwaitedEdit(owner: object): void {
    this.store.assertHeld();
    this.editsBegun.set(owner, this.editsBegunOn(owner) + 1);
    if (this.gates.has(owner)) return;
    let open!: () => void;
    const promise = new Promise<void>((resolve) => { open = resolve; });
    this.gates.set(owner, { promise, open });
  }

  /** The mutation holding the lock ends: its edits are whole and their roots set, so walks may go on. */
  endEdits(): void {
    this.store.assertHeld(); // by the mutation ending, before it releases the lock
    if (this.gates.size === 0) return;
    const gates = [...this.gates.values()];
    this.gates.clear();
    for (const g of gates) g.open();
  }

  /**
   * lookup() for a caller without the lock: never returns what a half-done edit of `owner`'s tree
   * left (it waits for the edit, and walks again if one began while it awaited a node's read).
   * `rootOf` is read at each walk: the edit it waited for may have moved the root.
   */
  async lookupStable(owner: object, rootOf: () => number, start: number, end: number, limit = Infinity): Promise<LeafEntry[]> {
    assert(start <= end && limit > 0, 'a lookup of a forward range, returning at least one extent');
    for (let attempt = 1; ; attempt++) {
      if (attempt > STABLE_WALK_ATTEMPTS) {
        // Edits kept beginning while it awaited reads: walk once more under the lock, which no edit holds meanwhile.
        const release = await this.store.mutex.lock();
        try { return await this.lookup(rootOf(), start, end, limit); } finally { release(); }
      }
      const underWay = this.editUnderWay(owner);
      if (underWay) { await underWay; continue; }
      // Synchronous: no edit can run in the middle of it.
      const cached = this.lookupCached(rootOf(), start, end, limit);
      if (cached) return cached;
      const begun = this.editsBegunOn(owner);
      const out = await this.lookupLoading(rootOf(), start, end, [], limit);
      if (this.editsBegunOn(owner) === begun) return out;
    }
  }

  /** Extents of [start, end) mapped under `root`, clipped and sorted (at most `limit` of them). */
  async lookup(root: number, start: number, end: number, limit = Infinity): Promise<LeafEntry[]> {
    assert(limit > 0, 'a lookup returns at least one extent');
    return this.lookupCached(root, start, end, limit) ?? this.lookupLoading(root, start, end, [], limit);
  }

  /** lookup() when every node it needs is in memory, without awaiting; undefined otherwise. */
  lookupCached(root: number, start: number, end: number, limit = Infinity): LeafEntry[] | undefined {
    if (!this.fastPaths) return undefined;
    const out: LeafEntry[] = [];
    return this.lookupNow(root, start, end, out, limit, 1) ? out : undefined;
  }

  /** lookup() over cached nodes only; false (with `out` partly filled) when a node needs a read. */
  private lookupNow(root: number, start: number, end: number, out: LeafEntry[], limit: number, depth: number): boolean {
    if (root === 0 || start >= end || out.length >= limit) return true;
    checkDepth(depth, root);
    const node = this.cached(root);
    if (!node) return false;
    if (node.type === MetaType.Leaf) {
      node.ext.collect(start, end, out, limit);
      return true;
    }
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (out.length >= limit) break;
      if (!this.lookupNow(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), out, limit, depth + 1)) return false;
    }
    return true;
  }

  /** lookup() that loads the nodes it needs (for a caller that tried lookupCached already). */
  async lookupLoading(root: number, start: number, end: number, out: LeafEntry[] = [], limit = Infinity, depth = 1): Promise<LeafEntry[]> {
    if (root === 0 || start >= end || out.length >= limit) return out;
    checkDepth(depth, root);
    const node = await this.load(root);
    if (node.type === MetaType.Leaf) {
      node.ext.collect(start, end, out, limit);
      return out;
    }
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (out.length >= limit) break;
      await this.lookupLoading(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), out, limit, depth + 1);
    }
    return out;
  }

  /** Whether every node covering [start, end) is in memory already. */
  private loadedNow(root: number, start: number, end: number, depth = 1): boolean {
    if (root === 0 || start >= end) return true;
    checkDepth(depth, root);
    const node = this.cached(root);
    if (!node) return false;
    if (node.type === MetaType.Leaf) return true;
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      if (!this.loadedNow(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), depth + 1)) return false;
    }
    return true;
  }

  /** Loads every node covering [start, end) (leaves included) without collecting entries. */
  private async preload(root: number, start: number, end: number, depth = 1): Promise<void> {
    if (root === 0 || start >= end) return;
    checkDepth(depth, root);
    const node = await this.load(root);
    if (node.type === MetaType.Leaf) return;
    for (let i = childIndex(node, start); i < node.children.length && childStart(node, i) < end; i++) {
      await this.preload(node.children[i]!, Math.max(start, childStart(node, i)), Math.min(end, childEnd(node, i)), depth + 1);
    }
  }

  /**
   * Replaces everything mapped in [start, end) under `root` with `entries` (sorted, inside the range,
   * their data blocks reserved and not yet counted). Returns the new root and the change in mapped
   * blocks. `owner`: whose tree it is (the volume's catalog record), for its readers (lookupStable).
   */
  async edit(root: number, start: number, end: number, entries: LeafEntry[], owner: object): Promise<{ root: number; mappedDelta: number }> {
    this.store.assertHeld();
    if (!(start >= 0 && start <= end)) fail(`tree edit of [${start}, ${end})`);
    const now = this.editNow(root, start, end, entries);
    if (now) return now;
    const delta = { mapped: 0 };
    // Load (and verify) every node the edit will touch before changing anything, so a damaged node
    // fails the edit cleanly instead of half-way through.
    if (!this.loadedNow(root, start, end)) await this.preload(root, start, end);
    this.beginAwaitedEdit(owner);
    let parts: Part[];
    if (root === 0) {
      if (entries.length === 0) return { root: 0, mappedDelta: 0 };
      const leaf = await this.newNode((block) => leafOf(block, 0, new LeafExtents()));
      parts = await this.editNode(leaf, start, end, entries, delta, 1);
    } else {
      parts = await this.editNode(await this.writableChild(root), start, end, entries, delta, 1);
    }
    for (let levels = 0; parts.length > 1; levels++) {
      // Each pass packs up to BRANCH_FANOUT_MAX parts into one branch: a few passes at most.
      checkDepth(levels, parts[0]!.node.block);
      parts = await this.packBranches(parts);
    }
    let top = parts[0]?.node ?? null;
    // Collapse a root with one child so the height shrinks again after large trims.
    for (let levels = 1; top && top.type === MetaType.Branch && top.children.length === 1 && this.store.isDirty(top); levels++) {
      checkDepth(levels, top.block);
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
    this.store.assertHeld();
    if (!this.fastPaths || root === 0 || start >= end) return undefined;
    let node = this.cached(root);
    // A branch with one child is collapsed by the general path.
    if (node?.type === MetaType.Branch && node.children.length === 1) return undefined;
    const hasParent = node?.type === MetaType.Branch;
    for (let depth = 1; node && node.type === MetaType.Branch; depth++) {
      checkDepth(depth, node.block);
      if (!this.writableNow(node)) return undefined;
      const i = childIndex(node, start);
      if (i !== childIndex(node, end - 1)) return undefined;
      node = this.cached(node.children[i]!);
    }
    if (!node || !this.writableNow(node)) return undefined;
    const plan = planLeafEdit(node, start, end, entries);
    if (plan.bytes > META_PAYLOAD_BYTES || (plan.replacement.length === 0 && plan.last - plan.first === node.ext.count)) return undefined;
    // A leaf shrinking below the merge threshold goes the general path, which merges it with a neighbour.
    if (hasParent && plan.bytes < LEAF_MERGE_BELOW_BYTES && plan.bytes < node.ext.bytes) return undefined;
    for (const r of plan.counts) if (!this.space.rangeDirtyNow(r.pba, r.lengthBlocks)) return undefined;
    for (const r of plan.counts) this.space.addRangeDirty(r.pba, r.lengthBlocks, r.delta);
    applyLeafPlan(node, plan);
    return { root, mappedDelta: plan.mappedDelta };
  }

  private async packBranches(parts: Part[]): Promise<Part[]> {
    assert(parts.length > 1, 'packing more than one part into branches');
    const out: Part[] = [];
    const per = Math.ceil(parts.length / Math.ceil(parts.length / BRANCH_FANOUT_MAX));
    for (let i = 0; i < parts.length; i += per) {
      const chunk = parts.slice(i, i + per);
      const node = await this.newNode((block) => branchOf(block, 0, chunk.map((p) => p.key), chunk.map((p) => p.node.block)));
      out.push({ key: chunk[0]!.key, node });
    }
    return out;
  }

  private async editNode(node: TreeNode, start: number, end: number, entries: LeafEntry[], delta: { mapped: number }, depth: number): Promise<Part[]> {
    checkDepth(depth, node.block);
    // writable() made the node ours in this transaction: changing it in place is safe.
    if (!this.store.isDirty(node)) fail(`editing tree node ${node.block} that is not writable in this transaction`);
    if (node.type === MetaType.Leaf) return this.editLeaf(node, start, end, entries, delta);
    const first = childIndex(node, start), last = childIndex(node, end - 1);
    const untouchedAfter = node.children.length - 1 - last;
    for (let i = last; i >= first; i--) {
      const s = Math.max(start, childStart(node, i)), t = Math.min(end, childEnd(node, i));
      if (s >= t) continue;
      const child = await this.writableChild(node.children[i]!);
      node.children[i] = child.block;
      // The entries need clipping only where the edit spans several children.
      const parts = await this.editNode(child, s, t, s === start && t === end ? entries : clipEntries(entries, s, t), delta, depth + 1);
      // The usual edit leaves one part under the child's key: then no new arrays are needed.
      if (parts.length === 1) { node.children[i] = parts[0]!.node.block; continue; }
      // Child 0 routes everything below keys[1], so its key is 0: a part split off it may start
      // below the old keys[0].
      const keys = parts.map((p, j) => (j === 0 ? (i === 0 ? 0 : node.keys[i]!) : p.key));
      node.keys.splice(i, 1, ...keys);
      node.children.splice(i, 1, ...parts.map((p) => p.node.block));
    }
    await this.mergeUnderfull(node, first, node.children.length - untouchedAfter);
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

  /**
   * Merges each under-full child among positions [from, to) of `node` (those an edit changed) with
   * its right or else its left neighbour, when the two fit in one node. Repeats on the merged node,
   * which may still be under-full.
   */
  private async mergeUnderfull(node: BranchNode, from: number, to: number): Promise<void> {
    assert(node.type === MetaType.Branch, 'children are merged under a branch');
    let i = Math.max(0, from);
    while (i < to && i < node.children.length && node.children.length > 1) {
      const child = this.cached(node.children[i]!) ?? await this.load(node.children[i]!);
      if (!isUnderfull(child)) { i++; continue; }
      if (i + 1 < node.children.length && await this.mergePair(node, i)) { to--; continue; }
      if (i > 0 && await this.mergePair(node, i - 1)) { to--; i--; continue; }
      i++;
    }
  }

  /**
   * Children i and i + 1 of `node` become one node when they fit in one; false (nothing changed)
   * otherwise. The node kept is one already writable in this transaction when there is one (the one
   * the edit changed), else the left one, shadowed; the other gives up its entries and the parent's
   * reference to it, under the same rules as shadowing (`absorb`). Counts stay exact: check() agrees.
   */
  private async mergePair(node: BranchNode, i: number): Promise<boolean> {
    const left = this.cached(node.children[i]!) ?? await this.load(node.children[i]!);
    const right = this.cached(node.children[i + 1]!) ?? await this.load(node.children[i + 1]!);
    if (left.type !== right.type) fail(`siblings ${left.block} and ${right.block} of branch ${node.block} are at one height`);
    if (!fitTogether(left, right)) return false;
    const keepLeft = this.writableNow(left) !== undefined || this.writableNow(right) === undefined;
    const keep = keepLeft ? this.writableNow(left) ?? await this.writable(left) : right;
    const gone = keepLeft ? right : left;
    // Child i + 1 is routed from keys[i + 1]: in the merged branch, that is the key of its first child.
    const routeKey = node.keys[i + 1]!;
    if (keep.type === MetaType.Leaf) {
      const moved: LeafEntry[] = [];
      (gone as LeafNode).ext.collect(0, Infinity, moved);
      const at = keepLeft ? keep.ext.count : 0;
      keep.ext.splice(at, at, moved);
      keep.ext.mergeAround(at - 1 + (keepLeft ? 0 : moved.length), at + (keepLeft ? 1 : moved.length + 1));
    } else {
      const g = gone as BranchNode;
      if (keepLeft) {
        keep.keys.push(routeKey, ...g.keys.slice(1));
        keep.children.push(...g.children);
      } else {
        keep.keys.splice(0, 1, ...g.keys, routeKey);
        keep.children.unshift(...g.children);
      }
      assert(keep.children.length <= BRANCH_FANOUT_MAX, 'a merged branch fits its block');
    }
    await this.absorb(gone);
    node.children[i] = keep.block;
    node.keys.splice(i + 1, 1);
    node.children.splice(i + 1, 1);
    return true;
  }

  /**
   * The parent's reference to `gone` ends, its entries having moved to a merged node: when `gone` is
   * shared, it stays for its other parents and what it points to gains the merged node's reference;
   * when it was ours alone, those references simply move and it is freed.
   */
  private async absorb(gone: TreeNode): Promise<void> {
    const rc = await this.space.get(gone.block);
    if (rc < 1) fail(`merged tree node ${gone.block} is referenced`);
    if (rc > 1) await this.refChildren(gone, 1);
    else { this.store.undirty(gone); this.store.forget(gone.block); }
    await this.space.decrefMeta(gone.block);
  }

  private async editLeaf(node: LeafNode, start: number, end: number, entries: LeafEntry[], delta: { mapped: number }): Promise<Part[]> {
    assert(entries.every((e) => e.lba >= start && e.lba + e.lengthBlocks <= end), 'a leaf edit\'s entries lie inside its range');
    const plan = planLeafEdit(node, start, end, entries);
    for (const r of plan.counts) if (!this.space.tryAddRange(r.pba, r.lengthBlocks, r.delta)) await this.space.addRange(r.pba, r.lengthBlocks, r.delta);
    delta.mapped += plan.mappedDelta;
    const bytes = applyLeafPlan(node, plan);
    const x = node.ext;
    if (x.count === 0) { await this.discard(node); return []; }
    if (bytes <= META_PAYLOAD_BYTES) return [{ key: x.lbas[0]!, node }];
    // An append (the edit is past every old entry) fills the left leaf completely, so sequential
    // data packs leaves full; a split in the middle cuts pieces of even size, about half full, leaving
    // room on both sides (a leaf just over full halves; cutting at half full each left a small last
    // piece, under-full at once).
    const append = entries.length > 0 && entries[entries.length - 1]!.lba === x.lbas[x.count - 1]!;
    const pieceBytes = append ? META_PAYLOAD_BYTES : bytes / Math.max(2, Math.round(bytes / (META_PAYLOAD_BYTES / 2)));
    const cuts = [0];
    let groupBytes = 0;
    for (let i = 0; i < x.count; i++) {
      const b = LEAF_ENTRY_FIXED_BYTES + 4 * x.lens[i]!;
      // A middle piece ends once it reaches its share: below it before its last entry, so it fits.
      const full = append ? groupBytes + b > pieceBytes : groupBytes >= pieceBytes;
      if (full && i > cuts[cuts.length - 1]!) { cuts.push(i); groupBytes = 0; }
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
    this.store.assertHeld();
    const rc = await this.space.get(block);
    if (rc < 1) fail(`dropping unreferenced node ${block}`);
    if (rc > 1) { await this.space.decrefMeta(block); return []; }
    const node = await this.load(block);
    let children: number[] = [];
    if (node.type === MetaType.Leaf) await this.refChildren(node, -1);
    else children = node.children.slice();
    this.store.undirty(node);
    this.store.forget(block);
    await this.space.decrefMeta(block);
    return children;
  }
}

// The key range of child i of a branch is [childStart, childEnd). Walks loop over children by index
// with these rather than a generator of [child, from, to] tuples: a 4 KiB read walks 3-4 levels, and
// the generator's resumptions and tuples were a visible part of a random read's event-loop time.
function childStart(node: BranchNode, i: number): number { return i === 0 ? 0 : node.keys[i]!; }
function childEnd(node: BranchNode, i: number): number {
  if (!(i >= 0 && i < node.children.length)) fail(`child ${i} of a branch of ${node.children.length}`);
  return i + 1 < node.children.length ? node.keys[i + 1]! : Infinity;
}

/** The leaf edit replacing [start, end) of `node` with `entries` (inside the range), without changing anything. */
function planLeafEdit(node: LeafNode, start: number, end: number, entries: LeafEntry[]): LeafPlan {
  assert(start < end, 'a leaf edit of a range');
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
  assert(plan.first <= plan.last && plan.last <= node.ext.count, 'a planned splice inside the leaf');
  const x = node.ext;
  x.splice(plan.first, plan.last, plan.replacement);
  x.mergeAround(plan.first - 1, Math.min(x.count - 1, plan.first + plan.replacement.length));
  return x.bytes;
}

/** Whether a node (not a root) is below the fill at which it is offered to a neighbour. */
function isUnderfull(node: TreeNode): boolean {
  return node.type === MetaType.Leaf ? node.ext.bytes < LEAF_MERGE_BELOW_BYTES : node.children.length < BRANCH_MERGE_BELOW_CHILDREN;
}

/** Whether two sibling nodes' entries fit in one block. */
function fitTogether(a: TreeNode, b: TreeNode): boolean {
  if (a.type === MetaType.Leaf && b.type === MetaType.Leaf) return a.ext.bytes + b.ext.bytes <= META_PAYLOAD_BYTES;
  if (a.type === MetaType.Branch && b.type === MetaType.Branch) return a.children.length + b.children.length <= BRANCH_FANOUT_MAX;
  return false;
}

/** Copies of the extents of a leaf overlapping [start, end), clipped. */
export function leafEntriesIn(node: LeafNode, start: number, end: number): LeafEntry[] {
  const out: LeafEntry[] = [];
  node.ext.collect(start, end, out);
  assert(out.length <= node.ext.count, 'at most one entry per extent');
  return out;
}

/** Index of the child whose range holds `lba`. */
export function childIndex(node: BranchNode, lba: number): number {
  let lo = 0, hi = node.keys.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (node.keys[mid]! <= lba) lo = mid; else hi = mid - 1;
  }
  if (!(lo >= 0 && lo < node.children.length)) fail(`child index ${lo} of a branch of ${node.children.length}`);
  return lo;
}
