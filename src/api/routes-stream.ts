// Export and import of Cairn streams (src/stream/): a snapshot streams out as application/octet-stream
// (full, or incremental with ?since=), and a stream posted to /import restores or advances a volume.
// Both run as jobs so their progress is visible in /v1/jobs.
import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { SharedApiContext } from './context.js';
import type { RouteTable } from './routes.js';
import { ApiError, knownCode } from './problem.js';
import { ExportQuery, ImportResult, NameParams, SnapshotParams } from './schemas.js';
import { snapshotView } from './views.js';
import { planExport } from '../stream/writer.js';
import { importStream } from '../stream/import.js';
import { identify } from '../stream/identity.js';
import { ownerTenant } from './routes-volumes.js';

const tag = 'streams';
const octet = 'application/octet-stream';

export function registerStreamRoutes(routes: RouteTable, ctx: SharedApiContext): void {
  // One import per volume at a time: two would both pass the base check before either applies.
  const importing = new Set<string>();
  routes.add({
    method: 'GET', url: '/v1/volumes/:name/snapshots/:snapshot/export', access: 'read', tag,
    summary: 'Export a snapshot as a Cairn stream (incremental from ?since=SNAP)',
    params: SnapshotParams, querystring: ExportQuery,
    responses: { 200: { description: 'the stream (Content-Length exact; X-Cairn-Job names the job)', contentType: octet } },
    handler: async (req, reply, ctx) => {
      const p = req.params as { name: string; snapshot: string };
      const { since, raw } = req.query as ExportQuery;
      const base = since === undefined ? null : since.includes('@') ? since : `${p.name}@${since}`;
      const full = `${p.name}@${p.snapshot}`;
      const plan = await planExport(ctx.engine, full, base, (n) => identify(ctx.engine, n), { raw: raw === true });
      let finish: (err?: unknown) => void = () => {};
      const finished = new Promise<void>((resolve, reject) => { finish = (err) => (err === undefined ? resolve() : reject(err)); });
      let jobProgress: (f: number) => void = () => {};
      const job = ctx.jobs.start('export', full, async (setProgress) => {
        jobProgress = setProgress;
        await finished;
      });
      await job.recorded; // the id in X-Cairn-Job must outlive a restart
      async function* guarded(): AsyncGenerator<Buffer> {
        let complete = false;
        try {
          yield* plan.chunks((f) => jobProgress(f));
          complete = true;
        } catch (err) {
          finish(err);
          throw err;
        } finally {
          finish(complete ? undefined : new ApiError('internal_error', 'export aborted before the end'));
        }
      }
      return reply.code(200).type(octet).header('content-length', plan.streamBytes)
        .header('x-cairn-job', job.view.id).send(Readable.from(guarded(), { objectMode: false }));
    },
  });
  routes.add({
    method: 'POST', url: '/v1/volumes/:name/import', access: 'write', tag,
    summary: 'Import a Cairn stream: a full one creates the volume, an incremental one advances it',
    params: NameParams, body: Type.String({ format: 'binary', description: 'a Cairn stream (docs/cli.md)' }), bodyContentType: octet,
    responses: { 201: { description: 'imported; the new snapshot', schema: ImportResult } },
    handler: async (req, reply, ctx) => {
      const volume = (req.params as { name: string }).name;
      const body = req.body as unknown;
      if (!(body instanceof Readable)) throw new ApiError('unsupported_media_type', `send the stream as ${octet}`);
      if (importing.has(volume)) {
        body.resume();
        throw new ApiError('target_busy', `an import into ${volume} is already running`);
      }
      importing.add(volume);
      let result: Awaited<ReturnType<typeof importStream>> | null = null;
      const job = ctx.jobs.start('import', volume, async (setProgress) => {
        result = await importStream(ctx.engine, volume, body, ctx.spoolDir, setProgress, (blob) => ctx.keys.streamKey(ownerTenant(ctx, volume), blob));
      });
      await job.done.finally(() => importing.delete(volume));
      if (job.view.state === 'failed' || result === null) {
        body.resume(); // drain what the client still sends so it reads our answer
        throw new ApiError(knownCode(job.view.error?.code), job.view.error?.message ?? 'import failed');
      }
      const r: Awaited<ReturnType<typeof importStream>> = result;
      return reply.code(201).send({ volume: r.volume, snapshot: snapshotView(r.snapshot, ctx), incremental: r.incremental, dataBytes: r.dataBytes });
    },
  });
}
