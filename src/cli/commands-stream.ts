// `cairn export` and `cairn import`: move Cairn streams between the daemon and a file or stdio.
// Export verifies the stream as it passes (a cut connection is an error, never a silently short
// file); import uploads the bytes and the daemon verifies everything before it changes a volume.
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CliError, seg } from './client.js';
import { print, printJson } from './output.js';
import { formatSize } from './sizes.js';
import { progressBar } from './progress.js';
import type { CliContext } from './context.js';
import { readStream } from '../stream/reader.js';
import type { StreamHeader } from '../stream/format.js';

/** Counts bytes for the progress bar. */
function counter(onBytes: (n: number) => void): Transform {
  return new Transform({ transform(chunk: Buffer, _enc, cb) { onBytes(chunk.length); cb(null, chunk); } });
}

async function exportCommand(ctx: CliContext, snapshot: string, opts: { since?: string; output: string; raw?: boolean }, cmd: Command): Promise<void> {
  const m = /^([^@]+)@([^@]+)$/.exec(snapshot);
  if (m === null) return cmd.error(`error: expected VOLUME@SNAPSHOT, got "${snapshot}"`, { exitCode: 2 });
  const params = new URLSearchParams();
  if (opts.since !== undefined) params.set('since', opts.since);
  if (opts.raw === true) params.set('raw', 'true');
  const query = params.size === 0 ? '' : `?${params.toString()}`;
  const response = await ctx.client().fetch(`/v1/volumes/${seg(m[1]!)}/snapshots/${seg(m[2]!)}/export${query}`);
  if (response.body === null) throw new CliError('daemon sent no stream');
  const totalBytes = Number(response.headers.get('content-length') ?? 0);
  const toStdout = opts.output === '-';
  const bar = progressBar(`exporting ${snapshot}`, !ctx.json() && !toStdout);
  let doneBytes = 0;
  const tap = new PassThrough();
  let header: StreamHeader | null = null;
  let records = 0;
  // Verify while writing: the same parser the daemon's import uses.
  const verified = (async () => {
    for await (const item of readStream(tap)) {
      if (item.type === 'header') header = item.header;
      if (item.type === 'record') records += 1;
    }
  })();
  const sink = toStdout ? process.stdout : createWriteStream(opts.output);
  try {
    await pipeline(
      Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>),
      counter((n) => { doneBytes += n; bar.update(totalBytes > 0 ? doneBytes / totalBytes : 0); }),
      new Transform({ transform(chunk: Buffer, _e, cb) { tap.write(chunk); cb(null, chunk); }, flush(cb) { tap.end(); cb(); } }),
      sink,
    );
    await verified;
  } catch (err) {
    tap.destroy();
    await verified.catch(() => {}); // destroyed above: its error follows from `err`, which is reported
    if (!toStdout) await fsp.rm(opts.output, { force: true });
    throw new CliError(`export of ${snapshot} failed: ${(err as Error).message}`);
  } finally {
    bar.stop();
  }
  const h = header as StreamHeader | null;
  const result = { snapshot, base: h?.base?.fullName ?? null, bytes: doneBytes, records, output: opts.output };
  if (toStdout) return;
  if (ctx.json()) printJson(result);
  else print(`exported ${snapshot}${result.base !== null ? ` since ${result.base}` : ''} to ${opts.output}: ${formatSize(doneBytes)}, ${records} records`);
}

async function importCommand(ctx: CliContext, file: string, volume: string): Promise<void> {
  const fromStdin = file === '-';
  const totalBytes = fromStdin ? 0 : (await fsp.stat(file).catch((err: Error) => { throw new CliError(`cannot read ${file}: ${err.message}`); })).size;
  const bar = progressBar(`importing into ${volume}`, !ctx.json() && !fromStdin);
  let sentBytes = 0;
  const source = fromStdin ? process.stdin : createReadStream(file);
  const body = source.pipe(counter((n) => { sentBytes += n; bar.update(totalBytes > 0 ? sentBytes / totalBytes : 0); }));
  source.on('error', (err: Error) => body.destroy(err));
  try {
    const r = await ctx.client().upload<{ volume: string; snapshot: { name: string }; incremental: boolean; dataBytes: number }>(
      `/v1/volumes/${seg(volume)}/import`, body);
    bar.stop();
    if (ctx.json()) printJson(r.body);
    else print(`imported ${r.body.incremental ? 'incremental' : 'full'} stream into ${volume}: snapshot ${r.body.snapshot.name}, ${formatSize(r.body.dataBytes)} of data`);
  } finally {
    bar.stop();
  }
}

export function registerStreamCommands(program: Command, ctx: CliContext): void {
  program.command('export <snapshot>').description('write a full (or --since incremental) stream of VOLUME@SNAPSHOT')
    .option('--since <base>', 'base snapshot (SNAP or VOLUME@SNAP) for an incremental stream')
    .option('--raw', 'of an encrypted snapshot: keep its blocks sealed (ciphertext) and carry its data key wrapped by the tenant\'s KEK; only a pool whose tenant holds that KEK can import it (default: plaintext)')
    .requiredOption('-o, --output <file>', 'output file, or - for stdout')
    .action((snapshot: string, opts: { since?: string; output: string; raw?: boolean }, cmd: Command) => exportCommand(ctx, snapshot, opts, cmd));
  program.command('import <file> <volume>').description('restore a full stream (creates VOLUME) or apply an incremental one; FILE may be -')
    .action((file: string, volume: string) => importCommand(ctx, file, volume));
}
