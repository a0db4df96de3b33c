// CairnEngine: the Engine interface (types.ts) over a PoolCore. Resolves names, enforces the rules
// (read-only snapshots, name uniqueness, sizes), and makes every catalog change durable before it
// returns. Catalog records are the single source of truth for roots, sizes and lineage.
import { BLOCK_SIZE_BYTES } from './constants.js';
import type { PoolCore } from './pool.js';
import { FLAG_DELETED, RecordKind, type CatalogRecord } from './catalog.js';
import { diffTrees } from './diff.js';
import { extentsOf, readRange, unmapBlocks, writeRange, zeroRange } from './data-path.js';
import { flattenVolume } from './flatten.js';
import { exclusiveBlocks } from './space-usage.js';
import { checkDevice } from './check.js';
import { parseRef, validateName, validateSize } from './names.js';
import {
  InvalidArgument, NameTaken, ReadOnly, ShrinkRefused, SnapshotNotFound, VolumeNotFound,
} from './errors.js';
import type {
  ByteRange, CheckReport, Engine, Extent, PoolStats, SnapshotInfo, SnapshotPage, SnapshotPageRequest, SpaceUsage, Target,
  TargetEvent, VolumeInfo, WriteData, WriteOptions, ZeroOptions,
} from './types.js';

export class CairnEngine implements Engine {
  constructor(readonly core: PoolCore) {}

  private get catalog() { return this.core.catalog; }

  // ---- lookups ----

  private liveVolume(name: string): CatalogRecord {
    const rec = this.catalog.volumesByName.get(name);
    if (!rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(name);
    return rec;
  }

  private snapshotRec(fullName: string): CatalogRecord {
    const { volume, snapshot } = parseRef(fullName);
    if (snapshot === null) throw new InvalidArgument(`expected VOLUME@SNAPSHOT, got ${fullName}`);
    const vol = this.catalog.volumesByName.get(volume);
    if (!vol) throw new VolumeNotFound(volume);
    const snap = this.catalog.snapshotNamed(vol.id, snapshot);
    if (!snap) throw new SnapshotNotFound(fullName);
    return snap;
  }

  private refRec(ref: string): CatalogRecord {
    return parseRef(ref).snapshot === null ? this.liveVolume(ref) : this.snapshotRec(ref);
  }

  private byId(id: number): CatalogRecord {
    const rec = this.catalog.byId.get(id);
    if (!rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(`#${id}`);
    return rec;
  }

  private volumeInfo(rec: CatalogRecord): VolumeInfo {
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
    };
  }

  private snapshotInfo(rec: CatalogRecord): SnapshotInfo {
    const vol = this.catalog.byId.get(rec.parentId)!;
    return {
      kind: 'snapshot', id: rec.id, volume: vol.name, name: rec.name, fullName: `${vol.name}@${rec.name}`,
      sizeBytes: rec.sizeBytes, mappedBytes: rec.mappedBlocks * BLOCK_SIZE_BYTES, createdMs: rec.createdMs,
    };
  }

  private newId(): number { return this.core.sb.nextId++; }

  private async durable<T>(fn: () => Promise<T>): Promise<T> {
    const result = await this.core.mutate(fn);
    await this.core.commit();
    return result;
  }

  private emit(e: TargetEvent): void { this.core.emit(e); }

  // ---- pool ----

  stats(): PoolStats {
    // Counted from the indexes, not by a walk of every record (metrics read this on each scrape).
    const volumes = this.catalog.liveVolumeCount(), snapshots = this.catalog.snapshotsById.size;
    const total = this.core.sb.totalBlocks;
    return {
      sizeBytes: total * BLOCK_SIZE_BYTES, freeBytes: this.core.space.freeBlocks * BLOCK_SIZE_BYTES,
      allocatedBytes: (total - this.core.space.freeBlocks) * BLOCK_SIZE_BYTES, blockSizeBytes: BLOCK_SIZE_BYTES,
      volumes, snapshots, generation: this.core.durableGeneration, checksumErrors: this.core.checksumErrors,
      pendingDeleteNodes: this.catalog.deadNodes.length,
    };
  }

  async check(): Promise<CheckReport> {
    await this.core.flush();
    const release = await this.core.mutex.lock();
    try { return await checkDevice(this.core.device); } finally { release(); }
  }

  close(): Promise<void> { return this.core.close(); }

  onTargetEvent(listener: (event: TargetEvent) => void): () => void { return this.core.onTargetEvent(listener); }

  // ---- volumes ----

  listVolumes(): VolumeInfo[] {
    return [...this.catalog.volumesByName.values()].filter((r) => (r.flags & FLAG_DELETED) === 0)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((r) => this.volumeInfo(r));
  }

  getVolume(name: string): VolumeInfo { return this.volumeInfo(this.liveVolume(name)); }

  private assertNameFree(name: string): void {
    const existing = this.catalog.volumesByName.get(name);
    if (!existing) return;
    if ((existing.flags & FLAG_DELETED) !== 0) throw new NameTaken(name, 'a deleted volume of this name still has snapshots');
    throw new NameTaken(name);
  }

  async createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    validateName(name, 'volume');
    validateSize(sizeBytes);
    const rec = await this.durable(async () => {
      this.assertNameFree(name);
      return this.catalog.add({
        kind: RecordKind.Volume, flags: 0, id: this.newId(), root: 0, sizeBytes, mappedBlocks: 0, createdMs: this.core.nowMs(),
        parentId: 0, originSnapId: 0, flattenCursor: 0, seq: 0, name,
      });
    });
    return this.volumeInfo(rec);
  }

