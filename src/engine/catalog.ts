// The catalog: volumes, snapshots, settings and the queue of dropped tree nodes, as fixed 256-byte records in a
// paged array inside the pool, committed in the same transaction as the data they describe. The
// whole catalog is also held in memory (small: tens of thousands of records are a few MB).
import { KEY_ID_MAX, CATALOG_LOAD_PAGES_IN_FLIGHT, CATALOG_RECORD_BYTES, CATALOG_RECORDS_PER_PAGE, CATALOG_RECORDS_MAX, NAME_BYTES_MAX, SETTING_BYTES_MAX } from './constants.js';
import { MetaType, catalogPageOf, getU64, setU64, viewOf, type CatalogPage } from './format.js';
import type { MetaStore } from './meta-store.js';
import { RadixArray } from './radix.js';
import { KeyOrder } from './key-order.js';
import { assert, fail, PoolCorrupt } from './errors.js';


/** Setting (format 4): a small named value (`name` is its key) that layers above keep in the pool. */
export const enum RecordKind { Empty = 0, Volume = 1, Snapshot = 2, DeadNode = 3, Setting = 4 }
/** A setting's key and value start after its kind, flags and two 16-bit lengths. */
const SETTING_HEAD_BYTES = 8;
assert(SETTING_HEAD_BYTES + SETTING_BYTES_MAX <= CATALOG_RECORD_BYTES, 'a setting fits in a catalog record');
export const FLAG_DELETED = 1;

/** Where a record's name starts; it runs for at most NAME_BYTES_MAX bytes. */
const RECORD_NAME_OFFSET_BYTES = 80;
/** A snapshot's stream guid (16 bytes; all zero = none stored): the bytes after the longest name. */
const RECORD_STREAM_GUID_OFFSET_BYTES = RECORD_NAME_OFFSET_BYTES + NAME_BYTES_MAX;
const RECORD_STREAM_GUID_BYTES = 16;
assert(RECORD_STREAM_GUID_OFFSET_BYTES + RECORD_STREAM_GUID_BYTES <= CATALOG_RECORD_BYTES, 'the stream guid fits in a catalog record');

export interface CatalogRecord {
  slot: number;
  kind: RecordKind;
  flags: number;
  id: number;
  root: number;
  sizeBytes: number;
  mappedBlocks: number;
  createdMs: number;
  /** Snapshot: its volume's id. Volume: origin volume id (0 = none). */
  parentId: number;
  /** Volume: origin snapshot id (0 = cloned from the live volume or not a clone). */
  originSnapId: number;
  /** Volume: next lba to flatten + 1 (0 = no flatten under way). */
  flattenCursor: number;
  seq: number;
  name: string;
  /**
   * Snapshot: its identity in export streams (32 hex chars, docs/cli.md "Snapshot identity"); absent
   * in records written before it was stored (the engine derives one from the pool uuid).
   */
  streamGuid?: string;
  /** Setting: its value (the key is `name`). */
  value?: Buffer;
  /** Volume, snapshot: the key slot of its lineage's data key (format 5), 0 when not encrypted. */
  keyId: number;
}

function encodeRecord(rec: CatalogRecord, buf: Buffer, off: number): void {
  buf.fill(0, off, off + CATALOG_RECORD_BYTES);
  if (rec.kind === RecordKind.Empty) return;
  if (rec.kind === RecordKind.Setting) { encodeSetting(rec, buf, off); return; }
  const name = Buffer.from(rec.name, 'utf8');
  assert(name.length <= NAME_BYTES_MAX, 'name length checked before the catalog');
  buf.writeUInt8(rec.kind, off);
  buf.writeUInt8(rec.flags, off + 1);
  buf.writeUInt16LE(name.length, off + 2);
  assert(Number.isInteger(rec.keyId) && rec.keyId >= 0 && rec.keyId <= KEY_ID_MAX, 'a key slot number');
  buf.writeUInt32LE(rec.keyId, off + 4);
  const view = viewOf(buf);
  setU64(view, off + 8, rec.id);
  setU64(view, off + 16, rec.root);
  setU64(view, off + 24, rec.sizeBytes);
  setU64(view, off + 32, rec.mappedBlocks);
  setU64(view, off + 40, rec.createdMs);
  setU64(view, off + 48, rec.parentId);
  setU64(view, off + 56, rec.originSnapId);
  setU64(view, off + 64, rec.flattenCursor);
  setU64(view, off + 72, rec.seq);
  name.copy(buf, off + RECORD_NAME_OFFSET_BYTES);
  if (rec.streamGuid !== undefined) {
    assert(/^[0-9a-f]{32}$/.test(rec.streamGuid), 'stream guid checked before the catalog');
    buf.write(rec.streamGuid, off + RECORD_STREAM_GUID_OFFSET_BYTES, RECORD_STREAM_GUID_BYTES, 'hex');
  }
}

