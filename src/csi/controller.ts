// The CSI Controller service: volumes, clones, snapshots, expansion and QoS through the daemon's
// REST API only. Each call acts with the token of its secrets (src/csi/sessions.ts); volume ids are
// engine names ("NAME", "TENANT/NAME"), snapshot ids "VOLUME-ID@SNAP" (src/csi/names.ts). Every
// create is idempotent by name (CSI spec, CreateVolume/CreateSnapshot: same name and arguments →
// the same object; same name with other arguments → ALREADY_EXISTS).
import { ApiProblem, problemToCsi, type ApiPage, type ApiSnapshot, type ApiVolume, apiPageItemsMax } from './api-client.js';
import { checkCapabilityShape, unsupportedReason } from './capabilities.js';
import { poolFreeBytesMin } from './constants.js';
import { aborted, alreadyExists, CsiError, Status, invalidArgument, notFound, resourceExhausted, unimplemented } from './errors.js';
import type { CapacityRange, CreateVolumeRequest, StringMap, Snapshot, Volume, VolumeCapability, VolumeCondition, VolumeContentSource } from './messages.js';
import { cairnNameFor, decodeApiPageToken, encodeApiPageToken, parseSnapshotId, parseVolumeId, type SnapshotId } from './names.js';
import { OperationLocks } from './locks.js';
import { checkParameters, encryptedParameterKey, mutableQosOf, volumeParametersOf, volumeQosOf, type VolumeParameters } from './parameters.js';
import { apiNameOf, apiSnapshotNameOf, idFromApi, type Session, type Sessions } from './sessions.js';
import { boundsOf, fits, originIdOf, sizeFor, sourceEncryptionProblem, toCsiSnapshot, toCsiVolume, type Bounds } from './controller-views.js';
import { DEFAULT_TENANT } from '../tenancy/names.js';

type Secrets = { secrets?: StringMap };

function checkCapabilities(caps: VolumeCapability[] | undefined, what: string): VolumeCapability[] {
  if (!caps || caps.length === 0) throw invalidArgument(`${what}: volume_capabilities is required`);
  for (const cap of caps) checkCapabilityShape(cap, what);
  return caps;
}

interface Source { id: string; kind: 'snapshot' | 'volume'; snapshot: SnapshotId | null }

/** The snapshot or volume the request asks to clone, or null. */
function requestedSource(src: VolumeContentSource | null | undefined): Source | null {
  if (!src || (!src.snapshot && !src.volume)) return null;
  if (src.snapshot) {
    const id = src.snapshot.snapshot_id;
    if (id === '') throw invalidArgument('volume_content_source.snapshot.snapshot_id is required');
    const snapshot = parseSnapshotId(id);
    if (!snapshot) throw notFound(`source snapshot ${id} does not exist`);
    return { id, kind: 'snapshot', snapshot };
  }
  const id = src.volume!.volume_id;
  if (id === '') throw invalidArgument('volume_content_source.volume.volume_id is required');
  return { id, kind: 'volume', snapshot: null };
}

/** "VOL@SNAP" or "VOL" as the session's token names the source (PERMISSION_DENIED: another tenant's). */
function sourceApiName(session: Session, source: Source): string {
  if (source.snapshot !== null) {
    const s = apiSnapshotNameOf(session, source.snapshot);
    return `${s.volume}@${s.snapshot}`;
  }
  const ref = parseVolumeId(source.id);
  if (ref === null) throw notFound(`source volume ${source.id} does not exist`);
  return apiNameOf(session, ref);
}

/** A volume id as the session's token names it; null when the id cannot name a Cairn volume. */
function volumeApiName(session: Session, id: string): string | null {
  const ref = parseVolumeId(id);
  return ref === null ? null : apiNameOf(session, ref);
}

/**
 * CSI paging (spec, ListVolumes/ListSnapshots): max_entries 0 lets the plugin choose (here the API's
 * largest page), otherwise at most max_entries (capped at that page); next_token whenever more remain.
 */
function listPaging(req: { max_entries: number; starting_token: string }): { limit: number; apiToken: string | null } {
  if (!Number.isInteger(req.max_entries) || req.max_entries < 0) throw invalidArgument('max_entries must not be negative');
  const apiToken = decodeApiPageToken(req.starting_token); // ABORTED for a bad token, before asking the daemon
  return { limit: req.max_entries === 0 ? apiPageItemsMax : Math.min(req.max_entries, apiPageItemsMax), apiToken };
}

