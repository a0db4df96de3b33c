// The API's JSON objects (schemas.ts documents them), built from the engine's catalog records.
// One place decides field names and units, so the CLI and other clients see one stable shape.
import type { Engine, SnapshotInfo, VolumeInfo } from '../engine/index.js';
import type { QosLimits } from '../qos/limits.js';
import { volumeQosView } from './routes-qos.js';
import type { ReplicaView } from '../cluster/handle.js';

export interface ApiContextViews {
  nbdUri(name: string): string | null;
  qos?: { volumeLimits(id: number): QosLimits | null };
  /** A clustered volume's replicas, epoch and QoS limits (absent or null: not clustered, fields left out). */
  replication?(name: string): { replicas: ReplicaView[]; epoch: number; qos: QosLimits | null } | null;
}

/** A volume's limits: its cluster record's when it has one (they move with the primary), else this pool's. */
function qosOf(v: VolumeInfo, ctx: ApiContextViews) {
  const replication = ctx.replication?.(v.name) ?? null;
  const limits = replication !== null ? replication.qos : ctx.qos?.volumeLimits(v.id) ?? null;
  return limits === null ? null : volumeQosView(limits);
}

export function volumeView(v: VolumeInfo, ctx: ApiContextViews, exclusiveBytes: number | null = null) {
  const replication = ctx.replication?.(v.name) ?? null;
  return {
    ...volumeFields(v, ctx, exclusiveBytes),
    ...(replication === null ? {} : {
      replicas: replication.replicas.map((r) => ({ node: r.node, state: r.state, rebuildProgress: r.rebuildProgress, primary: r.primary })),
      epoch: replication.epoch,
    }),
  };
}

function volumeFields(v: VolumeInfo, ctx: ApiContextViews, exclusiveBytes: number | null) {
  return {
    name: v.name, id: v.id, size: v.sizeBytes, mappedBytes: v.mappedBytes, exclusiveBytes,
    createdMs: v.createdMs, createdAt: new Date(v.createdMs).toISOString(),
    origin: v.origin === null ? null : v.origin.snapshot === null ? v.origin.volume : `${v.origin.volume}@${v.origin.snapshot}`,
    snapshots: v.snapshots, snapshotCount: v.snapshotCount, flattenProgress: v.flattenProgress, nbdUri: ctx.nbdUri(v.name),
    qos: qosOf(v, ctx),
    encrypted: v.encryption !== null, locked: v.encryption?.locked ?? false,
  };
}

export function snapshotView(s: SnapshotInfo, ctx: ApiContextViews) {
  return {
    name: s.fullName, volume: s.volume, snapshot: s.name, id: s.id, size: s.sizeBytes,
    mappedBytes: s.mappedBytes, createdMs: s.createdMs, createdAt: new Date(s.createdMs).toISOString(),
    nbdUri: ctx.nbdUri(s.fullName),
    encrypted: s.encryption !== null, locked: s.encryption?.locked ?? false,
  };
}

export interface TreeNodeView {
  name: string;
  kind: 'volume' | 'snapshot';
  size: number;
  mappedBytes: number;
  exclusiveBytes: number | null;
  createdMs: number | null;
  current: boolean;
  /** A deleted volume kept because its snapshots are still there (engine deleteVolume): no data of its own. */
  deleted: boolean;
  children: TreeNodeView[];
}

/** Bound on the nodes of one lineage tree response. */
export const treeNodesMax = 10_000;

/** The snapshots of `volume` (a deleted one's too), oldest first, at most `limit`. */
function snapshotsOf(engine: Engine, volume: string, limit: number): SnapshotInfo[] {
  const out: SnapshotInfo[] = [];
  let afterId: number | undefined;
  while (out.length < limit) {
    const page = engine.listSnapshotsPage({ volume, limit: Math.min(1000, limit - out.length), ...(afterId === undefined ? {} : { afterId }) });
    out.push(...page.snapshots);
    if (!page.more || page.snapshots.length === 0) break;
    afterId = page.snapshots[page.snapshots.length - 1]!.id;
  }
  return out;
}

/**
 * The lineage of `name`: from its oldest ancestor down through snapshots and clones. When that
 * ancestor's origin is a deleted volume kept for its snapshots, the tree starts there, marked deleted.
 */
export async function lineageTree(engine: Engine, name: string): Promise<TreeNodeView> {
  const volumes = engine.listVolumes();
  const byName = new Map(volumes.map((v) => [v.name, v]));
  let root = engine.getVolume(name);
  for (let depth = 0; root.origin !== null && byName.has(root.origin.volume) && depth < treeNodesMax; depth += 1) {
    root = byName.get(root.origin.volume)!;
  }
  let nodes = 0;
  const exclusive = async (n: string): Promise<number | null> => {
    try { return (await engine.spaceUsage(n)).exclusiveBytes; } catch (err) {
      // Deleted while the tree was being built: it is simply not in the answer's figures. Anything
      // else (a damaged pool, a stopped engine) fails the request instead of showing a blank.
      const code = (err as { code?: unknown }).code;
      if (code === 'volume_not_found' || code === 'snapshot_not_found') return null;
      throw err;
    }
  };
  const clonesOf = (volume: string, snapshot: string | null) => volumes.filter((v) =>
    v.origin !== null && v.origin.volume === volume && v.origin.snapshot === snapshot);
  const snapshotNode = async (s: SnapshotInfo): Promise<TreeNodeView> => {
    nodes += 1;
    const children: TreeNodeView[] = [];
    for (const c of clonesOf(s.volume, s.name)) if (nodes < treeNodesMax) children.push(await volumeNode(c));
    return { name: s.fullName, kind: 'snapshot', size: s.sizeBytes, mappedBytes: s.mappedBytes,
      exclusiveBytes: await exclusive(s.fullName), createdMs: s.createdMs, current: s.fullName === name, deleted: false, children };
  };
  const volumeNode = async (v: VolumeInfo): Promise<TreeNodeView> => {
    nodes += 1;
    const children: TreeNodeView[] = [];
    for (const snap of v.snapshots) {
      if (nodes >= treeNodesMax) break;
      children.push(await snapshotNode(engine.getSnapshot(`${v.name}@${snap}`)));
    }
    for (const c of clonesOf(v.name, null)) if (nodes < treeNodesMax) children.push(await volumeNode(c));
    return { name: v.name, kind: 'volume', size: v.sizeBytes, mappedBytes: v.mappedBytes,
      exclusiveBytes: await exclusive(v.name), createdMs: v.createdMs, current: v.name === name, deleted: false, children };
  };
  const origin = root.origin;
  if (origin !== null && !byName.has(origin.volume)) {
    const kept = snapshotsOf(engine, origin.volume, treeNodesMax);
    nodes += 1;
    const children: TreeNodeView[] = [];
    for (const s of kept) if (nodes < treeNodesMax) children.push(await snapshotNode(s));
    for (const c of clonesOf(origin.volume, null)) if (nodes < treeNodesMax) children.push(await volumeNode(c));
    return { name: origin.volume, kind: 'volume', size: Math.max(0, ...kept.map((s) => s.sizeBytes)), mappedBytes: 0,
      exclusiveBytes: null, createdMs: null, current: false, deleted: true, children };
  }
  return volumeNode(root);
}
