// The CSI Controller service: volumes, clones, snapshots and expansion through the daemon's
// REST API only. Volume id = Cairn volume name; snapshot id = "VOL@SNAP". Every create is
// idempotent by name (CSI spec, CreateVolume/CreateSnapshot: same name and arguments → the same
// object; same name with other arguments → ALREADY_EXISTS).
import { ApiProblem, CairnApi, problemToCsi, type ApiPage, type ApiSnapshot, type ApiVolume, apiPageItemsMax } from './api-client.js';
import { checkCapabilityShape, unsupportedReason } from './capabilities.js';
import { blockSizeBytes, poolFreeBytesMin, volumeSizeBytesDefault } from './constants.js';
import { aborted, alreadyExists, CsiError, Status, invalidArgument, notFound, outOfRange, resourceExhausted, unimplemented } from './errors.js';
import type {
  CapacityRange, CreateVolumeRequest, StringMap, Snapshot, Volume, VolumeCapability, VolumeCondition, VolumeContentSource,
} from './messages.js';
import { cairnNameFor, decodeApiPageToken, encodeApiPageToken, parseSnapshotId } from './names.js';
import { OperationLocks } from './locks.js';
import { checkParameters } from './parameters.js';

const roundUp = (bytes: number): number => Math.ceil(bytes / blockSizeBytes) * blockSizeBytes;
const roundDown = (bytes: number): number => Math.floor(bytes / blockSizeBytes) * blockSizeBytes;

interface Bounds { requiredBytes: number; limitBytes: number }

/** CSI spec, CapacityRange: 0 means unset; negative values are invalid. */
function boundsOf(range: CapacityRange | null | undefined): Bounds {
  const requiredBytes = range?.required_bytes ?? 0;
  const limitBytes = range?.limit_bytes ?? 0;
  if (requiredBytes < 0 || limitBytes < 0) throw invalidArgument('capacity_range must not be negative');
  if (limitBytes !== 0 && limitBytes < requiredBytes) {
    throw outOfRange(`capacity_range limit_bytes ${limitBytes} is below required_bytes ${requiredBytes}`);
  }
  return { requiredBytes, limitBytes };
}

/**
 * The size to create: required rounded up to 4 KiB, at least `minimumBytes` (a clone's source
 * size), within the limit (OUT_OF_RANGE if not). Without a range: the source size, or 1 GiB.
 */
function sizeFor(bounds: Bounds, minimumBytes: number): number {
  let sizeBytes = bounds.requiredBytes > 0 ? roundUp(bounds.requiredBytes) : 0;
  if (sizeBytes === 0 && minimumBytes === 0) {
    sizeBytes = bounds.limitBytes > 0 ? Math.min(volumeSizeBytesDefault, roundDown(bounds.limitBytes)) : volumeSizeBytesDefault;
  }
  sizeBytes = Math.max(sizeBytes, minimumBytes);
  if (sizeBytes === 0 || (bounds.limitBytes !== 0 && sizeBytes > bounds.limitBytes)) {
    throw outOfRange(`no size in 4 KiB units of at least ${Math.max(bounds.requiredBytes, minimumBytes)} bytes`
      + ` fits limit_bytes ${bounds.limitBytes}`);
  }
  return sizeBytes;
}

const fits = (sizeBytes: number, b: Bounds): boolean =>
  sizeBytes >= b.requiredBytes && (b.limitBytes === 0 || sizeBytes <= b.limitBytes);

/** The content source a Cairn volume carries, from its origin. */
function contentSourceOf(vol: ApiVolume): VolumeContentSource | null {
  if (!vol.origin) return null;
  if (vol.origin.snapshot !== null) {
    return { snapshot: { snapshot_id: `${vol.origin.volume}@${vol.origin.snapshot}` }, type: 'snapshot' };
  }
  return { volume: { volume_id: vol.origin.volume }, type: 'volume' };
}

