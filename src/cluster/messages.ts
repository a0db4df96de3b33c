// The replication protocol between nodes: requests a primary (or an admin path) sends to a member,
// and replies. Volumes are named (engine names), never by id: ids differ between pools. Every
// data-changing request carries the sender's epoch; a member refuses one older than it knows.

export type ReplRequest =
  /**
   * A write of `data` (any alignment the engine accepts). `seq` numbers the volume's data requests
   * sent to this member within the epoch (from 1, dense): a member applies each seq once, so a
   * duplicated or late copy is ignored. `incarnation` is the member incarnation the primary holds in sync: another one refuses.
   */
  | { t: 'write'; vol: string; epoch: number; seq: number; incarnation: string; offsetBytes: number; data: Buffer; fua: boolean }
  | { t: 'trim'; vol: string; epoch: number; seq: number; incarnation: string; offsetBytes: number; lengthBytes: number; fua: boolean }
  | { t: 'zero'; vol: string; epoch: number; seq: number; incarnation: string; offsetBytes: number; lengthBytes: number; fua: boolean; noHole: boolean }
  /** Make everything written so far durable (one engine flush on the member's pool). */
  | { t: 'flush'; vols: Array<{ vol: string; epoch: number }> }
  /** Snapshots taken at the same point of the stream on every member (a consistency group when several). */
  | { t: 'snapshot'; epoch: number; fullNames: string[] }
  | { t: 'delete-snapshot'; vol: string; epoch: number; fullName: string }
  /** `encrypted`: the copy is encrypted under a data key of the member's own (wrapped by its node's KEK of the volume's tenant). */
  | { t: 'create'; vol: string; epoch: number; sizeBytes: number; encrypted?: boolean }
  | { t: 'clone'; vol: string; epoch: number; source: string }
  | { t: 'delete'; vol: string; epoch: number }
  | { t: 'resize'; vol: string; epoch: number; sizeBytes: number }
  | { t: 'revert'; vol: string; epoch: number; snapshot: string }
  /** What the member holds of `vol`: its fence epoch, incarnation, size and checkpoint names (oldest first). */
  | { t: 'status'; vol: string }
  /** Rebuild start: revert to checkpoint `base` (null: recreate empty at `sizeBytes`, encrypted as for create), drop later checkpoints. */
  | { t: 'resync-begin'; vol: string; epoch: number; base: string | null; sizeBytes: number; encrypted?: boolean }
  /** Rebuild data: like write, accepted while the member is rebuilding. */
  | { t: 'resync-data'; vol: string; epoch: number; offsetBytes: number; data: Buffer }
  /** Rebuild end: take checkpoint `checkpoint` (the primary took the same at the same point), then flush. */
  | { t: 'resync-end'; vol: string; epoch: number; checkpoint: string }
  /** A catalog or admin operation forwarded to the volume's primary node (`op` names an ClusterNode call). */
  | { t: 'admin'; op: string; args: unknown[] };

export type ReplReply =
  | { ok: true; result?: unknown }
  /** The member knows a newer epoch (or another incarnation was expected): the sender is fenced. */
  | { ok: false; code: 'stale_epoch'; epoch: number; message: string }
  | { ok: false; code: 'stale_incarnation'; incarnation: string; message: string }
  /** Any other failure, with the engine's or cluster's error code when there is one. */
  | { ok: false; code: string; message: string };

export interface MemberStatus {
  exists: boolean;
  epoch: number;
  incarnation: string;
  sizeBytes: number;
  checkpoints: string[];
}
