// The CLI's HTTP client for the daemon's REST API (fetch). Every failure becomes a CliError with one
// line for the user: the problem+json detail and code, or "cannot reach cairn daemon at URL: ...".
import type { Readable } from 'node:stream';
import { Agent, fetch as undiciFetch } from 'undici';

export const defaultApiUrl = 'http://127.0.0.1:10880';
/** A request that gets no answer in this time fails (long work runs as jobs, which are polled). */
export const requestTimeoutMs = 10 * 60 * 1000;

export class CliError extends Error {
  constructor(message: string, readonly code = 'error', readonly exitCode = 1) {
    super(message);
    this.name = 'CliError';
  }
}

function reachError(baseUrl: string, err: unknown): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why: Record<string, string> = {
    ECONNREFUSED: 'connection refused', ENOTFOUND: 'host not found', ETIMEDOUT: 'timed out',
    ECONNRESET: 'connection reset', EHOSTUNREACH: 'host unreachable',
  };
  const reason = cause?.code !== undefined ? why[cause.code] ?? cause.code : cause?.message ?? (err as Error).message;
  return new CliError(`cannot reach cairn daemon at ${baseUrl}: ${reason}`, 'unreachable');
}

/** The response header that carries a paged list's next token (src/api/paging.ts). */
export const nextPageTokenHeader = 'cairn-next-page-token';
export interface ListPaging { limit?: number; pageToken?: string }

export interface ApiResponse<T> { status: number; body: T; headers: Headers }

export interface ClientAuth {
  /** Sent as `Authorization: Bearer`; null sends none (the daemon then answers 401). */
  token: string | null;
  /** Where the token came from, for the hint when the daemon refuses it. */
  tokenSource?: string | null;
  /** PEM CA certificate(s) that verify an HTTPS daemon. */
  ca?: Buffer | null;
  /** PEM client certificate and key (mutual TLS). */
  cert?: Buffer | null;
  key?: Buffer | null;
}

export class ApiClient {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  constructor(baseUrl: string, private readonly auth: ClientAuth = { token: null }) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    // A private CA or a client certificate needs undici's own fetch with its agent (global fetch takes neither).
    if (auth.ca != null || auth.cert != null) {
      const dispatcher = new Agent({
        connect: { ...(auth.ca != null ? { ca: auth.ca } : {}), ...(auth.cert != null && auth.key != null ? { cert: auth.cert, key: auth.key } : {}) },
      });
      this.fetchImpl = ((url: string, init?: RequestInit) => undiciFetch(url, { ...(init as object), dispatcher } as Parameters<typeof undiciFetch>[1])) as unknown as typeof fetch;
    } else {
      this.fetchImpl = fetch;
    }
  }

  /** The raw fetch with error translation; `init.body` may be a stream (duplex half). */
  async fetch(path: string, init: RequestInit & { duplex?: 'half' } = {}): Promise<Response> {
    let response: Response;
    try {
      const headers = new Headers(init.headers);
      if (this.auth.token !== null) headers.set('authorization', `Bearer ${this.auth.token}`);
      response = await this.fetchImpl(`${this.baseUrl}${path}`, { signal: AbortSignal.timeout(requestTimeoutMs), ...init, headers });
    } catch (err) {
      if ((err as Error).name === 'CliError') throw err;
      if ((err as { cause?: unknown }).cause !== undefined || (err as Error).name === 'TypeError') throw reachError(this.baseUrl, err);
      throw new CliError(`request to ${this.baseUrl}${path} failed: ${(err as Error).message}`);
    }
    if (response.status === 401) {
      const err = await problemError(response);
      const hint = this.auth.token === null
        ? 'no token: pass --token, set CAIRN_TOKEN or CAIRN_TOKEN_FILE (the daemon writes its admin token to STATE_DIR/POOL.admin-token)'
        : `the token from ${this.auth.tokenSource ?? 'the command line'} was refused`;
      throw new CliError(`${err.message}; ${hint}`, err.code);
    }
    if (response.status >= 400) throw await problemError(response);
    return response;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const init: RequestInit = { method };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers = { 'content-type': 'application/json' }; }
    const response = await this.fetch(path, init);
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: (text === '' ? null : JSON.parse(text)) as T };
  }

  get<T>(path: string): Promise<T> { return this.request<T>('GET', path).then((r) => r.body); }

  /**
   * A paged list (volumes, snapshots): every page when `paging` names neither a limit nor a token;
   * otherwise one page of `limit` items from `pageToken`, with the token of the next (null: the end).
   */
  async list<T>(path: string, paging: ListPaging = {}): Promise<{ items: T[]; nextPageToken: string | null }> {
    const items: T[] = [];
    const onePage = paging.limit !== undefined || paging.pageToken !== undefined;
    let token = paging.pageToken ?? null;
    for (;;) {
      const query = new URLSearchParams();
      if (paging.limit !== undefined) query.set('limit', String(paging.limit));
      if (token !== null) query.set('pageToken', token);
      const sep = path.includes('?') ? '&' : '?';
      const r = await this.request<T[]>('GET', query.toString() === '' ? path : `${path}${sep}${query.toString()}`);
      items.push(...r.body);
      token = r.headers.get(nextPageTokenHeader);
      if (onePage || token === null) return { items, nextPageToken: token };
    }
  }

  /** POSTs a byte stream (import). */
  async upload<T>(path: string, stream: Readable): Promise<ApiResponse<T>> {
    const response = await this.fetch(path, {
      method: 'POST', body: stream as unknown as ReadableStream, duplex: 'half',
      headers: { 'content-type': 'application/octet-stream' },
    });
    return { status: response.status, headers: response.headers, body: (await response.json()) as T };
  }
}

async function problemError(response: Response): Promise<CliError> {
  const text = await response.text().catch(() => ''); // no body: the status line below still says what failed
  try {
    const p = JSON.parse(text) as { detail?: string; code?: string };
    return new CliError(`${p.detail ?? response.statusText} (${p.code ?? response.status})`, p.code ?? 'error');
  } catch {
    return new CliError(`daemon answered ${response.status} ${response.statusText}`);
  }
}

/** `/v1/volumes/NAME` path segments are encoded; "@" stays readable. */
export function seg(name: string): string { return encodeURIComponent(name).replace(/%40/g, '@'); }
