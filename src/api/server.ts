// Builds the REST API: a fastify instance with every /v1 route registered through one RouteTable
// (so /v1/openapi.json, built by @fastify/swagger, lists them all), a browsable reference at /v1/docs
// (@fastify/swagger-ui), problem+json errors, and a raw-stream body for imports.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { ApiContext } from './context.js';
import { RouteTable } from './routes.js';
import { errorHandler, problemFor, sendProblem } from './problem.js';
import { registerVolumeRoutes } from './routes-volumes.js';
import { registerSnapshotRoutes } from './routes-snapshots.js';
import { apiVersion, registerMiscRoutes } from './routes-misc.js';
import { registerStreamRoutes } from './routes-stream.js';
import { registerQosRoutes } from './routes-qos.js';

/** Largest JSON request body (requests are small objects; streams are not JSON). */
export const jsonBodyBytesMax = 1024 * 1024;
/** HTTP connections the API serves at once. */
export const apiConnectionsMax = 256;
/** Where @fastify/swagger-ui serves the browsable API reference. */
export const apiDocsPath = '/v1/docs';

export interface ApiOptions {
  logger?: FastifyBaseLogger | boolean;
  /** Serves Prometheus text at /metrics when given. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Told of every route fastify registers (tests compare them with openapi.json). */
  onRoute?: (method: string, url: string) => void;
}

/** `routes` fills in when the app loads its plugins (app.ready(), listen() or inject()). */
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
  // @fastify/swagger collects routes from an onRoute hook, so it loads before the plugin that adds them.
  void app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Cairn REST API', version: apiVersion, description: 'Volumes, snapshots, clones, jobs and streams of a Cairn pool. Sizes are bytes. Errors are application/problem+json with a stable `code`.' },
    },
  });
  void app.register(fastifySwaggerUi, { routePrefix: apiDocsPath });
  const routes = new RouteTable(app);
  void app.register(async (scope) => {
    routes.attach(scope);
    registerRoutes(routes, ctx, opts);
  });
  return { app, routes };
}

function registerRoutes(routes: RouteTable, ctx: ApiContext, opts: ApiOptions): void {
  registerMiscRoutes(routes, ctx);
  registerVolumeRoutes(routes, ctx);
  registerSnapshotRoutes(routes, ctx);
  registerStreamRoutes(routes, ctx);
  registerQosRoutes(routes, ctx);
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
}