/** Runs an API call, mapping its problems to CSI codes. */
export async function apiCall<T>(fn: () => Promise<T>, context: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw problemToCsi(err, context);
  }
}

/** A full thin pool: new objects could not take one write, so refuse them up front. */
export async function ensurePoolHasRoom(session: Session, what: string): Promise<void> {
  const pool = await apiCall(() => session.api.pool(), 'get pool');
  if (pool.freeBytes < poolFreeBytesMin) {
    throw resourceExhausted(`${what}: the pool is full (${pool.freeBytes} bytes free of ${pool.sizeBytes})`);
  }
}

export class ControllerService {
  constructor(private readonly sessions: Sessions, private readonly locks: OperationLocks) {}

  async CreateVolume(req: CreateVolumeRequest & Secrets): Promise<{ volume: Volume }> {
    const name = cairnNameFor(req.name, 'csi');
    const caps = checkCapabilities(req.volume_capabilities, 'CreateVolume');
    const reason = caps.map(unsupportedReason).find((r) => r !== null);
    if (reason) throw invalidArgument(`CreateVolume: ${reason}`);
    const params = volumeParametersOf(req.parameters, req.mutable_parameters, 'CreateVolume');
    const bounds = boundsOf(req.capacity_range);
    const source = requestedSource(req.volume_content_source);
    const blankSizeBytes = source ? 0 : sizeFor(bounds, 0); // OUT_OF_RANGE before touching the daemon
    const session = await this.sessions.forSecrets(req.secrets, 'CreateVolume');
    // A tenant token creates in its tenant; an admin token (or no tenancy) in the default tenant.
    const apiName = apiNameOf(session, { tenant: session.tenant ?? DEFAULT_TENANT, name });
    const id = idFromApi(session, apiName);
    return this.locks.run([id], async () => {
      const existing = await apiCall(() => session.api.getVolume(apiName), `get volume ${id}`);
      if (existing) return { volume: this.sameVolume(session, existing, bounds, source?.id ?? null, params.encrypted) };
      await ensurePoolHasRoom(session, `create volume ${id}`);
      // Encrypted: the daemon wraps a fresh data key with the tenant's KEK, which is configured in
      // Cairn (cairn tenant set TENANT --kek ...); nothing about the key comes from Kubernetes.
      const created = source
        ? await this.cloneFrom(session, apiName, source, bounds, params)
        : await apiCall(() => session.api.createVolume(apiName, blankSizeBytes, params.qos, params.encrypted, params.replicas), `create volume ${id}`);
      return { volume: toCsiVolume(session, created) };
    });
  }

  private sameVolume(session: Session, existing: ApiVolume, bounds: Bounds, from: string | null, encrypted: boolean): Volume {
    const volume = toCsiVolume(session, existing);
    if (!fits(existing.sizeBytes, bounds)) {
      throw alreadyExists(`volume ${volume.volume_id} exists with size ${existing.sizeBytes}, outside the requested range`);
    }
    const origin = originIdOf(session, existing);
    if (origin !== from) throw alreadyExists(`volume ${volume.volume_id} exists with another content source (${origin ?? 'none'})`);
    if (existing.encrypted !== encrypted) {
      throw alreadyExists(`volume ${volume.volume_id} exists ${existing.encrypted ? 'encrypted' : 'not encrypted'}; this request's class asks for `
        + `${encrypted ? 'an encrypted' : 'a plain'} volume`);
    }
    return volume;
  }

  /**
   * An O(1) Cairn clone, grown afterwards when the range asks for more than the source. Its
   * encryption is the source's (shared blocks, shared data key): the class must agree.
   */
  private async cloneFrom(session: Session, apiName: string, source: Source, bounds: Bounds, params: VolumeParameters): Promise<ApiVolume> {
    const from = sourceApiName(session, source);
    const found = await this.sourceOf(session, source, from);
    const problem = sourceEncryptionProblem(source.id, source.kind, found.encrypted, params.encrypted);
    if (problem !== null) throw invalidArgument(`CreateVolume: ${problem}`);
    const sizeBytes = sizeFor(bounds, found.sizeBytes); // spec: the range MUST be honoured, even from a source
    // `encrypted` again in the request: the daemon checks it against the source in the same step.
    let vol = await apiCall(() => session.api.cloneVolume(apiName, from, params.qos, params.encrypted), `clone ${source.id} to ${apiName}`);
    if (vol.sizeBytes < sizeBytes) {
      vol = await apiCall(() => session.api.resizeVolume(apiName, sizeBytes), `grow clone ${apiName}`);
    }
    return vol;
  }

