// /v1/tenants/:tenant/encryption: a tenant's key-encryption key (KEK) reference, its state, and the
// everyday key actions: set it, unlock the tenant's locked volumes now, rotate to a new KEK (every data
// key re-wrapped). An administrator's: the KEK is the platform's, not the tenant's own.
import { Type } from '@sinclair/typebox';
import type { SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { TenantParams } from './schemas.js';

const TenantEncryption = Type.Object({
  tenant: Type.String(),
  kek: Type.Union([Type.String({ description: 'the KEK reference (file:/path or pkcs11:...; no secret in it)' }), Type.Null()]),
  state: Type.Union([Type.Literal('none'), Type.Literal('available'), Type.Literal('unavailable')]),
  error: Type.Union([Type.String(), Type.Null()], { description: 'why the KEK is unavailable' }),
  rotatingTo: Type.Union([Type.String(), Type.Null()], { description: 'the new KEK while a rotation is under way' }),
  encryptedLineages: Type.Integer({ minimum: 0 }),
  lockedLineages: Type.Integer({ minimum: 0 }),
});
const KekBody = Type.Object({
  kek: Type.String({ minLength: 1, maxLength: 200, description: 'file:/abs/path (32-byte key) or pkcs11:token=T;object=O?module-path=/lib.so&pin-source=file:/path (or env:NAME); never a PIN itself' }),
}, { additionalProperties: false });

export function registerKeyRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const tag = 'encryption';
  const tenantOf = (req: { params: unknown }): string => {
    const tenant = (req.params as { tenant: string }).tenant;
    ctx.tenancy.getTenant(tenant); // 404 for an unknown tenant
    return tenant;
  };
  routes.add({
    method: 'GET', url: '/v1/tenants/:tenant/encryption', access: 'admin', tag, summary: 'A tenant\'s key-encryption key and the state of its encrypted volumes',
    params: TenantParams, responses: { 200: { description: 'the state', schema: TenantEncryption } },
    handler: async (req, _reply, ctx) => ctx.keys.status(tenantOf(req)),
  });
  routes.add({
    method: 'PUT', url: '/v1/tenants/:tenant/encryption', access: 'admin', tag,
    summary: 'Set a tenant\'s key-encryption key {kek}; it must open now. A tenant with encrypted volumes changes it by rotation',
    params: TenantParams, body: KekBody, responses: { 200: { description: 'the state', schema: TenantEncryption } },
    handler: async (req, _reply, ctx) => ctx.keys.setKek(tenantOf(req), (req.body as { kek: string }).kek),
  });
  routes.add({
    method: 'POST', url: '/v1/tenants/:tenant/encryption/unlock', access: 'admin', tag,
    summary: 'Unlock the tenant\'s locked volumes now (its KEK is back), without waiting for the periodic retry',
    params: TenantParams, responses: { 200: { description: 'the state', schema: TenantEncryption } },
    handler: async (req, _reply, ctx) => ctx.keys.unlock(tenantOf(req)),
  });
  routes.add({
    method: 'POST', url: '/v1/tenants/:tenant/encryption/rotate', access: 'admin', tag,
    summary: 'Re-wrap every data key of the tenant under a new key-encryption key {kek}, online and crash-safe; the new KEK becomes the tenant\'s',
    params: TenantParams, body: KekBody, responses: { 200: { description: 'the state', schema: TenantEncryption } },
    handler: async (req, _reply, ctx) => ctx.keys.rotateKek(tenantOf(req), (req.body as { kek: string }).kek),
  });
}
