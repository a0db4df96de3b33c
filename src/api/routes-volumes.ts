// /v1/volumes: create (empty or clone, idempotent), list, show, resize, delete (a job when long),
// revert, flatten (a job), space and lineage tree.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { deleteWaitMs, type ApiContext, type SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { ApiError, knownCode } from './problem.js';
import {
  CreateVolumeBody, Job, ListQuery, NameParams, ResizeVolumeBody, RevertBody, Space, TreeNode, Volume,
} from './schemas.js';
import { lineageTree, volumeView } from './views.js';
import { changeVolumeQos } from './routes-qos.js';
import { createdVolume, recordVolume, REMOTE_VOLUME_ID } from './cluster-volumes.js';
import { decodePageToken, pageItemsMax, setNextPageToken } from './paging.js';
import type { DataKey, VolumeInfo } from '../engine/index.js';
import type { VolumeRecord } from '../cluster/records.js';
import { splitQualified } from '../tenancy/names.js';

const tag = 'volumes';

function originOf(v: VolumeInfo): string | null {
  if (v.origin === null) return null;
  return v.origin.snapshot === null ? v.origin.volume : `${v.origin.volume}@${v.origin.snapshot}`;
}

/** An existing volume that a create with these arguments would have made (idempotent create). */
function sameCreate(ctx: ApiContext, v: VolumeInfo, body: CreateVolumeBody): boolean {
  if (body.from !== undefined) return originOf(v) === body.from;
  const record = ctx.cluster?.volume(ctx.engineName(v.name)) ?? null;
  const replicas = record?.replicas ?? 1;
  return v.origin === null && v.sizeBytes === body.size && (v.encryption !== null) === (body.encrypted === true)
    && (body.replicas === undefined || body.replicas === replicas);
}

/** `replicas` asks for a cluster; a clone follows its source's replicas. */
function checkReplicas(ctx: ApiContext, body: CreateVolumeBody): void {
  if (body.replicas === undefined) return;
  if (body.from !== undefined) throw new ApiError('invalid_argument', 'a clone lives with its source\'s replicas: leave out "replicas"');
  if (ctx.cluster === null && body.replicas > 1) throw new ApiError('invalid_argument', `this daemon is not part of a cluster (cairn serve --cluster …): ${body.replicas} replicas need storage nodes`);
}