function toCsiVolume(vol: ApiVolume): Volume {
  return { capacity_bytes: vol.sizeBytes, volume_id: vol.name, volume_context: {}, content_source: contentSourceOf(vol) };
}

function toCsiSnapshot(snap: ApiSnapshot): Snapshot {
  return {
    size_bytes: snap.sizeBytes,
    snapshot_id: snap.fullName,
    source_volume_id: snap.volume,
    creation_time: { seconds: Math.floor(snap.createdMs / 1000), nanos: (snap.createdMs % 1000) * 1_000_000 },
    ready_to_use: true, // a Cairn snapshot is complete when its create call returns
  };
}

function checkCapabilities(caps: VolumeCapability[] | undefined, what: string): VolumeCapability[] {
  if (!caps || caps.length === 0) throw invalidArgument(`${what}: volume_capabilities is required`);
  for (const cap of caps) checkCapabilityShape(cap, what);
  return caps;
}

/** "VOL@SNAP" or "VOL" that the request asks to clone, or null. */
function requestedSource(src: VolumeContentSource | null | undefined): { from: string; kind: 'snapshot' | 'volume' } | null {
  if (!src || (!src.snapshot && !src.volume)) return null;
  if (src.snapshot) {
    const id = src.snapshot.snapshot_id;
    if (id === '') throw invalidArgument('volume_content_source.snapshot.snapshot_id is required');
    if (!parseSnapshotId(id)) throw notFound(`source snapshot ${id} does not exist`);
    return { from: id, kind: 'snapshot' };
  }
  const id = src.volume!.volume_id;
  if (id === '') throw invalidArgument('volume_content_source.volume.volume_id is required');
  return { from: id, kind: 'volume' };
}

const originKey = (vol: ApiVolume): string | null =>
  vol.origin === null ? null : vol.origin.snapshot === null ? vol.origin.volume : `${vol.origin.volume}@${vol.origin.snapshot}`;

/**
 * CSI paging (spec, ListVolumes/ListSnapshots): max_entries 0 lets the plugin choose (here the API's
 * largest page), otherwise at most max_entries (capped at that page); next_token whenever more remain.
 */
function listPaging(req: { max_entries: number; starting_token: string }): { limit: number; apiToken: string | null } {
  if (!Number.isInteger(req.max_entries) || req.max_entries < 0) throw invalidArgument('max_entries must not be negative');
  const apiToken = decodeApiPageToken(req.starting_token); // ABORTED for a bad token, before asking the daemon
  return { limit: req.max_entries === 0 ? apiPageItemsMax : Math.min(req.max_entries, apiPageItemsMax), apiToken };
}

export class ControllerService {
  constructor(private readonly api: CairnApi, private readonly locks: OperationLocks) {}

  async CreateVolume(req: CreateVolumeRequest): Promise<{ volume: Volume }> {
    const name = cairnNameFor(req.name, 'csi');
    const caps = checkCapabilities(req.volume_capabilities, 'CreateVolume');
    const reason = caps.map(unsupportedReason).find((r) => r !== null);
    if (reason) throw invalidArgument(`CreateVolume: ${reason}`);
    checkParameters(req.parameters, 'CreateVolume');
    const bounds = boundsOf(req.capacity_range);
    const source = requestedSource(req.volume_content_source);
    const blankSizeBytes = source ? 0 : sizeFor(bounds, 0); // OUT_OF_RANGE before touching the daemon
    return this.locks.run([name], async () => {
      const existing = await this.call(() => this.api.getVolume(name), `get volume ${name}`);
      if (existing) return { volume: this.sameVolume(existing, bounds, source?.from ?? null) };
      await this.ensurePoolHasRoom(`create volume ${name}`);
      const created = source
        ? await this.cloneFrom(name, source, bounds)
        : await this.call(() => this.api.createVolume(name, blankSizeBytes), `create volume ${name}`);
      return { volume: toCsiVolume(created) };
    });
  }

