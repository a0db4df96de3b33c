// `cairn snapshot create|list|delete` and `cairn diff`.
import type { Command } from 'commander';
import { seg, type ListPaging } from './client.js';
import { fetchList, withPagingOptions } from './paging.js';
import { print, printJson, table, when } from './output.js';
import { formatSize } from './sizes.js';
import type { CliContext } from './context.js';

interface SnapshotView { name: string; volume: string; snapshot: string; id: number; size: number; mappedBytes: number; createdMs: number }
interface DiffView { from: string; to: string; changedBytes: number; ranges: Array<{ offset: number; length: number }> }

function snapshotTable(rows: SnapshotView[]): string {
  return table(rows, [
    { header: 'NAME', value: (s) => s.name },
    { header: 'SIZE', value: (s) => formatSize(s.size), right: true },
    { header: 'MAPPED', value: (s) => formatSize(s.mappedBytes), right: true },
    { header: 'CREATED', value: (s) => when(s.createdMs) },
  ]);
}

export function registerSnapshotCommands(program: Command, ctx: CliContext): void {
  const snapshot = program.command('snapshot').description('snapshots: create (atomic across volumes), list, delete');
  snapshot.command('create <names...>').description('snapshot VOLUME@SNAPSHOT ...; several are taken at one instant')
    .action(async (names: string[], _opts: unknown, cmd: Command) => {
      for (const n of names) if (!/^[^@]+@[^@]+$/.test(n)) cmd.error(`error: expected VOLUME@SNAPSHOT, got "${n}"`, { exitCode: 2 });
      const r = await ctx.client().request<SnapshotView[]>('POST', '/v1/snapshots', { snapshots: names });
      if (ctx.json()) printJson(r.body); else print(snapshotTable(r.body));
    });
  withPagingOptions(snapshot.command('list [volume]').description('list snapshots (of one volume, oldest first, or all by id)'))
    .action(async (volume: string | undefined, opts: ListPaging) => {
      const path = volume === undefined ? '/v1/snapshots' : `/v1/volumes/${seg(volume)}/snapshots`;
      const rows = await fetchList<SnapshotView>(ctx.client(), path, opts);
      if (ctx.json()) printJson(rows); else print(snapshotTable(rows));
    });
  snapshot.command('delete <name>').description('delete VOLUME@SNAPSHOT')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const m = /^([^@]+)@([^@]+)$/.exec(name);
      if (m === null) return cmd.error(`error: expected VOLUME@SNAPSHOT, got "${name}"`, { exitCode: 2 });
      await ctx.client().request('DELETE', `/v1/volumes/${seg(m[1]!)}/snapshots/${seg(m[2]!)}`);
      if (ctx.json()) printJson({ name, deleted: true }); else print(`deleted snapshot ${name}`);
    });
  program.command('diff <from> <to>').description('changed ranges from VOLUME@A to VOLUME@B (or the live VOLUME)')
    .action(async (from: string, to: string) => {
      const d = await ctx.client().get<DiffView>(`/v1/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
      if (ctx.json()) return printJson(d);
      print(table(d.ranges, [
        { header: 'OFFSET', value: (r) => String(r.offset), right: true },
        { header: 'LENGTH', value: (r) => String(r.length), right: true },
        { header: 'SIZE', value: (r) => formatSize(r.length), right: true },
      ]));
      print(`${d.ranges.length} ranges, ${formatSize(d.changedBytes)} changed`);
    });
}