  private async sourceOf(session: Session, source: Source, from: string): Promise<{ sizeBytes: number; encrypted: boolean }> {
    if (source.kind === 'volume') {
      const vol = await apiCall(() => session.api.getVolume(from), `get source volume ${source.id}`);
      if (!vol) throw notFound(`source volume ${source.id} does not exist`);
      return vol;
    }
    // One lookup; a deleted volume's snapshots live on and are found too (and can still be cloned).
    const at = from.indexOf('@');
    const snap = await apiCall(() => session.api.getSnapshot(from.slice(0, at), from.slice(at + 1)), `get snapshot ${source.id}`);
    if (!snap) throw notFound(`source snapshot ${source.id} does not exist`);
    return snap;
  }

  async DeleteVolume(req: { volume_id: string } & Secrets): Promise<Record<string, never>> {
    if (req.volume_id === '') throw invalidArgument('DeleteVolume: volume_id is required');
    const session = await this.sessions.forSecrets(req.secrets, 'DeleteVolume');
    const apiName = volumeApiName(session, req.volume_id);
    if (apiName === null) return {}; // cannot name a Cairn volume, so it does not exist: success (spec)
    // Snapshots and clones of the volume keep working (engine deleteVolume contract).
    await this.locks.run([req.volume_id], () =>
      apiCall(() => session.api.deleteVolume(apiName), `delete volume ${req.volume_id}`));
    return {};
  }

  async ControllerPublishVolume(): Promise<never> {
    throw unimplemented('ControllerPublishVolume: Cairn volumes need no controller attach (no PUBLISH_UNPUBLISH_VOLUME)');
  }

  async ControllerUnpublishVolume(): Promise<never> {
    throw unimplemented('ControllerUnpublishVolume: Cairn volumes need no controller attach (no PUBLISH_UNPUBLISH_VOLUME)');
  }

  /**
   * Changes a volume's QoS limits live (VolumeAttributesClass; the resizer sidecar calls this with
   * its secrets). Keys left out stay as they are; "0" or "none" removes a limit.
   */
  async ControllerModifyVolume(req: { volume_id: string; mutable_parameters: StringMap } & Secrets): Promise<Record<string, never>> {
    if (req.volume_id === '') throw invalidArgument('ControllerModifyVolume: volume_id is required');
    // No parameters is nothing to change: success for a volume that exists (csi-sanity sends an empty
    // map unless given a file of mutable parameters, and expects NOT_FOUND or success, as the
    // reference drivers give). Anything named is checked before the daemon is asked.
    const params = req.mutable_parameters ?? {};
    const qos = Object.keys(params).length === 0 ? null : mutableQosOf(params, 'ControllerModifyVolume');
    const session = await this.sessions.forSecrets(req.secrets, 'ControllerModifyVolume');
    const apiName = volumeApiName(session, req.volume_id);
    if (apiName === null) throw notFound(`volume ${req.volume_id} does not exist`);
    if (qos === null) {
      const vol = await apiCall(() => session.api.getVolume(apiName), `get volume ${req.volume_id}`);
      if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
      return {};
    }
    await this.locks.run([req.volume_id], () =>
      apiCall(() => session.api.setQos(apiName, qos), `set QoS of ${req.volume_id}`));
    return {};
  }

  async ValidateVolumeCapabilities(req: {
    volume_id: string; volume_capabilities: VolumeCapability[]; volume_context: StringMap; parameters: StringMap;
    mutable_parameters?: StringMap;
  } & Secrets): Promise<{ confirmed: unknown; message: string }> {
    if (req.volume_id === '') throw invalidArgument('ValidateVolumeCapabilities: volume_id is required');
    const caps = checkCapabilities(req.volume_capabilities, 'ValidateVolumeCapabilities');
    const session = await this.sessions.forSecrets(req.secrets, 'ValidateVolumeCapabilities');
    const apiName = volumeApiName(session, req.volume_id);
    const vol = apiName === null ? null : await apiCall(() => session.api.getVolume(apiName), `get volume ${req.volume_id}`);
    if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
    const reason = caps.map(unsupportedReason).find((r) => r !== null);
    if (reason) return { confirmed: null, message: reason };
    let params: VolumeParameters;
    try {
      params = volumeParametersOf(req.parameters, req.mutable_parameters, 'ValidateVolumeCapabilities');
    } catch (err) {
      return { confirmed: null, message: (err as Error).message };
    }
    // Only a request that names `encrypted` asks about it (a pre-provisioned volume's has no parameters).
    if (Object.hasOwn(req.parameters ?? {}, encryptedParameterKey) && params.encrypted !== vol.encrypted) {
      return { confirmed: null, message: `volume ${req.volume_id} is ${vol.encrypted ? '' : 'not '}encrypted; the parameters ask for ${params.encrypted ? 'an encrypted' : 'a plain'} volume` };
    }
    return {
      confirmed: {
        volume_context: req.volume_context, volume_capabilities: caps, parameters: req.parameters,
        mutable_parameters: req.mutable_parameters ?? {},
      },
      message: '',
    };
  }

