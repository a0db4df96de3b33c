// The engine's public surface: the one narrow, typed interface that the NBD server, the REST API,
// the CLI (through the API) and the CSI driver call. Nothing above the engine reaches past it.

import type { WriteData } from './gather.js';
import type { DeviceIoCounts } from './device/device.js';
export type { WriteData, DeviceIoCounts };

export const BLOCK_SIZE_BYTES = 4096;

/** A volume (writable) or a snapshot (read-only), as the catalog describes it. */
export interface VolumeInfo {
  kind: 'volume';
  /** Unique for the life of the pool; never reused. */
  id: number;
  name: string;
  sizeBytes: number;
  /** Logical bytes that hold data (not holes). */
  mappedBytes: number;
  createdMs: number;
  /** What this volume was cloned from, or null. `snapshot` is null for a clone of a live volume. */
  origin: { volume: string; snapshot: string | null } | null;
  /** How many snapshots the volume has (O(1)). */
  snapshotCount: number;
  /**
   * Names of this volume's snapshots, oldest first: built when first read (O(snapshots)), so a
   * caller that does not read it pays nothing. Use listSnapshotsPage for large counts.
   */
  readonly snapshots: string[];
  /** Set while a flatten is under way (resumable after a crash). 0..1 */
  flattenProgress: number | null;
  /** Null for a plain volume; an encrypted one shares its lineage's key with its snapshots and clones. */
  encryption: EncryptionInfo | null;
}

/** An encrypted volume's or snapshot's lineage key: its slot, and whether its data key is in memory. */
export interface EncryptionInfo {
  keyId: number;
  /** No data key in memory (its tenant's key-encryption key was unavailable): I/O is refused. */
  locked: boolean;
}

/** A new lineage's data key: 64 random bytes (AES-256-XTS), and the same wrapped by a key-encryption key (opaque to the engine). */
export interface DataKey { dek: Buffer; wrapped: Buffer }

export interface VolumeCreateOptions {
  /** Creates the volume encrypted with this data key (a new lineage: its snapshots and clones share it). */
  encryption?: DataKey;
}

/** A lineage's key slot, for the layer that holds the key-encryption keys. */
export interface KeyInfo {
  keyId: number;
  /** The wrapped forms on disk, newest first: two while a re-wrap (KEK rotation) was interrupted. */
  wrapped: Buffer[];
  locked: boolean;
  /** Volumes ("VOL") and snapshots ("VOL@SNAP") that use the key. */
  members: string[];
}

export interface SnapshotInfo {
  kind: 'snapshot';
  id: number;
  /** The volume it belongs to. */
  volume: string;
  name: string;
  /** "VOLUME@SNAPSHOT" */
  fullName: string;
  sizeBytes: number;
  mappedBytes: number;
  createdMs: number;
  encryption: EncryptionInfo | null;
}

export interface SnapshotCreateOptions {
  /** Stream guid of a snapshot received by import (only with one snapshot): stored in the same commit. */
  streamGuid?: string;
}

/** One page of a snapshot list: by id, after `afterId` (0: from the start), at most `limit`. */
export interface SnapshotPageRequest {
  /** A volume's snapshots only (its deleted-but-kept volume too); all of the pool's otherwise. */
  volume?: string;
  afterId?: number;
  limit: number;
}

export interface SnapshotPage {
  snapshots: SnapshotInfo[];
  /** Whether snapshots follow the last one of this page (ask again with its id as `afterId`). */
  more: boolean;
}

export interface PoolStats {
  sizeBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  blockSizeBytes: number;
  volumes: number;
  snapshots: number;
  /** Last durable commit generation. */
  generation: number;
  checksumErrors: number;
  /**
   * Of allocatedBytes, what holds metadata: superblock copies, the intent log and keyring regions, tree
   * nodes, space-map and catalog pages. null while not known (a pool whose count was lost to damage).
   */
  metadataBytes: number | null;
  /** Bytes of dropped trees still waiting to be freed in the background. */
  pendingDeleteNodes: number;
  /**
   * Where the device's reads and writes ran so far: inline on the event loop or on the thread pool
   * (device/inline-io.ts); absent for a device that does not count them.
   */
  deviceIo?: DeviceIoCounts;
  /** Flushes so far (absent for a pool without an intent log): see `FlushCounts`. */
  flushes?: FlushCounts;
}

/** How flushes were made durable since the pool opened (ARCHITECTURE.md, "Flush: the intent log"). */
export interface FlushCounts {
  /** Log rounds written (one device sync, or one durable write, each). */
  logRounds: number;
  /** Of those, rounds a lone write started before its flush came (eager rounds, intent-log.ts). */
  eagerRounds: number;
  /** Flushes that committed instead (records overflowed, or the log region was full). */
  committed: number;
  /** Data blocks carried inline by log rounds (lone small writes held in memory). */
  inlineBlocks: number;
  /** Data blocks held in memory now, waiting for a commit to go home. */
  heldBlocks: number;
}

