// Lays out a lineage tree left to right: depth on the x axis, and each node on the row of its first
// child (leaves take the next free row), so a chain of snapshots reads as a column and each clone
// sits beside the snapshot it came from. Small enough not to need a layout library.
import type { TreeNode } from './api';

export interface PlacedNode { node: TreeNode; depth: number; row: number; parent: PlacedNode | null }

export function layoutTree(root: TreeNode): { nodes: PlacedNode[]; rows: number; depth: number } {
  const nodes: PlacedNode[] = [];
  let nextRow = 0;
  let maxDepth = 0;
  const place = (node: TreeNode, depth: number, parent: PlacedNode | null): PlacedNode => {
    const p: PlacedNode = { node, depth, row: 0, parent };
    nodes.push(p);
    maxDepth = Math.max(maxDepth, depth);
    if (node.children.length === 0) {
      p.row = nextRow;
      nextRow += 1;
    } else {
      const placed = node.children.map((c) => place(c, depth + 1, p));
      p.row = placed[0]!.row;
    }
    return p;
  };
  place(root, 0, null);
  return { nodes, rows: nextRow, depth: maxDepth };
}