  private sameVolume(existing: ApiVolume, bounds: Bounds, from: string | null): Volume {
    if (!fits(existing.sizeBytes, bounds)) {
      throw alreadyExists(`volume ${existing.name} exists with size ${existing.sizeBytes}, outside the requested range`);
    }
    if (originKey(existing) !== from) {
      throw alreadyExists(`volume ${existing.name} exists with another content source (${originKey(existing) ?? 'none'})`);
    }
    return toCsiVolume(existing);
  }

  /** An O(1) Cairn clone, grown afterwards when the range asks for more than the source. */
  private async cloneFrom(name: string, source: { from: string; kind: 'snapshot' | 'volume' }, bounds: Bounds): Promise<ApiVolume> {
    const sourceBytes = await this.sourceSizeBytes(source);
    const sizeBytes = sizeFor(bounds, sourceBytes); // spec: the range MUST be honoured, even from a source
    let vol = await this.call(() => this.api.cloneVolume(name, source.from), `clone ${source.from} to ${name}`);
    if (vol.sizeBytes < sizeBytes) {
      vol = await this.call(() => this.api.resizeVolume(name, sizeBytes), `grow clone ${name}`);
    }
    return vol;
  }

  private async sourceSizeBytes(source: { from: string; kind: 'snapshot' | 'volume' }): Promise<number> {
    if (source.kind === 'volume') {
      const vol = await this.call(() => this.api.getVolume(source.from), `get source volume ${source.from}`);
      if (!vol) throw notFound(`source volume ${source.from} does not exist`);
      return vol.sizeBytes;
    }
    // One lookup; a deleted volume's snapshots live on and are found too (and can still be cloned).
    const id = parseSnapshotId(source.from);
    const snap = id === null ? null : await this.call(() => this.api.getSnapshot(id.volume, id.snapshot), `get snapshot ${source.from}`);
    if (!snap) throw notFound(`source snapshot ${source.from} does not exist`);
    return snap.sizeBytes;
  }

  async DeleteVolume(req: { volume_id: string }): Promise<Record<string, never>> {
    if (req.volume_id === '') throw invalidArgument('DeleteVolume: volume_id is required');
    // Snapshots and clones of the volume keep working (engine deleteVolume contract).
    await this.locks.run([req.volume_id], () =>
      this.call(() => this.api.deleteVolume(req.volume_id), `delete volume ${req.volume_id}`));
    return {};
  }

  async ControllerPublishVolume(): Promise<never> {
    throw unimplemented('ControllerPublishVolume: Cairn volumes need no controller attach (no PUBLISH_UNPUBLISH_VOLUME)');
  }

  async ControllerUnpublishVolume(): Promise<never> {
    throw unimplemented('ControllerUnpublishVolume: Cairn volumes need no controller attach (no PUBLISH_UNPUBLISH_VOLUME)');
  }

  async ControllerModifyVolume(): Promise<never> {
    throw unimplemented('ControllerModifyVolume: Cairn volumes have no mutable parameters');
  }

  async ValidateVolumeCapabilities(req: {
    volume_id: string; volume_capabilities: VolumeCapability[]; volume_context: StringMap; parameters: StringMap;
  }): Promise<{ confirmed: unknown; message: string }> {
    if (req.volume_id === '') throw invalidArgument('ValidateVolumeCapabilities: volume_id is required');
    const caps = checkCapabilities(req.volume_capabilities, 'ValidateVolumeCapabilities');
    const vol = await this.call(() => this.api.getVolume(req.volume_id), `get volume ${req.volume_id}`);
    if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
    const reason = caps.map(unsupportedReason).find((r) => r !== null);
    if (reason) return { confirmed: null, message: reason };
    try {
      checkParameters(req.parameters, 'ValidateVolumeCapabilities');
    } catch (err) {
      return { confirmed: null, message: (err as Error).message };
    }
    return {
      confirmed: { volume_context: req.volume_context, volume_capabilities: caps, parameters: req.parameters },
      message: '',
    };
  }