function encodeSetting(rec: CatalogRecord, buf: Buffer, off: number): void {
  const key = Buffer.from(rec.name, 'utf8'), value = rec.value;
  assert(value !== undefined && key.length + value.length <= SETTING_BYTES_MAX, 'setting size checked before the catalog');
  buf.writeUInt8(rec.kind, off);
  buf.writeUInt16LE(key.length, off + 2);
  buf.writeUInt16LE(value.length, off + 4);
  key.copy(buf, off + SETTING_HEAD_BYTES);
  value.copy(buf, off + SETTING_HEAD_BYTES + key.length);
}

function decodeSetting(buf: Buffer, off: number, slot: number): CatalogRecord {
  const keyLen = buf.readUInt16LE(off + 2), valueLen = buf.readUInt16LE(off + 4);
  if (keyLen === 0 || keyLen + valueLen > SETTING_BYTES_MAX) throw new PoolCorrupt(`catalog slot ${slot}: setting of ${keyLen}+${valueLen} bytes (at most ${SETTING_BYTES_MAX})`);
  const start = off + SETTING_HEAD_BYTES;
  return {
    slot, kind: RecordKind.Setting, flags: 0, id: 0, root: 0, sizeBytes: 0, mappedBlocks: 0, createdMs: 0, parentId: 0,
    originSnapId: 0, flattenCursor: 0, seq: 0, name: buf.toString('utf8', start, start + keyLen), keyId: 0,
    value: Buffer.from(buf.subarray(start + keyLen, start + keyLen + valueLen)),
  };
}

function decodeStreamGuid(buf: Buffer, off: number): string | undefined {
  const start = off + RECORD_STREAM_GUID_OFFSET_BYTES;
  const bytes = buf.subarray(start, start + RECORD_STREAM_GUID_BYTES);
  assert(bytes.length === RECORD_STREAM_GUID_BYTES, 'the guid field lies inside the page');
  return bytes.every((b) => b === 0) ? undefined : bytes.toString('hex');
}

export function decodeRecord(buf: Buffer, off: number, slot: number): CatalogRecord | null {
  assert(off % CATALOG_RECORD_BYTES === 0 && off + CATALOG_RECORD_BYTES <= buf.length, 'a record slot inside its page');
  const kind = buf.readUInt8(off) as RecordKind;
  if (kind === RecordKind.Empty) return null;
  if (kind > RecordKind.Setting) throw new PoolCorrupt(`catalog slot ${slot}: unknown record kind ${kind}`);
  if (kind === RecordKind.Setting) return decodeSetting(buf, off, slot);
  const nameLen = buf.readUInt16LE(off + 2);
  const view = viewOf(buf);
  const rec: CatalogRecord = {
    slot, kind, flags: buf.readUInt8(off + 1),
    id: getU64(view, off + 8), root: getU64(view, off + 16), sizeBytes: getU64(view, off + 24),
    mappedBlocks: getU64(view, off + 32), createdMs: getU64(view, off + 40), parentId: getU64(view, off + 48),
    originSnapId: getU64(view, off + 56), flattenCursor: getU64(view, off + 64), seq: getU64(view, off + 72),
    name: buf.toString('utf8', off + RECORD_NAME_OFFSET_BYTES, off + RECORD_NAME_OFFSET_BYTES + nameLen),
    keyId: buf.readUInt32LE(off + 4),
  };
  const streamGuid = kind === RecordKind.Snapshot ? decodeStreamGuid(buf, off) : undefined;
  if (streamGuid !== undefined) rec.streamGuid = streamGuid;
  return rec;
}

/** One volume's snapshots: by name (lookups) and oldest first by `seq` (lists, pages). */
export interface VolumeSnapshots {
  byName: Map<string, CatalogRecord>;
  bySeq: KeyOrder<CatalogRecord>;
}

