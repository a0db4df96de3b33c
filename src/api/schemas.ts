// TypeBox schemas of the REST API: the same objects validate requests (fastify/ajv) and are
// written into /v1/openapi.json, so the document cannot drift from what the server checks.
// All sizes and offsets are integers in bytes.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { PageQuery } from './paging.js';
import { VolumeQos, VolumeQosBody } from './schemas-qos.js';

const Bytes = (description: string) => Type.Integer({ minimum: 0, description });
const Name = (description: string) => Type.String({ minLength: 1, maxLength: 255, description });

export const NameParams = Type.Object({ name: Name('volume name') });
export const SnapshotParams = Type.Object({ name: Name('volume name'), snapshot: Name('snapshot name') });
export const JobParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

export const CreateVolumeBody = Type.Object({
  name: Name('volume name'),
  size: Type.Optional(Bytes('size in bytes, a multiple of 4096 (for a new, empty volume)')),
  from: Type.Optional(Name('"VOL@SNAP" or "VOL": create a zero-copy clone of it')),
  qos: Type.Optional(VolumeQosBody),
  encrypted: Type.Optional(Type.Boolean({ description: 'a new volume encrypted at rest (AES-256-XTS) with a fresh data key wrapped by its tenant\'s key-encryption key; a clone is encrypted exactly when its source is (give true or leave it out)' })),
  replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 3, description: 'copies on distinct storage nodes (a cluster only; default: the cluster\'s --replicas-default); a clone has its source\'s' })),
}, { additionalProperties: false, description: 'give exactly one of size and from' });
export type CreateVolumeBody = Static<typeof CreateVolumeBody>;

export const ResizeVolumeBody = Type.Object({
  size: Bytes('new size in bytes, a multiple of 4096'),
  allowShrink: Type.Optional(Type.Boolean({ description: 'discard data past the new end (default false)' })),
}, { additionalProperties: false });
export type ResizeVolumeBody = Static<typeof ResizeVolumeBody>;

export const GrowPoolBody = Type.Object({
  size: Type.Optional(Bytes('new pool size in bytes, a multiple of 4096, not below the current size (a pool file is enlarged to it); without it the pool grows to its file\'s or raw device\'s current size')),
}, { additionalProperties: false });
export type GrowPoolBody = Static<typeof GrowPoolBody>;

export const CreateSnapshotBody = Type.Object({ name: Name('snapshot name') }, { additionalProperties: false });
export type CreateSnapshotBody = Static<typeof CreateSnapshotBody>;

export const GroupSnapshotBody = Type.Object({
  snapshots: Type.Array(Name('"VOL@SNAP"'), { minItems: 1, maxItems: 1024 }),
}, { additionalProperties: false });
export type GroupSnapshotBody = Static<typeof GroupSnapshotBody>;

export const RevertBody = Type.Object({ snapshot: Name('snapshot name ("SNAP" or "VOL@SNAP")') },
  { additionalProperties: false });
export type RevertBody = Static<typeof RevertBody>;

export const DiffQuery = Type.Object({
  from: Name('"VOL@A"'),
  to: Name('"VOL@B" or the live volume "VOL"'),
}, { additionalProperties: false });
export type DiffQuery = Static<typeof DiffQuery>;

export const ExportQuery = Type.Object({
  since: Type.Optional(Name('base snapshot ("SNAP" or "VOL@SNAP") for an incremental stream')),
  raw: Type.Optional(Type.Boolean({ description: 'an encrypted snapshot\'s blocks stay sealed under its data key, which travels wrapped by the tenant\'s KEK: only a pool whose tenant holds that KEK can import it (default: plaintext)' })),
}, { additionalProperties: false });
export type ExportQuery = Static<typeof ExportQuery>;

export const SnapshotListQuery = Type.Object({
  volume: Type.Optional(Name('only this volume\'s snapshots')),
  name: Type.Optional(Name('only snapshots of this name (after "@"), on any volume; not paged')),
  ...PageQuery,
},
  { additionalProperties: false });
export type SnapshotListQuery = Static<typeof SnapshotListQuery>;
export const ListQuery = Type.Object({ ...PageQuery }, { additionalProperties: false });
export type ListQuery = Static<typeof ListQuery>;

