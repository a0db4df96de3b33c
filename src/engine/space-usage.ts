// Exclusive space: the data blocks that deleting one tree would free. A subtree under a shared node
// (count > 1) is skipped whole: deleting the tree only drops a reference to it.
import { MetaType } from './format.js';
import type { PoolCore } from './pool.js';

export async function exclusiveBlocks(core: PoolCore, root: number): Promise<number> {
  if (root === 0) return 0;
  if ((await core.space.get(root)) > 1) return 0;
  const node = await core.trees.load(root);
  let total = 0;
  if (node.type === MetaType.Branch) {
    for (const child of node.children) total += await exclusiveBlocks(core, child);
    return total;
  }
  const x = node.ext;
  for (let i = 0; i < x.count; i++) {
    const pba = x.pbas[i]!, len = x.lens[i]!;
    for (let j = 0; j < len; j++) if ((await core.space.get(pba + j)) === 1) total++;
  }
  return total;
}