/** The request's volumes: this node's, and on a cluster node those held only by other nodes (from their records). */
function visibleVolumes(ctx: ApiContext): VolumeInfo[] {
  const local = ctx.engine.listVolumes();
  if (ctx.cluster === null) return local;
  const tenant = ctx.principal()?.tenant ?? null;
  const names = new Set(local.map((v) => v.name));
  const remote: VolumeInfo[] = [];
  for (const record of ctx.cluster.volumes()) {
    const split = splitQualified(record.name);
    if (tenant !== null && split.tenant !== tenant) continue;
    const name = tenant === null ? record.name : split.name;
    if (!names.has(name)) remote.push(recordVolume(name, record));
  }
  return remote.length === 0 ? local : [...local, ...remote].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * A new volume's data key when the body asks for encryption (from the owning tenant's KEK); for a
 * clone, the source's key is inherited by the engine, so `encrypted` may only confirm it, and a clone
 * never crosses tenants when its source is encrypted (the key is wrapped by the source tenant's KEK).
 */
async function encryptionFor(ctx: ApiContext, body: CreateVolumeBody): Promise<DataKey | undefined> {
  const tenant = ownerTenant(ctx, body.name);
  if (body.from !== undefined) {
    const source = body.from.includes('@') ? ctx.engine.getSnapshot(body.from) : ctx.engine.getVolume(body.from);
    if (body.encrypted === false && source.encryption !== null) throw new ApiError('invalid_argument', `${body.from} is encrypted: a clone of it is encrypted with the same key (it shares its blocks); it cannot be made a plain volume`);
    if (body.encrypted === true && source.encryption === null) throw new ApiError('invalid_argument', `${body.from} is not encrypted: a clone shares its blocks and so its (plain) form; create an encrypted volume and copy the data instead`);
    const sourceTenant = ownerTenant(ctx, body.from.split('@')[0]!);
    if (source.encryption !== null && sourceTenant !== tenant) throw new ApiError('invalid_argument', `${body.from} is encrypted under tenant ${sourceTenant}'s key: it cannot be cloned into tenant ${tenant}`);
    return undefined;
  }
  return body.encrypted === true ? ctx.keys.newDataKey(tenant) : undefined;
}

/** The tenant owning a volume named in this request: the caller's own, or (an admin's root view) the name's prefix. */
export function ownerTenant(ctx: ApiContext, name: string): string {
  const principal = ctx.principal();
  return principal?.tenant ?? splitQualified(name).tenant;
}

async function createVolume(ctx: ApiContext, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const body = request.body as CreateVolumeBody;
  if ((body.size === undefined) === (body.from === undefined)) {
    throw new ApiError('invalid_argument', 'give exactly one of "size" (a new volume) and "from" (a clone)');
  }
  checkReplicas(ctx, body);
  const existing = (): VolumeInfo | undefined => {
    try { return ctx.engine.getVolume(body.name); } catch (err) {
      // Only "no such volume" means absent; anything else is the request's error.
      if ((err as { code?: string }).code === 'volume_not_found') return undefined;
      throw err;
    }
  };
  const before = existing();
  if (before !== undefined) {
    if (sameCreate(ctx, before, body)) {
      if (body.qos !== undefined) await changeVolumeQos(ctx, body.name, before.id, body.qos); // a retry of a create that stored no limits yet
      return reply.code(200).send(volumeView(before, ctx));
    }
    throw new ApiError('name_taken', `volume ${body.name} exists with different arguments`);
  }
  const encryption = await encryptionFor(ctx, body);
  try {
    const cluster = ctx.cluster;
    const v = body.from !== undefined
      ? await ctx.engine.cloneVolume(body.name, body.from)
      : cluster !== null && body.replicas !== undefined
        // Placed by the cluster on `replicas` nodes (this one among them or not).
        ? (await cluster.createVolume(ctx.engineName(body.name), body.size!, body.replicas, encryption === undefined ? undefined : { encryption }), createdVolume(ctx, body.name))
        : await ctx.engine.createVolume(body.name, body.size!, encryption === undefined ? {} : { encryption });
    // Limits are stored right after the create: a failure here leaves the volume, and a retry sets them.
    if (body.qos !== undefined) await changeVolumeQos(ctx, body.name, v.id, body.qos);
    return reply.code(201).header('location', `/v1/volumes/${encodeURIComponent(v.name)}`).send(volumeView(v, ctx));
  } catch (err) {
    // A concurrent identical create won the race: same arguments still answer 200.
    const now = existing();
    if ((err as { code?: string }).code === 'name_taken' && now !== undefined && sameCreate(ctx, now, body)) {
      if (body.qos !== undefined) await changeVolumeQos(ctx, body.name, now.id, body.qos);
      return reply.code(200).send(volumeView(now, ctx));
    }
    throw err;
  }
}

/** One page of volumes in name order, after the name in the token (a seek: a name is unique). */
function volumePage(ctx: ApiContext, reply: FastifyReply, query: ListQuery) {
  const after = query.pageToken === undefined ? null : decodePageToken('volume', query.pageToken);
  const all = visibleVolumes(ctx); // sorted by name (engine contract; merged ones sorted too)
  let start = 0;
  if (after !== null) {
    let hi = all.length;
    while (start < hi) {
      const mid = (start + hi) >>> 1;
      if (all[mid]!.name <= after) start = mid + 1; else hi = mid;
    }
  }
  const limit = query.limit ?? pageItemsMax;
  const page = all.slice(start, start + limit);
  const more = start + limit < all.length;
  setNextPageToken(reply, 'volume', more ? page[page.length - 1]!.name : null);
  return page.map((v) => volumeView(v, ctx));
}

async function deleteVolume(ctx: ApiContext, name: string, reply: FastifyReply): Promise<unknown> {
  createdVolume(ctx, name); // 404 before a job is made (a cluster volume may live on other nodes only)
  const job = ctx.jobs.start('delete', name, async () => { await ctx.engine.deleteVolume(name); });
  const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), deleteWaitMs).unref());
  if ((await Promise.race([job.done.then(() => 'done' as const), timeout])) === 'done') {
    if (job.view.state === 'failed') throw new ApiError(knownCode(job.view.error!.code), job.view.error!.message);
    return reply.code(204).send();
  }
  await job.recorded; // the id handed out must outlive a restart
  return reply.code(202).header('location', `/v1/jobs/${job.view.id}`).send(job.view);
}