export interface SpaceUsage {
  provisionedBytes: number;
  mappedBytes: number;
  /** Bytes that deleting this volume or snapshot alone would free. */
  exclusiveBytes: number;
}

/** A byte range; used by diff and block status. */
export interface ByteRange { offsetBytes: number; lengthBytes: number }

/** Block-status extent: data, or a hole that reads as zeroes. */
export interface Extent { offsetBytes: number; lengthBytes: number; hole: boolean }

export interface CheckProblem {
  kind: 'leak' | 'refcount_mismatch' | 'double_owner' | 'corrupt' | 'dangling' | 'catalog' | 'superblock';
  physicalBlock: number;
  message: string;
}

export interface CheckReport {
  ok: boolean;
  problems: CheckProblem[];
  /** What is worth knowing but not a problem (a superblock copy torn by a crash, an unmirrored format-1 pool). */
  notes: string[];
  blocksChecked: number;
  nodesChecked: number;
}

/**
 * A resolved export target: what a protocol connection holds on to. I/O goes by `id`, so a volume
 * deleted and re-created under the same name is never silently swapped under a connection.
 */
export interface Target {
  id: number;
  /** "vol" or "vol@snap" */
  name: string;
  readOnly: boolean;
  sizeBytes: number;
}

export interface WriteOptions {
  /** Durable when the call resolves (NBD FUA). */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Allocate zeroed blocks instead of leaving a hole (NBD_CMD_FLAG_NO_HOLE). */
  noHole?: boolean;
}

/** A small named value kept in the pool's catalog (tenants, tokens, keys and limits live in these). */
export interface Setting { key: string; value: Buffer }
/** A setting to store, or to remove (value null). */
export interface SettingChange { key: string; value: Buffer | null }

/** Events an exporter subscribes to so that open connections have defined behaviour. */
export type TargetEvent =
  | { type: 'deleted'; id: number }
  | { type: 'resized'; id: number; sizeBytes: number }
  | { type: 'reverted'; id: number };

/**
 * The engine interface. All methods are safe to call concurrently; mutations of the catalog
 * (create, snapshot, clone, delete, resize, revert) are durable when their promise resolves.
 */
export interface Engine {
  stats(): PoolStats;
  check(): Promise<CheckReport>;
  /**
   * Grows the pool in place, online, to `sizeBytes` (a file is enlarged first), or without it to its
   * device's current size (a raw device enlarged from outside); the new space is usable at once and
   * the new size is durable when it resolves. A size below the pool's is refused (`shrink_refused`).
   */
  growPool(sizeBytes?: number): Promise<PoolStats>;
  close(): Promise<void>;

  /**
   * Settings: small values (a key of at most 120 printable ASCII bytes, key and value together at
   * most 248 bytes) that the layers above keep in the catalog, committed like everything else.
   */
  getSetting(key: string): Buffer | null;
  /** Settings whose key starts with `prefix`, by key. O(settings). */
  listSettings(prefix: string): Setting[];
  /** Stores (or removes, value null) every change in one commit: durable, all or none, when it resolves. */
  putSettings(changes: SettingChange[]): Promise<void>;

  listVolumes(): VolumeInfo[];
  getVolume(name: string): VolumeInfo;
  /** `name` is NAME, or TENANT/NAME for a volume of a tenant other than the default one. */
  createVolume(name: string, sizeBytes: number, opts?: VolumeCreateOptions): Promise<VolumeInfo>;
  /** O(1) writable clone of "VOL@SNAP" or of the live volume "VOL". */
  cloneVolume(name: string, source: string): Promise<VolumeInfo>;
  resizeVolume(name: string, sizeBytes: number, opts?: { allowShrink?: boolean }): Promise<VolumeInfo>;
  /** Deletes the live volume; its snapshots and clones keep working. */
  deleteVolume(name: string): Promise<void>;
  revertVolume(name: string, snapshot: string): Promise<VolumeInfo>;
  /** Copies every shared block so the volume shares nothing; resumable; reports progress 0..1. */
  flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo>;
  /** True when the volume's flatten was under way as the pool opened (resumed from its cursor), ended since or not. */
  flattenWasUnderWayAtOpen(name: string): boolean;

