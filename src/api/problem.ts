// Errors over HTTP: every failure becomes application/problem+json (RFC 9457) carrying the stable
// `code` of the engine error (src/engine/errors.ts) or of the API itself. This file owns the one
// table from code to HTTP status, so the same code always gets the same status.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AssertionError, type ErrorCode } from '../engine/index.js';
import type { TenancyErrorCode } from '../tenancy/errors.js';
import type { KekErrorCode } from '../keys/provider.js';

/** Codes of the API's own errors, of the stream layer's, and of requests refused before a handler. */
export type ApiErrorCode =
  | 'job_not_found' | 'route_not_found' | 'stream_base_mismatch' | 'target_modified' | 'target_busy'
  | 'invalid_request' | 'stream_corrupt' | 'unsupported_media_type' | 'payload_too_large' | TenancyErrorCode | KekErrorCode
  // The cluster's (issue 22): a cluster route on a single node; this node no longer the volume's
  // primary; etcd or a peer unreachable; a node name that no node record holds.
  | 'not_clustered' | 'kv_unavailable' | 'transport_error' | 'node_not_found';

/** An error raised by the API layer itself (not the engine). */
export class ApiError extends Error {
  constructor(readonly code: ErrorCode | ApiErrorCode | TenancyErrorCode, message: string, readonly status?: number) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * Keyed by every engine code (errors.ts ErrorCode) and every API code: a new code without a status
 * does not compile.
 */
const statusByCode: Record<ErrorCode | ApiErrorCode | TenancyErrorCode, number> = {
  volume_not_found: 404,
  snapshot_not_found: 404,
  job_not_found: 404,
  route_not_found: 404,
  name_taken: 409,
  read_only: 409,
  shrink_refused: 409,
  stream_base_mismatch: 409,
  target_modified: 409,
  target_busy: 409,
  invalid_name: 400,
  invalid_size: 400,
  invalid_argument: 400,
  invalid_request: 400,
  stream_corrupt: 400,
  out_of_range: 416,
  pool_full: 507,
  checksum_error: 500,
  io_error: 500,
  pool_corrupt: 500,
  superblock_lost: 500,
  log_damaged: 500,
  // Damaged metadata: the server could not produce the answer (the pool needs repair or a restore).
  meta_bad_magic: 500,
  meta_bad_checksum: 500,
  meta_wrong_location: 500,
  meta_wrong_type: 500,
  meta_bad_structure: 500,
  meta_too_deep: 500,
  internal_error: 500,
  pool_closed: 503,
  unsupported_media_type: 415,
  payload_too_large: 413,
  unauthorized: 401,
  forbidden: 403,
  tenant_not_found: 404,
  token_not_found: 404,
  nbd_key_not_found: 404,
  nvme_host_not_found: 404,
  tenant_not_empty: 409,
  tenant_busy: 409,
  kek_unavailable: 503,
  kek_wrong_key: 422,
  too_many_requests: 429,
  // An encrypted volume whose tenant's key-encryption key is unavailable: retry once it is back.
  volume_locked: 423,
  wrong_key: 422,
  key_slots_full: 507,
  not_clustered: 404,
  node_not_found: 404,
  // The volume's primary moved while the request ran: retry (it goes to the new primary).
  not_primary: 409,
  kv_unavailable: 503,
  transport_error: 503,
};

const titleByStatus: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 409: 'Conflict', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 422: 'Unprocessable Content', 423: 'Locked', 416: 'Range Not Satisfiable', 500: 'Internal Server Error',
  503: 'Service Unavailable', 507: 'Insufficient Storage',
};

export interface Problem { type: string; title: string; status: number; detail: string; code: string }

function isKnownCode(code: string): code is ErrorCode | ApiErrorCode | TenancyErrorCode { return Object.hasOwn(statusByCode, code); }

/** A code carried as a string (a job's recorded error): itself when known, else internal_error. */
export function knownCode(code: string | undefined): ErrorCode | ApiErrorCode | TenancyErrorCode {
  return code !== undefined && isKnownCode(code) ? code : 'internal_error';
}

export function statusForCode(code: string): number { return isKnownCode(code) ? statusByCode[code] : 500; }

export function problemFor(code: string, detail: string, status = statusForCode(code)): Problem {
  return { type: `https://cairn.dev/problems/${code}`, title: titleByStatus[status] ?? 'Error', status, detail, code };
}

/** Turns anything thrown by a handler (engine error, validation error, bug) into a Problem. */
export function toProblem(err: unknown): Problem {
  if (err instanceof AssertionError) return problemFor('internal_error', err.message);
  const e = err as Partial<FastifyError> & { code?: unknown; message?: string; status?: number };
  if (e.validation !== undefined) {
    const where = e.validationContext ?? 'request';
    return problemFor('invalid_request', `${where}: ${e.message ?? 'invalid'}`.replace(/^(\w+): \1\//, '$1/'));
  }
  if (typeof e.code === 'string' && isKnownCode(e.code)) {
    return problemFor(e.code, e.message ?? e.code, e.status ?? statusForCode(e.code));
  }
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return problemFor('unsupported_media_type', e.message ?? '');
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return problemFor('payload_too_large', e.message ?? '');
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return problemFor('invalid_request', e.message ?? 'bad request', e.statusCode);
  }
  return problemFor('internal_error', e.message ?? String(err));
}

/** The problem code each error reply carried (the audit log reads it). */
export const replyCodes = new WeakMap<FastifyReply, string>();

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  replyCodes.set(reply, problem.code);
  if (problem.status === 401) void reply.header('www-authenticate', 'Bearer realm="cairn"');
  return reply.code(problem.status).type('application/problem+json').send(problem);
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const problem = toProblem(err);
  if (problem.status >= 500) request.log.error({ err, code: problem.code }, 'request failed');
  else request.log.info({ code: problem.code, detail: problem.detail }, 'request refused');
  return sendProblem(reply, problem);
}
