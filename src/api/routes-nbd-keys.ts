// A tenant's NBD keys (TLS-PSK identities for the NBD server): create (the only answer that ever
// holds the key), list (identities only), delete. Keys live in the pool's catalog (tenancy/store.ts);
// the NBD server asks for them on each TLS handshake, so a change applies to the next connection.
import { Type } from '@sinclair/typebox';
import { ownTenantParam, type SharedApiContext } from './context.js';
import type { RouteSpec, RouteTable } from './routes.js';
import { TenancyError } from '../tenancy/errors.js';
import type { NbdKeyInfo } from '../tenancy/store.js';

const tag = 'tenants';

const TenantParams = Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 64, description: 'tenant name' }) });
const NbdKeyParams = Type.Object({
  tenant: Type.String({ minLength: 1, maxLength: 64, description: 'tenant name' }),
  identity: Type.String({ minLength: 1, maxLength: 128, description: 'TLS-PSK identity' }),
});
const NbdKey = Type.Object({
  identity: Type.String({ description: 'TLS-PSK identity (the username of qemu\'s tls-creds-psk, nbds://IDENTITY@host)' }),
  tenant: Type.String(),
  createdMs: Type.Integer(),
});
const NbdKeyCreated = Type.Object({
  identity: Type.String(), tenant: Type.String(), createdMs: Type.Integer(),
  key: Type.String({ description: 'the pre-shared key, hex; shown in this answer only' }),
  psk: Type.String({ description: 'the psk file line "IDENTITY:HEXKEY" (gnutls psktool, qemu, nbdkit, nbd-client)' }),
});


function view(k: NbdKeyInfo): NbdKeyInfo { return { identity: k.identity, tenant: k.tenant, createdMs: k.createdMs }; }

export function registerNbdKeyRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const specs: RouteSpec[] = [{
    method: 'POST', url: '/v1/tenants/:tenant/nbd-keys', tag, access: 'write', params: TenantParams,
    summary: 'Create an NBD key (TLS-PSK identity and key) for the tenant; the key is in this answer only',
    responses: { 201: { description: 'created', schema: NbdKeyCreated } },
    handler: async (req, reply, ctx) => {
      const created = await ctx.tenancy.createNbdKey(ownTenantParam(ctx, req));
      return reply.code(201).send({ ...view(created.info), key: created.key, psk: `${created.identity}:${created.key}` });
    },
  }, {
    method: 'GET', url: '/v1/tenants/:tenant/nbd-keys', tag, access: 'write', params: TenantParams,
    summary: 'The tenant\'s NBD keys: identities and creation times (never the keys)',
    responses: { 200: { description: 'keys', schema: Type.Array(NbdKey) } },
    handler: async (req, _reply, ctx) => ctx.tenancy.listNbdKeys(ownTenantParam(ctx, req)).map(view),
  }, {
    method: 'DELETE', url: '/v1/tenants/:tenant/nbd-keys/:identity', tag, access: 'write', params: NbdKeyParams,
    summary: 'Delete an NBD key: new NBD connections with it are refused (open ones keep going)',
    responses: { 204: { description: 'deleted' } },
    handler: async (req, reply, ctx) => {
      const tenant = ownTenantParam(ctx, req);
      const identity = (req.params as { identity: string }).identity;
      // Another tenant's key is "not found", the same answer as a key that does not exist.
      if (!ctx.tenancy.listNbdKeys(tenant).some((k) => k.identity === identity)) {
        throw new TenancyError('nbd_key_not_found', `NBD key not found: ${identity}`);
      }
      await ctx.tenancy.deleteNbdKey(identity);
      return reply.code(204).send();
    },
  }];
  for (const spec of specs) routes.add(spec);
}
