// The CSI GroupController service (VolumeGroupSnapshot in Kubernetes) on Cairn's atomic snapshot of
// several volumes (POST /v1/snapshots). A group is its members' shared snapshot name "g+NAME"
// (src/csi/names.ts), so the daemon holds all there is to know of it: the group id is that name with
// its tenant ("g+NAME" or "TENANT/g+NAME"), the members are the tenant's snapshots of that name.
import type { ApiSnapshot } from './api-client.js';
import { apiCall, ensurePoolHasRoom } from './controller.js';
import { timestampOf, toCsiSnapshot } from './controller-views.js';
import { groupSnapshotVolumesMax } from './constants.js';
import { alreadyExists, invalidArgument, notFound } from './errors.js';
import { OperationLocks } from './locks.js';
import type { Snapshot, StringMap } from './messages.js';
import { groupSnapshotNameFor, parseGroupSnapshotId, parseSnapshotId, parseVolumeId, type VolumeRef } from './names.js';
import { checkParameters } from './parameters.js';
import { apiNameOf, tenantOfApiName, type Session, type Sessions } from './sessions.js';
import { qualify } from '../tenancy/names.js';

interface VolumeGroupSnapshot {
  group_snapshot_id: string;
  snapshots: Snapshot[];
  creation_time: { seconds: number; nanos: number };
  ready_to_use: boolean;
}

type Secrets = { secrets?: StringMap };

/** The source volumes of a create: parsed, one tenant, no repeats (INVALID_ARGUMENT otherwise). */
function sourceRefs(ids: string[] | undefined): VolumeRef[] {
  if (!ids || ids.length === 0) throw invalidArgument('CreateVolumeGroupSnapshot: source_volume_ids is required');
  if (ids.length > groupSnapshotVolumesMax) throw invalidArgument(`CreateVolumeGroupSnapshot: more than ${groupSnapshotVolumesMax} source volumes`);
  if (new Set(ids).size !== ids.length) throw invalidArgument('CreateVolumeGroupSnapshot: source_volume_ids holds a volume twice');
  const refs = ids.map((id) => {
    const ref = parseVolumeId(id);
    if (ref === null) throw notFound(`source volume ${id} does not exist`);
    return ref;
  });
  if (new Set(refs.map((r) => r.tenant)).size > 1) {
    throw invalidArgument('CreateVolumeGroupSnapshot: the source volumes belong to different tenants; a group snapshot stays within one');
  }
  return refs;
}

const sameSet = (a: string[], b: string[]): boolean => a.length === b.length && new Set([...a, ...b]).size === a.length;

export class GroupControllerService {
  constructor(private readonly sessions: Sessions, private readonly locks: OperationLocks) {}

