// CairnEngine: the Engine interface (types.ts) over a PoolCore. Resolves names, enforces the rules
// (read-only snapshots, name uniqueness, sizes), and makes every catalog change durable before it
// returns. Catalog records are the single source of truth for roots, sizes and lineage.
// This is the engine's layer boundary: a caller's mistake gets a typed error; what the engine itself
// must guarantee (a record of the kind asked for, a mutation that did what it says) is asserted, and a
// failed assertion stops the pool rather than answer from a state that can no longer be trusted.
import { createHash } from 'node:crypto';
import { BLOCK_SIZE_BYTES, FIRST_FREE_BLOCK, FORMAT_VERSION_SETTINGS, FORMAT_VERSION_UNMIRRORED, POOL_BLOCKS_MAX, SETTING_BYTES_MAX, SUPERBLOCK_MIRROR_SLOTS } from './constants.js';
import { hasIntentLog } from './superblock.js';
import type { PoolCore } from './pool.js';
import type { IntentLog } from './intent-log.js';
import { FLAG_DELETED, RecordKind, type CatalogRecord } from './catalog.js';
import { diffTrees } from './diff.js';
import { extentsOf, readRange, unmapBlocks, writeRange, zeroRange } from './data-path.js';
import { flattenVolume } from './flatten.js';
import { exclusiveBlocks } from './space-usage.js';
import { checkDevice } from './check.js';
import { parseRef, validateName, validateSettingKey, validateSize, validateVolumeName } from './names.js';
import {
  InvalidArgument, InvalidSize, NameTaken, PoolCorrupt, PoolShrinkRefused, ReadOnly, ShrinkRefused, SnapshotNotFound, VolumeNotFound, asIoError, assert, fail,
} from './errors.js';
import { ensureKeyring } from './pool-keyring.js';
import { cipherFor } from './data-path.js';
import { XTS_DOMAIN_STREAM } from './xts.js';
import { STABLE_WALK_ATTEMPTS } from './btree.js';
import type {
  DataKey, EncryptionInfo, KeyInfo, VolumeCreateOptions,
  ByteRange, CheckReport, Engine, Extent, FlushCounts, PoolStats, Setting, SettingChange, SnapshotCreateOptions, SnapshotInfo, SnapshotPage, SnapshotPageRequest, SpaceUsage, Target,
  TargetEvent, VolumeInfo, WriteData, WriteOptions, ZeroOptions,
} from './types.js';

/** 32 lowercase hex chars, not all zero (a zero guid field in a record means "none stored"). */
function validateStreamGuid(guid: string): void {
  if (!/^[0-9a-f]{32}$/.test(guid) || /^0+$/.test(guid)) throw new InvalidArgument(`bad stream guid ${JSON.stringify(guid)}: expected 32 hex chars, not all zero`);
}

export class CairnEngine implements Engine {
  private growChain: Promise<void> = Promise.resolve();
  /** Volumes whose flatten resumeFlattens started and that has not ended yet. */
  private readonly flattensResuming = new Set<string>();
  /** Records whose flatten cursor was set when the pool opened: a job restored later may find it ended already. */
  private readonly flattensAtOpen: ReadonlySet<number>;
  constructor(readonly core: PoolCore) {
    // Built by createPool/openPool over an assembled pool: its superblock and catalog are loaded.
    assert(core.sb.totalBlocks > 0 && core.durableGeneration >= 1, 'an engine over an opened pool');
    this.flattensAtOpen = new Set([...core.catalog.byId.values()].filter((r) => r.kind === RecordKind.Volume && r.flattenCursor > 0).map((r) => r.id));
  }

  private get catalog() { return this.core.catalog; }

  // ---- lookups ----

