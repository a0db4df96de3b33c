// Builds the REST API: a fastify instance with every /v1 route registered through one RouteTable
// (so /v1/openapi.json, built by @fastify/swagger, lists them all), a browsable reference at /v1/docs
// (@fastify/swagger-ui), problem+json errors, and a raw-stream body for imports.
import type { CapacityHistoryView } from './capacity-history.js';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { SharedApiContext } from './context.js';
import { RouteTable } from './routes.js';
import { errorHandler, problemFor, replyCodes, sendProblem } from './problem.js';
import { registerVolumeRoutes } from './routes-volumes.js';
import { registerSnapshotRoutes } from './routes-snapshots.js';
import { apiVersion, registerMiscRoutes } from './routes-misc.js';
import { registerStreamRoutes } from './routes-stream.js';
import { registerTenantRoutes } from './routes-tenants.js';
import { registerWhoamiRoutes } from './routes-whoami.js';
import { Authenticator, authorize, type AuthFailureReason } from './auth.js';
import { scopeFor } from './request-scope.js';
import { registerNbdKeyRoutes } from './routes-nbd-keys.js';
import { registerNvmeHostRoutes } from './routes-nvme-hosts.js';
import { registerQosRoutes } from './routes-qos.js';
import { registerKeyRoutes } from './routes-keys.js';
import { registerStatsRoutes, type IoTotalsSource } from './routes-stats.js';
import { registerUiFiles } from './ui-files.js';
import { registerClusterRoutes } from './routes-cluster.js';

/** Largest JSON request body (requests are small objects; streams are not JSON). */
export const jsonBodyBytesMax = 1024 * 1024;
/** HTTP connections the API serves at once. */
export const apiConnectionsMax = 256;
/** Where @fastify/swagger-ui serves the browsable API reference. */
export const apiDocsPath = '/v1/docs';

export interface ApiOptions {
  logger?: FastifyBaseLogger | boolean;
  /** I/O totals per volume for GET /v1/stats (the daemon's metrics); without it the route answers none. */
  ioTotals?: IoTotalsSource;
  /** The built dashboard (dist/ui): served at /ui/ without a token when given and present. */
  uiDir?: string;
  /** The pool's sampled capacity for GET /v1/pool/history (the daemon's sampler); without it the route answers none. */
  capacityHistory?: () => CapacityHistoryView;
  /** Serves Prometheus text at /metrics when given. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Told of every route fastify registers (tests compare them with openapi.json). */
  onRoute?: (method: string, url: string) => void;
  /** Told of every failed authentication (metrics). */
  onAuthFailure?: (reason: AuthFailureReason) => void;
  /** false turns off the back-off after repeated failures from one address (tests only). */
  authBackoff?: boolean;
  /** Receives one audit event per mutating request (who, what, outcome); default: the request logger. */
  audit?: (event: AuditEvent) => void;
  /** HTTPS: PEM certificate and key, and a CA whose client certificates are required (mutual TLS). */
  https?: { cert: Buffer; key: Buffer; clientCa?: Buffer };
}

export interface AuditEvent {
  tokenName: string | null; role: string | null; tenant: string | null;
  method: string; route: string; params: unknown; status: number; code: string | null; ip: string;
}

/** `routes` fills in when the app loads its plugins (app.ready(), listen() or inject()). */
export interface Api { app: FastifyInstance; routes: RouteTable }

export function buildApi(ctx: SharedApiContext, opts: ApiOptions = {}): Api {
  const base = {
    bodyLimit: jsonBodyBytesMax,
    routerOptions: { maxParamLength: 600 },
    // Unknown fields are errors (400), not silently dropped.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array' as const, allErrors: false } },
  };
  const https = opts.https === undefined ? {} : {
    https: {
      cert: opts.https.cert, key: opts.https.key, minVersion: 'TLSv1.2' as const,
      ...(opts.https.clientCa !== undefined ? { ca: opts.https.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
    },
  };
  const app: FastifyInstance = (typeof opts.logger === 'object'
    ? Fastify({ ...base, ...https, loggerInstance: opts.logger })
    : Fastify({ ...base, ...https, logger: opts.logger ?? false })) as unknown as FastifyInstance;
  app.server.maxConnections = apiConnectionsMax;
  // Import bodies are streamed straight to the spool file, never buffered.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendProblem(reply, problemFor('route_not_found', `no route ${req.method} ${req.url}`)));
  const onRoute = opts.onRoute;
  if (onRoute !== undefined) {
    app.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) onRoute(method, route.url);
    });
  }
  // @fastify/swagger collects routes from an onRoute hook, so it loads before the plugin that adds them.
  void app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Cairn REST API', version: apiVersion, description: 'Volumes, snapshots, clones, jobs, streams, tenants and tokens of a Cairn pool. Sizes are bytes. Errors are application/problem+json with a stable `code`. Every route but this document needs `Authorization: Bearer TOKEN`.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  void app.register(fastifySwaggerUi, { routePrefix: apiDocsPath });
  if (opts.uiDir !== undefined) registerUiFiles(app, opts.uiDir);
  const auth = new Authenticator(ctx.tenancy, opts.onAuthFailure, Date.now, opts.authBackoff ?? true);
  const routes = new RouteTable(app, async (access, request) => {
    if (access === 'public') return ctx.forRequest(scopeFor(null, ctx.rootEngine, ctx.jobManager));
    const principal = await auth.authenticate(request);
    authorize(access, principal);
    return ctx.forRequest(scopeFor(principal, ctx.rootEngine, ctx.jobManager));
  });
  const audit = opts.audit ?? ((e: AuditEvent) => app.log.info({ event: 'audit', ...e }, 'audit'));
  app.addHook('onResponse', async (request, reply) => {
    if (request.method === 'GET' || request.method === 'HEAD' || request.routeOptions.url === undefined) return;
    const principal = routes.principalOf(request);
    audit({
      tokenName: principal?.tokenName ?? null, role: principal?.role ?? null, tenant: principal === null ? null : principal.tenant ?? '*',
      method: request.method, route: request.routeOptions.url, params: request.params, status: reply.statusCode,
      code: replyCodes.get(reply) ?? null, ip: request.ip,
    });
  });
  void app.register(async (scope) => {
    routes.attach(scope);
    registerRoutes(routes, ctx, opts);
  });
  return { app, routes };
}

function registerRoutes(routes: RouteTable, ctx: SharedApiContext, opts: ApiOptions): void {
  registerMiscRoutes(routes, ctx, opts.capacityHistory);
  registerVolumeRoutes(routes, ctx);
  registerSnapshotRoutes(routes, ctx);
  registerStreamRoutes(routes, ctx);
  registerTenantRoutes(routes, ctx);
  registerWhoamiRoutes(routes, ctx);
  registerNbdKeyRoutes(routes, ctx);
  registerNvmeHostRoutes(routes, ctx);
  registerQosRoutes(routes, ctx);
  registerKeyRoutes(routes, ctx);
  registerStatsRoutes(routes, ctx, opts.ioTotals);
  registerClusterRoutes(routes, ctx);
  if (opts.metrics !== undefined) {
    const metrics = opts.metrics;
    routes.add({
      method: 'GET', url: '/metrics', tag: 'meta', summary: 'Prometheus metrics (text exposition format); an admin token', access: 'admin',
      responses: { 200: { description: 'metrics', contentType: 'text/plain' } },
      handler: async (_req, reply) => {
        const m = await metrics();
        return reply.type(m.contentType).send(m.body);
      },
    });
  }
}