export function registerVolumeRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const nameOf = (r: FastifyRequest) => (r.params as { name: string }).name;
  routes.add({
    method: 'POST', url: '/v1/volumes', access: 'write', tag, summary: 'Create a volume {name,size} or a clone {name,from}; idempotent',
    body: CreateVolumeBody,
    responses: { 201: { description: 'created', schema: Volume }, 200: { description: 'already existed with the same arguments', schema: Volume } },
    handler: (req, reply, ctx) => createVolume(ctx, req, reply),
  });
  routes.add({
    method: 'GET', url: '/v1/volumes', access: 'read', tag, summary: 'List volumes by name; paged',
    querystring: ListQuery, responses: { 200: { description: 'volumes', schema: Type.Array(Volume) } },
    handler: async (req, reply, ctx) => volumePage(ctx, reply, req.query as ListQuery),
  });
  routes.add({
    method: 'GET', url: '/v1/volumes/:name', access: 'read', tag, summary: 'Show a volume (with exclusive bytes)',
    params: NameParams, responses: { 200: { description: 'the volume', schema: Volume } },
    handler: async (req, _reply, ctx) => {
      const v = createdVolume(ctx, nameOf(req));
      // A clustered volume without a replica here has no local space figures.
      if (v.id === REMOTE_VOLUME_ID) return volumeView(v, ctx);
      const space = await ctx.engine.spaceUsage(v.name);
      return volumeView(v, ctx, space.exclusiveBytes);
    },
  });
  routes.add({
    method: 'PATCH', url: '/v1/volumes/:name', access: 'write', tag, summary: 'Resize a volume {size, allowShrink?}',
    params: NameParams, body: ResizeVolumeBody, responses: { 200: { description: 'resized', schema: Volume } },
    handler: async (req, _reply, ctx) => {
      const body = req.body as ResizeVolumeBody;
      return volumeView(await ctx.engine.resizeVolume(nameOf(req), body.size, { allowShrink: body.allowShrink === true }), ctx);
    },
  });
  routes.add({
    method: 'DELETE', url: '/v1/volumes/:name', access: 'write', tag, summary: 'Delete a volume (202 + job when it takes long)',
    params: NameParams,
    responses: { 204: { description: 'deleted' }, 202: { description: 'deleting; poll the job', schema: Job } },
    handler: (req, reply, ctx) => deleteVolume(ctx, nameOf(req), reply),
  });
  routes.add({
    method: 'POST', url: '/v1/volumes/:name/revert', access: 'write', tag, summary: 'Revert a volume to one of its snapshots {snapshot}',
    params: NameParams, body: RevertBody, responses: { 200: { description: 'reverted', schema: Volume } },
    handler: async (req, _reply, ctx) => {
      const name = nameOf(req);
      const snap = (req.body as RevertBody).snapshot;
      const snapName = snap.startsWith(`${name}@`) ? snap.slice(name.length + 1) : snap;
      if (snapName.includes('@')) throw new ApiError('invalid_argument', `${snap} is not a snapshot of ${name}`);
      return volumeView(await ctx.engine.revertVolume(name, snapName), ctx);
    },
  });
  routes.add({
    method: 'POST', url: '/v1/volumes/:name/flatten', access: 'write', tag, summary: 'Flatten a clone (a job)',
    params: NameParams, responses: { 202: { description: 'started; poll the job', schema: Job } },
    handler: async (req, reply, ctx) => {
      const name = nameOf(req);
      ctx.engine.getVolume(name);
      const job = ctx.jobs.start('flatten', name, async (setProgress) => {
        await ctx.engine.flattenVolume(name, setProgress);
      });
      await job.recorded; // the id handed out must outlive a restart
      return reply.code(202).header('location', `/v1/jobs/${job.view.id}`).send(job.view);
    },
  });
  routes.add({
    method: 'GET', url: '/v1/volumes/:name/space', access: 'read', tag, summary: 'Space of a volume: provisioned, mapped, exclusive',
    params: NameParams, responses: { 200: { description: 'space', schema: Space } },
    handler: async (req, _reply, ctx) => ({ name: nameOf(req), ...(await ctx.engine.spaceUsage(nameOf(req))) }),
  });
  routes.add({
    method: 'GET', url: '/v1/volumes/:name/tree', access: 'read', tag, summary: 'Lineage tree: snapshots and clones with space',
    params: NameParams, responses: { 200: { description: 'tree', schema: TreeNode } },
    handler: async (req, _reply, ctx) => lineageTree(ctx.engine, nameOf(req)),
  });
}