  /** Snapshots one or more volumes at one instant. Names are "VOL@SNAP". */
  createSnapshots(fullNames: string[], opts?: SnapshotCreateOptions): Promise<SnapshotInfo[]>;
  listSnapshots(volume?: string): SnapshotInfo[];
  getSnapshot(fullName: string): SnapshotInfo;
  /**
   * The snapshot's identity in export streams (32 hex chars), kept in its catalog record: derived at
   * create from the pool uuid, or the sender's guid for a snapshot received by import.
   */
  snapshotStreamGuid(fullName: string): string;
  /**
   * Stores stream guids for existing snapshots by id (migration from the old side file); ids that are
   * not snapshots are skipped. Durable when it resolves; returns how many were stored.
   */
  adoptStreamGuids(guids: ReadonlyMap<number, string>): Promise<number>;
  /** "VOL@SNAP", or null when it does not exist: one index lookup, whatever the snapshot count. */
  findSnapshot(fullName: string): SnapshotInfo | null;
  /** Snapshots whose own name (after "@") is `name`, on any volume: one index lookup. */
  findSnapshotsNamed(name: string): SnapshotInfo[];
  /** A page of snapshots by id: O(page + log count), so listing 100 000 snapshots costs no more per item. */
  listSnapshotsPage(request: SnapshotPageRequest): SnapshotPage;
  deleteSnapshot(fullName: string): Promise<void>;

  /** Changed ranges between `from` ("VOL@A") and `to` ("VOL@B" or "VOL"), cost ∝ changes. */
  diff(from: string, to: string): Promise<ByteRange[]>;
  /** Space of a volume ("VOL") or snapshot ("VOL@SNAP"); exclusive bytes computed on demand. */
  spaceUsage(name: string): Promise<SpaceUsage>;

  /** Resolves "VOL" or "VOL@SNAP" for I/O. Throws VolumeNotFound / SnapshotNotFound. */
  resolve(name: string): Target;
  /** Current size of a target by id (it may have been resized). Throws VolumeNotFound if gone. */
  targetSizeBytes(id: number): number;
  /**
   * Reads [offset, offset+length). With `into` (at least `lengthBytes` long) an aligned read fills it
   * and returns a view of it, so a caller can reuse its buffers; otherwise a new buffer is returned.
   */
  read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer>;
  /** `data` may be a gather list (e.g. socket chunks): it is taken as is, without a copy. */
  write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void>;
  trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void>;
  writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void>;
  /**
   * Every write completed before the call is durable when it resolves: its data and the intent log's
   * records of its mapping change share one device sync (a pool without a log commits).
   */
  flush(): Promise<void>;
  /**
   * Every change made before the call is in a committed generation when it resolves: the tree commit
   * a flush leaves to the background runs now and retires the intent log (a pool then opens without
   * replay). Nothing to commit: resolves at once.
   */
  checkpoint(): Promise<void>;
  /** Data/hole map of [offset, offset+length) (NBD base:allocation). */
  extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]>;
  /** Ranges of target `id` changed since snapshot "VOL@SNAP" (NBD qemu:dirty-bitmap:since:SNAP). */
  changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]>;

  onTargetEvent(listener: (event: TargetEvent) => void): () => void;

  /**
   * Encryption. Key slots of encrypted lineages (every slot in use, so the key holder can unlock them
   * at start); data keys are never returned, only taken.
   */
  listKeys(): KeyInfo[];
  /** Offers a slot's data key: checked against its key-check value (WrongKey), then its lineage's I/O works. */
  unlockKey(keyId: number, dek: Buffer): void;
  /** Forgets a slot's data key: its lineage is locked (VolumeLocked on I/O). */
  lockKey(keyId: number): void;
  /** Stores a new wrapped form of a slot's key (KEK rotation): crash-safe, durable when it resolves. */
  rewrapKey(keyId: number, wrapped: Buffer): Promise<void>;
  /**
   * Raw streams: [offset, offset+length) of an encrypted target (whole blocks), sealed under its
   * lineage's data key with stream tweaks (the logical block), so it can travel without the key in the
   * clear and be received by writeSealed into a lineage that has the same data key.
   */
  readSealed(id: number, offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  writeSealed(id: number, offsetBytes: number, data: Buffer): Promise<void>;
}

export interface PoolOptions {
  /** Bound on the metadata cache (tree nodes, space-map and catalog pages). */
  cacheBytesMax?: number;
  /** Commit at least this often while there is dirty state (0: only on flush/FUA/bounds). */
  commitIntervalMs?: number;
  /** Injected clock (the simulator passes a deterministic one). */
  nowMs?: () => number;
  /** Called with structured events (checksum errors, commits) for logging/metrics. */
  log?: (event: string, fields: Record<string, unknown>) => void;
  /**
   * When the newest acknowledged generation has no valid superblock copy left (SuperblockLost), open
   * the newest valid older one instead and make that durable, logging what is discarded (ZFS's
   * `import -F`); when an intent log block is damaged before a later whole flush (LogDamaged), replay
   * the log up to the damage. Without it such a pool is refused. No effect on a pool that lost nothing.
   */
  rewind?: boolean;
  /**
   * false turns off every synchronous `...Now` fast path (mutateNow, editNow, lookupCached,
   * tryAddRange, tryReserveSync, saveMappingNow), so the awaited path always runs: the simulator and
   * the fault sweep run both ways, since each path must give the same result. Default true.
   */
  fastPaths?: boolean;
}
