// One tenant's view of the engine: the Engine interface over only that tenant's volumes, under the
// names the tenant knows them by ("db", "db@snap"), for the API and the NBD server alike. A name of
// another tenant cannot even be spelled (a '/' in a name is "not found"), lists hold only the tenant's
// own, and I/O by id reaches only targets this view resolved. Pool-wide actions (check, grow, close,
// settings) are refused: they belong to an admin, who uses the engine itself.
import {
  SnapshotNotFound, VolumeNotFound, type ByteRange, type CheckReport, type Engine, type Extent, type PoolStats, type Setting,
  type SettingChange, type SnapshotCreateOptions, type SnapshotInfo, type SnapshotPage, type SnapshotPageRequest, type SpaceUsage,
  type Target, type TargetEvent, type VolumeInfo, type WriteData, type WriteOptions, type ZeroOptions, type KeyInfo, type VolumeCreateOptions,
} from '../engine/index.js';
import { DEFAULT_TENANT, qualify, splitQualified } from './names.js';
import { TenancyError } from './errors.js';

/** How many engine pages a filtered snapshot page may read before answering with what it has. */
const SNAPSHOT_PAGE_SCAN_MAX = 64;

export class ScopedEngine implements Engine {
  /** Ids this view resolved: I/O by any other id is refused as if the target did not exist. */
  private readonly ids = new Set<number>();
  private readonly prefix: string;

  constructor(private readonly inner: Engine, readonly tenant: string) {
    this.prefix = tenant === DEFAULT_TENANT ? '' : `${tenant}/`;
  }

  /** Whether an engine volume name belongs to this tenant. */
  owns(engineName: string): boolean { return splitQualified(engineName).tenant === this.tenant; }

  /**
   * The engine's name for the tenant's "VOL" or "VOL@SNAP". A name of another tenant ("T/VOL", "T/VOL@S")
   * fails as the engine fails a volume that does not exist (for "VOL@S" it names the volume part), so
   * the answer is the same whether or not the other tenant has it.
   */
  private in(ref: string, what: 'volume' | 'snapshot' = 'volume'): string {
    if (typeof ref !== 'string') throw what === 'volume' ? new VolumeNotFound(String(ref)) : new SnapshotNotFound(String(ref));
    const at = ref.indexOf('@');
    const volume = at < 0 ? ref : ref.slice(0, at);
    if (volume.includes('/')) throw new VolumeNotFound(volume);
    return qualify(this.tenant, ref);
  }

  private out(engineName: string): string {
    return this.prefix !== '' && engineName.startsWith(this.prefix) ? engineName.slice(this.prefix.length) : engineName;
  }

  private volumeOut(v: VolumeInfo): VolumeInfo {
    const origin = v.origin === null ? null : { volume: this.out(v.origin.volume), snapshot: v.origin.snapshot };
    // `snapshots` is a getter built on first read: keep it lazy.
    return Object.defineProperties({ ...v, name: this.out(v.name), origin }, { snapshots: { get: () => v.snapshots, enumerable: true } });
  }

  private snapshotOut(s: SnapshotInfo): SnapshotInfo {
    return { ...s, volume: this.out(s.volume), fullName: this.out(s.fullName) };
  }

  /** Runs `fn`, rewriting the engine's names in an error message to the tenant's. */
  private named<T>(fn: () => T): T {
    try {
      const result = fn();
      if (result instanceof Promise) return result.catch((err: unknown) => { throw this.rename(err); }) as T;
      return result;
    } catch (err) {
      throw this.rename(err);
    }
  }

  private rename(err: unknown): unknown {
    if (this.prefix !== '' && err instanceof Error) err.message = err.message.split(this.prefix).join('');
    return err;
  }

  private own(id: number): number {
    if (!this.ids.has(id)) throw new VolumeNotFound(`#${id}`);
    return id;
  }

  private refused(what: string): never {
    throw new TenancyError('forbidden', `${what} is an administrator's action`);
  }

  // ---- pool ----

