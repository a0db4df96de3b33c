// What the rest of the daemon sees of the cluster (implemented by ClusterNode in node.ts): the
// replicated Engine to serve, the records, where a volume's primary is, and the admin calls of
// `cairn node|cluster`. The NBD forwarder and the NVMe/TCP ANA states read `primaryOf` and
// `onChange`; the API reads records and node states.
import type { Engine, VolumeCreateOptions } from '../engine/index.js';
import type { NodeRecord, VolumeRecord, MemberState } from './records.js';

export interface ReplicaView {
  node: string;
  state: MemberState;
  /** 0..1 while rebuilding (known on the primary's node; null elsewhere or when not rebuilding). */
  rebuildProgress: number | null;
  primary: boolean;
}

export interface NodeView extends NodeRecord {
  /** Holds a live lease now. */
  alive: boolean;
  /** Replicas (members) held by this node, and how many of them it is primary for. */
  replicas: number;
  primaries: number;
}

export interface ClusterStatus {
  /** The control plane answered just now (etcd health), and its endpoints. */
  controlPlane: { healthy: boolean; endpoints: string[]; error: string | null };
  self: string;
  nodes: NodeView[];
  volumes: number;
  /** Volumes with fewer in-sync members than replicas (name, in-sync count, replicas). */
  degraded: Array<{ name: string; inSync: number; replicas: number; primary: string }>;
}

export interface ClusterCounters {
  failovers: number;
  membersDropped: number;
  rebuildBytes: number;
  rebuildsCompleted: number;
  /** Writes sent to members and not yet answered, summed over volumes (replication lag). */
  inflightReplicaWrites: number;
}

export interface ClusterHandle {
  /** This node's name. */
  readonly self: string;
  /**
   * The Engine to serve on this node. Data I/O to a replicated volume runs only on its primary (fanned
   * out to the in-sync members); elsewhere it fails with NotPrimary. Catalog calls (create, snapshot,
   * delete, resize, clone, revert, flatten…) on a replicated volume run on its primary wherever they
   * are called (forwarded). createVolume places the volume (opts.replicas, default the cluster's).
   */
  readonly engine: Engine;
  /** Create with an explicit replica count (1..REPLICAS_MAX); the API's `replicas` field comes here. */
  /** `opts.encryption`: this node's data key for its copy (an encrypted volume; other nodes make their own). */
  createVolume(name: string, sizeBytes: number, replicas: number | null, opts?: VolumeCreateOptions): Promise<VolumeRecord>;
  volume(name: string): VolumeRecord | null;
  volumes(): VolumeRecord[];
  replicas(name: string): ReplicaView[];
  /** Where the volume's primary is now: its node record, and whether that is this node. Null: unknown or no primary alive. */
  primaryOf(name: string): { node: NodeRecord; local: boolean } | null;
  nodes(): NodeView[];
  status(): Promise<ClusterStatus>;
  /** Marks the node draining and resolves when none of its replicas remain (or rejects on timeout). */
  drain(node: string, timeoutMs: number): Promise<void>;
  counters(): ClusterCounters;
  /** Called after any volume record or node change, with the volume name (null: nodes changed). */
  onChange(listener: (volume: string | null) => void): () => void;
  /** Sets (null: removes) a volume's QoS limits in its record (VolumeRecord.qos); the primary applies them. */
  setVolumeQos(name: string, encoded: string | null): Promise<void>;
  /**
   * Called with the key of each shared setting another node changed, once it is in this pool (the
   * daemon's cluster shares settings through etcd; a handle without shared settings has no such calls).
   */
  onSettingChange?(listener: (key: string) => void): () => void;
  close(): Promise<void>;
}

/** The error data I/O gets on a node that is not the volume's primary (NBD: EIO after forwarding fails; API: 409). */
export const NOT_PRIMARY_CODE = 'not_primary';
