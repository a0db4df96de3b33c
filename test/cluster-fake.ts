// A small in-process stand-in for ClusterNode (src/cluster/handle.ts) for the daemon's tests: the
// records and node views are plain data a test sets, the engine is the local one, and every change
// tells onChange listeners, as the real node does when etcd's watch reports one.
import type { Engine } from '../src/engine/index.js';
import type { ClusterCounters, ClusterHandle, ClusterStatus, NodeView, ReplicaView } from '../src/cluster/handle.js';
import type { NodeRecord, VolumeRecord } from '../src/cluster/records.js';
import { defaultMinInSync } from '../src/cluster/records.js';

export class FakeCluster implements ClusterHandle {
  readonly records = new Map<string, VolumeRecord>();
  readonly nodeViews = new Map<string, NodeView>();
  readonly progress = new Map<string, number>();
  readonly drained: string[] = [];
  counterValues: ClusterCounters = { failovers: 0, membersDropped: 0, rebuildBytes: 0, rebuildsCompleted: 0, inflightReplicaWrites: 0 };
  private readonly listeners = new Set<(volume: string | null) => void>();

  constructor(readonly self: string, readonly engine: Engine, nodes: Array<Partial<NodeRecord> & { name: string }>) {
    for (const n of nodes) this.addNode(n);
  }

  addNode(n: Partial<NodeRecord> & { name: string }, alive = true): void {
    this.nodeViews.set(n.name, {
      name: n.name, zone: n.zone ?? null, incarnation: n.incarnation ?? `inc-${n.name}`, startedMs: n.startedMs ?? 1_700_000_000_000,
      draining: n.draining ?? false, addresses: n.addresses ?? { api: null, nbd: null, nvmf: null, repl: `${n.name}:10811` },
      alive, replicas: 0, primaries: 0,
    });
    this.emit(null);
  }

  async createVolume(name: string, sizeBytes: number, replicas: number | null): Promise<VolumeRecord> {
    const count = replicas ?? 1;
    const chosen = [...this.nodeViews.keys()].sort().slice(0, count);
    if (chosen.length < count) throw Object.assign(new Error(`${count} replicas need ${count} nodes`), { code: 'invalid_argument' });
    if (chosen.includes(this.self)) await this.engine.createVolume(name, sizeBytes);
    const record: VolumeRecord = {
      name, sizeBytes, replicas: count, minInSync: defaultMinInSync(count), epoch: 1, primary: chosen[0]!,
      members: chosen.map((node) => ({ node, state: 'in-sync' as const, incarnation: `inc-${node}` })), createdMs: 1_700_000_000_000,
    };
    this.setRecord(record);
    return record;
  }

  setRecord(record: VolumeRecord): void {
    this.records.set(record.name, record);
    this.emit(record.name);
  }

  /** Moves the primary of `name` to `node` (epoch + 1), as a takeover would. */
  movePrimary(name: string, node: string): void {
    const r = this.records.get(name)!;
    this.setRecord({ ...r, primary: node, epoch: r.epoch + 1 });
  }

  volume(name: string): VolumeRecord | null { return this.records.get(name) ?? null; }
  volumes(): VolumeRecord[] { return [...this.records.values()]; }
  replicas(name: string): ReplicaView[] {
    const r = this.records.get(name);
    if (r === undefined) return [];
    return r.members.map((m) => ({ node: m.node, state: m.state, rebuildProgress: this.progress.get(`${name}/${m.node}`) ?? null, primary: m.node === r.primary }));
  }
  primaryOf(name: string): { node: NodeRecord; local: boolean } | null {
    const r = this.records.get(name);
    const node = r === undefined ? undefined : this.nodeViews.get(r.primary);
    if (node === undefined || !node.alive) return null;
    return { node, local: node.name === this.self };
  }
  nodes(): NodeView[] {
    return [...this.nodeViews.values()].map((n) => {
      const held = this.volumes().filter((v) => v.members.some((m) => m.node === n.name));
      return { ...n, replicas: held.length, primaries: held.filter((v) => v.primary === n.name).length };
    });
  }
  async status(): Promise<ClusterStatus> {
    const degraded = this.volumes().filter((v) => v.members.filter((m) => m.state === 'in-sync').length < v.replicas)
      .map((v) => ({ name: v.name, inSync: v.members.filter((m) => m.state === 'in-sync').length, replicas: v.replicas, primary: v.primary }));
    return { controlPlane: { healthy: true, endpoints: ['http://127.0.0.1:2379'], error: null }, self: this.self, nodes: this.nodes(), volumes: this.records.size, degraded };
  }
  /** Moves every replica off `node` (to no one: the fake only forgets them) a little at a time. */
  async drain(node: string, _timeoutMs: number): Promise<void> {
    this.drained.push(node);
    const view = this.nodeViews.get(node)!;
    this.nodeViews.set(node, { ...view, draining: true });
    for (const v of this.volumes()) {
      if (!v.members.some((m) => m.node === node)) continue;
      await new Promise((r) => setTimeout(r, 20));
      this.setRecord({ ...v, members: v.members.filter((m) => m.node !== node), epoch: v.epoch + 1 });
    }
  }
  counters(): ClusterCounters { return this.counterValues; }
  async setVolumeQos(name: string, encoded: string | null): Promise<void> {
    const rec = this.records.get(name);
    if (rec === undefined) throw new Error(`no record for ${name}`);
    const { qos: _old, ...rest } = rec;
    this.setRecord(encoded === null ? rest : { ...rest, qos: encoded });
  }
  onChange(listener: (volume: string | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  async close(): Promise<void> {}
  private emit(volume: string | null): void { for (const l of this.listeners) l(volume); }
}
