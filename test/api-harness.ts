// The REST API in process for tests: a real engine on a temporary pool file, fastify listening on an
// ephemeral loopback port, and a small fetch-based caller; everything is closed and removed after the test.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, type Engine } from '../src/engine/index.js';
import { buildApi } from '../src/api/server.js';
import { JobManager } from '../src/api/jobs.js';
import type { ApiContext } from '../src/api/context.js';
import { QosEngine } from '../src/qos/qos-engine.js';

/** One answer: the status, the content type, the paging header and the parsed JSON body (null when empty). */
export interface ApiAnswer { status: number; type: string; next: string | null; body: unknown }

export interface ApiFixture {
  engine: Engine;
  base: string;
  /** Every route fastify registered, as it registered it. */
  registered: Array<{ method: string; url: string }>;
  /** `raw` is sent as the body as it is (malformed JSON tests); `body` is sent as JSON. */
  call(method: string, path: string, body?: unknown, raw?: string): Promise<ApiAnswer>;
}

export async function startApi(t: { after(fn: () => Promise<void>): void }, poolBytes: number, prefix = 'cairn-api-'): Promise<ApiFixture> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const poolPath = join(dir, 'pool');
  const engine: Engine = new QosEngine(await createPoolFile(poolPath, poolBytes));
  const registered: Array<{ method: string; url: string }> = [];
  const ctx: ApiContext = {
    engine, qos: (engine as QosEngine).control, jobs: new JobManager(), poolPath, spoolDir: dir,
    nbdBaseUri: 'nbd://127.0.0.1:10809', nbdUri: (n) => `nbd://127.0.0.1:10809/${n}`,
  };
  const { app } = buildApi(ctx, {
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
    onRoute: (method, url) => registered.push({ method, url }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  t.after(async () => {
    await app.close();
    await ctx.jobs.drain();
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  });
  const call = async (method: string, path: string, body?: unknown, raw?: string): Promise<ApiAnswer> => {
    const init: RequestInit = { method };
    if (body !== undefined || raw !== undefined) {
      init.body = raw ?? JSON.stringify(body);
      init.headers = { 'content-type': 'application/json' };
    }
    const r = await fetch(`${base}${path}`, init);
    const text = await r.text();
    return {
      status: r.status, type: r.headers.get('content-type') ?? '', next: r.headers.get('cairn-next-page-token'),
      body: text === '' ? null : JSON.parse(text) as unknown,
    };
  };
  return { engine, base, registered, call };
}