  stats(): PoolStats {
    const s = this.inner.stats();
    const volumes = this.listVolumes();
    let snapshots = 0;
    for (const v of volumes) snapshots += v.snapshotCount;
    return { ...s, volumes: volumes.length, snapshots };
  }
  check(): Promise<CheckReport> { return this.refused('check'); }
  growPool(): Promise<PoolStats> { return this.refused('growing the pool'); }
  close(): Promise<void> { return this.refused('closing the pool'); }
  checkpoint(): Promise<void> { return this.inner.checkpoint(); }
  getSetting(): Buffer | null { return this.refused('reading settings'); }
  listSettings(): Setting[] { return this.refused('reading settings'); }
  putSettings(_changes: SettingChange[]): Promise<void> { return this.refused('changing settings'); }

  // ---- volumes ----

  listVolumes(): VolumeInfo[] {
    return this.inner.listVolumes().filter((v) => this.owns(v.name)).map((v) => this.volumeOut(v));
  }
  getVolume(name: string): VolumeInfo { return this.named(() => this.volumeOut(this.inner.getVolume(this.in(name)))); }
  createVolume(name: string, sizeBytes: number, opts?: VolumeCreateOptions): Promise<VolumeInfo> {
    return this.named(async () => this.volumeOut(await this.inner.createVolume(this.in(name), sizeBytes, opts)));
  }
  cloneVolume(name: string, source: string): Promise<VolumeInfo> {
    return this.named(async () => this.volumeOut(await this.inner.cloneVolume(this.in(name), this.in(source))));
  }
  resizeVolume(name: string, sizeBytes: number, opts?: { allowShrink?: boolean }): Promise<VolumeInfo> {
    return this.named(async () => this.volumeOut(await this.inner.resizeVolume(this.in(name), sizeBytes, opts)));
  }
  deleteVolume(name: string): Promise<void> { return this.named(() => this.inner.deleteVolume(this.in(name))); }
  revertVolume(name: string, snapshot: string): Promise<VolumeInfo> {
    return this.named(async () => this.volumeOut(await this.inner.revertVolume(this.in(name), snapshot)));
  }
  flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    return this.named(async () => this.volumeOut(await this.inner.flattenVolume(this.in(name), onProgress)));
  }
  flattenWasUnderWayAtOpen(name: string): boolean { return this.named(() => this.inner.flattenWasUnderWayAtOpen(this.in(name))); }

  // ---- snapshots ----

  createSnapshots(fullNames: string[], opts?: SnapshotCreateOptions): Promise<SnapshotInfo[]> {
    return this.named(async () => (await this.inner.createSnapshots(fullNames.map((n) => this.in(n)), opts)).map((s) => this.snapshotOut(s)));
  }
  listSnapshots(volume?: string): SnapshotInfo[] {
    if (volume !== undefined) return this.named(() => this.inner.listSnapshots(this.in(volume)).map((s) => this.snapshotOut(s)));
    return this.inner.listSnapshots().filter((s) => this.owns(s.volume)).map((s) => this.snapshotOut(s));
  }
  getSnapshot(fullName: string): SnapshotInfo { return this.named(() => this.snapshotOut(this.inner.getSnapshot(this.in(fullName, 'snapshot')))); }
  snapshotStreamGuid(fullName: string): string { return this.named(() => this.inner.snapshotStreamGuid(this.in(fullName, 'snapshot'))); }
  adoptStreamGuids(): Promise<number> { return this.refused('adopting stream identities'); }
  findSnapshot(fullName: string): SnapshotInfo | null {
    if (fullName.includes('/')) return null;
    const s = this.named(() => this.inner.findSnapshot(this.in(fullName, 'snapshot')));
    return s === null ? null : this.snapshotOut(s);
  }
  findSnapshotsNamed(name: string): SnapshotInfo[] {
    return this.inner.findSnapshotsNamed(name).filter((s) => this.owns(s.volume)).map((s) => this.snapshotOut(s));
  }
  listSnapshotsPage(request: SnapshotPageRequest): SnapshotPage {
    if (request.volume !== undefined) {
      const page = this.named(() => this.inner.listSnapshotsPage({ ...request, volume: this.in(request.volume!) }));
      return { snapshots: page.snapshots.map((s) => this.snapshotOut(s)), more: page.more };
    }
    // Pool-wide pages hold every tenant's snapshots: read pages until this tenant's fill one (bounded;
    // a short page with `more` set is still a correct page). An empty one is not: it has no last id
    // to go on from, so the caller (NBD LIST, API paging) would stop there. Until one is found, the
    // scan goes on (at most the pool's snapshots once).
    const out: SnapshotInfo[] = [];
    let afterId = request.afterId ?? 0;
    for (let scans = 0; scans < SNAPSHOT_PAGE_SCAN_MAX || out.length === 0; scans++) {
      const page = this.inner.listSnapshotsPage({ afterId, limit: request.limit });
      for (const s of page.snapshots) {
        afterId = s.id;
        if (!this.owns(s.volume)) continue;
        out.push(this.snapshotOut(s));
        if (out.length === request.limit) return { snapshots: out, more: true };
      }
      if (!page.more) return { snapshots: out, more: false };
    }
    return { snapshots: out, more: true };
  }
  deleteSnapshot(fullName: string): Promise<void> { return this.named(() => this.inner.deleteSnapshot(this.in(fullName, 'snapshot'))); }
  diff(from: string, to: string): Promise<ByteRange[]> { return this.named(() => this.inner.diff(this.in(from, 'snapshot'), this.in(to))); }
  spaceUsage(name: string): Promise<SpaceUsage> { return this.named(() => this.inner.spaceUsage(this.in(name))); }

  // ---- I/O ----

  resolve(name: string): Target {
    return this.named(() => {
      const t = this.inner.resolve(this.in(name));
      this.ids.add(t.id);
      return { ...t, name: this.out(t.name) };
    });
  }
  targetSizeBytes(id: number): number { return this.inner.targetSizeBytes(this.own(id)); }
  read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    return this.inner.read(this.own(id), offsetBytes, lengthBytes, into);
  }
  write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    return this.inner.write(this.own(id), offsetBytes, data, opts);
  }
  trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    return this.inner.trim(this.own(id), offsetBytes, lengthBytes, opts);
  }
  writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    return this.inner.writeZeroes(this.own(id), offsetBytes, lengthBytes, opts);
  }
  flush(): Promise<void> { return this.inner.flush(); }
  extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> { return this.inner.extents(this.own(id), offsetBytes, lengthBytes); }
  changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    return this.named(() => this.inner.changedSince(this.own(id), this.in(sinceFullName, 'snapshot'), offsetBytes, lengthBytes));
  }
  onTargetEvent(listener: (event: TargetEvent) => void): () => void { return this.inner.onTargetEvent(listener); }

  // ---- encryption: keys are the key manager's (an admin's), sealed I/O is the tenant's own ----

  listKeys(): KeyInfo[] {
    return this.inner.listKeys().filter((k) => k.members.length > 0 && k.members.every((m) => this.owns(m.split('@')[0]!)))
      .map((k) => ({ ...k, members: k.members.map((m) => this.out(m)) }));
  }
  /** A tenant may offer a data key for its own lineage (a raw import checks its target this way): the key-check value decides. */
  unlockKey(keyId: number, dek: Buffer): void {
    if (!this.listKeys().some((k) => k.keyId === keyId)) throw new VolumeNotFound(`key slot ${keyId}`);
    this.inner.unlockKey(keyId, dek);
  }
  lockKey(): void { this.refused('locking keys'); }
  rewrapKey(): Promise<void> { return this.refused('re-wrapping keys'); }
  readSealed(id: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> { return this.inner.readSealed(this.own(id), offsetBytes, lengthBytes); }
  writeSealed(id: number, offsetBytes: number, data: Buffer): Promise<void> { return this.inner.writeSealed(this.own(id), offsetBytes, data); }
}
