// How tenants appear in engine names: a volume of tenant T is "T/NAME" to the engine, except the
// default tenant's, which keep their plain names (so a pool from before tenants reads unchanged).
export const DEFAULT_TENANT = 'default';
/** Tenant and token names: short, because they prefix volume names and fill fixed-size records. */
export const TENANT_NAME_BYTES_MAX = 32;
const TENANT_NAME_RE = /^[a-z0-9][a-z0-9-]*$/;

/** A tenant name is lower-case letters, digits and '-', at most 32 bytes. Returns why not, or null. */
export function tenantNameProblem(name: string): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'tenant name is empty';
  if (name.length > TENANT_NAME_BYTES_MAX) return `tenant name longer than ${TENANT_NAME_BYTES_MAX} bytes`;
  if (!TENANT_NAME_RE.test(name)) return 'tenant name must start with a lower-case letter or digit and hold only a-z, 0-9 and -';
  return null;
}

/** The engine's name for a tenant's volume (or "VOL@SNAP" reference). */
export function qualify(tenant: string, name: string): string {
  return tenant === DEFAULT_TENANT ? name : `${tenant}/${name}`;
}

/** The tenant owning an engine volume name, and the name the tenant knows it by. */
export function splitQualified(engineName: string): { tenant: string; name: string } {
  const slash = engineName.indexOf('/');
  return slash < 0 ? { tenant: DEFAULT_TENANT, name: engineName } : { tenant: engineName.slice(0, slash), name: engineName.slice(slash + 1) };
}
