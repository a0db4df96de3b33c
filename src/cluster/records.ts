// What the cluster keeps in the control plane (JSON values under KEY_PREFIX): nodes (under their
// lease) and one record per volume (its epoch, primary and members). No per-block state: the store
// grows with nodes + volumes (+ snapshots only as a count), never with data.

export const KEY_PREFIX = '/cairn/';
export const NODE_PREFIX = `${KEY_PREFIX}nodes/`;
export const VOLUME_PREFIX = `${KEY_PREFIX}volumes/`;

export interface NodeAddresses {
  /** host:port of each service this node offers (null: not served). */
  api: string | null;
  nbd: string | null;
  nvmf: string | null;
  /** The replication port (always served in a cluster). */
  repl: string;
}

export interface NodeRecord {
  name: string;
  /** Failure domain (e.g. a zone); replicas of one volume go to distinct zones when there are enough. */
  zone: string | null;
  /** Random per process start: a restarted node is a new incarnation (it may have lost unflushed writes). */
  incarnation: string;
  addresses: NodeAddresses;
  startedMs: number;
  /** Set by `cairn node drain`: its replicas move elsewhere, then nothing is placed on it. */
  draining: boolean;
}

export type MemberState = 'in-sync' | 'rebuilding' | 'down';

export interface MemberRecord {
  node: string;
  state: MemberState;
  /** The node incarnation this member's data belongs to (a restart invalidates in-sync). */
  incarnation: string;
}

export interface VolumeRecord {
  /** The engine's name of the volume (TENANT/NAME or NAME). */
  name: string;
  sizeBytes: number;
  /** Wanted number of replicas (1–3). */
  replicas: number;
  /** Writes are acknowledged only while at least this many members (primary included) are in sync. */
  minInSync: number;
  /** Bumped by every change of primary or of the in-sync set: one transaction each. */
  epoch: number;
  primary: string;
  /** Every replica, the primary included. */
  members: MemberRecord[];
  createdMs: number;
  /**
   * The volume's QoS limits as the pool stores them (src/qos/limits.ts encodeLimits); absent: none.
   * Kept here, not in one pool, because I/O moves with the primary: whichever node is primary applies them.
   */
  qos?: string;
  /**
   * Every copy is encrypted at rest, each under a data key of its own node (wrapped by that node's KEK
   * of the volume's tenant): a copy made later (rebuild from nothing, replacement) is encrypted too.
   */
  encrypted?: true;
}

export function nodeKey(name: string): string { return `${NODE_PREFIX}${name}`; }
export function volumeKey(name: string): string { return `${VOLUME_PREFIX}${encodeURIComponent(name)}`; }

/** The default minimum in-sync count: 1 for 1 or 2 replicas, 2 for 3. */
export function defaultMinInSync(replicas: number): number { return replicas >= 3 ? 2 : 1; }

export const REPLICAS_MAX = 3;
