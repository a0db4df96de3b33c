// The control plane's store, with etcd's semantics (revisions, compare-and-swap transactions,
// leases, prefix watches): EtcdKv talks to a real etcd cluster, MemKv (sim/cluster) holds the same
// semantics in memory for the deterministic simulator. Cluster logic sees only this interface.

export interface KvEntry {
  key: string;
  value: string;
  /** Revision of the last change of this key (etcd mod_revision). */
  modRevision: number;
  /** Revision at which the key was created (etcd create_revision). */
  createRevision: number;
  /** The lease the key is attached to, or null. */
  lease: string | null;
}

/**
 * One condition of a transaction. `mod` compares the key's modRevision (0 = the key does not exist,
 * as etcd's `mod_revision == 0`); `value` compares its value (fails when the key is absent).
 */
export type KvCompare =
  | { key: string; target: 'mod'; equals: number }
  | { key: string; target: 'value'; equals: string };

export type KvOp =
  | { op: 'put'; key: string; value: string; lease?: string }
  | { op: 'delete'; key: string };

export interface KvTxnResult {
  succeeded: boolean;
  /** The store's revision after the transaction (etcd header.revision). */
  revision: number;
}

export interface KvWatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** The new value (put) or null (delete, including a lease expiry). */
  value: string | null;
  modRevision: number;
}

export class KvUnavailable extends Error {
  readonly code = 'kv_unavailable';
  constructor(message: string) { super(message); this.name = 'KvUnavailable'; }
}

export interface Kv {
  get(key: string): Promise<KvEntry | null>;
  /** Every key that starts with `prefix`, in key order. */
  range(prefix: string): Promise<KvEntry[]>;
  /** If every compare holds, apply `success`, else `failure` (default none); atomically, one revision. */
  txn(compares: KvCompare[], success: KvOp[], failure?: KvOp[]): Promise<KvTxnResult>;
  /** A new lease of `ttlSeconds` (≥ 1); keys put with it are deleted when it expires or is revoked. */
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refreshes a lease once. False when the lease no longer exists (it expired): its keys are gone. */
  keepAlive(lease: string): Promise<boolean>;
  revokeLease(lease: string): Promise<void>;
  /**
   * Calls `onEvent` for every change under `prefix` after the watch starts, in revision order,
   * including deletes caused by a lease expiring. Resolves once the watch is in place; the returned
   * function stops it.
   */
  watch(prefix: string, onEvent: (event: KvWatchEvent) => void): Promise<() => void>;
  close(): Promise<void>;
}
