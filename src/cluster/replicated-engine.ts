// The Engine a cluster node serves: data I/O of a volume with a record runs on its primary only
// (fanned out to the in-sync members; NotPrimary elsewhere), catalog calls run on the primary
// (forwarded when it is another node), and the cluster's checkpoint snapshots are hidden.
import {
  SnapshotNotFound, dataLength, type Engine, type SnapshotCreateOptions, type SnapshotInfo, type SnapshotPage, type SnapshotPageRequest, type Target,
  type VolumeCreateOptions, type VolumeInfo, type WriteData, type WriteOptions, type ZeroOptions,
} from '../engine/index.js';
import { ForwardingEngine } from '../decorators/forwarding-engine.js';
import { isHiddenFullName, isHiddenSnapshot } from './checkpoints.js';
import { visibleInfo } from './catalog.js';
import type { VolumePrimary } from './primary.js';
import type { ClusterNode } from './node.js';

function volOf(fullName: string): string {
  const at = fullName.indexOf('@');
  return at < 0 ? fullName : fullName.slice(0, at);
}

function asBuffer(data: WriteData): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
}

export class ReplicatedEngine extends ForwardingEngine {
  /** Target id → volume name (null: a snapshot), for the data path (ids are this pool's; records are by name). */
  private readonly names = new Map<number, string | null>();

  constructor(inner: Engine, private readonly node: ClusterNode) { super(inner); }

  override resolve(name: string): Target {
    const target = super.resolve(name);
    this.names.set(target.id, target.readOnly ? null : name);
    return target;
  }

  /** The primary state when `id` is a volume with a record (NotPrimary when not served here), else null. */
  private route(id: number): { vp: VolumePrimary; vol: string } | null {
    let vol = this.names.get(id);
    if (vol === undefined) {
      // An id resolved below this layer: looked up once (ids are never reused, so the answer keeps).
      vol = super.listVolumes().find((v) => v.id === id)?.name ?? null;
      this.names.set(id, vol);
    }
    if (vol === null || this.node.record(vol) === null) return null;
    return { vp: this.node.primaryFor(vol), vol };
  }

  override read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    try {
      this.route(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return super.read(id, offsetBytes, lengthBytes, into);
  }

  /**
   * Whether a request lies inside the volume: one that does not goes to the local engine alone for its
   * error, never to the members (the primary applies a request here and on them at once).
   */
  private inRange(id: number, offsetBytes: number, lengthBytes: number): boolean {
    return Number.isSafeInteger(offsetBytes) && Number.isSafeInteger(lengthBytes) && offsetBytes >= 0 && lengthBytes >= 0
      && offsetBytes + lengthBytes <= this.inner.targetSizeBytes(id);
  }

  override async write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    const r = this.route(id);
    if (r === null || !this.inRange(id, offsetBytes, dataLength(data))) return super.write(id, offsetBytes, data, opts);
    const buf = asBuffer(data);
    const fua = opts?.fua === true;
    await r.vp.data(offsetBytes, buf.length, () => this.inner.write(id, offsetBytes, buf, opts),
      (epoch, m, seq) => ({ t: 'write', vol: r.vol, epoch, seq: seq(), incarnation: m.incarnation, offsetBytes, data: buf, fua }));
  }

