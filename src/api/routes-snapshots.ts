// Snapshots: per volume (create idempotent, list, show, delete), atomic groups across volumes, the
// pool-wide list, and diff between two points of one lineage.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type, type TSchema } from '@sinclair/typebox';
import type { SnapshotInfo } from '../engine/index.js';
import type { ApiContext, SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { ApiError } from './problem.js';
import {
  CreateSnapshotBody, Diff, DiffQuery, GroupSnapshotBody, ListQuery, NameParams, Snapshot, SnapshotListQuery, SnapshotParams,
} from './schemas.js';
import { snapshotView } from './views.js';
import { pageItemsMax, setNextPageToken, snapshotPageStart, type PageQuery } from './paging.js';

const tag = 'snapshots';
const list = <T extends TSchema>(schema: T) => Type.Array(schema);

/** One page of snapshots (of `volume`, or of the pool), ordered by id; the next page's token in a header. */
function snapshotPage(ctx: ApiContext, reply: FastifyReply, volume: string | undefined, query: PageQuery) {
  const page = ctx.engine.listSnapshotsPage({ volume, afterId: snapshotPageStart(query.pageToken), limit: query.limit ?? pageItemsMax });
  const last = page.snapshots[page.snapshots.length - 1];
  setNextPageToken(reply, 'snapshot', page.more && last !== undefined ? String(last.id) : null);
  return page.snapshots.map((s) => snapshotView(s, ctx));
}

/** Creates the snapshots unless all already exist (200, idempotent); a partial overlap is 409. */
async function createGroup(ctx: ApiContext, fullNames: string[]): Promise<{ status: 200 | 201; snapshots: SnapshotInfo[] }> {
  for (const n of fullNames) {
    if (!/^[^@]+@[^@]+$/.test(n)) throw new ApiError('invalid_name', `expected VOLUME@SNAPSHOT, got ${JSON.stringify(n)}`);
  }
  // One index lookup per name: listing the pool here made the Nth create cost O(N).
  const present = fullNames.filter((n) => ctx.engine.findSnapshot(n) !== null);
  if (present.length === fullNames.length) {
    return { status: 200, snapshots: fullNames.map((n) => ctx.engine.getSnapshot(n)) };
  }
  if (present.length > 0) throw new ApiError('name_taken', `snapshot already exists: ${present.join(', ')}`);
  return { status: 201, snapshots: await ctx.engine.createSnapshots(fullNames) };
}

export function registerSnapshotRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const params = (r: FastifyRequest) => r.params as { name: string; snapshot: string };
  routes.add({
    method: 'POST', url: '/v1/volumes/:name/snapshots', access: 'write', tag, summary: 'Snapshot a volume {name}; idempotent',
    params: NameParams, body: CreateSnapshotBody,
    responses: { 201: { description: 'created', schema: Snapshot }, 200: { description: 'already existed', schema: Snapshot } },
    handler: async (req, reply, ctx) => {
      const name = params(req).name;
      ctx.engine.getVolume(name);
      const full = `${name}@${(req.body as CreateSnapshotBody).name}`;
      const { status, snapshots } = await createGroup(ctx, [full]);
      return reply.code(status).send(snapshotView(snapshots[0]!, ctx));
    },
  });
  routes.add({
    method: 'GET', url: '/v1/volumes/:name/snapshots', access: 'read', tag, summary: 'List the snapshots of a volume, oldest first; paged',
    params: NameParams, querystring: ListQuery, responses: { 200: { description: 'snapshots', schema: list(Snapshot) } },
    handler: async (req, reply, ctx) => {
      ctx.engine.getVolume(params(req).name);
      return snapshotPage(ctx, reply, params(req).name, req.query as ListQuery);
    },
  });
  routes.add({
    method: 'GET', url: '/v1/volumes/:name/snapshots/:snapshot', access: 'read', tag, summary: 'Show a snapshot',
    params: SnapshotParams, responses: { 200: { description: 'the snapshot', schema: Snapshot } },
    handler: async (req, _reply, ctx) => snapshotView(ctx.engine.getSnapshot(`${params(req).name}@${params(req).snapshot}`), ctx),
  });
  routes.add({
    method: 'DELETE', url: '/v1/volumes/:name/snapshots/:snapshot', access: 'write', tag, summary: 'Delete a snapshot',
    params: SnapshotParams, responses: { 204: { description: 'deleted' } },
    handler: async (req, reply, ctx) => {
      await ctx.engine.deleteSnapshot(`${params(req).name}@${params(req).snapshot}`);
      return reply.code(204).send();
    },
  });
  routes.add({
    method: 'POST', url: '/v1/snapshots', access: 'write', tag, summary: 'Snapshot several volumes at one instant {snapshots:[VOL@SNAP...]}',
    body: GroupSnapshotBody,
    responses: { 201: { description: 'created', schema: list(Snapshot) }, 200: { description: 'all already existed', schema: list(Snapshot) } },
    handler: async (req, reply, ctx) => {
      const { status, snapshots } = await createGroup(ctx, (req.body as GroupSnapshotBody).snapshots);
      return reply.code(status).send(snapshots.map((s) => snapshotView(s, ctx)));
    },
  });
  routes.add({
    method: 'GET', url: '/v1/snapshots', access: 'read', tag, summary: 'List all snapshots by id (or ?volume=NAME); paged; ?name=SNAP finds a name on any volume',
    querystring: SnapshotListQuery, responses: { 200: { description: 'snapshots', schema: list(Snapshot) } },
    handler: async (req, reply, ctx) => {
      const query = req.query as SnapshotListQuery;
      if (query.name !== undefined) {
        // A lookup, not a list: CSI snapshot names are pool-wide, and its create checks one this way.
        return ctx.engine.findSnapshotsNamed(query.name).filter((s) => query.volume === undefined || s.volume === query.volume)
          .map((s) => snapshotView(s, ctx));
      }
      // No live-volume check: a deleted volume's snapshots live on and are listed under its name.
      return snapshotPage(ctx, reply, query.volume, query);
    },
  });
  routes.add({
    method: 'GET', url: '/v1/diff', access: 'read', tag, summary: 'Changed byte ranges between VOL@A and VOL@B (or the live VOL)',
    querystring: DiffQuery, responses: { 200: { description: 'changed ranges', schema: Diff } },
    handler: async (req, _reply, ctx) => {
      const q = req.query as DiffQuery;
      const ranges = (await ctx.engine.diff(q.from, q.to)).map((r) => ({ offset: r.offsetBytes, length: r.lengthBytes }));
      return { from: q.from, to: q.to, changedBytes: ranges.reduce((sum, r) => sum + r.length, 0), ranges };
    },
  });
}
