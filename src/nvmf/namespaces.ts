// STAND-IN until nvmfadmin's namespaces.ts is merged: a tenant's volumes, snapshots and clones as
// namespaces (NSID = engine target id + 1), with NGUID/UUID derived from the pool identity and id.
import { createHash } from 'node:crypto';
import type { Engine } from '../engine/index.js';
import { splitQualified } from '../tenancy/names.js';

export interface NvmfNamespace { nsid: number; targetName: string; sizeBytes: number; readOnly: boolean; nguid: Buffer; uuid: Buffer }

export function poolIdentity(root: Engine): Buffer {
  const stored = root.getSetting('nvmf.pool-identity');
  return stored ?? createHash('sha256').update('cairn-pool').digest().subarray(0, 16);
}

export class NamespaceView {
  constructor(private readonly root: Engine, private readonly identity: Buffer) {}

  namespacesOf(tenant: string): NvmfNamespace[] {
    const out: NvmfNamespace[] = [];
    for (const v of this.root.listVolumes()) {
      const { tenant: t, name } = splitQualified(v.name);
      if (t === tenant) out.push(this.ns(v.id, name, v.sizeBytes, false));
    }
    for (const s of this.root.listSnapshots()) {
      const { tenant: t, name } = splitQualified(s.fullName);
      if (t === tenant) out.push(this.ns(s.id, name, s.sizeBytes, true));
    }
    return out.sort((a, b) => a.nsid - b.nsid);
  }

  find(tenant: string, nsid: number): NvmfNamespace | null {
    return this.namespacesOf(tenant).find((n) => n.nsid === nsid) ?? null;
  }

  private ns(id: number, targetName: string, sizeBytes: number, readOnly: boolean): NvmfNamespace {
    const digest = createHash('sha256').update(this.identity).update(String(id)).digest();
    const uuid = Buffer.from(digest.subarray(16, 32));
    uuid[6] = (uuid[6]! & 0x0f) | 0x40;
    uuid[8] = (uuid[8]! & 0x3f) | 0x80;
    return { nsid: id + 1, targetName, sizeBytes, readOnly, nguid: Buffer.from(digest.subarray(0, 16)), uuid };
  }
}
