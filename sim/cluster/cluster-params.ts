// What one seed of the cluster simulator picks before the first step: the cluster's shape, the
// network's manners, the node options and the weights of the schedule's operations.
import { Prng } from '../../src/engine/device/prng.js';

export type ClusterOpKind =
  | 'create' | 'write' | 'read' | 'flush' | 'snapshot' | 'checkpoint'
  | 'crash' | 'restart' | 'partition' | 'isolatePrimary' | 'heal' | 'kvCut' | 'kvHeal' | 'advance' | 'quiesce' | 'kvLeaderChange';

export interface ClusterParams {
  nodes: number;
  zones: number;
  volumesMax: number;
  volumeBlocksMax: number;
  poolBlocks: number;
  delayMsMax: number;
  dropProbability: number;
  duplicateProbability: number;
  leaseTtlSeconds: number;
  replicaTimeoutMs: number;
  degradedWaitMs: number;
  replaceAfterMs: number;
  /** Nodes down at once at most (crashes beyond it are skipped). */
  downMax: number;
  /** Client writes in flight per volume at most. */
  inflightMax: number;
  /** Which volumes are created encrypted (each node's copy under a key of its own). */
  encrypted: 'none' | 'odd' | 'all';
  weights: Record<ClusterOpKind, number>;
}

/** Whether a seed's control plane changes leader (etcd's lease renewal): half the seeds, apart from `prng`'s draws. */
function leaderChangesFor(seed: number): boolean {
  return new Prng((seed ^ 0x1ead_e5ed) >>> 0).chance(0.5);
}

/** Which volumes a seed encrypts: drawn apart from `prng`'s draws, so every seed keeps the schedule it had. */
function encryptedFor(seed: number): ClusterParams['encrypted'] {
  return new Prng((seed ^ 0x0e4c_4e57) >>> 0).pick(['none', 'odd', 'all'] as const);
}

export function chooseClusterParams(prng: Prng, seed: number): ClusterParams {
  const leaderChanges = leaderChangesFor(seed);
  const nodes = prng.int(3, 5);
  const faulty = prng.chance(0.75);
  return {
    nodes,
    zones: prng.pick([0, 2, 3]),
    volumesMax: prng.int(2, 4),
    volumeBlocksMax: prng.pick([16, 32, 64]),
    // 16 MiB: a few small volumes, their snapshots, checkpoints and rebuild copies.
    poolBlocks: 4096,
    delayMsMax: prng.pick([0.5, 2, 5]),
    dropProbability: faulty ? prng.pick([0, 0.001, 0.01]) : 0,
    duplicateProbability: faulty ? prng.pick([0, 0.01, 0.05]) : 0,
    leaseTtlSeconds: 2,
    replicaTimeoutMs: prng.pick([500, 1500]),
    degradedWaitMs: prng.pick([2000, 10_000]),
    replaceAfterMs: prng.pick([5000, 20_000, 60_000]),
    downMax: prng.int(1, Math.max(1, nodes - 2)),
    inflightMax: prng.int(1, 4),
    encrypted: encryptedFor(seed),
    weights: {
      create: 3,
      write: 60,
      read: 8,
      flush: 8,
      snapshot: 3,
      checkpoint: 3,
      crash: faulty ? 2 : 0,
      restart: 4,
      partition: faulty ? 1.5 : 0,
      isolatePrimary: faulty ? 1 : 0,
      heal: 3,
      kvCut: faulty ? 1 : 0,
      kvHeal: 3,
      advance: 10,
      quiesce: 0.5,
      // Last, and drawn from its own generator: seeds without leader changes keep the schedules they had.
      kvLeaderChange: faulty && leaderChanges ? 1.5 : 0,
    },
  };
}
