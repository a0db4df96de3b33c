// Exclusive space: the data blocks that deleting one tree would free. A subtree under a shared node
// (count > 1) is skipped whole: deleting the tree only drops a reference to it.
import { MetaType } from './format.js';
import type { PoolCore } from './pool.js';
import { TREE_DEPTH_MAX } from './constants.js';
import { MetaTooDeep } from './errors.js';

export async function exclusiveBlocks(core: PoolCore, root: number, depth = 1): Promise<number> {
  if (root === 0) return 0;
  // A counted descent: a damaged tree (a branch pointing at an ancestor) fails instead of recursing on.
  if (depth > TREE_DEPTH_MAX) throw new MetaTooDeep(root, 'mapping tree (space usage)', TREE_DEPTH_MAX);
  core.assertHeld(); // counts read under the lock stay consistent with the tree walked
  if ((await core.space.get(root)) > 1) return 0;
  const node = await core.trees.load(root);
  let total = 0;
  if (node.type === MetaType.Branch) {
    for (const child of node.children) total += await exclusiveBlocks(core, child, depth + 1);
    return total;
  }
  const x = node.ext;
  for (let i = 0; i < x.count; i++) {
    const pba = x.pbas[i]!, len = x.lens[i]!;
    for (let j = 0; j < len; j++) if ((await core.space.get(pba + j)) === 1) total++;
  }
  return total;
}
