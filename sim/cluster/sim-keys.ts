// Data keys of the simulated nodes' encrypted copies (what the daemon's key manager makes): each node
// makes its own, deterministic for a replay. The "wrap" is a toy a node undoes itself at restart (the
// pool stores it as opaque); what the simulator checks is the engine's and the cluster's handling of
// encrypted copies, not key wrapping (test/key-manager.test.ts covers that).
import { createHash } from 'node:crypto';
import type { DataKey } from '../../src/engine/index.js';

const WRAP_TAG = Buffer.from('sim-wrap:');

function unwrapped(wrapped: Buffer): Buffer {
  return Buffer.from(wrapped.subarray(WRAP_TAG.length).map((b) => b ^ 0x5c));
}

/** The `n`th data key node `node` makes (for `vol`). */
export function simDataKey(node: string, vol: string, n: number): DataKey {
  const half = (side: string): Buffer => createHash('sha256').update(`${node}|${vol}|${n}|${side}`).digest();
  const dek = Buffer.concat([half('a'), half('b')]);
  return { dek, wrapped: Buffer.concat([WRAP_TAG, Buffer.from(dek.map((b) => b ^ 0x5c))]) };
}

/** The data key inside a wrapped key simDataKey made. */
export function simUnwrap(wrapped: Buffer): Buffer {
  if (!wrapped.subarray(0, WRAP_TAG.length).equals(WRAP_TAG)) throw new Error('not a simulated wrapped key');
  return unwrapped(wrapped);
}
