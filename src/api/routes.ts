// Route registration that keeps a record of every route with its schemas, so /v1/openapi.json is
// generated from exactly the schemas fastify validates with (and a test can compare it with the
// routes fastify actually registered).
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import type { TSchema } from '@sinclair/typebox';
import { ProblemSchema } from './schemas.js';

export interface ResponseSpec { description: string; schema?: TSchema; contentType?: string }

export interface RouteSpec {
  method: HTTPMethods;
  /** fastify path syntax: /v1/volumes/:name */
  url: string;
  summary: string;
  tag: string;
  params?: TSchema;
  querystring?: TSchema;
  body?: TSchema;
  /** Body media type when not JSON (e.g. application/octet-stream for import). */
  bodyContentType?: string;
  responses: Record<number, ResponseSpec>;
  handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
}

export class RouteTable {
  readonly specs: RouteSpec[] = [];
  constructor(private readonly app: FastifyInstance) {}

  add(spec: RouteSpec): void {
    this.specs.push(spec);
    const schema: Record<string, TSchema> = {};
    if (spec.params) schema.params = spec.params;
    if (spec.querystring) schema.querystring = spec.querystring;
    if (spec.body && spec.bodyContentType === undefined) schema.body = spec.body;
    this.app.route({ method: spec.method, url: spec.url, schema, handler: spec.handler });
  }
}

function openApiPath(url: string): string { return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}'); }

interface ObjectSchema { properties?: Record<string, TSchema>; required?: string[] }

function parameters(schema: TSchema | undefined, where: 'path' | 'query'): object[] {
  if (schema === undefined) return [];
  const s = schema as unknown as ObjectSchema;
  return Object.entries(s.properties ?? {}).map(([name, prop]) => ({
    name, in: where, required: where === 'path' || (s.required ?? []).includes(name),
    schema: strip(prop), description: (prop as { description?: string }).description,
  }));
}

/** A plain JSON copy (TypeBox adds symbol keys that JSON drops anyway). */
function strip(schema: TSchema): unknown { return JSON.parse(JSON.stringify(schema)); }

export function openApiDocument(specs: RouteSpec[], version: string): object {
  const paths: Record<string, Record<string, object>> = {};
  for (const spec of specs) {
    const path = openApiPath(spec.url);
    const responses: Record<string, object> = {};
    for (const [status, r] of Object.entries(spec.responses)) {
      responses[status] = r.schema === undefined && r.contentType === undefined
        ? { description: r.description }
        : { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: r.schema ? strip(r.schema) : { type: 'string', format: 'binary' } } } };
    }
    responses.default = { description: 'error', content: { 'application/problem+json': { schema: strip(ProblemSchema) } } };
    const operation: Record<string, unknown> = {
      summary: spec.summary, tags: [spec.tag],
      operationId: `${spec.method.toLowerCase()}${path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      parameters: [...parameters(spec.params, 'path'), ...parameters(spec.querystring, 'query')],
      responses,
    };
    if (spec.body !== undefined) {
      const contentType = spec.bodyContentType ?? 'application/json';
      operation.requestBody = { required: true, content: { [contentType]: { schema: strip(spec.body) } } };
    }
    paths[path] = { ...(paths[path] ?? {}), [spec.method.toLowerCase()]: operation };
  }
  return {
    openapi: '3.0.3',
    info: { title: 'Cairn REST API', version, description: 'Volumes, snapshots, clones, jobs and streams of a Cairn pool. Sizes are bytes. Errors are application/problem+json with a stable `code`.' },
    paths,
  };
}
