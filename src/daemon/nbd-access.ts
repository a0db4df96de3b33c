// Who sees which NBD exports (the daemon's answer to the NBD server's exportsFor): a client without
// credentials (plain, or TLS with a server certificate only) sees the default tenant's volumes; a
// TLS-PSK key sees its tenant's (a pool key: the tenant it was created for; a psk file key: the
// default tenant); a client certificate names its tenant by a subjectAltName URI "cairn:tenant:NAME",
// or "cairn:admin" for every export under the engine's names (TENANT/NAME). Anything else: no access.
import type { Engine } from '../engine/index.js';
import type { PeerIdentity, PskEntry } from '../nbd/tls.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import { DEFAULT_TENANT, tenantNameProblem } from '../tenancy/names.js';
import type { TenantStore } from '../tenancy/store.js';

export const CERT_TENANT_URI_PREFIX = 'cairn:tenant:';
export const CERT_ADMIN_URI = 'cairn:admin';

/** Every tenant, as a certificate's "cairn:admin" URI asks for. */
const ALL_TENANTS = Symbol('all tenants');

/**
 * The tenant a certificate's URIs name: none of ours → the default tenant (a certificate from before
 * tenants keeps its access); exactly one → that one; two or more, or a malformed one → null (refused).
 */
export function certTenant(uris: string[]): string | typeof ALL_TENANTS | null {
  const ours = uris.filter((u) => u === CERT_ADMIN_URI || u.startsWith(CERT_TENANT_URI_PREFIX));
  if (ours.length === 0) return DEFAULT_TENANT;
  if (ours.length > 1) return null;
  const uri = ours[0]!;
  if (uri === CERT_ADMIN_URI) return ALL_TENANTS;
  const tenant = uri.slice(CERT_TENANT_URI_PREFIX.length);
  return tenantNameProblem(tenant) === null ? tenant : null;
}

function tenantOf(peer: PeerIdentity): string | typeof ALL_TENANTS | null {
  switch (peer.kind) {
    case 'plain': case 'anonymous': return DEFAULT_TENANT;
    case 'psk': return peer.owner ?? DEFAULT_TENANT;
    case 'cert': return certTenant(peer.uris);
  }
}

export interface NbdAccess {
  exportsFor(peer: PeerIdentity): Engine | null;
  /** The pool's NBD keys (TenantStore), asked on every TLS-PSK handshake. */
  pskLookup(identity: string): PskEntry | null;
}

export function nbdAccess(engine: Engine, tenancy: TenantStore): NbdAccess {
  return {
    exportsFor: (peer) => {
      const tenant = tenantOf(peer);
      if (tenant === ALL_TENANTS) return engine;
      // A tenant deleted since (its keys went with it; a certificate outlives it) has no exports.
      if (tenant === null || !tenancy.tenantExists(tenant)) return null;
      return new ScopedEngine(engine, tenant);
    },
    pskLookup: (identity) => {
      const found = tenancy.pskLookup(identity);
      return found === null ? null : { key: found.key, owner: found.tenant };
    },
  };
}
