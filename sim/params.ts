// Everything a seed decides before the first operation: pool size, volume sizes and the op mix.
// One seed picks every parameter (TigerBeetle VOPR): two seeds explore different corners.

import type { Prng } from '../src/engine/device/prng.js';

export type OpKind =
  | 'createVolume' | 'deleteVolume' | 'resizeVolume' | 'write' | 'read' | 'trim' | 'writeZeroes'
  | 'flush' | 'snapshot' | 'deleteSnapshot' | 'clone' | 'revert' | 'flatten' | 'diff'
  | 'changedSince' | 'extents' | 'spaceUsage' | 'catalog' | 'crash' | 'reopen' | 'bitFlip' | 'eio'
  | 'concurrentWrites' | 'badRequest' | 'midCrash' | 'concurrentMixed' | 'settings' | 'rewrap' | 'lockUnlock' | 'lockRace';

export interface SimParams {
  poolSizeBytes: number;
  /** Largest volume the sim creates (thin; most writes land low). */
  volumeBytesMax: number;
  /** Writes land in the first `hotBytes` of a volume most of the time. */
  hotBytes: number;
  /** Targets (volumes + snapshots) above which the sim prefers deleting. */
  targetsMax: number;
  weights: Record<OpKind, number>;
  /** Device ops complete after 0..this many microtask turns, so concurrent ones finish out of order. */
  deviceJitterTicksMax: number;
  /** Share of new volumes created encrypted (each a new lineage with its own data key). */
  encryptedShare: number;
}

const MiB = 1024 * 1024;

const baseWeights: Record<OpKind, number> = {
  createVolume: 4, deleteVolume: 1.5, resizeVolume: 2, write: 30, read: 15, trim: 4, writeZeroes: 4,
  flush: 6, snapshot: 5, deleteSnapshot: 2.5, clone: 3, revert: 1.5, flatten: 1, diff: 3,
  changedSince: 1.5, extents: 3, spaceUsage: 2, catalog: 1, crash: 2.5, reopen: 0.7, bitFlip: 1,
  eio: 1.5, concurrentWrites: 3, badRequest: 2, midCrash: 3, concurrentMixed: 2, settings: 1.5,
  rewrap: 1, lockUnlock: 0.4, lockRace: 0.2,
};

export function chooseParams(prng: Prng): SimParams {
  const poolSizeBytes = prng.pick([8, 16, 16, 32, 64]) * MiB;
  const weights = { ...baseWeights };
  for (const key of Object.keys(weights) as OpKind[]) {
    // Each seed skews the mix: some seeds hammer crashes, others snapshots or plain I/O.
    weights[key] *= prng.pick([0, 0.25, 0.5, 1, 1, 1, 2, 4]);
  }
  weights.write = Math.max(weights.write, 5);
  weights.read = Math.max(weights.read, 3);
  weights.createVolume = Math.max(weights.createVolume, 1);
  return {
    poolSizeBytes,
    volumeBytesMax: prng.pick([256 * 1024, 1 * MiB, 4 * MiB, 16 * MiB, 1024 * MiB]),
    hotBytes: prng.pick([64 * 1024, 512 * 1024, 2 * MiB]),
    targetsMax: prng.int(4, 24),
    weights,
    deviceJitterTicksMax: prng.pick([0, 0, 2, 8]),
    encryptedShare: prng.pick([0, 0.15, 0.33, 0.33, 0.6, 1]),
  };
}
