// The cluster (issue 22): its nodes (GET /v1/nodes, /v1/nodes/:name), draining one (a job whose
// progress is the share of its replicas moved away), and the cluster's status (etcd health, nodes,
// degraded volumes). On a single node every route answers 404 not_clustered.
import { Type } from '@sinclair/typebox';
import type { ApiContext, SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { ApiError } from './problem.js';
import { ClusterNode, ClusterStatusSchema, DrainBody, Job, NodeParams } from './schemas.js';
import type { ClusterHandle, NodeView } from '../cluster/handle.js';

const tag = 'cluster';

/** How long a drain may take unless the request says (its replicas are rebuilt elsewhere first). */
export const DRAIN_TIMEOUT_SECONDS_DEFAULT = 3600;
/** How often a drain job's progress is read from the node's replica count. */
export const DRAIN_PROGRESS_INTERVAL_MS = 500;

function clusterOf(ctx: ApiContext): ClusterHandle {
  if (ctx.cluster === null) throw new ApiError('not_clustered', 'this daemon is not part of a cluster (started without --cluster)');
  return ctx.cluster;
}

export function nodeView(n: NodeView, self: string) {
  return {
    name: n.name, zone: n.zone, incarnation: n.incarnation, addresses: n.addresses, startedMs: n.startedMs,
    startedAt: new Date(n.startedMs).toISOString(), draining: n.draining, alive: n.alive, replicas: n.replicas,
    primaries: n.primaries, self: n.name === self,
  };
}

function findNode(cluster: ClusterHandle, name: string): NodeView {
  const node = cluster.nodes().find((n) => n.name === name);
  if (node === undefined) throw new ApiError('node_not_found', `node not found: ${name}`);
  return node;
}

/** Drain as a job: progress is the share of the node's replicas (at the start) that have left it. */
async function drainJob(cluster: ClusterHandle, name: string, timeoutMs: number, setProgress: (f: number) => void): Promise<void> {
  const initial = Math.max(1, findNode(cluster, name).replicas);
  const timer = setInterval(() => {
    const left = cluster.nodes().find((n) => n.name === name)?.replicas ?? 0;
    setProgress(1 - left / initial);
  }, DRAIN_PROGRESS_INTERVAL_MS);
  timer.unref();
  try {
    await cluster.drain(name, timeoutMs);
  } finally {
    clearInterval(timer);
  }
}

export function registerClusterRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  const nameOf = (r: { params: unknown }) => (r.params as { name: string }).name;
  routes.add({
    method: 'GET', url: '/v1/nodes', access: 'read', tag, summary: 'The cluster\'s storage nodes: alive, draining, replicas held',
    responses: { 200: { description: 'nodes by name', schema: Type.Array(ClusterNode) } },
    handler: async (_req, _reply, ctx) => {
      const cluster = clusterOf(ctx);
      return cluster.nodes().slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((n) => nodeView(n, cluster.self));
    },
  });
  routes.add({
    method: 'GET', url: '/v1/nodes/:name', access: 'read', tag, summary: 'One storage node',
    params: NodeParams, responses: { 200: { description: 'the node', schema: ClusterNode } },
    handler: async (req, _reply, ctx) => {
      const cluster = clusterOf(ctx);
      return nodeView(findNode(cluster, nameOf(req)), cluster.self);
    },
  });
  routes.add({
    method: 'POST', url: '/v1/nodes/:name/drain', access: 'admin', tag,
    summary: 'Drain a node {timeoutSeconds?}: its replicas are rebuilt on other nodes, then nothing more is placed on it (a job)',
    params: NodeParams, body: DrainBody, responses: { 202: { description: 'draining; poll the job', schema: Job } },
    handler: async (req, reply, ctx) => {
      const cluster = clusterOf(ctx);
      const name = nameOf(req);
      findNode(cluster, name); // 404 before a job is made
      const timeoutMs = ((req.body as DrainBody | undefined)?.timeoutSeconds ?? DRAIN_TIMEOUT_SECONDS_DEFAULT) * 1000;
      const job = ctx.jobs.start('drain', name, (setProgress) => drainJob(cluster, name, timeoutMs, setProgress));
      await job.recorded; // the id handed out must outlive a restart
      return reply.code(202).header('location', `/v1/jobs/${job.view.id}`).send(job.view);
    },
  });
  routes.add({
    method: 'GET', url: '/v1/cluster', access: 'admin', tag, summary: 'The cluster\'s status: etcd health, nodes, degraded volumes',
    responses: { 200: { description: 'status', schema: ClusterStatusSchema } },
    handler: async (_req, _reply, ctx) => {
      const cluster = clusterOf(ctx);
      const status = await cluster.status();
      return { ...status, nodes: status.nodes.map((n) => nodeView(n, status.self)) };
    },
  });
}
