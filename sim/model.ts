// The simulator's reference model: per volume and snapshot, a plain map from block number to
// content, plus what a crash may legitimately leave (per block, every state since the last durable
// point). "Identity" stands in for the physical block: equal identities mean "never rewritten in
// between", which is what diff must not report.

import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';

/** What a block of a target holds. `content` null = zeroes. */
export interface BlockState {
  content: Buffer | null;
  /** Fresh for every write/trim/zero of the block; copied by snapshot, clone, revert. -1: unknown. */
  identity: number;
  /** Whether the engine maps it (holds a data block): 'maybe' where both are allowed. */
  mapped: 'yes' | 'no' | 'maybe';
}

export interface ModelTarget {
  /** "v3" or "v3@s2" */
  name: string;
  kind: 'volume' | 'snapshot';
  /** Owning volume name (the volume itself for a volume). */
  volume: string;
  sizeBytes: number;
  /** Engine target id. */
  id: number;
  blocks: Map<number, BlockState>;
  /** Per block, every state a crash may leave (first: the durable one); only volumes have these. */
  pending: Map<number, BlockState[]>;
  /**
   * A flatten resumed in the background (after a crash) may be copying this volume's shared blocks
   * at any moment, or did while this snapshot was taken: physical identities are unknown.
   */
  flattening?: boolean;
  /** The label of its lineage's key in `Model.keys` (encrypted), or null (plain). */
  key: string | null;
}

/** An encrypted lineage's key as the model knows it. */
export interface ModelKey {
  /** The engine's key slot; -1 until the engine names it (the fault sweep's planned models). */
  keyId: number;
  dek: Buffer;
  /**
   * The wrapped forms the slot may hold: one, or old and new after a re-wrap a crash or a failure
   * cut short (until a re-wrap completes again).
   */
  wrapped: Buffer[];
  /** Locked by lockKey (every key is unlocked again right after a reopen). */
  locked: boolean;
}

export const holeState: BlockState = { content: null, identity: 0, mapped: 'no' };

export function blockOf(t: ModelTarget, blockNumber: number): BlockState {
  return t.blocks.get(blockNumber) ?? holeState;
}