  private liveVolume(name: string): CatalogRecord {
    const rec = this.catalog.volumesByName.get(name);
    if (!rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(name);
    // The name index holds volumes only: a snapshot there would take writes.
    if (rec.kind !== RecordKind.Volume) fail(`name index entry ${name} is a record of kind ${rec.kind}`);
    return rec;
  }

  private snapshotRec(fullName: string): CatalogRecord {
    const { volume, snapshot } = parseRef(fullName);
    if (snapshot === null) throw new InvalidArgument(`expected VOLUME@SNAPSHOT, got ${fullName}`);
    const vol = this.catalog.volumesByName.get(volume);
    if (!vol) throw new VolumeNotFound(volume);
    const snap = this.catalog.snapshotNamed(vol.id, snapshot);
    if (!snap) throw new SnapshotNotFound(fullName);
    // Indexed under its volume: a record of another kind or volume there would be read as this snapshot.
    if (snap.kind !== RecordKind.Snapshot || snap.parentId !== vol.id) fail(`snapshot index of ${volume} holds record #${snap.id}`);
    return snap;
  }

  private refRec(ref: string): CatalogRecord {
    const rec = parseRef(ref).snapshot === null ? this.liveVolume(ref) : this.snapshotRec(ref);
    assert(rec.id > 0, 'a volume or snapshot has an id');
    return rec;
  }

  private byId(id: number): CatalogRecord {
    const rec = this.catalog.byId.get(id);
    if (!rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(`#${id}`);
    // Dropped-node records have no id of their own: the id index never holds one.
    if (rec.id !== id || rec.kind === RecordKind.DeadNode) fail(`id index entry #${id} is record #${rec.id} of kind ${rec.kind}`);
    return rec;
  }

  private volumeInfo(rec: CatalogRecord): VolumeInfo {
    assert(rec.kind === RecordKind.Volume, 'volume info of a volume record');
    let origin: VolumeInfo['origin'] = null;
    if (rec.parentId !== 0) {
      const ov = this.catalog.byId.get(rec.parentId);
      const os = rec.originSnapId ? this.catalog.byId.get(rec.originSnapId) : undefined;
      origin = { volume: ov ? ov.name : `(deleted #${rec.parentId})`, snapshot: rec.originSnapId ? (os ? os.name : `(deleted #${rec.originSnapId})`) : null };
    }
    const size = rec.sizeBytes;
    const catalog = this.catalog;
    let snapshotNames: string[] | null = null;
    return {
      kind: 'volume', id: rec.id, name: rec.name, sizeBytes: size, mappedBytes: rec.mappedBlocks * BLOCK_SIZE_BYTES,
      createdMs: rec.createdMs, origin, snapshotCount: catalog.snapshotCountOf(rec.id),
      // Built on first read: a volume may have 100 000 snapshots, and most callers (an existence
      // check before a create, the data path) never look at their names.
      get snapshots(): string[] {
        snapshotNames ??= catalog.snapshotsOf(rec.id).map((s) => s.name);
        return snapshotNames;
      },
      flattenProgress: rec.flattenCursor > 0 ? Math.min(1, (rec.flattenCursor - 1) / Math.max(1, size / BLOCK_SIZE_BYTES)) : null,
      encryption: this.encryptionOf(rec),
    };
  }

  private encryptionOf(rec: CatalogRecord): EncryptionInfo | null {
    if (rec.keyId === 0) return null;
    return { keyId: rec.keyId, locked: !(this.core.keyring?.isUnlocked(rec.keyId) ?? false) };
  }

  private snapshotInfo(rec: CatalogRecord): SnapshotInfo {
    const vol = this.catalog.byId.get(rec.parentId);
    // A volume's record stays (hidden when deleted) while it has snapshots.
    if (vol === undefined || rec.kind !== RecordKind.Snapshot) fail(`snapshot #${rec.id} without its volume #${rec.parentId}`);
    return {
      kind: 'snapshot', id: rec.id, volume: vol.name, name: rec.name, fullName: `${vol.name}@${rec.name}`,
      sizeBytes: rec.sizeBytes, mappedBytes: rec.mappedBlocks * BLOCK_SIZE_BYTES, createdMs: rec.createdMs,
      encryption: this.encryptionOf(rec),
    };
  }

  private newId(): number {
    // Ids are never reused: a connection holding an old id must not reach a new volume.
    assert(Number.isSafeInteger(this.core.sb.nextId) && this.core.sb.nextId >= 1 && !this.catalog.byId.has(this.core.sb.nextId), 'the next id is unused');
    return this.core.sb.nextId++;
  }

  /** A snapshot's stream guid: the stored one, or (records from before it was stored) derived. */
  private streamGuidOf(rec: CatalogRecord): string {
    assert(rec.kind === RecordKind.Snapshot, 'a stream guid is a snapshot\'s');
    return rec.streamGuid ?? createHash('sha256')
      .update(`${this.core.sb.poolUuid}:${rec.id}:${rec.createdMs}`).digest('hex').slice(0, 32);
  }

  private async durable<T>(fn: () => Promise<T>): Promise<T> {
    const generationBefore = this.core.durableGeneration;
    const result = await this.core.mutate(fn);
    await this.core.commit();
    assert(this.core.durableGeneration >= generationBefore, 'the durable generation never moves back');
    return result;
  }

  private emit(e: TargetEvent): void { this.core.emit(e); }

  // ---- pool ----

  private metadataBytes(): number | null {
    const sb = this.core.sb, objects = this.core.space.metaObjects;
    if (objects === null) return null;
    assert(Number.isSafeInteger(objects) && objects >= 0, 'metadata objects are a count');
    const mirrors = sb.formatVersion === FORMAT_VERSION_UNMIRRORED ? 0 : SUPERBLOCK_MIRROR_SLOTS.length;
    return (FIRST_FREE_BLOCK + mirrors + sb.logBlocks + 2 * sb.keyringBlocks + objects) * BLOCK_SIZE_BYTES;
  }

  stats(): PoolStats {
    // Counted from the indexes, not by a walk of every record (metrics read this on each scrape).
    const volumes = this.catalog.liveVolumeCount(), snapshots = this.catalog.snapshotsById.size;
    const total = this.core.sb.totalBlocks;
    assert(this.core.space.freeBlocks >= 0 && this.core.space.freeBlocks <= total, 'free blocks within the pool');
    return {
      sizeBytes: total * BLOCK_SIZE_BYTES, freeBytes: this.core.space.freeBlocks * BLOCK_SIZE_BYTES,
      allocatedBytes: (total - this.core.space.freeBlocks) * BLOCK_SIZE_BYTES, blockSizeBytes: BLOCK_SIZE_BYTES,
      volumes, snapshots, generation: this.core.durableGeneration, checksumErrors: this.core.checksumErrors,
      pendingDeleteNodes: this.catalog.deadNodes.length, metadataBytes: this.metadataBytes(),
      ...(this.core.device.ioCounts ? { deviceIo: this.core.device.ioCounts() } : {}),
      ...(this.core.intentLog ? { flushes: this.flushCounts(this.core.intentLog) } : {}),
    };
  }

  private flushCounts(log: IntentLog): FlushCounts {
    const device = this.core.device;
    assert(log.rounds >= 0 && device.inlined >= 0, 'flush counts only grow');
    return { logRounds: log.rounds, eagerRounds: log.eagerRounds, committed: log.roundsCommitted, inlineBlocks: device.inlined, heldBlocks: device.heldBlocks };
  }

  async check(): Promise<CheckReport> {
    // The checker reads the committed state: everything, not only what the log holds, goes into it.
    await this.checkpoint();
    const release = await this.core.mutex.lock();
    // Held for the whole walk: the checker reads the durable state, which no commit may change under it.
    this.core.assertHeld();
    try { return await checkDevice(this.core.device); } finally { release(); }
  }

  close(): Promise<void> { return this.core.close(); }

  async growPool(sizeBytes?: number): Promise<PoolStats> {
    // One grow at a time: two racing ones could otherwise size the file down under each other.
    const run = this.growChain.then(() => this.growPoolNow(sizeBytes));
    // The chain only orders grows; this grow's failure reaches its caller through `run`.
    this.growChain = run.catch(() => undefined);
    await run;
    return this.stats();
  }

  private async growPoolNow(sizeBytes: number | undefined): Promise<void> {
    this.core.ensureUsable();
    const device = this.core.device;
    const currentBytes = this.core.sb.totalBlocks * BLOCK_SIZE_BYTES;
    const deviceBlocks = (): Promise<number> => device.refreshSize().catch((err: unknown) => { throw asIoError(err, 'reading the device size failed'); });
    let blocks: number;
    if (sizeBytes === undefined) {
      blocks = await deviceBlocks();
      if (blocks < this.core.sb.totalBlocks) throw new PoolCorrupt(`the device (${blocks * BLOCK_SIZE_BYTES} bytes) is smaller than the pool on it (${currentBytes} bytes)`);
    } else {
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new InvalidSize(`pool size must be a positive integer number of bytes, got ${sizeBytes}`);
      if (sizeBytes % BLOCK_SIZE_BYTES !== 0) throw new InvalidSize(`pool size must be a multiple of ${BLOCK_SIZE_BYTES} bytes, got ${sizeBytes}`);
      if (sizeBytes > POOL_BLOCKS_MAX * BLOCK_SIZE_BYTES) throw new InvalidSize(`pool size ${sizeBytes} exceeds the maximum of ${POOL_BLOCKS_MAX * BLOCK_SIZE_BYTES} bytes`);
      if (sizeBytes < currentBytes) throw new PoolShrinkRefused(currentBytes, sizeBytes);
      blocks = sizeBytes / BLOCK_SIZE_BYTES;
      if (blocks > await deviceBlocks()) {
        try {
          await device.resize(blocks);
          // The new size must be durable before a superblock counts on it (fdatasync covers a file's size).
          await device.flush();
        } catch (err) {
          throw asIoError(err, `enlarging the pool's device to ${sizeBytes} bytes failed`);
        }
      }
    }
    if (blocks > POOL_BLOCKS_MAX) blocks = POOL_BLOCKS_MAX; // a larger device is used up to the limit
    // Grows run one at a time (growChain), so the pool's size cannot have changed since it was compared.
    assert(Number.isSafeInteger(blocks) && blocks >= this.core.sb.totalBlocks, 'a grow never shrinks the pool');
    await this.core.grow(blocks);
  }

  onTargetEvent(listener: (event: TargetEvent) => void): () => void { return this.core.onTargetEvent(listener); }

  // ---- volumes ----

  listVolumes(): VolumeInfo[] {
    assert(this.catalog.volumesByName.size <= this.catalog.byId.size, 'every named volume has an id');
    return [...this.catalog.volumesByName.values()].filter((r) => (r.flags & FLAG_DELETED) === 0)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((r) => this.volumeInfo(r));
  }

  getVolume(name: string): VolumeInfo {
    const info = this.volumeInfo(this.liveVolume(name));
    assert(info.name === name, 'a volume found under its own name');
    return info;
  }

  private assertNameFree(name: string): void {
    const existing = this.catalog.volumesByName.get(name);
    if (!existing) return;
    assert(existing.kind === RecordKind.Volume, 'the name index holds volumes');
    if ((existing.flags & FLAG_DELETED) !== 0) throw new NameTaken(name, 'a deleted volume of this name still has snapshots');
    throw new NameTaken(name);
  }

  async createVolume(name: string, sizeBytes: number, opts: VolumeCreateOptions = {}): Promise<VolumeInfo> {
    validateVolumeName(name);
    validateSize(sizeBytes);
    if (this.catalog.volumesByName.has(name)) this.assertNameFree(name); // before a key slot is taken for nothing
    const keyId = opts.encryption === undefined ? 0 : await this.newKeySlot(opts.encryption);
    let rec: CatalogRecord;
    try {
      rec = await this.durable(async () => {
        this.assertNameFree(name);
        return this.catalog.add({
          kind: RecordKind.Volume, flags: 0, id: this.newId(), root: 0, sizeBytes, mappedBlocks: 0, createdMs: this.core.nowMs(),
          parentId: 0, originSnapId: 0, flattenCursor: 0, seq: 0, name, keyId,
        });
      });
    } catch (err) {
      // The slot was written but no record names it: destroyed now (open would do it after a crash, and
      // does it if this shred fails too, so its failure is not the caller's error).
      if (keyId !== 0 && !this.catalog.keyUsers.has(keyId)) await this.core.keyring!.shred([keyId]).catch(() => undefined);
      throw err;
    }
    assert(rec.root === 0 && rec.sizeBytes === sizeBytes && this.catalog.volumesByName.get(name) === rec, 'a new volume is empty and indexed');
    return this.volumeInfo(rec);
  }

  async cloneVolume(name: string, source: string): Promise<VolumeInfo> {
    validateVolumeName(name);
    const rec = await this.durable(async () => {
      this.assertNameFree(name);
      const src = this.refRec(source);
      const isSnap = src.kind === RecordKind.Snapshot;
      if (src.root !== 0) await this.core.space.incref(src.root);
      // The clone shares the source's tree: its root counts one more reference (O(1), nothing copied).
      assert(src.root === 0 || (await this.core.space.get(src.root)) >= 2, 'a shared root is counted by both');
      return this.catalog.add({
        kind: RecordKind.Volume, flags: 0, id: this.newId(), root: src.root, sizeBytes: src.sizeBytes, mappedBlocks: src.mappedBlocks,
        createdMs: this.core.nowMs(), parentId: isSnap ? src.parentId : src.id, originSnapId: isSnap ? src.id : 0,
        flattenCursor: 0, seq: 0, name, keyId: src.keyId,
      });
    });
    return this.volumeInfo(rec);
  }

  async resizeVolume(name: string, sizeBytes: number, opts: { allowShrink?: boolean } = {}): Promise<VolumeInfo> {
    validateSize(sizeBytes);
    const rec = this.liveVolume(name);
    if (sizeBytes < rec.sizeBytes) {
      if (!opts.allowShrink) throw new ShrinkRefused(name);
      await unmapBlocks(this.core, rec, sizeBytes / BLOCK_SIZE_BYTES, rec.sizeBytes / BLOCK_SIZE_BYTES);
    }
    await this.durable(async () => {
      if (this.liveVolume(name) !== rec) throw new VolumeNotFound(name); // replaced while it was being shrunk
      rec.sizeBytes = sizeBytes;
      await this.catalog.save(rec);
    });
    assert(rec.sizeBytes === sizeBytes, 'the resize took effect');
    this.emit({ type: 'resized', id: rec.id, sizeBytes });
    return this.volumeInfo(rec);
  }

  async deleteVolume(name: string): Promise<void> {
    const id = await this.durable(async () => {
      const rec = this.liveVolume(name);
      await this.core.dropTree(rec.root);
      rec.root = 0;
      rec.mappedBlocks = 0;
      assert(rec.kind === RecordKind.Volume, 'deleting a volume record');
      if (this.catalog.snapshotCountOf(rec.id) > 0) {
        rec.flags |= FLAG_DELETED;
        await this.catalog.save(rec);
      } else {
        await this.catalog.remove(rec);
      }
      return rec.id;
    });
    this.emit({ type: 'deleted', id });
  }

  async revertVolume(name: string, snapshot: string): Promise<VolumeInfo> {
    const rec = await this.durable(async () => {
      const vol = this.liveVolume(name);
      const snap = this.snapshotRec(`${name}@${snapshot}`);
      if (snap.root !== 0) await this.core.space.incref(snap.root);
      await this.core.dropTree(vol.root);
      vol.root = snap.root;
      vol.sizeBytes = snap.sizeBytes;
      vol.mappedBlocks = snap.mappedBlocks;
      assert(snap.parentId === vol.id, 'a volume reverts to its own snapshot');
      await this.catalog.save(vol);
      return vol;
    });
    this.emit({ type: 'reverted', id: rec.id });
    return this.volumeInfo(rec);
  }

  /**
   * Resumes in the background every flatten whose cursor says it was under way (`keyId`: only those of
   * that lineage). At open, and when a locked lineage's key arrives: a locked volume waits for its key.
   */
  resumeFlattens(keyId?: number): void {
    for (const v of this.listVolumes()) {
      if (v.flattenProgress === null || this.flattensResuming.has(v.name) || v.encryption?.locked === true) continue;
      if (keyId !== undefined && v.encryption?.keyId !== keyId) continue;
      assert(v.flattenProgress >= 0 && v.flattenProgress <= 1, 'flatten progress is a fraction');
      this.flattensResuming.add(v.name);
      void this.flattenVolume(v.name).catch((err: unknown) =>
        this.core.log('flatten_resume_failed', { volume: v.name, error: err instanceof Error ? err.message : String(err) }))
        .finally(() => this.flattensResuming.delete(v.name));
    }
  }

  flattenWasUnderWayAtOpen(name: string): boolean { return this.flattensAtOpen.has(this.liveVolume(name).id); }

  async flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    const rec = this.liveVolume(name);
    await flattenVolume(this.core, rec, onProgress);
    // Flattened: nothing of its origin is shared any more, and no cursor is left to resume.
    assert(rec.flattenCursor === 0 && rec.parentId === 0 && rec.originSnapId === 0, 'a flattened volume has no origin');
    return this.volumeInfo(rec);
  }

  // ---- settings ----

  getSetting(key: string): Buffer | null {
    const rec = this.catalog.settings.get(key);
    assert(rec === undefined || rec.value !== undefined, 'a setting has a value');
    return rec === undefined ? null : Buffer.from(rec.value!);
  }

  listSettings(prefix: string): Setting[] {
    const out: Setting[] = [];
    for (const [key, rec] of this.catalog.settings) if (key.startsWith(prefix)) out.push({ key, value: Buffer.from(rec.value!) });
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async putSettings(changes: SettingChange[]): Promise<void> {
    for (const { key, value } of changes) {
      validateSettingKey(key);
      if (value !== null && Buffer.byteLength(key) + value.length > SETTING_BYTES_MAX) {
        throw new InvalidArgument(`setting ${key}: key and value hold ${Buffer.byteLength(key) + value.length} bytes, at most ${SETTING_BYTES_MAX}`);
      }
    }
    if (!hasIntentLog(this.core.sb.formatVersion)) {
      throw new InvalidArgument(`this pool is format ${this.core.sb.formatVersion} (no room was free for an intent log when it was upgraded): it cannot store settings until space is freed and it is reopened`);
    }
    await this.durable(async () => {
      // Older binaries read format 3; the version moves only once the catalog holds what they cannot read.
      if (this.core.sb.formatVersion < FORMAT_VERSION_SETTINGS && changes.some((c) => c.value !== null)) this.core.sb = { ...this.core.sb, formatVersion: FORMAT_VERSION_SETTINGS };
      for (const { key, value } of changes) await this.catalog.putSetting(key, value);
    });
  }

  // ---- snapshots ----

  async createSnapshots(fullNames: string[], opts: SnapshotCreateOptions = {}): Promise<SnapshotInfo[]> {
    if (!Array.isArray(fullNames) || fullNames.length === 0) throw new InvalidArgument('no snapshots named');
    const receivedGuid = opts.streamGuid;
    if (receivedGuid !== undefined) {
      validateStreamGuid(receivedGuid);
      if (fullNames.length !== 1) throw new InvalidArgument('a stream guid names exactly one snapshot');
    }
    const parsed = fullNames.map((f) => {
      const { volume, snapshot } = parseRef(f);
      if (snapshot === null) throw new InvalidArgument(`expected VOLUME@SNAPSHOT, got ${f}`);
      validateName(snapshot, 'snapshot');
      return { volume, snapshot };
    });
    const seen = new Set<string>();
    for (const p of parsed) {
      const key = `${p.volume}@${p.snapshot}`;
      if (seen.has(key)) throw new InvalidArgument(`snapshot ${key} named twice`);
      seen.add(key);
    }
    // One lock for the whole group: every volume is captured at the same instant.
    const recs = await this.durable(async () => {
      const vols = parsed.map((p) => {
        const vol = this.liveVolume(p.volume);
        if (this.catalog.snapshotNamed(vol.id, p.snapshot) !== undefined) throw new NameTaken(`${p.volume}@${p.snapshot}`);
        return vol;
      });
      const out: CatalogRecord[] = [];
      // One timestamp too: taken per snapshot, the awaits between them could let the clock tick.
      const createdMs = this.core.nowMs();
      for (let i = 0; i < vols.length; i++) {
        const vol = vols[i]!;
        if (vol.root !== 0) await this.core.space.incref(vol.root);
        const id = this.newId();
        const rec: Omit<CatalogRecord, 'slot'> = {
          kind: RecordKind.Snapshot, flags: 0, id, root: vol.root, sizeBytes: vol.sizeBytes, mappedBlocks: vol.mappedBlocks,
          createdMs, parentId: vol.id, originSnapId: 0, flattenCursor: 0, seq: id, name: parsed[i]!.snapshot, keyId: vol.keyId,
        };
        // Stored with the snapshot, in its commit: a received snapshot keeps its sender's guid.
        rec.streamGuid = receivedGuid ?? this.streamGuidOf({ ...rec, slot: -1 });
        out.push(await this.catalog.add(rec));
      }
      return out;
    });
    // One snapshot per name asked for, in order: the caller matches them by position.
    assert(recs.length === parsed.length, 'a snapshot per name');
    return recs.map((r) => this.snapshotInfo(r));
  }

  listSnapshots(volume?: string): SnapshotInfo[] {
    if (volume !== undefined) {
      const vol = this.catalog.volumesByName.get(volume);
      if (!vol) throw new VolumeNotFound(volume);
      assert(vol.kind === RecordKind.Volume, 'the name index holds volumes');
      return this.catalog.snapshotsOf(vol.id).map((s) => this.snapshotInfo(s));
    }
    const out: SnapshotInfo[] = [];
    const vols = [...this.catalog.volumesByName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const vol of vols) for (const s of this.catalog.snapshotsOf(vol.id)) out.push(this.snapshotInfo(s));
    return out;
  }

  getSnapshot(fullName: string): SnapshotInfo {
    const info = this.snapshotInfo(this.snapshotRec(fullName));
    assert(info.fullName === fullName, 'a snapshot found under its own name');
    return info;
  }

  snapshotStreamGuid(fullName: string): string { return this.streamGuidOf(this.snapshotRec(fullName)); }

  async adoptStreamGuids(guids: ReadonlyMap<number, string>): Promise<number> {
    for (const guid of guids.values()) validateStreamGuid(guid);
    return this.durable(async () => {
      let adopted = 0;
      for (const [id, guid] of guids) {
        const rec = this.catalog.byId.get(id);
        if (rec === undefined || rec.kind !== RecordKind.Snapshot) continue;
        rec.streamGuid = guid;
        await this.catalog.save(rec);
        adopted += 1;
      }
      assert(adopted <= guids.size, 'each guid is adopted at most once');
      return adopted;
    });
  }

  findSnapshot(fullName: string): SnapshotInfo | null {
    const { volume, snapshot } = parseRef(fullName);
    if (snapshot === null) throw new InvalidArgument(`expected VOLUME@SNAPSHOT, got ${fullName}`);
    const vol = this.catalog.volumesByName.get(volume);
    const snap = vol === undefined ? undefined : this.catalog.snapshotNamed(vol.id, snapshot);
    if (snap !== undefined && snap.parentId !== vol?.id) fail(`snapshot index of ${volume} holds record #${snap.id}`);
    return snap === undefined ? null : this.snapshotInfo(snap);
  }

  findSnapshotsNamed(name: string): SnapshotInfo[] {
    return this.catalog.snapshotsNamed(name).map((r) => this.snapshotInfo(r));
  }

  listSnapshotsPage(request: SnapshotPageRequest): SnapshotPage {
    if (!Number.isSafeInteger(request.limit) || request.limit < 1) throw new InvalidArgument(`page limit must be a positive integer, got ${request.limit}`);
    const afterId = request.afterId ?? 0;
    if (!Number.isSafeInteger(afterId) || afterId < 0) throw new InvalidArgument(`page start must be a snapshot id, got ${afterId}`);
    let order = this.catalog.snapshotsById;
    if (request.volume !== undefined) {
      const vol = this.catalog.volumesByName.get(request.volume);
      if (!vol) throw new VolumeNotFound(request.volume);
      const snaps = this.catalog.snapshotsByVolume.get(vol.id);
      if (!snaps) return { snapshots: [], more: false };
      order = snaps.bySeq;
    }
    // A volume's snapshots are ordered by seq, which is their id (createSnapshots): one key for both.
    const { items, more } = order.page(afterId, request.limit);
    assert(items.length <= request.limit, 'a page holds at most its limit');
    return { snapshots: items.map((r) => this.snapshotInfo(r)), more };
  }

  async deleteSnapshot(fullName: string): Promise<void> {
    const id = await this.durable(async () => {
      const snap = this.snapshotRec(fullName);
      assert(snap.kind === RecordKind.Snapshot, 'deleting a snapshot record');
      await this.core.dropTree(snap.root);
      await this.catalog.remove(snap);
      const vol = this.catalog.byId.get(snap.parentId);
      if (vol && (vol.flags & FLAG_DELETED) !== 0 && this.catalog.snapshotCountOf(vol.id) === 0) await this.catalog.remove(vol);
      return snap.id;
    });
    this.emit({ type: 'deleted', id });
  }

  // ---- lineage ----

  async diff(from: string, to: string): Promise<ByteRange[]> {
    const a = this.refRec(from), b = this.refRec(to);
    assert(a.kind !== RecordKind.DeadNode && b.kind !== RecordKind.DeadNode, 'a diff of volumes and snapshots');
    return this.diffRecs(a, b, 0, Math.max(a.sizeBytes, b.sizeBytes));
  }

  private async diffRecs(a: CatalogRecord, b: CatalogRecord, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    const startLba = Math.floor(offsetBytes / BLOCK_SIZE_BYTES);
    const endLba = Math.ceil((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES);
    assert(startLba >= 0 && startLba <= endLba, 'a diff of a forward range');
    const epoch = this.core.beginRead();
    try {
      const ranges = await this.diffStable(a, b, startLba, endLba);
      return ranges.map((r) => ({ offsetBytes: r.startLba * BLOCK_SIZE_BYTES, lengthBytes: (r.endLba - r.startLba) * BLOCK_SIZE_BYTES }));
    } finally {
      this.core.endRead(epoch);
    }
  }

  /**
   * diffTrees without the lock, as Trees.lookupStable walks: a live volume's tree may be mid-edit, so
   * it waits for the edit and walks again if one began while it awaited a node's read; after
   * STABLE_WALK_ATTEMPTS such walks it walks once under the lock.
   */
  private async diffStable(a: CatalogRecord, b: CatalogRecord, startLba: number, endLba: number): Promise<Awaited<ReturnType<typeof diffTrees>>> {
    assert(startLba <= endLba, 'a diff of a forward range');
    const trees = this.core.trees;
    for (let attempt = 1; attempt <= STABLE_WALK_ATTEMPTS; attempt++) {
      const underWay = trees.editUnderWay(a) ?? trees.editUnderWay(b);
      if (underWay) { await underWay; continue; }
      const begun = trees.editsBegunOn(a) + trees.editsBegunOn(b);
      const ranges = await diffTrees(trees, a.root, b.root, startLba, endLba);
      if (trees.editsBegunOn(a) + trees.editsBegunOn(b) === begun) return ranges;
    }
    const release = await this.core.mutex.lock();
    try { return await diffTrees(trees, a.root, b.root, startLba, endLba); } finally { release(); }
  }

  async spaceUsage(name: string): Promise<SpaceUsage> {
    const rec = this.refRec(name);
    const exclusive = await this.core.mutate(() => exclusiveBlocks(this.core, rec.root));
    assert(Number.isSafeInteger(exclusive) && exclusive >= 0, 'exclusive blocks are a count');
    return { provisionedBytes: rec.sizeBytes, mappedBytes: rec.mappedBlocks * BLOCK_SIZE_BYTES, exclusiveBytes: exclusive * BLOCK_SIZE_BYTES };
  }

  // ---- I/O ----

  resolve(name: string): Target {
    const rec = this.refRec(name);
    // Protocols size their exports from this: whole blocks (validateSize, the catalog page validator).
    assert(rec.sizeBytes % BLOCK_SIZE_BYTES === 0, 'a target is whole blocks');
    return { id: rec.id, name, readOnly: rec.kind === RecordKind.Snapshot, sizeBytes: rec.sizeBytes };
  }

  targetSizeBytes(id: number): number {
    const sizeBytes = this.byId(id).sizeBytes;
    assert(sizeBytes % BLOCK_SIZE_BYTES === 0, 'a target is whole blocks');
    return sizeBytes;
  }

  private writableById(id: number): CatalogRecord {
    const rec = this.byId(id);
    if (rec.kind === RecordKind.Snapshot) throw new ReadOnly(this.snapshotInfo(rec).fullName);
    assert(rec.kind === RecordKind.Volume, 'only a volume takes writes');
    return rec;
  }

  async read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.core.ensureUsable();
    const out = await readRange(this.core, this.byId(id), offsetBytes, lengthBytes, into);
    // The protocol sends exactly what was asked for: a short or long buffer would shift its stream.
    if (out.length !== lengthBytes) fail(`read of ${lengthBytes} bytes returned ${out.length}`);
    return out;
  }

  async write(id: number, offsetBytes: number, data: WriteData, opts: WriteOptions = {}): Promise<void> {
    this.core.ensureUsable();
    const rec = this.writableById(id);
    await writeRange(this.core, rec, offsetBytes, data);
    // A write completed before the lock was free never left its mutation holding it.
    assert(!this.core.mutex.held || !this.core.mutex.idle, 'a holder of the lock is counted among its users');
    if (opts.fua) await this.core.flush();
  }

  async trim(id: number, offsetBytes: number, lengthBytes: number, opts: WriteOptions = {}): Promise<void> {
    this.core.ensureUsable();
    await zeroRange(this.core, this.writableById(id), offsetBytes, lengthBytes, false);
    assert(!this.core.mutex.held || !this.core.mutex.idle, 'a holder of the lock is counted among its users');
    if (opts.fua) await this.core.flush();
  }

  async writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts: ZeroOptions = {}): Promise<void> {
    this.core.ensureUsable();
    await zeroRange(this.core, this.writableById(id), offsetBytes, lengthBytes, opts.noHole ?? false);
    assert(!this.core.mutex.held || !this.core.mutex.idle, 'a holder of the lock is counted among its users');
    if (opts.fua) await this.core.flush();
  }

  async flush(): Promise<void> { return this.core.flush(); }
  async checkpoint(): Promise<void> {
    this.core.ensureUsable();
    return this.core.commit();
  }

  async extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    return extentsOf(this.core, this.byId(id), offsetBytes, lengthBytes);
  }