  async GroupControllerGetCapabilities(): Promise<unknown> {
    return { capabilities: [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' } }] };
  }

  /**
   * CSI spec, CreateVolumeGroupSnapshot: the same name with the same source volumes gives the same
   * group (also after it was cut); the same name with other volumes is ALREADY_EXISTS.
   */
  async CreateVolumeGroupSnapshot(req: { name: string; source_volume_ids: string[]; parameters: StringMap } & Secrets):
    Promise<{ group_snapshot: VolumeGroupSnapshot }> {
    const snapName = groupSnapshotNameFor(req.name);
    const refs = sourceRefs(req.source_volume_ids);
    checkParameters(req.parameters, 'CreateVolumeGroupSnapshot');
    const session = await this.sessions.forSecrets(req.secrets, 'CreateVolumeGroupSnapshot');
    const volumes = refs.map((ref) => apiNameOf(session, ref)); // PERMISSION_DENIED: another tenant's
    const tenant = refs[0]!.tenant;
    const groupId = qualify(tenant, snapName);
    return this.locks.run([groupId, ...req.source_volume_ids], async () => {
      const members = await this.members(session, tenant, snapName);
      if (members.length > 0) {
        if (!sameSet(members.map((m) => m.volume), volumes)) {
          throw alreadyExists(`group snapshot ${req.name} exists with other source volumes (${members.map((m) => toCsiSnapshot(session, m).source_volume_id).join(', ')})`);
        }
        return { group_snapshot: this.groupOf(session, groupId, members) };
      }
      await ensurePoolHasRoom(session, `group snapshot ${groupId}`);
      // One atomic call: every volume is cut at the same instant, or none is. A volume that does not
      // exist is NOT_FOUND, a snapshot name taken meanwhile ALREADY_EXISTS (name_taken).
      const created = await apiCall(() => session.api.createSnapshotGroup(volumes.map((v) => `${v}@${snapName}`)),
        `group snapshot ${groupId}`);
      return { group_snapshot: this.groupOf(session, groupId, created) };
    });
  }

  /** CSI spec: NOT_FOUND when the group does not exist; INVALID_ARGUMENT when snapshot_ids do not match it. */
  async GetVolumeGroupSnapshot(req: { group_snapshot_id: string; snapshot_ids: string[] } & Secrets):
    Promise<{ group_snapshot: VolumeGroupSnapshot }> {
    if (req.group_snapshot_id === '') throw invalidArgument('GetVolumeGroupSnapshot: group_snapshot_id is required');
    const group = parseGroupSnapshotId(req.group_snapshot_id);
    if (group === null) throw notFound(`group snapshot ${req.group_snapshot_id} does not exist`);
    const session = await this.sessions.forSecrets(req.secrets, 'GetVolumeGroupSnapshot');
    apiNameOf(session, { tenant: group.tenant, name: group.snapshot }); // PERMISSION_DENIED: another tenant's
    const members = await this.members(session, group.tenant, group.snapshot);
    if (members.length === 0) throw notFound(`group snapshot ${req.group_snapshot_id} does not exist`);
    const result = this.groupOf(session, req.group_snapshot_id, members);
    const ids = result.snapshots.map((s) => s.snapshot_id);
    if ((req.snapshot_ids ?? []).length > 0 && !sameSet(req.snapshot_ids, ids)) {
      throw invalidArgument(`GetVolumeGroupSnapshot: snapshot_ids do not match the group's snapshots (${ids.join(', ')})`);
    }
    return { group_snapshot: result };
  }

  /**
   * CSI spec, DeleteVolumeGroupSnapshot: a group that does not exist (any more) is success;
   * snapshot_ids that do not match the group are INVALID_ARGUMENT. A retry after a partial delete
   * lists members already gone: an id of the group's name that no longer exists is not a mismatch.
   */
  async DeleteVolumeGroupSnapshot(req: { group_snapshot_id: string; snapshot_ids: string[] } & Secrets): Promise<Record<string, never>> {
    if (req.group_snapshot_id === '') throw invalidArgument('DeleteVolumeGroupSnapshot: group_snapshot_id is required');
    const group = parseGroupSnapshotId(req.group_snapshot_id);
    if (group === null) return {};
    const session = await this.sessions.forSecrets(req.secrets, 'DeleteVolumeGroupSnapshot');
    apiNameOf(session, { tenant: group.tenant, name: group.snapshot });
    for (const id of req.snapshot_ids ?? []) {
      const snap = parseSnapshotId(id);
      if (snap === null || snap.tenant !== group.tenant || snap.snapshot !== group.snapshot) {
        throw invalidArgument(`DeleteVolumeGroupSnapshot: snapshot ${id} is not part of group snapshot ${req.group_snapshot_id}`);
      }
    }
    return this.locks.run([req.group_snapshot_id], async () => {
      const members = await this.members(session, group.tenant, group.snapshot);
      const listed = new Set(req.snapshot_ids ?? []);
      const unlisted = members.map((m) => toCsiSnapshot(session, m).snapshot_id).filter((id) => !listed.has(id));
      if ((req.snapshot_ids ?? []).length > 0 && unlisted.length > 0) {
        throw invalidArgument(`DeleteVolumeGroupSnapshot: snapshot_ids leave out ${unlisted.join(', ')} of the group`);
      }
      for (const m of members) {
        await apiCall(() => session.api.deleteSnapshot(m.volume, m.name), `delete snapshot ${toCsiSnapshot(session, m).snapshot_id}`);
      }
      return {};
    });
  }

  /** The tenant's snapshots named `snapName` (one lookup in the daemon), in volume order. */
  private async members(session: Session, tenant: string, snapName: string): Promise<ApiSnapshot[]> {
    const named = await apiCall(() => session.api.snapshotsNamed(snapName), `find group snapshot ${snapName}`);
    // An admin token sees the name in every tenant: keep the group's own.
    return named.filter((s) => tenantOfApiName(session, s.volume) === tenant).sort((a, b) => (a.volume < b.volume ? -1 : a.volume > b.volume ? 1 : 0));
  }

  private groupOf(session: Session, groupId: string, members: ApiSnapshot[]): VolumeGroupSnapshot {
    const createdMs = Math.min(...members.map((m) => m.createdMs));
    return {
      group_snapshot_id: groupId,
      snapshots: members.map((m) => toCsiSnapshot(session, m)),
      creation_time: timestampOf(createdMs),
      ready_to_use: true, // cut at one instant when the create returns
    };
  }
}
