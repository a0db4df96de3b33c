// Pool status and growth, jobs and the OpenAPI document (built by @fastify/swagger, server.ts).
import { Type, type Static } from '@sinclair/typebox';
import type { ApiContext, SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { ApiError } from './problem.js';
import { GrowPoolBody, Job, JobParams, Pool } from './schemas.js';
import type { PoolStats } from '../engine/index.js';
import { CAPACITY_SAMPLE_MS_DEFAULT, CapacityHistoryView } from './capacity-history.js';

function poolView(s: PoolStats, ctx: ApiContext): Static<typeof Pool> {
  return {
    path: ctx.poolPath, size: s.sizeBytes, allocatedBytes: s.allocatedBytes, freeBytes: s.freeBytes,
    blockSize: s.blockSizeBytes, volumes: s.volumes, snapshots: s.snapshots, generation: s.generation,
    checksumErrors: s.checksumErrors, pendingDeleteNodes: s.pendingDeleteNodes, metadataBytes: s.metadataBytes, nbd: ctx.nbdBaseUri,
  };
}

export const apiVersion = '1.0.0';

export function registerMiscRoutes(routes: RouteTable, ctx: SharedApiContext, capacityHistory?: () => CapacityHistoryView): void {
  routes.add({
    method: 'GET', url: '/v1/pool', access: 'read', tag: 'pool', summary: 'Pool status: size, allocation, counts, NBD address',
    responses: { 200: { description: 'the pool', schema: Pool } },
    handler: async (_req, _reply, ctx) => poolView(ctx.engine.stats(), ctx),
  });
  routes.add({
    method: 'GET', url: '/v1/pool/history', access: 'read', tag: 'pool',
    summary: 'The pool\'s capacity over time: size, allocated, metadata and free bytes, sampled by the daemon (a minute apart, a day of them, since it started)',
    responses: { 200: { description: 'samples, oldest first', schema: CapacityHistoryView } },
    handler: async (_req, _reply, ctx) => capacityHistory?.() ?? { intervalMs: CAPACITY_SAMPLE_MS_DEFAULT, samples: [] },
  });
  routes.add({
    method: 'POST', url: '/v1/pool/grow', access: 'admin', tag: 'pool',
    summary: 'Grow the pool in place, online {size?}: a pool file is enlarged to size; without it, the file or raw device\'s current size is taken. A size below the pool\'s is refused (409 shrink_refused)',
    body: GrowPoolBody, responses: { 200: { description: 'the grown pool', schema: Pool } },
    handler: async (req, _reply, ctx) => poolView(await ctx.engine.growPool((req.body as GrowPoolBody | undefined)?.size), ctx),
  });
  routes.add({
    method: 'GET', url: '/v1/jobs', access: 'read', tag: 'jobs', summary: 'List running and recently finished jobs',
    responses: { 200: { description: 'jobs', schema: Type.Array(Job) } },
    handler: async (_req, _reply, ctx) => ctx.jobs.list(),
  });
  routes.add({
    method: 'GET', url: '/v1/jobs/:id', access: 'read', tag: 'jobs', summary: 'A job: state, progress 0..1, error',
    params: JobParams, responses: { 200: { description: 'the job', schema: Job } },
    handler: async (req, _reply, ctx) => {
      const id = (req.params as { id: string }).id;
      const job = ctx.jobs.get(id);
      if (job === undefined) throw new ApiError('job_not_found', `job not found: ${id}`);
      return job;
    },
  });
  routes.add({
    method: 'GET', url: '/v1/openapi.json', access: 'public', tag: 'meta', summary: 'This OpenAPI 3 document',
    responses: { 200: { description: 'OpenAPI document', schema: Type.Object({}, { additionalProperties: true }) } },
    handler: async (_req, _reply, ctx) => routes.openApi(),
  });
}
