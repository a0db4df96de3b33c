// The API's JSON objects (schemas.ts documents them), built from the engine's catalog records.
// One place decides field names and units, so the CLI and other clients see one stable shape.
import type { Engine, SnapshotInfo, VolumeInfo } from '../engine/index.js';
import type { QosLimits } from '../qos/limits.js';
import { volumeQosView } from './routes-qos.js';
import type { ReplicaView } from '../cluster/handle.js';

export interface ApiContextViews {
  nbdUri(name: string): string | null;
  qos?: { volumeLimits(id: number): QosLimits | null };
  /** A clustered volume's replicas and epoch (absent or null: not clustered, fields left out). */
  replication?(name: string): { replicas: ReplicaView[]; epoch: number } | null;
}

function qosOf(id: number, ctx: ApiContextViews) {
  const limits = ctx.qos?.volumeLimits(id) ?? null;
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
    qos: qosOf(v.id, ctx),
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
  current: boolean;
  children: TreeNodeView[];
}

/** Bound on the nodes of one lineage tree response. */
export const treeNodesMax = 10_000;

/** The lineage of `name`: from its oldest still-existing ancestor down through snapshots and clones. */
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
  const volumeNode = async (v: VolumeInfo): Promise<TreeNodeView> => {
    nodes += 1;
    const children: TreeNodeView[] = [];
    for (const snap of v.snapshots) {
      if (nodes >= treeNodesMax) break;
      const s = engine.getSnapshot(`${v.name}@${snap}`);
      nodes += 1;
      const snapChildren: TreeNodeView[] = [];
      for (const c of clonesOf(v.name, snap)) if (nodes < treeNodesMax) snapChildren.push(await volumeNode(c));
      children.push({ name: s.fullName, kind: 'snapshot', size: s.sizeBytes, mappedBytes: s.mappedBytes,
        exclusiveBytes: await exclusive(s.fullName), current: s.fullName === name, children: snapChildren });
    }
    for (const c of clonesOf(v.name, null)) if (nodes < treeNodesMax) children.push(await volumeNode(c));
    return { name: v.name, kind: 'volume', size: v.sizeBytes, mappedBytes: v.mappedBytes,
      exclusiveBytes: await exclusive(v.name), current: v.name === name, children };
  };
  return volumeNode(root);
}