// Response objects (documented in openapi.json; handlers build them in views.ts).
const EncryptionFields = {
  encrypted: Type.Boolean({ description: 'encrypted at rest with its lineage\'s data key' }),
  locked: Type.Boolean({ description: 'encrypted and its data key not in memory (its tenant\'s key-encryption key is unavailable): I/O is refused until it unlocks' }),
};
const MemberState = Type.Union([Type.Literal('in-sync'), Type.Literal('rebuilding'), Type.Literal('down')]);
export const Replica = Type.Object({
  node: Type.String(), state: MemberState,
  rebuildProgress: Type.Union([Type.Number({ minimum: 0, maximum: 1 }), Type.Null()], { description: '0..1 while rebuilding (known on the primary\'s node)' }),
  primary: Type.Boolean(),
});
export const Volume = Type.Object({
  name: Type.String(), id: Type.Integer(), size: Bytes('provisioned bytes'),
  mappedBytes: Bytes('logical bytes holding data'),
  exclusiveBytes: Type.Union([Bytes('bytes only this volume holds'), Type.Null()]),
  createdMs: Type.Integer(), createdAt: Type.String({ format: 'date-time' }),
  origin: Type.Union([Type.String({ description: '"VOL@SNAP" or "VOL" it was cloned from' }), Type.Null()]),
  snapshots: Type.Array(Type.String(), { description: 'names, oldest first (all of them: page through /v1/volumes/{name}/snapshots instead when there are many)' }),
  snapshotCount: Type.Integer({ minimum: 0 }),
  flattenProgress: Type.Union([Type.Number(), Type.Null()]),
  nbdUri: Type.Union([Type.String(), Type.Null()]),
  qos: Type.Union([VolumeQos, Type.Null()], { description: 'QoS limits (null: none set)' }),
  ...EncryptionFields,
  replicas: Type.Optional(Type.Array(Replica, { description: 'its replicas (a cluster only)' })),
  epoch: Type.Optional(Type.Integer({ minimum: 0, description: 'bumped by every change of its primary or in-sync set (a cluster only)' })),
});
export const Snapshot = Type.Object({
  name: Type.String({ description: '"VOL@SNAP"' }), volume: Type.String(), snapshot: Type.String(),
  id: Type.Integer(), size: Bytes('provisioned bytes'), mappedBytes: Bytes('logical bytes holding data'),
  createdMs: Type.Integer(), createdAt: Type.String({ format: 'date-time' }),
  nbdUri: Type.Union([Type.String(), Type.Null()]),
  ...EncryptionFields,
});
export const Space = Type.Object({
  name: Type.String(), provisionedBytes: Bytes(''), mappedBytes: Bytes(''), exclusiveBytes: Bytes(''),
});
export const Pool = Type.Object({
  path: Type.String(), size: Bytes('pool bytes'), allocatedBytes: Bytes(''), freeBytes: Bytes(''),
  blockSize: Bytes(''), volumes: Type.Integer(), snapshots: Type.Integer(), generation: Type.Integer(),
  checksumErrors: Type.Integer(), pendingDeleteNodes: Type.Integer(),
  metadataBytes: Type.Union([Bytes('of allocatedBytes, what holds metadata (superblocks, intent log, keyring, tree nodes, space map, catalog)'), Type.Null()]),
  nbd: Type.Union([Type.String({ description: 'nbd://HOST:PORT' }), Type.Null()]),
});
export const Job = Type.Object({
  id: Type.String(), kind: Type.String({ description: 'flatten | delete | export | import' }),
  target: Type.String(),
  state: Type.Union([Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed'), Type.Literal('interrupted')], {
    description: 'interrupted: the daemon restarted while the job ran and the operation did not go on; error.message says what to redo',
  }),
  progress: Type.Number({ minimum: 0, maximum: 1 }),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  createdAt: Type.String(), finishedAt: Type.Union([Type.String(), Type.Null()]),
  resumed: Type.Boolean({ description: 'the job was running at a daemon restart and its operation went on by itself (flatten)' }),
});
export const Diff = Type.Object({
  from: Type.String(), to: Type.String(), changedBytes: Bytes(''),
  ranges: Type.Array(Type.Object({ offset: Bytes(''), length: Bytes('') })),
});
export const TreeNode = Type.Object({
  name: Type.String(), kind: Type.Union([Type.Literal('volume'), Type.Literal('snapshot')]),
  size: Bytes(''), mappedBytes: Bytes(''), exclusiveBytes: Type.Union([Bytes(''), Type.Null()]),
  createdMs: Type.Union([Type.Integer(), Type.Null()], { description: 'creation time (null: a deleted volume)' }),
  current: Type.Boolean({ description: 'true on the node that was asked for' }),
  deleted: Type.Boolean({ description: 'a deleted volume kept because its snapshots (and their clones) are still there' }),
  children: Type.Array(Type.Object({}, { additionalProperties: true, description: 'TreeNode' })),
});
export const ImportResult = Type.Object({
  volume: Type.String(), snapshot: Snapshot, incremental: Type.Boolean(), dataBytes: Bytes(''),
});
export const ProblemSchema = Type.Object({
  type: Type.String(), title: Type.String(), status: Type.Integer(), detail: Type.String(),
  code: Type.String({ description: 'stable error code, e.g. volume_not_found, name_taken, pool_full' }),
});

