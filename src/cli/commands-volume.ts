// `cairn volume ...`, `cairn pool status` and `cairn pool grow`: create (empty or clone), list, show, resize, delete,
// revert, flatten (progress bar), tree (lineage with space).
import { InvalidArgumentError, type Command } from 'commander';
import { seg, type ApiClient, type ListPaging } from './client.js';
import { fetchList, withPagingOptions } from './paging.js';
import { keyValues, print, printJson, table, when } from './output.js';
import { formatSize } from './sizes.js';
import { waitForJob, type JobView } from './jobs.js';
import type { CliContext } from './context.js';
import { addQosOptions, formatQos, qosChange, type QosView } from './commands-qos.js';

export interface VolumeView {
  name: string; id: number; size: number; mappedBytes: number; exclusiveBytes: number | null; createdMs: number;
  createdAt: string; origin: string | null; snapshots: string[]; snapshotCount?: number; flattenProgress: number | null; nbdUri: string | null;
  qos?: QosView | null;
  encrypted?: boolean; locked?: boolean;
  /** A clustered volume's replicas and epoch (absent on a single node). */
  replicas?: ReplicaView[]; epoch?: number;
}

interface ReplicaView { node: string; state: 'in-sync' | 'rebuilding' | 'down'; rebuildProgress: number | null; primary: boolean }

/** "in-sync", "rebuilding 42%", "down". */
function replicaState(r: ReplicaView): string {
  return r.state === 'rebuilding' && r.rebuildProgress !== null ? `rebuilding ${Math.floor(r.rebuildProgress * 100)}%` : r.state;
}

function replicaTable(rows: ReplicaView[]): string {
  return table(rows, [
    { header: 'NODE', value: (r) => r.node },
    { header: 'ROLE', value: (r) => (r.primary ? 'primary' : 'replica') },
    { header: 'STATE', value: replicaState },
    { header: 'REBUILD', value: (r) => (r.rebuildProgress === null ? '-' : `${Math.floor(r.rebuildProgress * 100)}%`), right: true },
  ]);
}

/** "encrypted", "encrypted, locked" or "-". */
export function encryptionLabel(v: { encrypted?: boolean; locked?: boolean }): string {
  return v.encrypted === true ? (v.locked === true ? 'encrypted, locked' : 'encrypted') : '-';
}
interface TreeNode { name: string; kind: string; size: number; mappedBytes: number; exclusiveBytes: number | null; current: boolean; deleted?: boolean; children: TreeNode[] }

interface PoolView {
  path: string; size: number; allocatedBytes: number; freeBytes: number; volumes: number; snapshots: number;
  generation: number; checksumErrors: number; nbd: string | null; metadataBytes?: number | null;
}

function shareOf(part: number, whole: number): string {
  return whole === 0 ? '0 %' : `${((100 * part) / whole).toFixed(1)} %`;
}

function poolDetails(p: PoolView): string {
  return keyValues([
    ['pool', p.path], ['size', formatSize(p.size)], ['allocated', formatSize(p.allocatedBytes)],
    ['metadata', p.metadataBytes == null ? '-' : `${formatSize(p.metadataBytes)} (${shareOf(p.metadataBytes, p.allocatedBytes)} of allocated)`],
    ['free', formatSize(p.freeBytes)], ['volumes', String(p.volumes)], ['snapshots', String(p.snapshots)],
    ['generation', String(p.generation)], ['checksum errors', String(p.checksumErrors)], ['nbd', p.nbd ?? '-'],
  ]);
}

function replicasArg(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 3) throw new InvalidArgumentError('expected 1, 2 or 3');
  return n;
}

function volumeTable(rows: VolumeView[]): string {
  return table(rows, [
    { header: 'NAME', value: (v) => v.name },
    { header: 'SIZE', value: (v) => formatSize(v.size), right: true },
    { header: 'MAPPED', value: (v) => formatSize(v.mappedBytes), right: true },
    { header: 'SNAPSHOTS', value: (v) => String(v.snapshotCount ?? v.snapshots.length), right: true },
    { header: 'ORIGIN', value: (v) => v.origin ?? '-' },
    { header: 'ENCRYPTION', value: encryptionLabel },
    { header: 'CREATED', value: (v) => when(v.createdMs) },
  ]);
}

function volumeDetails(v: VolumeView): string {
  return keyValues([
    ['name', v.name], ['id', String(v.id)], ['size', `${formatSize(v.size)} (${v.size} bytes)`],
    ['mapped', formatSize(v.mappedBytes)], ['exclusive', formatSize(v.exclusiveBytes)],
    ['created', when(v.createdMs)], ['origin', v.origin ?? '-'],
    ['snapshots', v.snapshots.length === 0 ? '-' : v.snapshots.join(', ')],
    ['flatten', v.flattenProgress === null ? '-' : `${Math.round(v.flattenProgress * 100)}%`],
    ['nbd', v.nbdUri ?? '-'], ['qos', formatQos(v.qos)], ['encryption', encryptionLabel(v)],
  ]);
}

function treeLines(node: TreeNode, prefix: string, last: boolean, root: boolean, out: string[]): void {
  const space = node.deleted === true ? 'deleted, kept for its snapshots'
    : `${formatSize(node.size)} size, ${formatSize(node.mappedBytes)} mapped, ${formatSize(node.exclusiveBytes)} exclusive`;
  const label = `${node.kind === 'snapshot' ? '@ ' : ''}${node.name}${node.current ? ' *' : ''}  (${space})`;
  out.push(root ? label : `${prefix}${last ? '└── ' : '├── '}${label}`);
  const childPrefix = root ? '' : `${prefix}${last ? '    ' : '│   '}`;
  node.children.forEach((c, i) => treeLines(c as TreeNode, childPrefix, i === node.children.length - 1, false, out));
}