  async ListVolumes(req: { max_entries: number; starting_token: string }): Promise<unknown> {
    const { limit, apiToken } = listPaging(req);
    const session = await this.sessions.own(); // ListVolumes has no secrets (CSI spec)
    const page = await this.listCall(() => session.api.listVolumesPage(limit, apiToken), 'list volumes');
    const condition = await this.poolCondition(session);
    return {
      entries: page.items.map((vol) => ({
        volume: toCsiVolume(session, vol),
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
    const session = await this.sessions.own(); // ControllerGetVolume has no secrets (CSI spec)
    const apiName = volumeApiName(session, req.volume_id);
    const vol = apiName === null ? null : await apiCall(() => session.api.getVolume(apiName), `get volume ${req.volume_id}`);
    if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
    return { volume: toCsiVolume(session, vol), status: { published_node_ids: [], volume_condition: await this.poolCondition(session) } };
  }

  /** The controller's view of a volume's health: the pool's checksum error count. */
  private async poolCondition(session: Session): Promise<VolumeCondition> {
    const pool = await apiCall(() => session.api.pool(), 'get pool');
    if (pool.checksumErrors > 0) {
      return { abnormal: true, message: `the pool has seen ${pool.checksumErrors} checksum error(s); run cairn check` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  async GetCapacity(req: { volume_capabilities: VolumeCapability[]; parameters: StringMap }): Promise<unknown> {
    const unsupported = (req.volume_capabilities ?? []).some((cap) => unsupportedReason(cap) !== null);
    let parametersOk = true;
    try { volumeQosOf(req.parameters, undefined, 'GetCapacity'); } catch { parametersOk = false; }
    const session = await this.sessions.own();
    const pool = await apiCall(() => session.api.pool(), 'get pool');
    // Thin provisioning: what can still be written is the pool's free space.
    return { available_capacity: unsupported || !parametersOk ? 0 : pool.freeBytes };
  }

  async ControllerGetCapabilities(): Promise<unknown> {
    const rpcs = [
      'CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS',
      'CLONE_VOLUME', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'GET_VOLUME', 'SINGLE_NODE_MULTI_WRITER', 'MODIFY_VOLUME',
    ];
    return { capabilities: rpcs.map((type) => ({ rpc: { type } })) };
  }

  async CreateSnapshot(req: { source_volume_id: string; name: string; parameters: StringMap } & Secrets): Promise<{ snapshot: Snapshot }> {
    if (req.source_volume_id === '') throw invalidArgument('CreateSnapshot: source_volume_id is required');
    const snapName = cairnNameFor(req.name, 'snap');
    checkParameters(req.parameters, 'CreateSnapshot');
    const session = await this.sessions.forSecrets(req.secrets, 'CreateSnapshot');
    const volume = volumeApiName(session, req.source_volume_id);
    if (volume === null) throw notFound(`source volume ${req.source_volume_id} does not exist`);
    const id = `${req.source_volume_id}@${snapName}`;
    return this.locks.run([id, req.source_volume_id], async () => {
      // One lookup by name (CSI snapshot names are unique in what the token sees), not a list of every snapshot.
      const named = await apiCall(() => session.api.snapshotsNamed(snapName), `find snapshot ${snapName}`);
      const same = named.find((s) => s.volume === volume) ?? named[0];
      if (same && same.volume !== volume) {
        throw alreadyExists(`snapshot name ${req.name} is taken by ${toCsiSnapshot(session, same).snapshot_id}`);
      }
      if (same) return { snapshot: toCsiSnapshot(session, same) };
      const vol = await apiCall(() => session.api.getVolume(volume), `get volume ${req.source_volume_id}`);
      if (!vol) throw notFound(`source volume ${req.source_volume_id} does not exist`);
      await ensurePoolHasRoom(session, `snapshot ${id}`);
      const snap = await apiCall(() => session.api.createSnapshot(volume, snapName), `snapshot ${id}`);
      return { snapshot: toCsiSnapshot(session, snap) };
    });
  }

  async DeleteSnapshot(req: { snapshot_id: string } & Secrets): Promise<Record<string, never>> {
    if (req.snapshot_id === '') throw invalidArgument('DeleteSnapshot: snapshot_id is required');
    const id = parseSnapshotId(req.snapshot_id);
    if (!id) return {}; // cannot name a Cairn snapshot, so it does not exist: success (spec)
    const session = await this.sessions.forSecrets(req.secrets, 'DeleteSnapshot');
    const name = apiSnapshotNameOf(session, id);
    await this.locks.run([req.snapshot_id], () =>
      apiCall(() => session.api.deleteSnapshot(name.volume, name.snapshot), `delete snapshot ${req.snapshot_id}`));
    return {};
  }

  async ListSnapshots(req: {
    max_entries: number; starting_token: string; source_volume_id: string; snapshot_id: string;
  } & Secrets): Promise<unknown> {
    const { limit, apiToken } = listPaging(req);
    const session = await this.sessions.forSecrets(req.secrets, 'ListSnapshots');
    const empty = { entries: [], next_token: '' };
    // CSI spec, ListSnapshots: a filter naming something that does not exist gives an empty list;
    // so does one naming another tenant's (this token cannot see it).
    const visible = (tenant: string): boolean => session.tenant === null || session.tenant === tenant;
    if (req.snapshot_id !== '') {
      const id = parseSnapshotId(req.snapshot_id);
      if (id === null || !visible(id.tenant)) return empty;
      const name = apiSnapshotNameOf(session, id);
      const snap = await apiCall(() => session.api.getSnapshot(name.volume, name.snapshot), `get snapshot ${req.snapshot_id}`);
      const csi = snap === null ? null : toCsiSnapshot(session, snap);
      const match = csi !== null && (req.source_volume_id === '' || csi.source_volume_id === req.source_volume_id);
      return match ? { entries: [{ snapshot: csi }], next_token: '' } : empty;
    }
    let volume: string | null = null;
    if (req.source_volume_id !== '') {
      const ref = parseVolumeId(req.source_volume_id);
      if (ref === null || !visible(ref.tenant)) return empty;
      volume = apiNameOf(session, ref);
    }
    let page: ApiPage<ApiSnapshot>;
    try {
      page = await this.listCall(() => session.api.listSnapshotsPage(volume, limit, apiToken), 'list snapshots');
    } catch (err) {
      if (err instanceof CsiError && err.code === Status.NOT_FOUND) return empty;
      throw err;
    }
    return {
      entries: page.items.map((snap) => ({ snapshot: toCsiSnapshot(session, snap) })),
      next_token: page.next === null ? '' : encodeApiPageToken(page.next),
    };
  }

  async ControllerExpandVolume(req: {
    volume_id: string; capacity_range: CapacityRange | null; volume_capability: VolumeCapability | null;
  } & Secrets): Promise<{ capacity_bytes: number; node_expansion_required: boolean }> {
    if (req.volume_id === '') throw invalidArgument('ControllerExpandVolume: volume_id is required');
    if (!req.capacity_range) throw invalidArgument('ControllerExpandVolume: capacity_range is required');
    const bounds = boundsOf(req.capacity_range);
    const nodeExpansion = !(req.volume_capability?.block && !req.volume_capability.mount);
    const session = await this.sessions.forSecrets(req.secrets, 'ControllerExpandVolume');
    const apiName = volumeApiName(session, req.volume_id);
    if (apiName === null) throw notFound(`volume ${req.volume_id} does not exist`);
    return this.locks.run([req.volume_id], async () => {
      const vol = await apiCall(() => session.api.getVolume(apiName), `get volume ${req.volume_id}`);
      if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
      if (vol.sizeBytes >= bounds.requiredBytes) {
        return { capacity_bytes: vol.sizeBytes, node_expansion_required: nodeExpansion };
      }
      const sizeBytes = sizeFor(bounds, vol.sizeBytes);
      const grown = await apiCall(() => session.api.resizeVolume(apiName, sizeBytes), `grow ${req.volume_id}`);
      return { capacity_bytes: grown.sizeBytes, node_expansion_required: nodeExpansion };
    });
  }
}
