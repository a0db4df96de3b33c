// The reference model of the cluster simulator: per volume and block, every version the client
// tried and what became of it. What a block may hold is "the floor or a later try": the floor is
// the last acknowledged version (cluster-design.md invariant 1 with no crash since), or, after a
// crash of a node holding the volume, the last one an acknowledged flush covered. Snapshots keep
// the allowed range of each block at the instant they were taken.
import { decodeBlock, volumeTag } from './block-content.js';

export type WriteState = 'pending' | 'acked' | 'failed';

export interface BlockModel {
  /** Versions tried, in order; index = version - 1. */
  states: WriteState[];
  /** Node that acknowledged each acked version (for flushes), and the step it was acked at. */
  ackedBy: Map<number, string>;
  /** Last acknowledged version (0: none). */
  ackedFloor: number;
  /** Last version an acknowledged flush made durable (0: none). */
  flushFloor: number;
  /** True after a crash of a node holding the volume: only flushed versions are owed. */
  crashedSinceAck: boolean;
}

export interface SnapshotModel {
  fullName: string;
  /** Per block: lowest and highest allowed version (0 = zero). */
  ranges: Array<{ lo: number; hi: number }>;
  /** The client saw it succeed (else it may or may not exist). */
  acked: boolean;
}

export interface VolumeModel {
  name: string;
  tag: number;
  sizeBlocks: number;
  replicas: number;
  blocks: BlockModel[];
  snapshots: SnapshotModel[];
  /** Blocks with a write in flight (the client keeps one per block, so versions order by time). */
  busy: Set<number>;
  /** Data ops in flight on this volume. */
  inflight: number;
  snapshotsTaken: number;
  /** A snapshot call is in flight: no write starts. */
  snapshotting: boolean;
  /** The create call was acknowledged (else the record may or may not exist). */
  created: boolean;
  /** Its first create attempt failed (the call was retried or gave up): finding F1 may apply. */
  createRetried: boolean;
  /** Created encrypted: no disk may hold its blocks' plaintext. */
  encrypted: boolean;
}

export class ClusterModel {
  readonly volumes = new Map<string, VolumeModel>();
  /** Invariant breaks seen outside a quiesce (record history), failed at the next step. */
  readonly violations: string[] = [];

  addVolume(name: string, sizeBlocks: number, replicas: number, encrypted = false): VolumeModel {
    const v: VolumeModel = {
      name, tag: volumeTag(name), sizeBlocks, replicas, snapshots: [], busy: new Set(), inflight: 0, snapshotsTaken: 0, snapshotting: false, created: false, createRetried: false, encrypted,
      blocks: Array.from({ length: sizeBlocks }, () => ({ states: [], ackedBy: new Map(), ackedFloor: 0, flushFloor: 0, crashedSinceAck: false })),
    };
    this.volumes.set(name, v);
    return v;
  }

  /** A new version of `block` goes out: returns it. */
  begin(v: VolumeModel, block: number): number {
    const b = v.blocks[block]!;
    b.states.push('pending');
    return b.states.length;
  }

  ack(v: VolumeModel, block: number, version: number, node: string): void {
    const b = v.blocks[block]!;
    b.states[version - 1] = 'acked';
    b.ackedBy.set(version, node);
    if (version > b.ackedFloor) {
      b.ackedFloor = version;
      b.crashedSinceAck = false;
    }
  }

  fail(v: VolumeModel, block: number, version: number): void {
    const b = v.blocks[block]!;
    if (b.states[version - 1] === 'pending') b.states[version - 1] = 'failed';
  }

  /**
   * A flush acknowledged by `node`, issued when `ackedBefore` held the versions acked then: each
   * block's floor rises to the newest version `node` acknowledged before the flush was issued.
   */
  flushed(v: VolumeModel, node: string, ackedBefore: Map<number, number>): void {
    for (const [block, version] of ackedBefore) {
      const b = v.blocks[block]!;
      // Only versions this node acknowledged: another node's acks are not covered by its flush.
      let covered = 0;
      for (let ver = version; ver >= 1; ver--) if (b.ackedBy.get(ver) === node) { covered = ver; break; }
      if (covered > b.flushFloor) b.flushFloor = covered;
    }
  }

  /** The versions acked now per block (what a flush issued now covers). */
  ackedNow(v: VolumeModel): Map<number, number> {
    const out = new Map<number, number>();
    v.blocks.forEach((b, i) => { if (b.ackedFloor > 0) out.set(i, b.ackedFloor); });
    return out;
  }

  /** A node holding the volume lost its memory: unflushed acknowledged writes may be gone. */
  crashed(v: VolumeModel): void {
    for (const b of v.blocks) b.crashedSinceAck = true;
  }

  floor(b: BlockModel): number { return b.crashedSinceAck ? b.flushFloor : b.ackedFloor; }

  /** The allowed range of block `block` now: [floor, last tried]. */
  range(v: VolumeModel, block: number): { lo: number; hi: number } {
    const b = v.blocks[block]!;
    return { lo: this.floor(b), hi: b.states.length };
  }

  takeSnapshot(v: VolumeModel, fullName: string): SnapshotModel {
    const s: SnapshotModel = { fullName, ranges: v.blocks.map((_, i) => this.range(v, i)), acked: false };
    v.snapshots.push(s);
    return s;
  }

  /**
   * Null when `data` (one block of `v` at `block`) is a version the range allows, else what is
   * wrong. A version in the range that was never sent cannot appear (it was never written).
   */
  judge(v: VolumeModel, block: number, data: Buffer, range: { lo: number; hi: number }): string | null {
    const d = decodeBlock(data);
    let version: number;
    if (d.kind === 'garbage') return `garbage: ${d.why}`;
    if (d.kind === 'zero') version = 0;
    else {
      if (d.volTag !== v.tag || d.block !== block) return `block of another place (tag ${d.volTag.toString(16)}, block ${d.block}, v${d.version})`;
      version = d.version;
    }
    if (version < range.lo) return `v${version} is older than the floor v${range.lo} (allowed v${range.lo}..v${range.hi}): a lost acknowledged write`;
    if (version > range.hi) return `v${version} was never written (allowed v${range.lo}..v${range.hi})`;
    return null;
  }
}