export function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Short fingerprint of a block's content for messages. */
export function fingerprint(content: Buffer | null): string {
  if (content === null || isZero(content)) return 'zero';
  let h = 0x811c9dc5;
  for (let i = 0; i < content.length; i += 7) h = Math.imul(h ^ (content[i] ?? 0), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

export function sameContent(a: Buffer | null, b: Buffer | null): boolean {
  const az = a === null || isZero(a);
  const bz = b === null || isZero(b);
  if (az || bz) return az && bz;
  return (a as Buffer).equals(b as Buffer);
}

/** Merges the candidates a read matched into one state (unknown identity/mapping where they differ). */
export function merge(matches: BlockState[]): BlockState {
  const first = matches[0] as BlockState;
  const identity = matches.every((m) => m.identity === first.identity) ? first.identity : -1;
  const mapped = matches.every((m) => m.mapped === first.mapped) ? first.mapped : 'maybe';
  return { content: first.content, identity, mapped };
}

/** The states among `candidates` whose content matches what was read, merged; null if none. */
export function matchRead(candidates: BlockState[], got: Buffer): BlockState | null {
  const matches = candidates.filter((c) => sameContent(c.content, got));
  return matches.length === 0 ? null : merge(matches);
}

export class Model {
  readonly targets = new Map<string, ModelTarget>();
  /** Settings (key to value as latin1 text): committed when set, so always exactly what the pool holds. */
  readonly settings = new Map<string, string>();
  /**
   * Keys of encrypted lineages by label (the name of the volume that began the lineage). A label no
   * target uses any more is a deleted lineage, kept until its key is seen gone from the device.
   */
  readonly keys = new Map<string, ModelKey>();
  private identityNext = 1;

  freshIdentity(): number {
    return this.identityNext++;
  }

  /** An independent copy (block states are immutable and shared); identities stay unique across both. */
  clone(): Model {
    const copy = new Model();
    copy.identityNext = this.identityNext + 1_000_000_000;
    for (const [key, value] of this.settings) copy.settings.set(key, value);
    for (const [label, k] of this.keys) copy.keys.set(label, { ...k, wrapped: [...k.wrapped] });
    for (const [name, t] of this.targets) {
      copy.targets.set(name, {
        ...t,
        blocks: new Map(t.blocks),
        pending: new Map([...t.pending].map(([b, list]) => [b, [...list]])),
      });
    }
    return copy;
  }

  /** Keys of the lineages that still have a member (volume or snapshot), by label. */
  liveKeys(): Map<string, ModelKey> {
    const live = new Map<string, ModelKey>();
    for (const t of this.targets.values()) {
      if (t.key === null || live.has(t.key)) continue;
      const k = this.keys.get(t.key);
      if (k === undefined) throw new Error(`model: ${t.name} names key ${t.key}, which the model lacks`);
      live.set(t.key, k);
    }
    return live;
  }

  /** Keys of lineages whose last member is gone, with their labels. */
  deadKeys(): [string, ModelKey][] {
    const live = this.liveKeys();
    return [...this.keys].filter(([label]) => !live.has(label));
  }

  /** Forgets the deleted lineages' keys (once their absence from the device was checked). */
  dropDeadKeys(): void {
    const live = this.liveKeys();
    for (const label of [...this.keys.keys()]) if (!live.has(label)) this.keys.delete(label);
  }

  volumes(): ModelTarget[] {
    return [...this.targets.values()].filter((t) => t.kind === 'volume');
  }

  snapshots(volume?: string): ModelTarget[] {
    return [...this.targets.values()].filter((t) => t.kind === 'snapshot' && (volume === undefined || t.volume === volume));
  }

  get(name: string): ModelTarget {
    const t = this.targets.get(name);
    if (t === undefined) throw new Error(`model: no target ${name}`);
    return t;
  }

  addVolume(name: string, sizeBytes: number, id: number, key: string | null = null): ModelTarget {
    const t: ModelTarget = { name, kind: 'volume', volume: name, sizeBytes, id, blocks: new Map(), pending: new Map(), key };
    this.targets.set(name, t);
    return t;
  }

  /** A point-in-time copy (snapshot or clone) of `source`; block states are immutable, so shared. */
  addCopy(source: ModelTarget, name: string, kind: 'volume' | 'snapshot', id: number): ModelTarget {
    const volume = kind === 'volume' ? name : source.name;
    const t: ModelTarget = {
      name, kind, volume, sizeBytes: source.sizeBytes, id, blocks: new Map(source.blocks), pending: new Map(),
      flattening: kind === 'snapshot' && source.flattening === true, key: source.key,
    };
    this.targets.set(name, t);
    return t;
  }

  /** Sets a block's state, remembering the previous one as a crash candidate if not durable yet. */
  setBlock(t: ModelTarget, blockNumber: number, next: BlockState, durable: boolean): void {
    if (durable) {
      t.pending.delete(blockNumber);
    } else {
      let list = t.pending.get(blockNumber);
      if (list === undefined) {
        list = [blockOf(t, blockNumber)];
        t.pending.set(blockNumber, list);
      }
      list.push(next);
    }
    t.blocks.set(blockNumber, next);
  }

  /** A durable point (flush, FUA commit, catalog change): what is current is what a crash keeps. */
  durablePoint(): void {
    for (const t of this.targets.values()) t.pending.clear();
  }

  /** Drops blocks at or past a new, smaller size. */
  truncate(t: ModelTarget, sizeBytes: number): void {
    const firstGone = Math.ceil(sizeBytes / BLOCK_SIZE_BYTES);
    for (const blockNumber of [...t.blocks.keys()]) if (blockNumber >= firstGone) t.blocks.delete(blockNumber);
    for (const blockNumber of [...t.pending.keys()]) if (blockNumber >= firstGone) t.pending.delete(blockNumber);
    t.sizeBytes = sizeBytes;
  }

  /** Identities present in any target other than `except`. */
  identitiesOutside(except: ModelTarget): Set<number> {
    const seen = new Set<number>();
    for (const t of this.targets.values()) {
      if (t === except) continue;
      for (const s of t.blocks.values()) if (s.mapped !== 'no') seen.add(s.identity);
    }
    return seen;
  }

  /**
   * Data blocks only `t` references (what deleting it would free), or null when the model cannot
   * know: some identity or mapping anywhere is uncertain (after a flatten, a race or a crash).
   */
  exclusiveBlocks(t: ModelTarget): number | null {
    for (const other of this.targets.values()) if (other.flattening) return null;
    let exclusive = 0;
    for (const [b, s] of t.blocks) {
      if (s.identity === -1 || s.mapped === 'maybe') return null;
      if (s.mapped !== 'yes') continue;
      let shared = false;
      // Sharing is only ever at the same block number (snapshots and clones do not shift data).
      for (const other of this.targets.values()) {
        if (other === t) continue;
        const o = other.blocks.get(b);
        if (o === undefined || o.mapped === 'no') continue;
        if (o.identity === -1) return null;
        if (o.identity === s.identity) shared = true;
      }
      if (!shared) exclusive++;
    }
    return exclusive;
  }

  /**
   * After a flatten of `t`: its blocks shared with another target were copied to new physical
   * blocks, so their identity (and that of each crash candidate) is unknown from now on.
   */
  markCopied(t: ModelTarget): void {
    const shared = this.identitiesOutside(t);
    for (const [b, s] of t.blocks) {
      if (s.mapped === 'no' || !(shared.has(s.identity) || s.identity === -1)) continue;
      t.blocks.set(b, { ...s, identity: -1 });
      const candidates = t.pending.get(b);
      if (candidates !== undefined) t.pending.set(b, candidates.map((c) => ({ ...c, identity: -1 })));
    }
    t.flattening = false;
  }

  /** Number of mapped blocks: [certainly mapped, possibly mapped]. */
  mappedBlocks(t: ModelTarget): [number, number] {
    let yes = 0;
    let maybe = 0;
    for (const s of t.blocks.values()) {
      if (s.mapped === 'yes') yes++;
      else if (s.mapped === 'maybe') maybe++;
    }
    return [yes, yes + maybe];
  }
}