  async ListVolumes(req: { max_entries: number; starting_token: string }): Promise<unknown> {
    const { limit, apiToken } = listPaging(req);
    const page = await this.listCall(() => this.api.listVolumesPage(limit, apiToken), 'list volumes');
    const condition = await this.poolCondition();
    return {
      entries: page.items.map((vol) => ({
        volume: toCsiVolume(vol),
        status: { published_node_ids: [], volume_condition: condition },
      })),
      next_token: page.next === null ? '' : encodeApiPageToken(page.next),
    };
  }

  /** A list call: the API refusing its page token (400) is the spec's ABORTED for a bad starting_token. */
  private async listCall<T>(fn: () => Promise<ApiPage<T>>, context: string): Promise<ApiPage<T>> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ApiProblem && err.httpStatus === 400) throw aborted(`${context}: starting_token is not valid (${err.message})`);
      throw problemToCsi(err, context);
    }
  }

  async ControllerGetVolume(req: { volume_id: string }): Promise<unknown> {
    if (req.volume_id === '') throw invalidArgument('ControllerGetVolume: volume_id is required');
    const vol = await this.call(() => this.api.getVolume(req.volume_id), `get volume ${req.volume_id}`);
    if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
    return { volume: toCsiVolume(vol), status: { published_node_ids: [], volume_condition: await this.poolCondition() } };
  }

  /** The controller's view of a volume's health: the pool's checksum error count. */
  private async poolCondition(): Promise<VolumeCondition> {
    const pool = await this.call(() => this.api.pool(), 'get pool');
    if (pool.checksumErrors > 0) {
      return { abnormal: true, message: `the pool has seen ${pool.checksumErrors} checksum error(s); run cairn check` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  async GetCapacity(req: { volume_capabilities: VolumeCapability[]; parameters: StringMap }): Promise<unknown> {
    const unsupported = (req.volume_capabilities ?? []).some((cap) => unsupportedReason(cap) !== null);
    let parametersOk = true;
    try { checkParameters(req.parameters, 'GetCapacity'); } catch { parametersOk = false; }
    const pool = await this.call(() => this.api.pool(), 'get pool');
    // Thin provisioning: what can still be written is the pool's free space.
    return { available_capacity: unsupported || !parametersOk ? 0 : pool.freeBytes };
  }

  async ControllerGetCapabilities(): Promise<unknown> {
    const rpcs = [
      'CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS',
      'CLONE_VOLUME', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'GET_VOLUME', 'SINGLE_NODE_MULTI_WRITER',
    ];
    return { capabilities: rpcs.map((type) => ({ rpc: { type } })) };
  }

  async CreateSnapshot(req: { source_volume_id: string; name: string; parameters: StringMap }): Promise<{ snapshot: Snapshot }> {
    if (req.source_volume_id === '') throw invalidArgument('CreateSnapshot: source_volume_id is required');
    const snapName = cairnNameFor(req.name, 'snap');
    checkParameters(req.parameters, 'CreateSnapshot');
    const id = `${req.source_volume_id}@${snapName}`;
    return this.locks.run([id, req.source_volume_id], async () => {
      // One lookup by name (CSI snapshot names are pool-wide), not a list of every snapshot.
      const named = await this.call(() => this.api.snapshotsNamed(snapName), `find snapshot ${snapName}`);
      const same = named.find((s) => s.volume === req.source_volume_id) ?? named[0];
      if (same && same.volume !== req.source_volume_id) {
        throw alreadyExists(`snapshot name ${req.name} is taken by ${same.fullName}`);
      }
      if (same) return { snapshot: toCsiSnapshot(same) };
      const vol = await this.call(() => this.api.getVolume(req.source_volume_id), `get volume ${req.source_volume_id}`);
      if (!vol) throw notFound(`source volume ${req.source_volume_id} does not exist`);
      await this.ensurePoolHasRoom(`snapshot ${id}`);
      const snap = await this.call(() => this.api.createSnapshot(req.source_volume_id, snapName), `snapshot ${id}`);
      return { snapshot: toCsiSnapshot(snap) };
    });
  }

  async DeleteSnapshot(req: { snapshot_id: string }): Promise<Record<string, never>> {
    if (req.snapshot_id === '') throw invalidArgument('DeleteSnapshot: snapshot_id is required');
    const id = parseSnapshotId(req.snapshot_id);
    if (!id) return {}; // cannot name a Cairn snapshot, so it does not exist: success (spec)
    await this.locks.run([req.snapshot_id], () =>
      this.call(() => this.api.deleteSnapshot(id.volume, id.snapshot), `delete snapshot ${req.snapshot_id}`));
    return {};
  }

  async ListSnapshots(req: {
    max_entries: number; starting_token: string; source_volume_id: string; snapshot_id: string;
  }): Promise<unknown> {
    const { limit, apiToken } = listPaging(req);
    // CSI spec, ListSnapshots: a filter naming something that does not exist gives an empty list.
    if (req.snapshot_id !== '') {
      const id = parseSnapshotId(req.snapshot_id);
      const snap = id === null ? null : await this.call(() => this.api.getSnapshot(id.volume, id.snapshot), `get snapshot ${req.snapshot_id}`);
      const match = snap !== null && (req.source_volume_id === '' || snap.volume === req.source_volume_id);
      return { entries: match ? [{ snapshot: toCsiSnapshot(snap) }] : [], next_token: '' };
    }
    const volume = req.source_volume_id === '' ? null : req.source_volume_id;
    let page: ApiPage<ApiSnapshot>;
    try {
      page = await this.listCall(() => this.api.listSnapshotsPage(volume, limit, apiToken), 'list snapshots');
    } catch (err) {
      if (err instanceof CsiError && err.code === Status.NOT_FOUND) return { entries: [], next_token: '' };
      throw err;
    }
    return {
      entries: page.items.map((snap) => ({ snapshot: toCsiSnapshot(snap) })),
      next_token: page.next === null ? '' : encodeApiPageToken(page.next),
    };
  }

  async ControllerExpandVolume(req: {
    volume_id: string; capacity_range: CapacityRange | null; volume_capability: VolumeCapability | null;
  }): Promise<{ capacity_bytes: number; node_expansion_required: boolean }> {
    if (req.volume_id === '') throw invalidArgument('ControllerExpandVolume: volume_id is required');
    if (!req.capacity_range) throw invalidArgument('ControllerExpandVolume: capacity_range is required');
    const bounds = boundsOf(req.capacity_range);
    const nodeExpansion = !(req.volume_capability?.block && !req.volume_capability.mount);
    return this.locks.run([req.volume_id], async () => {
      const vol = await this.call(() => this.api.getVolume(req.volume_id), `get volume ${req.volume_id}`);
      if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
      if (vol.sizeBytes >= bounds.requiredBytes) {
        return { capacity_bytes: vol.sizeBytes, node_expansion_required: nodeExpansion };
      }
      const sizeBytes = sizeFor(bounds, vol.sizeBytes);
      const grown = await this.call(() => this.api.resizeVolume(req.volume_id, sizeBytes), `grow ${req.volume_id}`);
      return { capacity_bytes: grown.sizeBytes, node_expansion_required: nodeExpansion };
    });
  }

  /** A full thin pool: new objects could not take one write, so refuse them up front. */
  private async ensurePoolHasRoom(what: string): Promise<void> {
    const pool = await this.call(() => this.api.pool(), 'get pool');
    if (pool.freeBytes < poolFreeBytesMin) {
      throw resourceExhausted(`${what}: the pool is full (${pool.freeBytes} bytes free of ${pool.sizeBytes})`);
    }
  }

  /** Runs an API call, mapping its problems to CSI codes. */
  private async call<T>(fn: () => Promise<T>, context: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw problemToCsi(err, context);
    }
  }
}