  override async trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    const r = this.route(id);
    if (r === null || !this.inRange(id, offsetBytes, lengthBytes)) return super.trim(id, offsetBytes, lengthBytes, opts);
    const fua = opts?.fua === true;
    await r.vp.data(offsetBytes, lengthBytes, () => this.inner.trim(id, offsetBytes, lengthBytes, opts),
      (epoch, m, seq) => ({ t: 'trim', vol: r.vol, epoch, seq: seq(), incarnation: m.incarnation, offsetBytes, lengthBytes, fua }));
  }

  override async writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    const r = this.route(id);
    if (r === null || !this.inRange(id, offsetBytes, lengthBytes)) return super.writeZeroes(id, offsetBytes, lengthBytes, opts);
    const fua = opts?.fua === true;
    const noHole = opts?.noHole === true;
    await r.vp.data(offsetBytes, lengthBytes, () => this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts),
      (epoch, m, seq) => ({ t: 'zero', vol: r.vol, epoch, seq: seq(), incarnation: m.incarnation, offsetBytes, lengthBytes, fua, noHole }));
  }

  override flush(): Promise<void> { return this.node.catalog.flush(); }

  // ---- catalog ----

  override async createVolume(name: string, sizeBytes: number, opts?: VolumeCreateOptions): Promise<VolumeInfo> {
    return (await this.node.catalog.create(name, sizeBytes, null, opts)).info;
  }

  /** createVolume with an explicit replica count (the API's `replicas`). */
  async createReplicated(name: string, sizeBytes: number, replicas: number | null, opts?: VolumeCreateOptions): Promise<VolumeInfo> {
    return (await this.node.catalog.create(name, sizeBytes, replicas, opts)).info;
  }

  override cloneVolume(name: string, source: string): Promise<VolumeInfo> {
    const vol = volOf(source);
    if (this.node.record(vol) === null) return super.cloneVolume(name, source);
    return this.node.catalog.routed(vol, 'cloneVolume', [name, source], () => this.node.catalog.clone(name, source));
  }

  override resizeVolume(name: string, sizeBytes: number, opts?: { allowShrink?: boolean }): Promise<VolumeInfo> {
    if (this.node.record(name) === null) return super.resizeVolume(name, sizeBytes, opts);
    const allowShrink = opts?.allowShrink === true;
    return this.node.catalog.routed(name, 'resizeVolume', [name, sizeBytes, allowShrink], () => this.node.catalog.resize(name, sizeBytes, allowShrink));
  }

  override deleteVolume(name: string): Promise<void> {
    if (this.node.record(name) === null) return super.deleteVolume(name);
    return this.node.catalog.routed(name, 'deleteVolume', [name], () => this.node.catalog.delete(name));
  }

  override revertVolume(name: string, snapshot: string): Promise<VolumeInfo> {
    if (this.node.record(name) === null) return super.revertVolume(name, snapshot);
    return this.node.catalog.routed(name, 'revertVolume', [name, snapshot], () => this.node.catalog.revert(name, snapshot));
  }

  override flattenVolume(name: string, onProgress?: (fraction: number) => void): Promise<VolumeInfo> {
    if (this.node.record(name) === null) return super.flattenVolume(name, onProgress);
    return this.node.catalog.routed(name, 'flattenVolume', [name], () => this.node.catalog.flatten(name));
  }

  override createSnapshots(fullNames: string[], opts?: SnapshotCreateOptions): Promise<SnapshotInfo[]> {
    const replicated = fullNames.map(volOf).filter((v) => this.node.record(v) !== null);
    if (replicated.length === 0) return super.createSnapshots(fullNames, opts);
    return this.node.catalog.routed(replicated[0]!, 'createSnapshots', [fullNames], () => this.node.catalog.createSnapshots(fullNames, opts));
  }

  override deleteSnapshot(fullName: string): Promise<void> {
    const vol = volOf(fullName);
    if (this.node.record(vol) === null) return super.deleteSnapshot(fullName);
    return this.node.catalog.routed(vol, 'deleteSnapshot', [fullName], () => this.node.catalog.deleteSnapshot(fullName));
  }

  // ---- views without the checkpoints ----

  override listVolumes(): VolumeInfo[] { return super.listVolumes().map((v) => this.visible(v)); }
  override getVolume(name: string): VolumeInfo { return this.visible(super.getVolume(name)); }
  override getSnapshot(fullName: string): SnapshotInfo {
    if (isHiddenFullName(fullName)) throw new SnapshotNotFound(fullName);
    return super.getSnapshot(fullName);
  }

  /** Only a volume of the cluster can have checkpoints: the others are returned as they are. */
  private visible(info: VolumeInfo): VolumeInfo { return this.node.record(info.name) === null ? info : visibleInfo(info); }
  override listSnapshots(volume?: string): SnapshotInfo[] { return super.listSnapshots(volume).filter((s) => !isHiddenSnapshot(s.name)); }
  override findSnapshot(fullName: string): SnapshotInfo | null { return isHiddenFullName(fullName) ? null : super.findSnapshot(fullName); }
  override findSnapshotsNamed(name: string): SnapshotInfo[] { return isHiddenSnapshot(name) ? [] : super.findSnapshotsNamed(name); }
  override listSnapshotsPage(request: SnapshotPageRequest): SnapshotPage {
    const page = super.listSnapshotsPage(request);
    return { ...page, snapshots: page.snapshots.filter((s) => !isHiddenSnapshot(s.name)) };
  }
}
