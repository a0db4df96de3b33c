// `cairn node list|show|drain` and `cairn cluster status` (issue 22): the storage nodes of a cluster,
// draining one (a job with a progress bar), and the cluster's health (etcd, nodes, degraded volumes).
import { InvalidArgumentError, type Command } from 'commander';
import { seg } from './client.js';
import { keyValues, print, printJson, table, when } from './output.js';
import { waitForJob, type JobView } from './jobs.js';
import type { CliContext } from './context.js';

export interface NodeView {
  name: string; zone: string | null; incarnation: string; startedMs: number; draining: boolean; alive: boolean;
  replicas: number; primaries: number; self: boolean;
  addresses: { api: string | null; nbd: string | null; nvmf: string | null; repl: string };
}

interface ClusterStatusView {
  self: string;
  controlPlane: { healthy: boolean; endpoints: string[]; error: string | null };
  nodes: NodeView[];
  volumes: number;
  degraded: Array<{ name: string; inSync: number; replicas: number; primary: string }>;
}

/** "up", "up, draining", "down". */
function nodeState(n: NodeView): string { return `${n.alive ? 'up' : 'down'}${n.draining ? ', draining' : ''}`; }

function nodeTable(rows: NodeView[]): string {
  return table(rows, [
    { header: 'NAME', value: (n) => `${n.name}${n.self ? ' *' : ''}` },
    { header: 'STATE', value: nodeState },
    { header: 'ZONE', value: (n) => n.zone ?? '-' },
    { header: 'REPLICAS', value: (n) => String(n.replicas), right: true },
    { header: 'PRIMARIES', value: (n) => String(n.primaries), right: true },
    { header: 'API', value: (n) => n.addresses.api ?? '-' },
    { header: 'STARTED', value: (n) => when(n.startedMs) },
  ]);
}

function nodeDetails(n: NodeView): string {
  return keyValues([
    ['name', n.name], ['state', nodeState(n)], ['zone', n.zone ?? '-'], ['incarnation', n.incarnation],
    ['started', when(n.startedMs)], ['replicas', String(n.replicas)], ['primaries', String(n.primaries)],
    ['api', n.addresses.api ?? '-'], ['nbd', n.addresses.nbd ?? '-'], ['nvmf', n.addresses.nvmf ?? '-'], ['replication', n.addresses.repl],
  ]);
}

function statusText(s: ClusterStatusView): string {
  const etcd = s.controlPlane.healthy ? 'healthy' : `UNHEALTHY${s.controlPlane.error === null ? '' : ` (${s.controlPlane.error})`}`;
  const up = s.nodes.filter((n) => n.alive).length;
  const lines = [keyValues([
    ['etcd', `${etcd}: ${s.controlPlane.endpoints.join(', ')}`], ['this node', s.self],
    ['nodes', `${s.nodes.length} (${up} up, ${s.nodes.length - up} down, ${s.nodes.filter((n) => n.draining).length} draining)`],
    ['volumes', `${s.volumes} (${s.degraded.length} degraded)`],
  ])];
  if (s.nodes.length > 0) lines.push('', nodeTable(s.nodes));
  if (s.degraded.length > 0) {
    lines.push('', 'degraded volumes:', table(s.degraded, [
      { header: 'VOLUME', value: (d) => d.name },
      { header: 'IN-SYNC', value: (d) => `${d.inSync}/${d.replicas}`, right: true },
      { header: 'PRIMARY', value: (d) => d.primary },
    ]));
  }
  return lines.join('\n');
}

export function registerClusterCommands(program: Command, ctx: CliContext): void {
  const node = program.command('node').description('storage nodes of a cluster: list, show, drain');
  node.command('list').description('the cluster\'s nodes (* marks the one answering)').action(async () => {
    const rows = await ctx.client().get<NodeView[]>('/v1/nodes');
    if (ctx.json()) printJson(rows); else print(nodeTable(rows));
  });
  node.command('show <name>').description('details of a node').action(async (name: string) => {
    const n = await ctx.client().get<NodeView>(`/v1/nodes/${seg(name)}`);
    if (ctx.json()) printJson(n); else print(nodeDetails(n));
  });
  node.command('drain <name>').description('move every replica off a node (rebuilt on others; progress bar), then place nothing more on it')
    .option('--timeout <seconds>', 'give up after this long (default 3600)', (v: string) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of seconds');
      return n;
    })
    .action(async (name: string, opts: { timeout?: number }) => {
      const r = await ctx.client().request<JobView>('POST', `/v1/nodes/${seg(name)}/drain`, opts.timeout === undefined ? {} : { timeoutSeconds: opts.timeout });
      const job = await waitForJob(ctx.client(), r.body, `draining ${name}`, !ctx.json());
      if (ctx.json()) printJson(job); else print(`drained node ${name}`);
    });
  const cluster = program.command('cluster').description('the cluster: status');
  cluster.command('status').description('etcd health, nodes, degraded volumes').action(async () => {
    const s = await ctx.client().get<ClusterStatusView>('/v1/cluster');
    if (ctx.json()) printJson(s); else print(statusText(s));
  });
}
