// How a data operation changes the model: a plan (new state per touched block) computed from the
// request, then committed as done, or, when the engine failed part way, resolved by reading back.

import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { blockOf, fingerprint, isZero, matchRead, type BlockState, type ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';

const B = BLOCK_SIZE_BYTES;

export type Plan = Map<number, BlockState>;
export type ZeroMode = 'trim' | 'zero' | 'zeroNoHole';

/** State of a block after bytes [from, to) of it (block-relative) are replaced by `bytes`. */
function splice(sim: Simulator, old: BlockState, from: number, to: number, bytes: Buffer | null): BlockState {
  const identity = sim.model.freshIdentity();
  if (from === 0 && to === B) {
    // A whole block: an all-zero write leaves a hole (issue 2: "all-zero writes ... leave holes").
    if (bytes === null || isZero(bytes)) return { content: null, identity, mapped: 'no' };
    return { content: Buffer.from(bytes), identity, mapped: 'yes' };
  }
  const content = Buffer.alloc(B);
  old.content?.copy(content);
  if (bytes === null) content.fill(0, from, to);
  else bytes.copy(content, from);
  // A partial write that leaves the block all zero may or may not keep a data block.
  if (isZero(content)) return { content: null, identity, mapped: 'maybe' };
  return { content, identity, mapped: 'yes' };
}

export function planWrite(sim: Simulator, t: ModelTarget, offsetBytes: number, data: Buffer): Plan {
  const plan: Plan = new Map();
  const end = offsetBytes + data.length;
  for (let b = Math.floor(offsetBytes / B); b * B < end; b++) {
    const from = Math.max(offsetBytes, b * B);
    const to = Math.min(end, (b + 1) * B);
    plan.set(b, splice(sim, blockOf(t, b), from - b * B, to - b * B, data.subarray(from - offsetBytes, to - offsetBytes)));
  }
  return plan;
}

export function planZero(sim: Simulator, t: ModelTarget, offsetBytes: number, lengthBytes: number, mode: ZeroMode): Plan {
  const plan: Plan = new Map();
  const end = offsetBytes + lengthBytes;
  for (let b = Math.floor(offsetBytes / B); b * B < end; b++) {
    const from = Math.max(offsetBytes, b * B) - b * B;
    const to = Math.min(end, (b + 1) * B) - b * B;
    const state = splice(sim, blockOf(t, b), from, to, null);
    if (from === 0 && to === B && mode === 'zeroNoHole') state.mapped = 'yes';
    plan.set(b, state);
  }
  return plan;
}

export function commitPlan(sim: Simulator, t: ModelTarget, plan: Plan, durable: boolean): void {
  for (const [b, state] of plan) sim.model.setBlock(t, b, state, durable);
}

/**
 * The op failed (pool_full): each touched block must hold its old or its new state, nothing else
 * ("nothing already written lost"); the model takes what it finds, not yet durable.
 */
export async function adoptPlan(sim: Simulator, t: ModelTarget, plan: Plan, what: string): Promise<void> {
  for (const [b, next] of plan) {
    const old = blockOf(t, b);
    const o = await sim.attempt(() => sim.e.read(t.id, b * B, B));
    const got = sim.must(o, `${what}: read back block ${b} of ${t.name}`);
    const match = matchRead([old, next], got);
    if (match !== null) sim.model.setBlock(t, b, match, false);
    else sim.fail(`${what}: after the failed op ${t.name} block ${b} holds ${fingerprint(got)}, neither old ${fingerprint(old.content)} nor new ${fingerprint(next.content)}`);
  }
}