  async changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    const rec = this.byId(id);
    const since = this.snapshotRec(sinceFullName);
    assert(since.kind === RecordKind.Snapshot, 'changes are counted since a snapshot');
    return this.diffRecs(since, rec, offsetBytes, lengthBytes).then((ranges) => ranges
      .map((r) => {
        const s = Math.max(r.offsetBytes, offsetBytes), e = Math.min(r.offsetBytes + r.lengthBytes, offsetBytes + lengthBytes);
        return { offsetBytes: s, lengthBytes: e - s };
      })
      .filter((r) => r.lengthBytes > 0));
  }

  // ---- encryption ----

  /** A key slot for a new lineage, written before the commit that will name it. */
  private async newKeySlot(key: DataKey): Promise<number> {
    if (!Buffer.isBuffer(key.dek) || !Buffer.isBuffer(key.wrapped)) throw new InvalidArgument('a data key and its wrapped form are byte buffers');
    const keyring = await ensureKeyring(this.core);
    const keyId = await this.core.mutate(async () => keyring.allocate(key.dek, key.wrapped));
    assert(keyId >= 1 && keyId <= keyring.slotCount && !this.catalog.keyUsers.has(keyId), 'a new lineage gets a slot no record uses');
    try {
      await keyring.writeNew(keyId);
    } catch (err) {
      // The write's failure is what the caller must see; a slot left behind is shredded at the next open.
      await keyring.shred([keyId]).catch(() => undefined);
      throw err;
    }
    return keyId;
  }

  listKeys(): KeyInfo[] {
    const keyring = this.core.keyring;
    if (keyring === null) return [];
    const members = new Map<number, string[]>();
    for (const rec of this.catalog.byId.values()) {
      if (rec.keyId === 0) continue;
      const name = rec.kind === RecordKind.Snapshot ? this.snapshotInfo(rec).fullName : rec.name;
      const list = members.get(rec.keyId);
      if (list) list.push(name); else members.set(rec.keyId, [name]);
    }
    assert(members.size <= keyring.slotCount, 'records name at most the keyring\'s slots');
    return keyring.usedKeyIds().map((keyId) => ({
      keyId, wrapped: keyring.copiesOf(keyId).map((c) => Buffer.from(c.wrapped)), locked: !keyring.isUnlocked(keyId),
      members: (members.get(keyId) ?? []).sort(),
    }));
  }

  private keySlot(keyId: number): NonNullable<PoolCore['keyring']> {
    const keyring = this.core.keyring;
    if (keyring === null || !Number.isInteger(keyId) || keyId < 1 || keyId > keyring.slotCount || keyring.copiesOf(keyId).length === 0) {
      throw new InvalidArgument(`no key in slot ${keyId}`);
    }
    return keyring;
  }

  unlockKey(keyId: number, dek: Buffer): void {
    const keyring = this.keySlot(keyId);
    keyring.unlock(keyId, dek);
    assert(keyring.isUnlocked(keyId), 'an accepted key unlocks its lineage');
    // A flatten of this lineage cut while it was locked (or by a restart before its key came) goes on.
    this.resumeFlattens(keyId);
  }
  lockKey(keyId: number): void {
    const keyring = this.keySlot(keyId);
    keyring.lock(keyId);
    assert(!keyring.isUnlocked(keyId), 'a locked lineage holds no key');
  }
  rewrapKey(keyId: number, wrapped: Buffer): Promise<void> {
    this.core.ensureUsable();
    const keyring = this.keySlot(keyId);
    assert(keyring.copiesOf(keyId).length > 0, 'a re-wrap of a slot in use');
    return keyring.rewrap(keyId, wrapped);
  }

  private sealedRange(rec: CatalogRecord, offsetBytes: number, lengthBytes: number): { cipher: NonNullable<ReturnType<typeof cipherFor>>; lba: number } {
    if (offsetBytes % BLOCK_SIZE_BYTES !== 0 || lengthBytes % BLOCK_SIZE_BYTES !== 0) throw new InvalidArgument(`a sealed range is whole blocks, got offset ${offsetBytes} length ${lengthBytes}`);
    const cipher = cipherFor(this.core, rec);
    if (cipher === null) throw new InvalidArgument(`${rec.name} is not encrypted: it has no sealed form`);
    assert(rec.keyId !== 0, 'a sealed range is of an encrypted record');
    return { cipher, lba: offsetBytes / BLOCK_SIZE_BYTES };
  }

  async readSealed(id: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    this.core.ensureUsable();
    const rec = this.byId(id);
    const { cipher, lba } = this.sealedRange(rec, offsetBytes, lengthBytes);
    const plain = await readRange(this.core, rec, offsetBytes, lengthBytes);
    const sealed = Buffer.allocUnsafe(plain.length);
    if (plain.length > 0) await cipher.encryptBlocksAsync(plain, sealed, lba, XTS_DOMAIN_STREAM);
    plain.fill(0);
    return sealed;
  }

  async writeSealed(id: number, offsetBytes: number, data: Buffer): Promise<void> {
    this.core.ensureUsable();
    const rec = this.writableById(id);
    const { cipher, lba } = this.sealedRange(rec, offsetBytes, data.length);
    if (data.length === 0) return;
    const plain = Buffer.allocUnsafe(data.length);
    await cipher.decryptBlocksAsync(data, plain, lba, XTS_DOMAIN_STREAM);
    try { await writeRange(this.core, rec, offsetBytes, plain); } finally { plain.fill(0); }
  }

  /** Frees every queued dropped node now (tests and benchmarks; normally this runs in the background). */
  drainDeletes(): Promise<void> { return this.core.drainDeletes(); }
}
