// QoS routes: a volume's limits (GET/PUT /v1/volumes/:name/qos) and a tenant's limits and weight
// (GET/PUT /v1/tenants/:tenant/qos). Changes are durable when answered and apply at once to open
// connections. Volumes are found through ctx.engine (the request's tenant view); limits are kept by id.
import type { FastifyRequest } from 'fastify';
import { ApiError } from './problem.js';
import type { ApiContext, SharedApiContext } from './context.js';
import type { RouteSpec, RouteTable } from './routes.js';
import { NameParams } from './schemas.js';
import { createdVolume } from './cluster-volumes.js';
import { TenantParams, TenantQos, TenantQosBody, VolumeQos, VolumeQosBody } from './schemas-qos.js';
import { applyChange, encodedLimits, noLimits, type QosChange, type QosLimits } from '../qos/limits.js';
import { tenantNameProblem } from '../tenancy/names.js';

/** Who may call a route (the lead's authentication: RouteSpec.access). */


const tag = 'qos';

/** A volume's limits as the API shows them (all rates null: none). */
export function volumeQosView(limits: QosLimits | null) {
  const l = limits ?? noLimits();
  return { iopsMax: l.iopsMax, readIopsMax: l.readIopsMax, writeIopsMax: l.writeIopsMax, bpsMax: l.bpsMax,
    readBpsMax: l.readBpsMax, writeBpsMax: l.writeBpsMax, burstSeconds: l.burstSeconds };
}

function tenantQosView(tenant: string, limits: QosLimits) {
  return { tenant, ...volumeQosView(limits), weight: limits.weight };
}

/**
 * The tenant named in the path, when the request may see it: a name that is not a tenant, or one
 * outside the request's own tenant view, is "not found" alike (never a hint that it exists).
 */
function visibleTenant(ctx: ApiContext, tenant: string): string {
  // A tenant token sees its own tenant only; another one is "not found", never "forbidden".
  const own = ctx.principal()?.tenant ?? null;
  if (tenantNameProblem(tenant) !== null || (own !== null && own !== tenant) || !ctx.tenancy.tenantExists(tenant)) {
    throw new ApiError('tenant_not_found', `tenant not found: ${tenant}`);
  }
  return tenant;
}

/**
 * Applies `change` to volume `name`'s limits (`id`: its id in this pool). A volume with a cluster record
 * keeps them there (its primary applies them, wherever it moves); any other in this pool's QoS.
 */
export async function changeVolumeQos(ctx: ApiContext, name: string, id: number, change: QosChange): Promise<QosLimits | null> {
  const replication = ctx.replication(name);
  if (ctx.cluster === null || replication === null) return ctx.qos.setVolumeLimits(id, change);
  const next = applyChange(replication.qos ?? noLimits(), { ...change, weight: undefined });
  const engineName = ctx.engineName(name);
  const encoded = encodedLimits(engineName, next);
  await ctx.cluster.setVolumeQos(engineName, encoded);
  return encoded === null ? null : next;
}

export function registerQosRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const nameOf = (r: FastifyRequest) => (r.params as { name: string }).name;
  const tenantOf = (ctx: ApiContext, r: FastifyRequest) => visibleTenant(ctx, (r.params as { tenant: string }).tenant);
  const specs: RouteSpec[] = [
    {
      method: 'GET', url: '/v1/volumes/:name/qos', tag, access: 'read', summary: 'A volume\'s QoS limits',
      params: NameParams, responses: { 200: { description: 'limits (null: none)', schema: VolumeQos } },
      handler: async (req, _reply, ctx) => {
        const v = createdVolume(ctx, nameOf(req));
        const replication = ctx.replication(nameOf(req));
        return volumeQosView(replication !== null ? replication.qos : ctx.qos.volumeLimits(v.id));
      },
    },
    {
      method: 'PUT', url: '/v1/volumes/:name/qos', tag, access: 'write',
      summary: 'Change a volume\'s QoS limits (fields left out stay; 0 or null removes); live for open connections',
      params: NameParams, body: VolumeQosBody, responses: { 200: { description: 'the new limits', schema: VolumeQos } },
      handler: async (req, _reply, ctx) => {
        const v = createdVolume(ctx, nameOf(req));
        return volumeQosView(await changeVolumeQos(ctx, nameOf(req), v.id, req.body as VolumeQosBody));
      },
    },
    {
      method: 'GET', url: '/v1/tenants/:tenant/qos', tag, access: 'read', summary: 'A tenant\'s QoS limits (for all its volumes together) and weight',
      params: TenantParams, responses: { 200: { description: 'limits (null: none) and weight', schema: TenantQos } },
      handler: async (req, _reply, ctx) => { const t = tenantOf(ctx, req); return tenantQosView(t, ctx.qos.tenantLimits(t)); },
    },
    {
      method: 'PUT', url: '/v1/tenants/:tenant/qos', tag, access: 'admin',
      summary: 'Change a tenant\'s QoS limits and weight (fields left out stay; 0 or null removes); live',
      params: TenantParams, body: TenantQosBody, responses: { 200: { description: 'the new limits and weight', schema: TenantQos } },
      handler: async (req, _reply, ctx) => {
        const t = tenantOf(ctx, req);
        return tenantQosView(t, await ctx.qos.setTenantLimits(t, req.body as TenantQosBody));
      },
    },
  ];
  for (const spec of specs) routes.add(spec);
}
