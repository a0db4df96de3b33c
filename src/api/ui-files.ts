// The web dashboard's static files (built from ui/ into dist/ui by `npm run build`) at /ui/ on the
// API's address. Public: the page itself asks for a token and sends it on every API call. Hashed
// assets are cached for good; index.html is revalidated so a new build is picked up at once.
import { existsSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';

/** Where the dashboard is served. */
export const uiPath = '/ui/';
/** Vite names every built asset by its content hash, so a cached copy never goes stale. */
const assetMaxAgeSeconds = 365 * 86400;
/** Only this origin's scripts, styles and API: the page works air-gapped and loads nothing from elsewhere. */
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function registerUiFiles(app: FastifyInstance, dir: string): void {
  // A daemon run from a source tree that was never built has no dashboard: /ui/ is then a 404 like any unknown path.
  if (!existsSync(dir)) return;
  // @fastify/static redirects directories below its prefix, not the prefix itself.
  app.get(uiPath.slice(0, -1), { schema: { hide: true } }, (_req, reply) => reply.redirect(uiPath, 301));
  void app.register(fastifyStatic, {
    root: dir, prefix: uiPath, redirect: true, list: false, index: 'index.html', decorateReply: false,
    schemaHide: true, cacheControl: false,
    setHeaders: (reply, path) => {
      const hashed = path.includes('/assets/');
      reply.header('cache-control', hashed ? `public, max-age=${assetMaxAgeSeconds}, immutable` : 'no-cache');
      reply.header('content-security-policy', contentSecurityPolicy);
      reply.header('x-content-type-options', 'nosniff');
    },
  });
}
