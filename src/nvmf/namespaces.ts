// Which NVMe namespaces a tenant's subsystem holds: every volume, snapshot (read-only) and clone of the
// tenant, computed from the engine on demand. Identities are stable and unique for the life of the
// pool: NSID = engine target id + 1 (ids are never reused), NGUID and UUID derived from the pool's
// identity and the target id, so a clone never shares its source's (Linux refuses duplicate ids:
// nvme_global_check_duplicate_ids) and a namespace keeps its ids across daemon restarts.
import { createHash, randomBytes } from 'node:crypto';
import type { Engine } from '../engine/index.js';
import { splitQualified } from '../tenancy/names.js';

/** The one LBA format every namespace has: 4 KiB, the engine's block, so no write is ever a read-modify-write. */
export const LBA_SIZE_LOG2 = 12;
export const LBA_SIZE_BYTES = 1 << LBA_SIZE_LOG2;
/** NSIDs 0 and 0xFFFFFFFF are not namespaces (0: none, all ones: broadcast). */
export const NSID_MAX = 0xfffffffe;
/** Where the pool's NVMe identity is kept (16 random bytes, created once). */
export const POOL_IDENTITY_SETTING = 'nvmf/pool-identity';
export const POOL_IDENTITY_BYTES = 16;

export interface NvmfNamespace {
  nsid: number;
  /** The engine target it serves (NSID - 1 unless a cluster identity gave it another NSID). */
  targetId: number;
  /** The tenant's name for the target: "VOL" or "VOL@SNAP", as ScopedEngine.resolve takes it. */
  targetName: string;
  sizeBytes: number;
  readOnly: boolean;
  /** 16 bytes. */
  nguid: Buffer;
  /** 16 bytes, RFC 9562 version 8 (derived, not random). */
  uuid: Buffer;
  /** ANA group of this path's state (a cluster node only, ana.ts). */
  anaGroupId?: number;
}

/** Identities created in this process but perhaps not yet durable, so two callers agree on one. */
const pendingIdentities = new WeakMap<Engine, Buffer>();

/**
 * The pool's 16-byte NVMe identity (the seed of NGUIDs, UUIDs and serial numbers). Read from the
 * pool's settings; on a pool without one, a new one is made and its commit started: call
 * `ensurePoolIdentity` at start-up so it is durable before a host sees an id derived from it.
 */
export function poolIdentity(root: Engine): Buffer {
  const stored = root.getSetting(POOL_IDENTITY_SETTING);
  if (stored !== null && stored.length === POOL_IDENTITY_BYTES) return Buffer.from(stored);
  let pending = pendingIdentities.get(root);
  if (pending === undefined) {
    pending = randomBytes(POOL_IDENTITY_BYTES);
    pendingIdentities.set(root, pending);
    // ensurePoolIdentity reports a failure; here the caller only needs the value, which stays the same in this process.
    root.putSettings([{ key: POOL_IDENTITY_SETTING, value: pending }]).catch(() => undefined);
  }
  return Buffer.from(pending);
}

/** The pool identity, durable in the pool when it resolves. */
export async function ensurePoolIdentity(root: Engine): Promise<Buffer> {
  const stored = root.getSetting(POOL_IDENTITY_SETTING);
  if (stored !== null && stored.length === POOL_IDENTITY_BYTES) return Buffer.from(stored);
  const identity = poolIdentity(root);
  await root.putSettings([{ key: POOL_IDENTITY_SETTING, value: identity }]);
  return identity;
}

function derived(label: string, pool: Buffer, id: number): Buffer {
  const idBytes = Buffer.alloc(8);
  idBytes.writeBigUInt64LE(BigInt(id));
  return createHash('sha256').update(label).update(pool).update(idBytes).digest().subarray(0, 16);
}

/** A namespace's NGUID: 16 bytes, never all zero (zero means "none" to a host). */
export function namespaceNguid(pool: Buffer, targetId: number): Buffer {
  const out = derived('cairn nvmf nguid', pool, targetId);
  if (out.every((b) => b === 0)) out[15] = 1;
  return out;
}

/** A namespace's UUID: version 8 (custom) with the RFC 9562 variant bits. */
export function namespaceUuid(pool: Buffer, targetId: number): Buffer {
  const out = derived('cairn nvmf uuid', pool, targetId);
  out[6] = (out[6]! & 0x0f) | 0x80;
  out[8] = (out[8]! & 0x3f) | 0x80;
  return out;
}

/** The 20-character serial number of a tenant's controllers: stable, ASCII, unique per pool and tenant. */
export function controllerSerial(pool: Buffer, tenant: string): string {
  return createHash('sha256').update('cairn nvmf serial').update(pool).update(tenant).digest('hex').slice(0, 20);
}

