// Route registration: every route goes to fastify with the schemas it validates with, and to
// @fastify/swagger (through the route's swaggerTransform) with those same TypeBox objects plus its
// summary, responses and problem+json errors, so /v1/openapi.json cannot drift from what the server
// checks (and a test compares it with the routes fastify actually registered).
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, HTTPMethods } from 'fastify';
import type { TSchema } from '@sinclair/typebox';
import { ProblemSchema } from './schemas.js';
import type { Access } from './auth.js';
import type { Principal } from '../tenancy/store.js';
import type { ApiContext } from './context.js';

/** Decides who may call a route and builds the request's context (auth.ts, server.ts). */
export type RouteGuard = (access: Access, request: FastifyRequest) => Promise<ApiContext>;

export interface ResponseSpec { description: string; schema?: TSchema; contentType?: string }

export interface RouteSpec {
  method: HTTPMethods;
  /** fastify path syntax: /v1/volumes/:name */
  url: string;
  summary: string;
  tag: string;
  /** Who may call it (auth.ts): required, so no route is added without a rule. */
  access: Access;
  params?: TSchema;
  querystring?: TSchema;
  body?: TSchema;
  /** Body media type when not JSON (e.g. application/octet-stream for import). */
  bodyContentType?: string;
  responses: Record<number, ResponseSpec>;
  /** `ctx`: the request's own context (its principal's engine and jobs). */
  handler: (request: FastifyRequest, reply: FastifyReply, ctx: ApiContext) => Promise<unknown>;
}

export class RouteTable {
  readonly specs: RouteSpec[] = [];
  private readonly contexts = new WeakMap<FastifyRequest, ApiContext>();
  constructor(private app: FastifyInstance, private readonly guard: RouteGuard) {}

  /** Who the request acted as, once its guard admitted it (null: public or refused). */
  principalOf(request: FastifyRequest): Principal | null { return this.contexts.get(request)?.principal() ?? null; }

  /** Registers further routes in `scope` (the plugin context that loads after @fastify/swagger). */
  attach(scope: FastifyInstance): void { this.app = scope; }

  add(spec: RouteSpec): void {
    this.specs.push(spec);
    const schema: Record<string, TSchema> = {};
    if (spec.params) schema.params = spec.params;
    if (spec.querystring) schema.querystring = spec.querystring;
    if (spec.body && spec.bodyContentType === undefined) schema.body = spec.body;
    const docs = documentedSchema(spec);
    const handler = spec.handler;
    this.app.route({
      method: spec.method, url: spec.url, schema,
      // Before the body is read or validated: an unauthenticated caller learns nothing and costs little.
      onRequest: async (request) => { this.contexts.set(request, await this.guard(spec.access, request)); },
      handler: (request, reply) => {
        const ctx = this.contexts.get(request);
        if (ctx === undefined) throw new Error('route reached without its onRequest guard');
        return handler(request, reply, ctx);
      },
      config: { swaggerTransform: ({ url }) => ({ schema: docs, url }) },
    });
  }

  /** The OpenAPI document @fastify/swagger built from the registered routes (after ready). */
  openApi(): object { return this.app.swagger(); }
}

/** fastify's `:param` path syntax as OpenAPI's `{param}` (operation ids are built from it). */
function openApiPath(url: string): string { return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}'); }

/**
 * What @fastify/swagger documents for a route: the validating schemas as they are, the body under
 * its media type, each response (no content when it has no body), and every error as problem+json.
 * Documentation only: fastify validates with `schema` above and serializes replies itself.
 */
function documentedSchema(spec: RouteSpec): FastifySchema {
  const response: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(spec.responses)) {
    response[status] = r.schema === undefined && r.contentType === undefined
      ? { description: r.description, type: 'null' }
      : { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: r.schema ?? { type: 'string', format: 'binary' } } } };
  }
  response.default = { description: 'error', content: { 'application/problem+json': { schema: ProblemSchema } } };
  const path = openApiPath(spec.url);
  const docs: Record<string, unknown> = {
    summary: spec.summary, tags: [spec.tag], response,
    security: spec.access === 'public' ? [] : [{ bearer: [] }],
    operationId: `${spec.method.toLowerCase()}${path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
  };
  if (spec.params) docs.params = spec.params;
  if (spec.querystring) docs.querystring = spec.querystring;
  if (spec.body) docs.body = spec.bodyContentType === undefined ? spec.body : { content: { [spec.bodyContentType]: { schema: spec.body } } };
  return docs as FastifySchema;
}

