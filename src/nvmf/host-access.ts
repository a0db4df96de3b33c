// Which hosts may connect to which subsystem: each tenant is one NVMe subsystem, NQN "BASE:TENANT", and
// admits the host NQNs on its allow-list (kept in the pool's catalog by TenantStore). The default
// tenant admits every host while its list is empty, as plain NBD serves it without credentials; every
// other tenant admits no host until one is added. A refused host gets Connect status "Connect Invalid
// Host" (status.ts STATUS_CONNECT_INVALID_HOST).
import { DEFAULT_TENANT, tenantNameProblem } from '../tenancy/names.js';
import { TenancyError } from '../tenancy/errors.js';
import type { NvmeHostInfo, TenantStore } from '../tenancy/store.js';

/** NVMe base spec 2.0 section 4.5: an NQN is at most 223 bytes of UTF-8. */
export const NQN_BYTES_MAX = 223;
export const NQN_BASE_DEFAULT = 'nqn.2026-12.io.cairn';
export const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';
/** The form of an NQN built from a UUID (what `nvme gen-hostnqn` writes to /etc/nvme/hostnqn). */
export const UUID_NQN_PREFIX = 'nqn.2014-08.org.nvmexpress:uuid:';

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
// "nqn." yyyy-mm "." reverse domain name, then optionally ":" and a string the domain's owner chose.
const DOMAIN_NQN_RE = new RegExp(`^nqn\\.[0-9]{4}-(?:0[1-9]|1[0-2])\\.${LABEL}(?:\\.${LABEL})*(?::(.+))?$`);
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Why `nqn` is not a valid NVMe Qualified Name, or null. */
export function nqnProblem(nqn: unknown): string | null {
  if (typeof nqn !== 'string' || nqn.length === 0) return 'an NQN is a non-empty string';
  if (Buffer.byteLength(nqn, 'utf8') > NQN_BYTES_MAX) return `an NQN is at most ${NQN_BYTES_MAX} bytes`;
  // Control characters and spaces would not survive the 256-byte NUL-padded fields NQNs travel in.
  if (/[\u0000-\u0020\u007f]/.test(nqn)) return 'an NQN holds no spaces or control characters';
  if (nqn.startsWith(UUID_NQN_PREFIX)) {
    return UUID_RE.test(nqn.slice(UUID_NQN_PREFIX.length)) ? null : `expected ${UUID_NQN_PREFIX} followed by a UUID`;
  }
  if (!DOMAIN_NQN_RE.test(nqn)) return 'expected nqn.YYYY-MM.reverse.domain[:string] or nqn.2014-08.org.nvmexpress:uuid:UUID';
  return null;
}

/** The subsystem NQN of a tenant. */
export function subsystemNqn(base: string, tenant: string): string {
  return `${base}:${tenant}`;
}

/** The tenant a subsystem NQN names under `base`, or null (another base, or not a tenant name). */
export function tenantOfSubsystemNqn(base: string, nqn: string): string | null {
  if (!nqn.startsWith(`${base}:`)) return null;
  const tenant = nqn.slice(base.length + 1);
  return tenantNameProblem(tenant) === null ? tenant : null;
}

/** Why `base` cannot be a subsystem NQN base, or null: it must be an NQN without a ":" part. */
export function nqnBaseProblem(base: string): string | null {
  const problem = nqnProblem(base);
  if (problem !== null) return problem;
  if (base.includes(':')) return 'an NQN base has no ":" part (the tenant name is appended after one)';
  // The longest tenant name must still make a valid NQN.
  if (Buffer.byteLength(base, 'utf8') + 1 + 32 > NQN_BYTES_MAX) return `an NQN base is at most ${NQN_BYTES_MAX - 33} bytes`;
  return null;
}

export class NvmeHostAccess {
  constructor(private readonly tenancy: TenantStore) {}

  /** Whether `hostNqn` may connect to the tenant's subsystem (a tenant that does not exist admits none). */
  allowed(tenant: string, hostNqn: string): boolean {
    if (!this.tenancy.tenantExists(tenant)) return false;
    if (this.tenancy.hasNvmeHost(tenant, hostNqn)) return true;
    return tenant === DEFAULT_TENANT && this.tenancy.listNvmeHosts(DEFAULT_TENANT).length === 0;
  }

  list(tenant: string): string[] {
    return this.tenancy.listNvmeHosts(tenant).map((h) => h.nqn);
  }

  /** Like `list` with creation times, for the API. */
  entries(tenant: string): NvmeHostInfo[] {
    return this.tenancy.listNvmeHosts(tenant);
  }

  /** Adds a host NQN: invalid_argument (bad NQN), tenant_not_found, name_taken (already there). */
  async add(tenant: string, nqn: string): Promise<NvmeHostInfo> {
    const problem = nqnProblem(nqn);
    if (problem !== null) throw new TenancyError('invalid_argument', `invalid host NQN ${JSON.stringify(nqn)}: ${problem}`);
    return this.tenancy.addNvmeHost(tenant, nqn);
  }

  /** Removes a host NQN: tenant_not_found, nvme_host_not_found. Connected controllers are not cut. */
  async remove(tenant: string, nqn: string): Promise<void> {
    if (!this.tenancy.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
    await this.tenancy.removeNvmeHost(tenant, nqn);
  }
}