async function show(client: ApiClient, name: string, ctx: CliContext): Promise<void> {
  const v = await client.get<VolumeView>(`/v1/volumes/${seg(name)}`);
  if (ctx.json()) return printJson(v);
  print(volumeDetails(v));
  if (v.replicas !== undefined) print(`\nreplicas (epoch ${v.epoch ?? '-'}):\n${replicaTable(v.replicas)}`);
}

export function registerVolumeCommands(program: Command, ctx: CliContext): void {
  const pool = program.command('pool').description('pool commands: status, grow');
  pool.command('status').description('pool size, allocation and counts')
    .action(async () => {
      const p = await ctx.client().get<PoolView>('/v1/pool');
      if (ctx.json()) return printJson(p);
      print(poolDetails(p));
    });
  pool.command('grow').description('grow the pool in place, online: to --size (a pool file is enlarged first), or to its file\'s or raw device\'s current size')
    .option('--size <size>', 'new pool size: bytes or K/M/G/T (1024-based), a multiple of 4096, not below the current size', ctx.sizeArg)
    .action(async (opts: { size?: number }) => {
      const { body: p } = await ctx.client().request<PoolView>('POST', '/v1/pool/grow', opts.size === undefined ? {} : { size: opts.size });
      if (ctx.json()) return printJson(p);
      print(poolDetails(p));
    });
  const volume = program.command('volume').description('volumes: create, clone, list, show, resize, delete, revert, flatten, tree, set (QoS limits)');
  addQosOptions(volume.command('create <name>').description('create a volume (--size) or a zero-copy clone (--from VOL@SNAP | VOL), with QoS limits if given')
    .option('--size <size>', 'size: bytes or K/M/G/T (1024-based)', ctx.sizeArg)
    .option('--from <source>', 'clone VOLUME@SNAPSHOT or the live VOLUME')
    .option('--encrypt', 'encrypt at rest (AES-256-XTS) with a new data key wrapped by the tenant\'s key-encryption key (see tenant set --kek); a clone is encrypted when its source is')
    .option('--replicas <n>', 'copies on distinct storage nodes, 1..3 (a cluster only; default the cluster\'s); a clone has its source\'s', replicasArg))
    .action(async (name: string, opts: { size?: number; from?: string; encrypt?: boolean; replicas?: number }, cmd: Command) => {
      if ((opts.size === undefined) === (opts.from === undefined)) cmd.error('error: give exactly one of --size and --from', { exitCode: 2 });
      const qos = qosChange(opts);
      const body = {
        ...(opts.from !== undefined ? { name, from: opts.from } : { name, size: opts.size }), ...(qos === undefined ? {} : { qos }),
        ...(opts.encrypt === true ? { encrypted: true } : {}),
        ...(opts.replicas === undefined ? {} : { replicas: opts.replicas }),
      };
      const r = await ctx.client().request<VolumeView>('POST', '/v1/volumes', body);
      if (ctx.json()) printJson(r.body); else print(volumeTable([r.body]));
    });
  withPagingOptions(volume.command('list').description('list volumes')).action(async (opts: ListPaging) => {
    const rows = await fetchList<VolumeView>(ctx.client(), '/v1/volumes', opts);
    if (ctx.json()) printJson(rows); else print(volumeTable(rows));
  });
  volume.command('show <name>').description('details of a volume').action((name: string) => show(ctx.client(), name, ctx));
  volume.command('resize <name>').description('grow a volume (--shrink to allow shrinking)')
    .requiredOption('--size <size>', 'new size: bytes or K/M/G/T', ctx.sizeArg)
    .option('--shrink', 'allow shrinking (discards data past the new end)')
    .action(async (name: string, opts: { size: number; shrink?: boolean }) => {
      const r = await ctx.client().request<VolumeView>('PATCH', `/v1/volumes/${seg(name)}`, { size: opts.size, allowShrink: opts.shrink === true });
      if (ctx.json()) printJson(r.body); else print(volumeTable([r.body]));
    });
  volume.command('delete <name>').description('delete a volume (its snapshots and clones keep working)')
    .action(async (name: string) => {
      const r = await ctx.client().request<JobView | null>('DELETE', `/v1/volumes/${seg(name)}`);
      if (r.status === 202 && r.body !== null) await waitForJob(ctx.client(), r.body, `deleting ${name}`, !ctx.json());
      if (ctx.json()) printJson({ name, deleted: true }); else print(`deleted volume ${name}`);
    });
  volume.command('revert <name>').description('revert a volume to one of its snapshots')
    .requiredOption('--to <snapshot>', 'snapshot name (SNAP or VOLUME@SNAP)')
    .action(async (name: string, opts: { to: string }) => {
      const r = await ctx.client().request<VolumeView>('POST', `/v1/volumes/${seg(name)}/revert`, { snapshot: opts.to });
      if (ctx.json()) printJson(r.body); else print(`reverted ${name} to ${opts.to}`);
    });
  volume.command('flatten <name>').description('copy shared blocks so a clone depends on nothing (progress bar)')
    .action(async (name: string) => {
      const r = await ctx.client().request<JobView>('POST', `/v1/volumes/${seg(name)}/flatten`);
      const job = await waitForJob(ctx.client(), r.body, `flattening ${name}`, !ctx.json());
      if (ctx.json()) printJson(job); else print(`flattened ${name}`);
    });
  volume.command('tree <name>').description('lineage: snapshots and clones as a tree, with space used')
    .action(async (name: string) => {
      const tree = await ctx.client().get<TreeNode>(`/v1/volumes/${seg(name)}/tree`);
      if (ctx.json()) return printJson(tree);
      const lines: string[] = [];
      treeLines(tree, '', true, true, lines);
      print(lines.join('\n'));
    });
}
