// Builds the REST API: a fastify instance with every /v1 route registered through one RouteTable
// (so /v1/openapi.json lists them all), problem+json errors, and a raw-stream body for imports.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { ApiContext } from './context.js';
import { RouteTable } from './routes.js';
import { errorHandler, problemFor, sendProblem } from './problem.js';
import { registerVolumeRoutes } from './routes-volumes.js';
import { registerSnapshotRoutes } from './routes-snapshots.js';
import { registerMiscRoutes } from './routes-misc.js';
import { registerStreamRoutes } from './routes-stream.js';

/** Largest JSON request body (requests are small objects; streams are not JSON). */
export const jsonBodyBytesMax = 1024 * 1024;
/** HTTP connections the API serves at once. */
export const apiConnectionsMax = 256;

export interface ApiOptions {
  logger?: FastifyBaseLogger | boolean;
  /** Serves Prometheus text at /metrics when given. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Told of every route fastify registers (tests compare them with openapi.json). */
  onRoute?: (method: string, url: string) => void;
}

export interface Api { app: FastifyInstance; routes: RouteTable }

export function buildApi(ctx: ApiContext, opts: ApiOptions = {}): Api {
  const base = {
    bodyLimit: jsonBodyBytesMax,
    routerOptions: { maxParamLength: 600 },
    // Unknown fields are errors (400), not silently dropped.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array' as const, allErrors: false } },
  };
  const app: FastifyInstance = typeof opts.logger === 'object'
    ? Fastify({ ...base, loggerInstance: opts.logger })
    : Fastify({ ...base, logger: opts.logger ?? false });
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
  const routes = new RouteTable(app);
  registerMiscRoutes(routes, ctx);
  registerVolumeRoutes(routes, ctx);
  registerSnapshotRoutes(routes, ctx);
  registerStreamRoutes(routes, ctx);
  if (opts.metrics !== undefined) {
    const metrics = opts.metrics;
    routes.add({
      method: 'GET', url: '/metrics', tag: 'meta', summary: 'Prometheus metrics (text exposition format)',
      responses: { 200: { description: 'metrics', contentType: 'text/plain' } },
      handler: async (_req, reply) => {
        const m = await metrics();
        return reply.type(m.contentType).send(m.body);
      },
    });
  }
  return { app, routes };
}