  async cloneVolume(name: string, source: string): Promise<VolumeInfo> {
    validateName(name, 'volume');
    const rec = await this.durable(async () => {
      this.assertNameFree(name);
      const src = this.refRec(source);
      const isSnap = src.kind === RecordKind.Snapshot;
      if (src.root !== 0) await this.core.space.incref(src.root);
      return this.catalog.add({
        kind: RecordKind.Volume, flags: 0, id: this.newId(), root: src.root, sizeBytes: src.sizeBytes, mappedBlocks: src.mappedBlocks,
        createdMs: this.core.nowMs(), parentId: isSnap ? src.parentId : src.id, originSnapId: isSnap ? src.id : 0,
        flattenCursor: 0, seq: 0, name,
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
      this.liveVolume(name);
      rec.sizeBytes = sizeBytes;
      await this.catalog.save(rec);
    });
    this.emit({ type: 'resized', id: rec.id, sizeBytes });
    return this.volumeInfo(rec);
  }

  async deleteVolume(name: string): Promise<void> {
    const id = await this.durable(async () => {
      const rec = this.liveVolume(name);
      await this.core.dropTree(rec.root);
      rec.root = 0;
      rec.mappedBlocks = 0;
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
      await this.catalog.save(vol);
      return vol;
    });
    this.emit({ type: 'reverted', id: rec.id });
    return this.volumeInfo(rec);
  }

  async flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    const rec = this.liveVolume(name);
    await flattenVolume(this.core, rec, onProgress);
    return this.volumeInfo(rec);
  }

  // ---- snapshots ----

  async createSnapshots(fullNames: string[]): Promise<SnapshotInfo[]> {
    if (!Array.isArray(fullNames) || fullNames.length === 0) throw new InvalidArgument('no snapshots named');
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
        out.push(await this.catalog.add({
          kind: RecordKind.Snapshot, flags: 0, id, root: vol.root, sizeBytes: vol.sizeBytes, mappedBlocks: vol.mappedBlocks,
          createdMs, parentId: vol.id, originSnapId: 0, flattenCursor: 0, seq: id, name: parsed[i]!.snapshot,
        }));
      }
      return out;
    });
    return recs.map((r) => this.snapshotInfo(r));
  }

  listSnapshots(volume?: string): SnapshotInfo[] {
    if (volume !== undefined) {
      const vol = this.catalog.volumesByName.get(volume);
      if (!vol) throw new VolumeNotFound(volume);
      return this.catalog.snapshotsOf(vol.id).map((s) => this.snapshotInfo(s));
    }
    const out: SnapshotInfo[] = [];
    const vols = [...this.catalog.volumesByName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const vol of vols) for (const s of this.catalog.snapshotsOf(vol.id)) out.push(this.snapshotInfo(s));
    return out;
  }

  getSnapshot(fullName: string): SnapshotInfo { return this.snapshotInfo(this.snapshotRec(fullName)); }

  findSnapshot(fullName: string): SnapshotInfo | null {
    const { volume, snapshot } = parseRef(fullName);
    if (snapshot === null) throw new InvalidArgument(`expected VOLUME@SNAPSHOT, got ${fullName}`);
    const vol = this.catalog.volumesByName.get(volume);
    const snap = vol === undefined ? undefined : this.catalog.snapshotNamed(vol.id, snapshot);
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
    return { snapshots: items.map((r) => this.snapshotInfo(r)), more };
  }

  async deleteSnapshot(fullName: string): Promise<void> {
    const id = await this.durable(async () => {
      const snap = this.snapshotRec(fullName);
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
    return this.diffRecs(a, b, 0, Math.max(a.sizeBytes, b.sizeBytes));
  }

  private async diffRecs(a: CatalogRecord, b: CatalogRecord, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    const startLba = Math.floor(offsetBytes / BLOCK_SIZE_BYTES);
    const endLba = Math.ceil((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES);
    const epoch = this.core.beginRead();
    try {
      const ranges = await diffTrees(this.core.trees, a.root, b.root, startLba, endLba);
      return ranges.map((r) => ({ offsetBytes: r.startLba * BLOCK_SIZE_BYTES, lengthBytes: (r.endLba - r.startLba) * BLOCK_SIZE_BYTES }));
    } finally {
      this.core.endRead(epoch);
    }
  }

  async spaceUsage(name: string): Promise<SpaceUsage> {
    const rec = this.refRec(name);
    const exclusive = await this.core.mutate(() => exclusiveBlocks(this.core, rec.root));
    return { provisionedBytes: rec.sizeBytes, mappedBytes: rec.mappedBlocks * BLOCK_SIZE_BYTES, exclusiveBytes: exclusive * BLOCK_SIZE_BYTES };
  }

  // ---- I/O ----

  resolve(name: string): Target {
    const rec = this.refRec(name);
    return { id: rec.id, name, readOnly: rec.kind === RecordKind.Snapshot, sizeBytes: rec.sizeBytes };
  }

  targetSizeBytes(id: number): number { return this.byId(id).sizeBytes; }

  private writableById(id: number): CatalogRecord {
    const rec = this.byId(id);
    if (rec.kind === RecordKind.Snapshot) throw new ReadOnly(this.snapshotInfo(rec).fullName);
    return rec;
  }

  async read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    this.core.ensureUsable();
    return readRange(this.core, this.byId(id), offsetBytes, lengthBytes, into);
  }

  async write(id: number, offsetBytes: number, data: WriteData, opts: WriteOptions = {}): Promise<void> {
    this.core.ensureUsable();
    await writeRange(this.core, this.writableById(id), offsetBytes, data);
    if (opts.fua) await this.core.flush();
  }

  async trim(id: number, offsetBytes: number, lengthBytes: number, opts: WriteOptions = {}): Promise<void> {
    this.core.ensureUsable();
    await zeroRange(this.core, this.writableById(id), offsetBytes, lengthBytes, false);
    if (opts.fua) await this.core.flush();
  }

  async writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts: ZeroOptions = {}): Promise<void> {
    this.core.ensureUsable();
    await zeroRange(this.core, this.writableById(id), offsetBytes, lengthBytes, opts.noHole ?? false);
    if (opts.fua) await this.core.flush();
  }

  async flush(): Promise<void> { return this.core.flush(); }

  async extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    return extentsOf(this.core, this.byId(id), offsetBytes, lengthBytes);
  }

  async changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    const rec = this.byId(id);
    const since = this.snapshotRec(sinceFullName);
    return this.diffRecs(since, rec, offsetBytes, lengthBytes).then((ranges) => ranges
      .map((r) => {
        const s = Math.max(r.offsetBytes, offsetBytes), e = Math.min(r.offsetBytes + r.lengthBytes, offsetBytes + lengthBytes);
        return { offsetBytes: s, lengthBytes: e - s };
      })
      .filter((r) => r.lengthBytes > 0));
  }

  /** Frees every queued dropped node now (tests and benchmarks; normally this runs in the background). */
  drainDeletes(): Promise<void> { return this.core.drainDeletes(); }
}
