// STAND-IN until nvmfadmin's host-access.ts is merged: subsystem NQNs per tenant and the host allow-list.
import type { TenantStore } from '../tenancy/store.js';
import { DEFAULT_TENANT } from '../tenancy/names.js';

export function subsystemNqn(base: string, tenant: string): string { return `${base}:${tenant}`; }

export function tenantOfSubsystemNqn(base: string, nqn: string): string | null {
  return nqn.startsWith(`${base}:`) ? nqn.slice(base.length + 1) : null;
}

export class NvmeHostAccess {
  private readonly lists = new Map<string, string[]>();
  constructor(private readonly tenancy: TenantStore) {}
  allowed(tenant: string, hostNqn: string): boolean {
    if (!this.tenancy.tenantExists(tenant)) return false;
    const list = this.list(tenant);
    return list.length === 0 ? tenant === DEFAULT_TENANT : list.includes(hostNqn);
  }
  list(tenant: string): string[] { return this.lists.get(tenant) ?? []; }
  async add(tenant: string, nqn: string): Promise<void> { this.lists.set(tenant, [...this.list(tenant), nqn]); }
  async remove(tenant: string, nqn: string): Promise<void> { this.lists.set(tenant, this.list(tenant).filter((n) => n !== nqn)); }
}
