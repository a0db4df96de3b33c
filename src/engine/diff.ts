// Diff of two trees: walk both together and skip every subtree they share (same node block), so the
// cost is proportional to what changed, not to the volume size (docs/design/engine.md, "Diff").
import { MetaType, type LeafEntry, type LeafNode, type TreeNode } from './format.js';
import type { Trees } from './btree.js';
import { childIndex, leafEntriesIn } from './btree.js';
import { TREE_DEPTH_MAX } from './constants.js';
import { assert, MetaTooDeep } from './errors.js';

export interface LbaRange { startLba: number; endLba: number }

export async function diffTrees(trees: Trees, a: number, b: number, startLba: number, endLba: number): Promise<LbaRange[]> {
  assert(startLba >= 0 && startLba <= endLba, 'a diff of a forward range');
  const out: LbaRange[] = [];
  await diffNodes(trees, a, b, startLba, endLba, out, 1);
  return out;
}

function pushRange(out: LbaRange[], s: number, e: number): void {
  assert(s < e, 'a changed range is not empty');
  const last = out[out.length - 1];
  if (last && last.endLba === s) last.endLba = e;
  else out.push({ startLba: s, endLba: e });
}

/** Children of a branch within [lo, hi) as (range, child block) pairs. */
function branchSlices(node: TreeNode & { type: MetaType.Branch }, lo: number, hi: number): { s: number; e: number; child: number }[] {
  assert(node.children.length > 0, 'a branch has children (its validator checked)');
  const out: { s: number; e: number; child: number }[] = [];
  const n = node.children.length;
  for (let i = childIndex(node, lo); i < n; i++) {
    const cs = i === 0 ? 0 : node.keys[i]!;
    if (cs >= hi) break;
    const ce = i + 1 < n ? node.keys[i + 1]! : Infinity;
    out.push({ s: Math.max(lo, cs), e: Math.min(hi, ce), child: node.children[i]! });
  }
  return out;
}

async function diffNodes(trees: Trees, a: number, b: number, lo: number, hi: number, out: LbaRange[], depth: number): Promise<void> {
  if (a === b || lo >= hi) return;
  assert(a >= 0 && b >= 0 && lo >= 0, 'tree roots are block numbers (0: empty), over block addresses');
  // Both trees are walked in step: a level past the bound on either side is a damaged pool.
  if (depth > TREE_DEPTH_MAX) throw new MetaTooDeep(a || b, 'mapping tree (diff)', TREE_DEPTH_MAX);
  const na = a ? await trees.load(a) : null;
  const nb = b ? await trees.load(b) : null;
  if (na?.type === MetaType.Branch || nb?.type === MetaType.Branch) {
    // Split the range at the child boundaries of whichever side is a branch, and recurse pairwise.
    const cuts = new Set<number>([lo, hi]);
    const sa = na?.type === MetaType.Branch ? branchSlices(na, lo, hi) : null;
    const sb = nb?.type === MetaType.Branch ? branchSlices(nb, lo, hi) : null;
    for (const s of sa ?? []) { cuts.add(s.s); cuts.add(s.e); }
    for (const s of sb ?? []) { cuts.add(s.s); cuts.add(s.e); }
    const points = [...cuts].filter((p) => p >= lo && p <= hi).sort((x, y) => x - y);
    for (let i = 0; i + 1 < points.length; i++) {
      const s = points[i]!, e = points[i + 1]!;
      const ca = sa ? sa.find((x) => x.s <= s && s < x.e)?.child ?? 0 : a;
      const cb = sb ? sb.find((x) => x.s <= s && s < x.e)?.child ?? 0 : b;
      await diffNodes(trees, ca, cb, s, e, out, depth + 1);
    }
    return;
  }
  const ea = na ? leafEntriesIn(na as LeafNode, lo, hi) : [];
  const eb = nb ? leafEntriesIn(nb as LeafNode, lo, hi) : [];
  diffLeaves(ea, eb, lo, hi, out);
}

function pbaAt(entries: LeafEntry[], idx: { i: number }, lba: number): number {
  assert(idx.i >= 0, 'the cursor of a leaf walk');
  while (idx.i < entries.length && entries[idx.i]!.lba + entries[idx.i]!.lengthBlocks <= lba) idx.i++;
  const e = entries[idx.i];
  return e && e.lba <= lba ? e.pba + (lba - e.lba) : -1;
}

function diffLeaves(ea: LeafEntry[], eb: LeafEntry[], lo: number, hi: number, out: LbaRange[]): void {
  assert(lo < hi, 'leaves are compared over a range');
  const cuts = new Set<number>([lo, hi]);
  for (const e of [...ea, ...eb]) { cuts.add(e.lba); cuts.add(e.lba + e.lengthBlocks); }
  const points = [...cuts].filter((p) => p >= lo && p <= hi).sort((x, y) => x - y);
  const ia = { i: 0 }, ib = { i: 0 };
  for (let i = 0; i + 1 < points.length; i++) {
    const s = points[i]!;
    // Within a segment both sides are either unmapped or linear in lba, so comparing at its start is enough.
    if (pbaAt(ea, ia, s) !== pbaAt(eb, ib, s)) pushRange(out, s, points[i + 1]!);
  }
}
