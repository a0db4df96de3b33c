// A base for Engine decorators (metrics, QoS): every call goes to `inner` as it is, so a decorator
// overrides only the calls it changes and a method added to Engine needs no edit in each of them.
import type {
  ByteRange, CheckReport, Engine, Extent, PoolStats, Setting, SettingChange, SnapshotCreateOptions, SnapshotInfo, SnapshotPage,
  SnapshotPageRequest, SpaceUsage, Target, TargetEvent, VolumeInfo, WriteData, WriteOptions, ZeroOptions, KeyInfo, VolumeCreateOptions,
} from '../engine/index.js';

export class ForwardingEngine implements Engine {
  constructor(protected readonly inner: Engine) {}

  read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> { return this.inner.read(id, offsetBytes, lengthBytes, into); }
  write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> { return this.inner.write(id, offsetBytes, data, opts); }
  trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> { return this.inner.trim(id, offsetBytes, lengthBytes, opts); }
  writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    return this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts);
  }
  flush(): Promise<void> { return this.inner.flush(); }
  extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> { return this.inner.extents(id, offsetBytes, lengthBytes); }
  changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    return this.inner.changedSince(id, sinceFullName, offsetBytes, lengthBytes);
  }
  resolve(name: string): Target { return this.inner.resolve(name); }
  checkpoint(): Promise<void> { return this.inner.checkpoint(); }
  stats(): PoolStats { return this.inner.stats(); }
  check(): Promise<CheckReport> { return this.inner.check(); }
  growPool(sizeBytes?: number): Promise<PoolStats> { return this.inner.growPool(sizeBytes); }
  close(): Promise<void> { return this.inner.close(); }
  getSetting(key: string): Buffer | null { return this.inner.getSetting(key); }
  listSettings(prefix: string): Setting[] { return this.inner.listSettings(prefix); }
  putSettings(changes: SettingChange[]): Promise<void> { return this.inner.putSettings(changes); }
  listVolumes(): VolumeInfo[] { return this.inner.listVolumes(); }
  getVolume(name: string): VolumeInfo { return this.inner.getVolume(name); }
  createVolume(name: string, sizeBytes: number, opts?: VolumeCreateOptions): Promise<VolumeInfo> { return this.inner.createVolume(name, sizeBytes, opts); }
  cloneVolume(name: string, source: string): Promise<VolumeInfo> { return this.inner.cloneVolume(name, source); }
  resizeVolume(name: string, sizeBytes: number, opts?: { allowShrink?: boolean }): Promise<VolumeInfo> {
    return this.inner.resizeVolume(name, sizeBytes, opts);
  }
  deleteVolume(name: string): Promise<void> { return this.inner.deleteVolume(name); }
  revertVolume(name: string, snapshot: string): Promise<VolumeInfo> { return this.inner.revertVolume(name, snapshot); }
  flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    return this.inner.flattenVolume(name, onProgress);
  }
  flattenWasUnderWayAtOpen(name: string): boolean { return this.inner.flattenWasUnderWayAtOpen(name); }
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
  listKeys(): KeyInfo[] { return this.inner.listKeys(); }
  unlockKey(keyId: number, dek: Buffer): void { this.inner.unlockKey(keyId, dek); }
  lockKey(keyId: number): void { this.inner.lockKey(keyId); }
  rewrapKey(keyId: number, wrapped: Buffer): Promise<void> { return this.inner.rewrapKey(keyId, wrapped); }
  readSealed(id: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> { return this.inner.readSealed(id, offsetBytes, lengthBytes); }
  writeSealed(id: number, offsetBytes: number, data: Buffer): Promise<void> { return this.inner.writeSealed(id, offsetBytes, data); }
}