export class Catalog {
  /** PoolOptions.fastPaths: false makes saveMappingNow decline (save() runs). */
  fastPaths = true;
  readonly array: RadixArray<CatalogPage>;
  readonly byId = new Map<number, CatalogRecord>();
  /** Live (not deleted) volumes by name, plus deleted ones kept while their snapshots exist. */
  readonly volumesByName = new Map<string, CatalogRecord>();
  /** Indexed so that no operation on one snapshot scans the others (100 000 per volume are expected). */
  readonly snapshotsByVolume = new Map<number, VolumeSnapshots>();
  /** Every snapshot of the pool by id (ids only grow, so a new snapshot is appended): the paged list. */
  readonly snapshotsById = new KeyOrder<CatalogRecord>((rec) => rec.id);
  /** Snapshots by their own name across volumes (CSI names are pool-wide): usually one each. */
  private readonly snapshotsByOwnName = new Map<string, CatalogRecord[]>();
  readonly deadNodes: CatalogRecord[] = [];
  /** Setting records by key. */
  readonly settings = new Map<string, CatalogRecord>();
  /** Volume and snapshot records (deleted-but-kept volumes too) per key slot: a lineage's key lives while it has one. */
  readonly keyUsers = new Map<number, number>();
  /** Called when the last record of a key slot leaves the catalog (the pool destroys the key once that is committed). */
  onKeyReleased: (keyId: number) => void = () => undefined;
  private readonly freeSlots: number[] = [];
  slotsUsed: number;

  constructor(private readonly store: MetaStore, rootBlock: number, slotsUsed: number, releaseOld: (block: number) => Promise<void>) {
    assert(Number.isSafeInteger(slotsUsed) && slotsUsed >= 0, 'used slots are a count');
    this.slotsUsed = slotsUsed;
    this.array = new RadixArray<CatalogPage>(
      store, rootBlock, CATALOG_RECORDS_MAX, CATALOG_RECORDS_PER_PAGE, MetaType.CatalogPage,
      () => catalogPageOf(0, 0, Buffer.alloc(CATALOG_RECORDS_PER_PAGE * CATALOG_RECORD_BYTES)),
      releaseOld,
    );
  }

  /** Reads every catalog page (no data blocks) and builds the in-memory indexes. */
  async load(): Promise<void> {
    // The slot count comes from the superblock: past the catalog's capacity it is damage, not a bug.
    if (!(this.slotsUsed >= 0 && this.slotsUsed <= CATALOG_RECORDS_MAX)) throw new PoolCorrupt(`superblock claims ${this.slotsUsed} catalog slots, more than ${CATALOG_RECORDS_MAX}`);
    const pages = Math.ceil(this.slotsUsed / CATALOG_RECORDS_PER_PAGE);
    const snapshots: CatalogRecord[] = [];
    const idsSeen = new Set<number>();
    // Pages are read a window at a time: one await per page made opening a pool with 100 000
    // snapshots (7 000 pages) take seconds of device round trips. The store shares in-flight reads.
    const window: Promise<CatalogPage | null>[] = [];
    for (let p = 0; p < pages; p++) {
      if (p % CATALOG_LOAD_PAGES_IN_FLIGHT === 0) {
        window.length = 0;
        for (let q = p; q < Math.min(pages, p + CATALOG_LOAD_PAGES_IN_FLIGHT); q++) {
          const read = this.array.page(q, false);
          read.catch(() => undefined); // awaited below, in order: a failure is thrown there, not lost
          window.push(read);
        }
      }
      const page = await window[p % CATALOG_LOAD_PAGES_IN_FLIGHT]!;
      for (let i = 0; i < CATALOG_RECORDS_PER_PAGE; i++) {
        const slot = p * CATALOG_RECORDS_PER_PAGE + i;
        if (slot >= this.slotsUsed) break;
        const rec = page ? decodeRecord(page.records, i * CATALOG_RECORD_BYTES, slot) : null;
        // Two records of one id or volume name on disk (each page checked out alone): the catalog
        // cannot tell which is meant, so the pool is refused rather than one of them silently lost.
        if (rec && rec.kind === RecordKind.Setting && this.settings.has(rec.name)) throw new PoolCorrupt(`setting ${rec.name} stored twice (slot ${slot})`);
        if (rec && rec.kind !== RecordKind.DeadNode && rec.kind !== RecordKind.Setting) {
          if (idsSeen.has(rec.id)) throw new PoolCorrupt(`catalog id ${rec.id} used twice (slot ${slot})`);
          idsSeen.add(rec.id);
        }
        if (rec && rec.kind === RecordKind.Volume && this.volumesByName.has(rec.name)) throw new PoolCorrupt(`volume name ${rec.name} used twice (slot ${slot})`);
        if (!rec) this.freeSlots.push(slot);
        else if (rec.kind === RecordKind.Snapshot) snapshots.push(rec);
        else this.index(rec);
      }
    }
    // Slots are reused, so slot order is not age order: indexed oldest first, every add is an append.
    snapshots.sort((a, b) => a.id - b.id);
    for (const rec of snapshots) this.index(rec);
    this.freeSlots.reverse();
  }

