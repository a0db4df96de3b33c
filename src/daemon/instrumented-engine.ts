// An Engine decorator that counts and times every data call (read, write, trim, write-zeroes, flush,
// extents, changedSince) per volume into Metrics. It implements the whole Engine interface, so the
// NBD server and the API receive it in place of the engine and cannot tell the difference.
import type {
  ByteRange, CheckReport, Engine, Extent, PoolStats, Setting, SettingChange, SnapshotCreateOptions, SnapshotInfo, SnapshotPage, SnapshotPageRequest, SpaceUsage, Target,
  TargetEvent, VolumeInfo, WriteData, WriteOptions, ZeroOptions,
} from '../engine/index.js';
import { dataLength } from '../engine/index.js';
import type { Metrics } from './metrics.js';

export class InstrumentedEngine implements Engine {
  private readonly names = new Map<number, string>();
  constructor(private readonly inner: Engine, private readonly metrics: Metrics) {}

  private nameOf(id: number): string {
    const known = this.names.get(id);
    if (known !== undefined) return known;
    const v = this.inner.listVolumes().find((x) => x.id === id);
    // A snapshot by id through the paged list (O(log count)): listing every snapshot here cost O(count)
    // on the first I/O of each of 100 000 snapshots.
    const page = v === undefined ? this.inner.listSnapshotsPage({ afterId: id - 1, limit: 1 }).snapshots : [];
    const s = page[0]?.id === id ? page[0] : undefined;
    const name = this.metrics.label(v?.name ?? s?.fullName ?? `id-${id}`);
    this.names.set(id, name);
    return name;
  }

  private async timed<T>(op: string, id: number | null, bytes: number, work: () => Promise<T>): Promise<T> {
    const labels = { volume: id === null ? 'pool' : this.nameOf(id), op };
    const end = this.metrics.ioSeconds.startTimer(labels);
    try {
      const result = await work();
      this.metrics.ioOps.inc(labels);
      if (bytes > 0) this.metrics.ioBytes.inc(labels, bytes);
      return result;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      this.metrics.ioErrors.inc({ ...labels, code: typeof code === 'string' ? code : 'unknown' });
      throw err;
    } finally {
      end();
    }
  }

  // Data path: instrumented.
  read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    return this.timed('read', id, lengthBytes, () => this.inner.read(id, offsetBytes, lengthBytes, into));
  }
  write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    return this.timed('write', id, dataLength(data), () => this.inner.write(id, offsetBytes, data, opts));
  }
  trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    return this.timed('trim', id, lengthBytes, () => this.inner.trim(id, offsetBytes, lengthBytes, opts));
  }
  writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    return this.timed('write_zeroes', id, lengthBytes, () => this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts));
  }
  flush(): Promise<void> { return this.timed('flush', null, 0, () => this.inner.flush()); }
  checkpoint(): Promise<void> { return this.inner.checkpoint(); }
  extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    return this.timed('extents', id, 0, () => this.inner.extents(id, offsetBytes, lengthBytes));
  }
  changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    return this.timed('changed_since', id, 0, () => this.inner.changedSince(id, sinceFullName, offsetBytes, lengthBytes));
  }
  resolve(name: string): Target {
    const target = this.inner.resolve(name);
    this.names.set(target.id, this.metrics.label(target.name));
    return target;
  }

  // Control path: delegated as is.
  stats(): PoolStats { return this.inner.stats(); }
  check(): Promise<CheckReport> { return this.inner.check(); }
  growPool(sizeBytes?: number): Promise<PoolStats> { return this.inner.growPool(sizeBytes); }
  close(): Promise<void> { return this.inner.close(); }
  getSetting(key: string): Buffer | null { return this.inner.getSetting(key); }
  listSettings(prefix: string): Setting[] { return this.inner.listSettings(prefix); }
  putSettings(changes: SettingChange[]): Promise<void> { return this.inner.putSettings(changes); }
  listVolumes(): VolumeInfo[] { return this.inner.listVolumes(); }
  getVolume(name: string): VolumeInfo { return this.inner.getVolume(name); }
  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> { return this.inner.createVolume(name, sizeBytes); }
  cloneVolume(name: string, source: string): Promise<VolumeInfo> { return this.inner.cloneVolume(name, source); }
  resizeVolume(name: string, sizeBytes: number, opts?: { allowShrink?: boolean }): Promise<VolumeInfo> {
    return this.inner.resizeVolume(name, sizeBytes, opts);
  }
  deleteVolume(name: string): Promise<void> { return this.inner.deleteVolume(name); }
  revertVolume(name: string, snapshot: string): Promise<VolumeInfo> { return this.inner.revertVolume(name, snapshot); }
  flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    return this.inner.flattenVolume(name, onProgress);
  }
  createSnapshots(fullNames: string[], opts?: SnapshotCreateOptions): Promise<SnapshotInfo[]> { return this.inner.createSnapshots(fullNames, opts); }
  listSnapshots(volume?: string): SnapshotInfo[] { return this.inner.listSnapshots(volume); }
  getSnapshot(fullName: string): SnapshotInfo { return this.inner.getSnapshot(fullName); }
  snapshotStreamGuid(fullName: string): string { return this.inner.snapshotStreamGuid(fullName); }
  adoptStreamGuids(guids: ReadonlyMap<number, string>): Promise<number> { return this.inner.adoptStreamGuids(guids); }
  findSnapshot(fullName: string): SnapshotInfo | null { return this.inner.findSnapshot(fullName); }
  findSnapshotsNamed(name: string): SnapshotInfo[] { return this.inner.findSnapshotsNamed(name); }
  listSnapshotsPage(request: SnapshotPageRequest): SnapshotPage { return this.inner.listSnapshotsPage(request); }
  deleteSnapshot(fullName: string): Promise<void> { return this.inner.deleteSnapshot(fullName); }
  diff(from: string, to: string): Promise<ByteRange[]> { return this.inner.diff(from, to); }
  spaceUsage(name: string): Promise<SpaceUsage> { return this.inner.spaceUsage(name); }
  targetSizeBytes(id: number): number { return this.inner.targetSizeBytes(id); }
  onTargetEvent(listener: (event: TargetEvent) => void): () => void { return this.inner.onTargetEvent(listener); }
}