/**
 * Identities that hold across a cluster's nodes (a replicated volume is one namespace on every node
 * that exposes it: same NSID, NGUID and UUID, or Linux refuses it as a shared namespace). By engine
 * name ("T/VOL" or "T/VOL@SNAP"); null: the pool's own identity (NSID = id + 1).
 */
export interface NamespaceIdentities {
  of(engineName: string): { nsid: number; nguid: Buffer; uuid: Buffer } | null;
}

export class NamespaceView {
  private readonly pool: Buffer;
  private nsidByTarget = new Map<number, number>();
  /** Every tenant's namespaces from one pass over the catalog, and the catalog state they were read at. */
  private cache: { key: string; byTenant: Map<string, NvmfNamespace[]> } | null = null;

  constructor(private readonly root: Engine, poolIdentityBytes: Buffer, private readonly identities: NamespaceIdentities | null = null) {
    if (poolIdentityBytes.length !== POOL_IDENTITY_BYTES) throw new Error(`pool identity must be ${POOL_IDENTITY_BYTES} bytes`);
    this.pool = Buffer.from(poolIdentityBytes);
  }

  /**
   * The tenant's namespaces, by NSID. One pass over the pool's volumes and snapshots, reused while
   * the pool's commit generation and counts stay the same (a host's namespace scan asks once per
   * namespace); `invalidate` forgets it at once, e.g. on a target event.
   */
  namespacesOf(tenant: string): NvmfNamespace[] {
    return [...(this.all().get(tenant) ?? [])];
  }

  /** One namespace, with its size read now (a resize shows before the next commit). */
  find(tenant: string, nsid: number): NvmfNamespace | null {
    if (!Number.isInteger(nsid) || nsid < 1 || nsid > NSID_MAX) return null;
    const ns = (this.all().get(tenant) ?? []).find((n) => n.nsid === nsid);
    if (ns === undefined) return null;
    let sizeBytes: number;
    try {
      sizeBytes = this.root.targetSizeBytes(ns.targetId);
    } catch {
      // Deleted since the list was read: the namespace is gone.
      this.invalidate();
      return null;
    }
    return { ...ns, sizeBytes };
  }

  invalidate(): void {
    this.cache = null;
  }

  /** The NSID of an engine target (as last listed), for engine events by target id. */
  nsidOfTarget(targetId: number): number {
    this.all();
    return this.nsidByTarget.get(targetId) ?? targetId + 1;
  }

  private all(): Map<string, NvmfNamespace[]> {
    const stats = this.root.stats();
    const key = `${stats.generation}/${stats.volumes}/${stats.snapshots}/${this.identities === null ? '' : this.identitiesVersion}`;
    if (this.cache !== null && this.cache.key === key) return this.cache.byTenant;
    const byTenant = new Map<string, NvmfNamespace[]>();
    const add = (tenant: string, ns: NvmfNamespace): void => {
      const list = byTenant.get(tenant);
      if (list === undefined) byTenant.set(tenant, [ns]); else list.push(ns);
    };
    const nsidByTarget = new Map<number, number>();
    for (const v of this.root.listVolumes()) {
      const { tenant, name } = splitQualified(v.name);
      const ns = this.namespace(v.id, v.name, name, v.sizeBytes, false);
      nsidByTarget.set(v.id, ns.nsid);
      add(tenant, ns);
    }
    for (const s of this.root.listSnapshots()) {
      const { tenant, name } = splitQualified(s.fullName);
      const ns = this.namespace(s.id, s.fullName, name, s.sizeBytes, true);
      nsidByTarget.set(s.id, ns.nsid);
      add(tenant, ns);
    }
    this.nsidByTarget = nsidByTarget;
    for (const list of byTenant.values()) list.sort((a, b) => a.nsid - b.nsid);
    this.cache = { key, byTenant };
    return byTenant;
  }

  /** Bumped by the owner of `identities` when they change (a cluster record came or went). */
  identitiesVersion = 0;

  private namespace(targetId: number, engineName: string, targetName: string, sizeBytes: number, readOnly: boolean): NvmfNamespace {
    const shared = this.identities?.of(engineName) ?? null;
    if (shared !== null) return { nsid: shared.nsid, targetId, targetName, sizeBytes, readOnly, nguid: shared.nguid, uuid: shared.uuid };
    return {
      nsid: targetId + 1, targetId, targetName, sizeBytes, readOnly,
      nguid: namespaceNguid(this.pool, targetId), uuid: namespaceUuid(this.pool, targetId),
    };
  }
}