  private index(rec: CatalogRecord): void {
    assert(rec.kind !== RecordKind.Empty, 'an indexed record has a kind');
    if (rec.kind === RecordKind.DeadNode) { this.deadNodes.push(rec); return; }
    if (rec.kind === RecordKind.Setting) { this.settings.set(rec.name, rec); return; }
    this.byId.set(rec.id, rec);
    if (rec.keyId !== 0) this.keyUsers.set(rec.keyId, (this.keyUsers.get(rec.keyId) ?? 0) + 1);
    if (rec.kind === RecordKind.Volume) { this.volumesByName.set(rec.name, rec); return; }
    let snaps = this.snapshotsByVolume.get(rec.parentId);
    if (!snaps) this.snapshotsByVolume.set(rec.parentId, (snaps = { byName: new Map(), bySeq: new KeyOrder((r) => r.seq) }));
    snaps.byName.set(rec.name, rec);
    snaps.bySeq.add(rec);
    this.snapshotsById.add(rec);
    const named = this.snapshotsByOwnName.get(rec.name);
    if (named) named.push(rec); else this.snapshotsByOwnName.set(rec.name, [rec]);
  }

  private unindex(rec: CatalogRecord): void {
    assert(rec.kind === RecordKind.DeadNode || rec.kind === RecordKind.Setting || this.byId.get(rec.id) === rec, 'an unindexed record was indexed');
    if (rec.kind === RecordKind.Setting) {
      assert(this.settings.get(rec.name) === rec, 'an unindexed setting was indexed');
      this.settings.delete(rec.name);
      return;
    }
    if (rec.kind === RecordKind.DeadNode) {
      // The background free takes the queue's last record: searched from the end, that is O(1).
      const i = this.deadNodes.lastIndexOf(rec);
      if (i >= 0) this.deadNodes.splice(i, 1);
      return;
    }
    this.byId.delete(rec.id);
    if (rec.keyId !== 0) {
      const users = this.keyUsers.get(rec.keyId);
      assert(users !== undefined && users >= 1, 'a key slot counts the records that use it');
      if (users === 1) { this.keyUsers.delete(rec.keyId); this.onKeyReleased(rec.keyId); } else this.keyUsers.set(rec.keyId, users - 1);
    }
    if (rec.kind === RecordKind.Volume) {
      if (this.volumesByName.get(rec.name) === rec) this.volumesByName.delete(rec.name);
    } else {
      const snaps = this.snapshotsByVolume.get(rec.parentId);
      assert(snaps !== undefined, 'an indexed snapshot has its volume\'s index');
      // A damaged catalog may repeat a name (check reports it); the name then maps to one of them.
      if (snaps.byName.get(rec.name) === rec) snaps.byName.delete(rec.name);
      snaps.bySeq.remove(rec);
      this.snapshotsById.remove(rec);
      const named = this.snapshotsByOwnName.get(rec.name);
      const at = named ? named.indexOf(rec) : -1;
      assert(named !== undefined && at >= 0, 'an indexed snapshot is in the by-name index');
      named.splice(at, 1); // a handful at most: the same snapshot name on several volumes
      if (named.length === 0) this.snapshotsByOwnName.delete(rec.name);
      if (snaps.bySeq.size === 0) this.snapshotsByVolume.delete(rec.parentId);
    }
  }

  /**
   * save() for the data path, which changes only `root` and `mappedBlocks`: when the record's page is
   * dirty already (it is, from the second write of a transaction on), just those two fields are
   * written; the rest of the page's copy is current because every other change goes through save().
   * Re-encoding the whole record (name included) was ~5 % of the event loop under 4 KiB writes.
   */
  async saveMapping(rec: CatalogRecord): Promise<void> {
    assert(rec.kind === RecordKind.Volume, 'only a volume\'s mapping changes');
    if (!this.saveMappingNow(rec)) await this.save(rec);
  }

  /** Whether saveMappingNow(rec) will succeed (the record's page is loaded and dirty). */
  canSaveMappingNow(rec: CatalogRecord): boolean {
    assert(rec.kind === RecordKind.Volume, 'only a volume\'s mapping changes');
    return this.mappingPage(rec) !== undefined;
  }