export type AnySchema = TSchema;

export const TenantParams = Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 32, description: 'tenant name' }) });
export const TenantDeleteQuery = Type.Object({
  force: Type.Optional(Type.Boolean({ description: 'delete the tenant\'s volumes and snapshots too (default false: refused while it owns volumes)' })),
}, { additionalProperties: false });
export type TenantDeleteQuery = Static<typeof TenantDeleteQuery>;
export const CreateTenantBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 32, description: 'tenant name: a-z, 0-9 and -' }) }, { additionalProperties: false });
export type CreateTenantBody = Static<typeof CreateTenantBody>;
export const Tenant = Type.Object({
  name: Type.String(), createdAt: Type.Union([Type.String(), Type.Null()], { description: 'null for the built-in default tenant' }),
  volumes: Type.Integer({ minimum: 0, description: 'live volumes it owns' }),
});

const Role = Type.Union([Type.Literal('admin'), Type.Literal('tenant'), Type.Literal('reader')]);
export const CreateTokenBody = Type.Object({
  role: Role,
  tenant: Type.Optional(Type.String({ minLength: 1, maxLength: 32, description: 'the tenant of a tenant or reader token (none for admin)' })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 32, description: 'a name to list and revoke it by (default token-ID)' })),
  expiresInSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 10 * 365 * 86400, description: 'lifetime (default: no expiry)' })),
}, { additionalProperties: false });
export type CreateTokenBody = Static<typeof CreateTokenBody>;
export const Token = Type.Object({
  id: Type.String(), name: Type.String(), role: Role, tenant: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String(), expiresAt: Type.Union([Type.String(), Type.Null()]),
});
export const CreatedToken = Type.Intersect([Token, Type.Object({ token: Type.String({ description: 'the secret: shown only in this answer' }) })]);
export const TokenParams = Type.Object({ token: Type.String({ minLength: 1, maxLength: 64, description: 'token id or name' }) });

// The cluster (issue 22): nodes, their state, drain, and the cluster's status.
export const NodeParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 63, description: 'node name' }) });
const Addresses = Type.Object({
  api: Type.Union([Type.String(), Type.Null()]), nbd: Type.Union([Type.String(), Type.Null()]),
  nvmf: Type.Union([Type.String(), Type.Null()]), repl: Type.String(),
}, { description: 'HOST:PORT of each service (null: not served)' });
export const ClusterNode = Type.Object({
  name: Type.String(), zone: Type.Union([Type.String(), Type.Null()]), incarnation: Type.String(),
  addresses: Addresses, startedMs: Type.Integer(), startedAt: Type.String({ format: 'date-time' }),
  draining: Type.Boolean(), alive: Type.Boolean({ description: 'holds a live lease in etcd now' }),
  replicas: Type.Integer({ minimum: 0, description: 'replicas it holds' }),
  primaries: Type.Integer({ minimum: 0, description: 'of which it is primary' }),
  self: Type.Boolean({ description: 'the node answering this request' }),
});
export const DrainBody = Type.Object({
  timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86400, description: 'give up after this long (default 3600)' })),
}, { additionalProperties: false });
export type DrainBody = Static<typeof DrainBody>;
export const ClusterStatusSchema = Type.Object({
  self: Type.String(),
  controlPlane: Type.Object({ healthy: Type.Boolean(), endpoints: Type.Array(Type.String()), error: Type.Union([Type.String(), Type.Null()]) }),
  nodes: Type.Array(ClusterNode),
  volumes: Type.Integer({ minimum: 0 }),
  degraded: Type.Array(Type.Object({ name: Type.String(), inSync: Type.Integer(), replicas: Type.Integer(), primary: Type.String() }),
    { description: 'volumes with fewer in-sync replicas than wanted' }),
});
