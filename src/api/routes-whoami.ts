// GET /v1/whoami: the role and tenant of the request's own token, so a client holding only a token
// (the CSI controller, with a token from a Kubernetes Secret) learns which tenant it acts for.
import { Type } from '@sinclair/typebox';
import type { SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { assert } from '../engine/index.js';

const Whoami = Type.Object({
  role: Type.Union([Type.Literal('admin'), Type.Literal('tenant'), Type.Literal('reader')]),
  tenant: Type.Union([Type.String(), Type.Null()], { description: 'the tenant a tenant or reader token acts in; null for an admin' }),
  tokenName: Type.String(),
});

export function registerWhoamiRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  routes.add({
    method: 'GET', url: '/v1/whoami', access: 'read', tag: 'tokens', summary: 'The role and tenant of the token this request carries',
    responses: { 200: { description: 'the token\'s principal', schema: Whoami } },
    handler: async (_req, _reply, ctx) => {
      const principal = ctx.principal();
      assert(principal !== null, 'a read route runs with a principal');
      return { role: principal.role, tenant: principal.tenant, tokenName: principal.tokenName };
    },
  });
}
