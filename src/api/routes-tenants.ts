// /v1/tenants and /v1/tokens: tenants (admin), API tokens (admin). A token's secret is in the create
// answer only; lists show ids, names, roles and expiry.
import { Type } from '@sinclair/typebox';
import type { ApiContext, SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { CreatedToken, CreateTenantBody, CreateTokenBody, Tenant, TenantDeleteQuery, TenantParams, Token, TokenParams } from './schemas.js';
import type { TenantInfo, TokenInfo } from '../tenancy/store.js';
import { qualify } from '../tenancy/names.js';

function tenantView(t: TenantInfo) {
  return { name: t.name, createdAt: t.createdMs === 0 ? null : new Date(t.createdMs).toISOString(), volumes: t.volumes };
}

function tokenView(t: TokenInfo) {
  return {
    id: t.id, name: t.name, role: t.role, tenant: t.tenant, createdAt: new Date(t.createdMs).toISOString(),
    expiresAt: t.expiresMs === null ? null : new Date(t.expiresMs).toISOString(),
  };
}

/** Deletes every snapshot and volume of `tenant` (tenant delete --force). */
async function deleteTenantData(ctx: ApiContext, tenant: string): Promise<void> {
  const engine = ctx.rootEngine;
  const prefix = qualify(tenant, '');
  for (const s of engine.listSnapshots()) if (s.volume.startsWith(prefix)) await engine.deleteSnapshot(s.fullName);
  for (const v of engine.listVolumes()) if (v.name.startsWith(prefix)) await engine.deleteVolume(v.name);
}

export function registerTenantRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const tag = 'tenants';
  routes.add({
    method: 'GET', url: '/v1/tenants', access: 'admin', tag, summary: 'List tenants (the default tenant first)',
    responses: { 200: { description: 'tenants', schema: Type.Array(Tenant) } },
    handler: async (_req, _reply, ctx) => ctx.tenancy.listTenants().map(tenantView),
  });
  routes.add({
    method: 'POST', url: '/v1/tenants', access: 'admin', tag, summary: 'Create a tenant {name}',
    body: CreateTenantBody, responses: { 201: { description: 'created', schema: Tenant } },
    handler: async (req, reply, ctx) => reply.code(201).send(tenantView(await ctx.tenancy.createTenant((req.body as CreateTenantBody).name))),
  });
  routes.add({
    method: 'GET', url: '/v1/tenants/:tenant', access: 'admin', tag, summary: 'Show a tenant',
    params: TenantParams, responses: { 200: { description: 'the tenant', schema: Tenant } },
    handler: async (req, _reply, ctx) => tenantView(ctx.tenancy.getTenant((req.params as { tenant: string }).tenant)),
  });
  routes.add({
    method: 'DELETE', url: '/v1/tenants/:tenant', access: 'admin', tag,
    summary: 'Delete a tenant with its tokens, NBD keys and NVMe host NQNs; refused (409 tenant_not_empty) while it owns volumes unless ?force=true, which deletes them',
    params: TenantParams, querystring: TenantDeleteQuery, responses: { 204: { description: 'deleted' } },
    handler: async (req, reply, ctx) => {
      const tenant = (req.params as { tenant: string }).tenant;
      ctx.tenancy.getTenant(tenant); // 404 before any data is touched
      if ((req.query as TenantDeleteQuery).force === true && tenant !== 'default') await deleteTenantData(ctx, tenant);
      await ctx.tenancy.deleteTenant(tenant);
      await ctx.qos.forgetTenant(tenant);
      await ctx.keys.forget(tenant);
      return reply.code(204).send();
    },
  });

  const tokenTag = 'tokens';
  routes.add({
    method: 'POST', url: '/v1/tokens', access: 'admin', tag: tokenTag,
    summary: 'Create an API token {role, tenant?, name?, expiresInSeconds?}; the answer holds the secret, which is never shown again',
    body: CreateTokenBody, responses: { 201: { description: 'created', schema: CreatedToken } },
    handler: async (req, reply, ctx) => {
      const body = req.body as CreateTokenBody;
      const { token, info } = await ctx.tenancy.createToken({
        role: body.role, tenant: body.tenant ?? null, ...(body.name !== undefined ? { name: body.name } : {}),
        expiresMs: body.expiresInSeconds === undefined ? null : Date.now() + body.expiresInSeconds * 1000,
      });
      return reply.code(201).send({ ...tokenView(info), token });
    },
  });
  routes.add({
    method: 'GET', url: '/v1/tokens', access: 'admin', tag: tokenTag, summary: 'List tokens (never their secrets)',
    responses: { 200: { description: 'tokens', schema: Type.Array(Token) } },
    handler: async (_req, _reply, ctx) => ctx.tenancy.listTokens().map(tokenView),
  });
  routes.add({
    method: 'DELETE', url: '/v1/tokens/:token', access: 'admin', tag: tokenTag, summary: 'Revoke a token by id or name (from the next request on)',
    params: TokenParams, responses: { 204: { description: 'revoked' } },
    handler: async (req, reply, ctx) => {
      await ctx.tenancy.revokeToken((req.params as { token: string }).token);
      return reply.code(204).send();
    },
  });
}
