// The REST API in process for tests: a real engine on a temporary pool file, fastify listening on an
// ephemeral loopback port, and a small fetch-based caller; everything is closed and removed after the test.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, type Engine } from '../src/engine/index.js';
import { buildApi, type AuditEvent, type ApiOptions } from '../src/api/server.js';
import type { RouteSpec } from '../src/api/routes.js';
import { JobManager } from '../src/api/jobs.js';
import { apiContext } from '../src/api/context.js';
import { KeyManager } from '../src/tenancy/key-manager.js';
import { TenantStore } from '../src/tenancy/store.js';
import { QosEngine } from '../src/qos/qos-engine.js';
import type { ClusterHandle } from '../src/cluster/handle.js';

/** One answer: the status, the content type, the paging header and the parsed JSON body (null when empty). */
export interface ApiAnswer { status: number; type: string; next: string | null; body: unknown }

export interface ApiFixture {
  engine: Engine;
  tenancy: TenantStore;
  /** An admin token: `call` sends it. */
  adminToken: string;
  base: string;
  /** Every route of the route table, with its access rule. */
  specs: RouteSpec[];
  /** Audit events of the mutating requests so far. */
  audits: AuditEvent[];
  /** Failed authentications so far, by reason. */
  authFailures: string[];
  /** Every route fastify registered, as it registered it. */
  registered: Array<{ method: string; url: string }>;
  /** `raw` is sent as the body as it is (malformed JSON tests); `body` is sent as JSON. */
  call(method: string, path: string, body?: unknown, raw?: string): Promise<ApiAnswer>;
  /** Moves the clock tokens expire by forward. */
  advanceClock(ms: number): void;
  /** `call` with another token (null: none). */
  as(token: string | null): (method: string, path: string, body?: unknown, raw?: string) => Promise<ApiAnswer>;
}

export async function startApi(
  t: { after(fn: () => Promise<void>): void }, poolBytes: number, prefix = 'cairn-api-', options: ApiOptions = {},
  /** A cluster handle over the fixture's engine (a clustered node's API); none: a single node. */
  clusterFor?: (engine: Engine) => ClusterHandle,
): Promise<ApiFixture> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const poolPath = join(dir, 'pool');
  const engine: Engine = new QosEngine(await createPoolFile(poolPath, poolBytes));
  const registered: Array<{ method: string; url: string }> = [];
  // The tokens' clock, which a test may move forward (expiry) instead of waiting.
  let clockSkewMs = 0;
  const tenancy = new TenantStore(engine, () => Date.now() + clockSkewMs);
  const adminToken = (await tenancy.createToken({ role: 'admin', name: 'test-admin' })).token;
  const ctx = apiContext({
    rootEngine: engine, jobManager: new JobManager(), tenancy, keys: new KeyManager(engine, { retryMs: 0 }), qos: (engine as QosEngine).control, poolPath, spoolDir: dir,
    nbdBaseUri: 'nbd://127.0.0.1:10809', exportUri: (_tenant, n) => `nbd://127.0.0.1:10809/${n}`,
    cluster: clusterFor === undefined ? null : clusterFor(engine),
  });
  const audits: AuditEvent[] = [];
  const authFailures: string[] = [];
  const { app, routes } = buildApi(ctx, {
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
    onRoute: (method, url) => registered.push({ method, url }),
    // A given logger receives the audit events itself (the default); otherwise they are collected here.
    ...(options.logger === undefined ? { audit: (e: AuditEvent) => audits.push(e) } : {}),
    onAuthFailure: (reason) => authFailures.push(reason),
    authBackoff: false,
    ...options,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  t.after(async () => {
    await app.close();
    await ctx.jobManager.drain();
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  });
  const as = (token: string | null) => async (method: string, path: string, body?: unknown, raw?: string): Promise<ApiAnswer> => {
    const init: RequestInit = { method };
    const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
    if (body !== undefined || raw !== undefined) {
      init.body = raw ?? JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    init.headers = headers;
    const r = await fetch(`${base}${path}`, init);
    const text = await r.text();
    return {
      status: r.status, type: r.headers.get('content-type') ?? '', next: r.headers.get('cairn-next-page-token'),
      body: text === '' ? null : JSON.parse(text) as unknown,
    };
  };
  return {
    engine, tenancy, adminToken, base, registered, specs: routes.specs, audits, authFailures, call: as(adminToken), as,
    advanceClock: (ms) => { clockSkewMs += ms; },
  };
}
