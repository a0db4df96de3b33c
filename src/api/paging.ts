// Paged lists (volumes, snapshots): `?limit=N&pageToken=T` in, the page as the JSON array and, when
// more follow, the token for the next page in the `Cairn-Next-Page-Token` header (the body keeps its
// shape, so an old client still gets a valid list: the first page). Tokens are opaque to clients:
// base64url of "KIND:KEY", where the key is the last item's id (snapshots) or name (volumes), so a
// page is found by a seek, not by counting, and items added or deleted between pages never shift it.
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { ApiError } from './problem.js';

/** Items in one page at most; also the page size when the client names none. */
export const pageItemsMax = 1000;
export const nextPageTokenHeader = 'cairn-next-page-token';

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: pageItemsMax, description: `items per page (at most ${pageItemsMax}, the default)` })),
  pageToken: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: `the ${nextPageTokenHeader} header of the previous page` })),
};
const PageQueryObject = Type.Object(PageQuery);
export type PageQuery = Static<typeof PageQueryObject>;

export type PageKind = 'snapshot' | 'volume';

export function encodePageToken(kind: PageKind, key: string): string {
  return Buffer.from(`${kind}:${key}`, 'utf8').toString('base64url');
}

/** The key in a token of `kind`; a token that is not one (made up, cut, from the other list) is a 400. */
export function decodePageToken(kind: PageKind, token: string): string {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
  const prefix = `${kind}:`;
  if (!text.startsWith(prefix) || text.length === prefix.length) {
    throw new ApiError('invalid_argument', `invalid page token ${JSON.stringify(token.slice(0, 64))}: pass the ${nextPageTokenHeader} header of the previous page of this list`);
  }
  return text.slice(prefix.length);
}

/** The snapshot id after which a snapshot page starts (0: the first page). */
export function snapshotPageStart(token: string | undefined): number {
  if (token === undefined) return 0;
  const key = decodePageToken('snapshot', token);
  const id = /^[1-9][0-9]{0,15}$/.test(key) ? Number(key) : NaN;
  if (!Number.isSafeInteger(id)) throw new ApiError('invalid_argument', `invalid page token ${JSON.stringify(token.slice(0, 64))}: not a snapshot position`);
  return id;
}

export function setNextPageToken(reply: FastifyReply, kind: PageKind, lastKey: string | null): void {
  if (lastKey !== null) reply.header(nextPageTokenHeader, encodePageToken(kind, lastKey));
}
