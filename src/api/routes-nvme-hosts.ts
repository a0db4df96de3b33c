// A tenant's NVMe/TCP host allow-list: the host NQNs its subsystem admits at Connect (list, add,
// remove). The list lives in the pool's catalog (tenancy/store.ts); the NVMe/TCP target asks on every
// Connect, so a change applies to the next one. A reader may list its tenant's hosts.
import { Type } from '@sinclair/typebox';
import { ownTenantParam, type SharedApiContext } from './context.js';
import type { RouteSpec, RouteTable } from './routes.js';
import type { NvmeHostInfo } from '../tenancy/store.js';
import { NQN_BYTES_MAX, NvmeHostAccess } from '../nvmf/host-access.js';

const tag = 'tenants';

const TenantParams = Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 64, description: 'tenant name' }) });
const NvmeHostParams = Type.Object({
  tenant: Type.String({ minLength: 1, maxLength: 64, description: 'tenant name' }),
  nqn: Type.String({ minLength: 1, maxLength: NQN_BYTES_MAX, description: 'host NQN (URL-encoded)' }),
});
const NvmeHost = Type.Object({
  nqn: Type.String({ description: 'host NQN (/etc/nvme/hostnqn on a Linux host)' }),
  tenant: Type.String(),
  createdMs: Type.Integer(),
});
// Longer than an NQN may be, so that a too-long one is refused by the NQN check with its reason.
const NvmeHostBody = Type.Object({ nqn: Type.String({ maxLength: 4 * NQN_BYTES_MAX, description: 'host NQN: nqn.YYYY-MM.domain:… or nqn.2014-08.org.nvmexpress:uuid:UUID' }) }, { additionalProperties: false });

function view(h: NvmeHostInfo): NvmeHostInfo { return { nqn: h.nqn, tenant: h.tenant, createdMs: h.createdMs }; }

export function registerNvmeHostRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const access = new NvmeHostAccess(ctx.tenancy);
  const specs: RouteSpec[] = [{
    method: 'GET', url: '/v1/tenants/:tenant/nvme-hosts', tag, access: 'read', params: TenantParams,
    summary: 'The host NQNs the tenant\'s NVMe/TCP subsystem admits (the default tenant admits any host while its list is empty)',
    responses: { 200: { description: 'hosts', schema: Type.Array(NvmeHost) } },
    handler: async (req, _reply, ctx) => access.entries(ownTenantParam(ctx, req)).map(view),
  }, {
    method: 'POST', url: '/v1/tenants/:tenant/nvme-hosts', tag, access: 'write', params: TenantParams, body: NvmeHostBody,
    summary: 'Admit a host NQN to the tenant\'s NVMe/TCP subsystem',
    responses: { 201: { description: 'added', schema: NvmeHost } },
    handler: async (req, reply, ctx) => {
      const added = await access.add(ownTenantParam(ctx, req), (req.body as { nqn: string }).nqn);
      return reply.code(201).send(view(added));
    },
  }, {
    method: 'DELETE', url: '/v1/tenants/:tenant/nvme-hosts/:nqn', tag, access: 'write', params: NvmeHostParams,
    summary: 'Remove a host NQN: its next Connect is refused (connected controllers keep going)',
    responses: { 204: { description: 'removed' } },
    handler: async (req, reply, ctx) => {
      await access.remove(ownTenantParam(ctx, req), (req.params as { nqn: string }).nqn);
      return reply.code(204).send();
    },
  }];
  for (const spec of specs) routes.add(spec);
}