  /** saveMapping() without awaiting; false, having written nothing, when the page is not dirty yet. */
  saveMappingNow(rec: CatalogRecord): boolean {
    this.store.assertHeld();
    const page = this.fastPaths ? this.mappingPage(rec) : undefined;
    if (page === undefined) return false;
    const off = (rec.slot % CATALOG_RECORDS_PER_PAGE) * CATALOG_RECORD_BYTES;
    const view = viewOf(page.records);
    assert(getU64(view, off + 8) === rec.id, 'a record\'s page slot holds it');
    setU64(view, off + 16, rec.root);
    setU64(view, off + 32, rec.mappedBlocks);
    return true;
  }

  /** The record's page when saveMappingNow may write into it: the record is current and its page dirty. */
  private mappingPage(rec: CatalogRecord): CatalogPage | undefined {
    assert(rec.slot >= 0, 'a saved record has a slot');
    if (this.byId.get(rec.id) !== rec) return undefined;
    return this.array.pageIfDirty(Math.floor(rec.slot / CATALOG_RECORDS_PER_PAGE));
  }

  /** Persists a record (new or changed) into its page. */
  async save(rec: CatalogRecord): Promise<void> {
    this.store.assertHeld();
    if (!(rec.kind === RecordKind.Empty || rec.kind === RecordKind.DeadNode || (rec.kind === RecordKind.Setting && this.settings.get(rec.name) === rec) || this.byId.get(rec.id) === rec)) {
      fail(`saving catalog record #${rec.id} that is no longer in the catalog`);
    }
    const pageIndex = Math.floor(rec.slot / CATALOG_RECORDS_PER_PAGE);
    const page = this.array.pageIfDirty(pageIndex) ?? (await this.array.page(pageIndex, true))!;
    encodeRecord(rec, page.records, (rec.slot % CATALOG_RECORDS_PER_PAGE) * CATALOG_RECORD_BYTES);
  }

  async add(fields: Omit<CatalogRecord, 'slot'>): Promise<CatalogRecord> {
    this.store.assertHeld();
    assert(fields.kind !== RecordKind.Empty, 'an added record has a kind');
    const slot = this.freeSlots.pop() ?? this.slotsUsed++;
    assert(slot < CATALOG_RECORDS_MAX, 'catalog capacity');
    const rec: CatalogRecord = { ...fields, slot };
    this.index(rec);
    await this.save(rec);
    return rec;
  }

  async remove(rec: CatalogRecord): Promise<void> {
    this.store.assertHeld();
    assert(rec.slot < this.slotsUsed, 'a removed record has a slot');
    this.unindex(rec);
    const empty: CatalogRecord = { ...rec, kind: RecordKind.Empty };
    await this.save(empty);
    this.freeSlots.push(rec.slot);
  }

  /** Stores (value) or removes (null) the setting `key`; the caller checked its size. */
  async putSetting(key: string, value: Buffer | null): Promise<void> {
    this.store.assertHeld();
    const old = this.settings.get(key);
    if (value === null) { if (old !== undefined) await this.remove(old); return; }
    if (old !== undefined) { old.value = Buffer.from(value); await this.save(old); return; }
    await this.add({
      kind: RecordKind.Setting, flags: 0, id: 0, root: 0, sizeBytes: 0, mappedBlocks: 0, createdMs: 0, parentId: 0,
      originSnapId: 0, flattenCursor: 0, seq: 0, name: key, value: Buffer.from(value), keyId: 0,
    });
  }

  /** A volume's snapshots, oldest first: O(its snapshots), for lists only. */
  snapshotsOf(volumeId: number): CatalogRecord[] {
    assert(volumeId > 0, 'snapshots of a volume id');
    return this.snapshotsByVolume.get(volumeId)?.bySeq.values() ?? [];
  }

  /** The snapshots called `name` (the part after "@") on any volume. */
  snapshotsNamed(name: string): readonly CatalogRecord[] { return this.snapshotsByOwnName.get(name) ?? []; }

  snapshotCountOf(volumeId: number): number {
    assert(volumeId > 0, 'snapshots are counted per volume id');
    return this.snapshotsByVolume.get(volumeId)?.bySeq.size ?? 0;
  }

  /** O(1): the snapshot `name` of the volume `volumeId`, if any. */
  snapshotNamed(volumeId: number, name: string): CatalogRecord | undefined {
    assert(volumeId > 0, 'snapshots are looked up per volume id');
    return this.snapshotsByVolume.get(volumeId)?.byName.get(name);
  }

  /** Live volumes (not deleted ones kept for their snapshots): O(volumes), never O(snapshots). */
  liveVolumeCount(): number {
    let count = 0;
    for (const rec of this.volumesByName.values()) if ((rec.flags & FLAG_DELETED) === 0) count++;
    assert(count <= this.byId.size, 'every live volume has an id');
    return count;
  }
}
