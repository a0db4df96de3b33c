// The controller's only way to the daemon: the REST API of issue 4 (JSON in and out, errors as
// application/problem+json with a stable `code`). Maps transport failures to UNAVAILABLE and
// problem codes to the gRPC codes the CSI spec asks for.
import { apiRequestTimeoutMs, jobPollIntervalMs, jobWaitMsMax } from './constants.js';
import {
  CsiError, Status, alreadyExists, internal, invalidArgument, notFound, outOfRange, resourceExhausted, unavailable,
} from './errors.js';

export interface ApiVolume {
  name: string;
  id: number;
  sizeBytes: number;
  mappedBytes: number;
  createdMs: number;
  origin: { volume: string; snapshot: string | null } | null;
  snapshots: string[];
  /** "nbd://HOST:PORT/NAME" as the daemon names the export; null when it serves no NBD over TCP. */
  nbdUri: string | null;
  /** Encrypted at rest with its lineage's data key (a clone or snapshot shares its source's). */
  encrypted: boolean;
  /** Encrypted and its data key not in memory (its tenant's KEK is unavailable): I/O is refused for now. */
  locked: boolean;
}

export interface ApiSnapshot {
  /** "VOL@SNAP" */
  fullName: string;
  volume: string;
  name: string;
  sizeBytes: number;
  createdMs: number;
  encrypted: boolean;
  locked: boolean;
}

export interface ApiPool {
  sizeBytes: number;
  freeBytes: number;
  checksumErrors: number;
  /** "nbd://HOST:PORT" of the daemon's NBD server; null when it serves no NBD over TCP. */
  nbd: string | null;
}

/** Who a token is (GET /v1/whoami): an admin has no tenant. */
export interface ApiPrincipal { role: 'admin' | 'tenant' | 'reader'; tenant: string | null; tokenName: string }

/** QoS limits of a volume as the QoS API takes them (PUT /v1/volumes/NAME/qos); 0 or null: no limit. */
export interface ApiQos {
  iopsMax?: number | null; readIopsMax?: number | null; writeIopsMax?: number | null;
  bpsMax?: number | null; readBpsMax?: number | null; writeBpsMax?: number | null;
  burstSeconds?: number | null;
}

/** An error answer of the API: HTTP status plus the problem's stable code. */
export class ApiProblem extends Error {
  constructor(readonly httpStatus: number, readonly code: string, message: string) {
    super(message);
    this.name = 'ApiProblem';
  }
}

type Json = Record<string, unknown>;

/** Not there: unknown, or a name the daemon refuses (so no such volume can exist). */
/** The API's largest page and its next-page header (src/api/paging.ts). */
export const apiPageItemsMax = 1000;
const nextPageTokenHeader = 'cairn-next-page-token';
export interface ApiPage<T> { items: T[]; next: string | null }

const isAbsent = (err: unknown): boolean => err instanceof ApiProblem
  && (err.httpStatus === 404 || err.code === 'volume_not_found' || err.code === 'invalid_name'
    || err.code === 'invalid_request');

const num = (obj: Json, ...keys: string[]): number => {
  for (const key of keys) if (typeof obj[key] === 'number') return obj[key] as number;
  return 0;
};
const bool = (obj: Json, key: string): boolean => obj[key] === true;
const str = (obj: Json, ...keys: string[]): string => {
  for (const key of keys) if (typeof obj[key] === 'string') return obj[key] as string;
  return '';
};

function parseOrigin(value: unknown): ApiVolume['origin'] {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') {
    const at = value.indexOf('@');
    return at < 0 ? { volume: value, snapshot: null } : { volume: value.slice(0, at), snapshot: value.slice(at + 1) };
  }
  const obj = value as Json;
  const snapshot = typeof obj.snapshot === 'string' ? obj.snapshot : null;
  return { volume: str(obj, 'volume'), snapshot };
}

export function parseVolume(obj: Json): ApiVolume {
  const snapshots = Array.isArray(obj.snapshots)
    ? obj.snapshots.map((s) => (typeof s === 'string' ? s : str(s as Json, 'name')))
    : [];
  return {
    name: str(obj, 'name'),
    id: num(obj, 'id'),
    sizeBytes: num(obj, 'sizeBytes', 'size'),
    mappedBytes: num(obj, 'mappedBytes'),
    createdMs: num(obj, 'createdMs'),
    origin: parseOrigin(obj.origin),
    snapshots: snapshots.map((s) => (s.includes('@') ? s.slice(s.indexOf('@') + 1) : s)),
    nbdUri: typeof obj.nbdUri === 'string' ? obj.nbdUri : null,
    encrypted: bool(obj, 'encrypted'),
    locked: bool(obj, 'locked'),
  };
}

export function parseSnapshot(obj: Json): ApiSnapshot {
  let fullName = str(obj, 'fullName');
  let volume = str(obj, 'volume');
  let name = str(obj, 'name');
  if (fullName === '' && name.includes('@')) fullName = name;
  if (fullName === '') fullName = `${volume}@${name}`;
  const at = fullName.indexOf('@');
  if (volume === '') volume = fullName.slice(0, at);
  if (name === '' || name.includes('@')) name = fullName.slice(at + 1);
  return {
    fullName, volume, name, sizeBytes: num(obj, 'sizeBytes', 'size'), createdMs: num(obj, 'createdMs'),
    encrypted: bool(obj, 'encrypted'), locked: bool(obj, 'locked'),
  };
}

/** Maps an API problem to the gRPC code CSI wants; `context` says what was asked. */
export function problemToCsi(err: unknown, context: string): CsiError {
  if (err instanceof CsiError) return err;
  if (!(err instanceof ApiProblem)) return internal(`${context}: ${err instanceof Error ? err.message : String(err)}`);
  const message = `${context}: ${err.message} (${err.code})`;
  switch (err.code) {
    case 'volume_not_found': case 'snapshot_not_found': return notFound(message);
    case 'name_taken': return alreadyExists(message);
    case 'pool_full': return resourceExhausted(message);
    // gRPC status guide: UNAVAILABLE when the same call may simply be retried later. A locked volume
    // unlocks on its own once its tenant's KEK is back (the daemon retries it, or cairn tenant
    // unlock); FAILED_PRECONDITION would tell the CO to wait for someone to fix state it cannot see.
    case 'volume_locked': case 'kek_unavailable': return unavailable(message);
    // A KEK rotation under way (409): retry when it is done; not the spec's ALREADY_EXISTS.
    case 'tenant_busy': return unavailable(message);
    case 'route_not_found': return new CsiError(Status.UNIMPLEMENTED, `${message}: this cairn daemon does not offer it`);
    case 'out_of_range': case 'shrink_refused': return outOfRange(message);
    case 'invalid_size': case 'invalid_name': case 'invalid_argument': case 'validation_error':
      return invalidArgument(message);
    default:
      if (err.httpStatus === 404) return notFound(message);
      if (err.httpStatus === 409) return alreadyExists(message);
      if (err.httpStatus === 503) return unavailable(message);
      if (err.httpStatus >= 400 && err.httpStatus < 500) return invalidArgument(message);
      return internal(message);
  }
}

export class CairnApi {
  private readonly base: string;
  /** `token`: sent as `Authorization: Bearer` on every request (null: none). */
  constructor(baseUrl: string, private readonly token: string | null = null) {
    this.base = baseUrl.replace(/\/+$/, '');
  }

  private async request(method: string, path: string, body?: unknown): Promise<unknown> {
    return (await this.requestWithNext(method, path, body)).body;
  }

  /** The API's paged lists give the next page's token in a header (src/api/paging.ts). */
  private async requestWithNext(method: string, path: string, body?: unknown): Promise<{ body: unknown; next: string | null }> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(this.token === null ? {} : { authorization: `Bearer ${this.token}` }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(apiRequestTimeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new CsiError(Status.UNAVAILABLE, `cairn daemon at ${this.base} is not reachable (${cause})`);
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    if (text !== '') {
      try { parsed = JSON.parse(text); } catch { parsed = undefined; }
    }
    if (!res.ok) {
      const problem = (parsed ?? {}) as Json;
      const code = str(problem, 'code') || `http_${res.status}`;
      // gRPC: UNAUTHENTICATED for credentials that are missing or not valid, PERMISSION_DENIED for a
      // valid token whose role may not do this. The token itself never goes into a message.
      if (res.status === 401) throw new CsiError(Status.UNAUTHENTICATED, `the cairn daemon refused the token: ${str(problem, 'detail') || code}`);
      if (res.status === 403) throw new CsiError(Status.PERMISSION_DENIED, `the cairn daemon refused the action for this token: ${str(problem, 'detail') || code}`);
      const detail = str(problem, 'detail', 'title', 'message') || text.slice(0, 200);
      throw new ApiProblem(res.status, code, detail);
    }
    return { body: parsed, next: res.headers.get(nextPageTokenHeader) };
  }

  /** One page of a list: at most `limit` items after the API token `pageToken` (null: the first page). */
  private async page<T>(path: string, parse: (item: Json) => T, limit: number, pageToken: string | null): Promise<ApiPage<T>> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (pageToken !== null) query.set('pageToken', pageToken);
    const res = await this.requestWithNext('GET', `${path}${path.includes('?') ? '&' : '?'}${query.toString()}`);
    const items = Array.isArray(res.body) ? (res.body as Json[]) : [];
    return { items: items.map(parse), next: res.next };
  }

  /** Every page of a list (a listing: O(items)). */
  private async all<T>(path: string, parse: (item: Json) => T): Promise<T[]> {
    const out: T[] = [];
    let token: string | null = null;
    do {
      const page: ApiPage<T> = await this.page(path, parse, apiPageItemsMax, token);
      out.push(...page.items);
      token = page.next;
    } while (token !== null);
    return out;
  }

  /** Volumes by name, one page. */
  listVolumesPage(limit: number, pageToken: string | null): Promise<ApiPage<ApiVolume>> {
    return this.page('/v1/volumes', parseVolume, limit, pageToken);
  }

  /** Snapshots by id (of one volume, or of the pool), one page. */
  listSnapshotsPage(volume: string | null, limit: number, pageToken: string | null): Promise<ApiPage<ApiSnapshot>> {
    // ?volume= rather than /v1/volumes/VOL/snapshots: it also lists the snapshots of a deleted volume.
    const path = volume === null ? '/v1/snapshots' : `/v1/snapshots?volume=${encodeURIComponent(volume)}`;
    return this.page(path, parseSnapshot, limit, pageToken);
  }

  /** The snapshots called `name` on any volume (one lookup in the daemon). */
  async snapshotsNamed(name: string): Promise<ApiSnapshot[]> {
    const res = await this.request('GET', `/v1/snapshots?name=${encodeURIComponent(name)}`);
    return (Array.isArray(res) ? (res as Json[]) : []).map(parseSnapshot);
  }

  /** "VOL@SNAP", or null when it does not exist. */
  async getSnapshot(volume: string, name: string): Promise<ApiSnapshot | null> {
    try {
      return parseSnapshot((await this.request('GET', `/v1/volumes/${encodeURIComponent(volume)}/snapshots/${encodeURIComponent(name)}`)) as Json);
    } catch (err) {
      if (isAbsent(err)) return null;
      throw err;
    }
  }

  async pool(): Promise<ApiPool> {
    const obj = (await this.request('GET', '/v1/pool')) as Json;
    return {
      sizeBytes: num(obj, 'sizeBytes', 'size'),
      freeBytes: num(obj, 'freeBytes', 'free'),
      checksumErrors: num(obj, 'checksumErrors'),
      nbd: typeof obj.nbd === 'string' ? obj.nbd : null,
    };
  }

  async whoami(): Promise<ApiPrincipal> {
    const obj = (await this.request('GET', '/v1/whoami')) as Json;
    const role = obj.role === 'admin' || obj.role === 'tenant' || obj.role === 'reader' ? obj.role : null;
    if (role === null) throw internal(`GET /v1/whoami answered an unknown role ${JSON.stringify(obj.role)}`);
    return { role, tenant: typeof obj.tenant === 'string' ? obj.tenant : null, tokenName: str(obj, 'tokenName') };
  }

  /** Sets (merges) a volume's QoS limits; fields left out stay as they are. */
  async setQos(name: string, qos: ApiQos): Promise<ApiQos> {
    return (await this.request('PUT', `/v1/volumes/${encodeURIComponent(name)}/qos`, qos)) as ApiQos;
  }

  async getQos(name: string): Promise<ApiQos> {
    return (await this.request('GET', `/v1/volumes/${encodeURIComponent(name)}/qos`)) as ApiQos;
  }

  /** Snapshots several volumes at one instant ("VOL@SNAP" each); all already there is success too. */
  async createSnapshotGroup(fullNames: string[]): Promise<ApiSnapshot[]> {
    const res = await this.request('POST', '/v1/snapshots', { snapshots: fullNames });
    return (Array.isArray(res) ? (res as Json[]) : []).map(parseSnapshot);
  }

  async listVolumes(): Promise<ApiVolume[]> { return this.all('/v1/volumes', parseVolume); }

  /** The volume, or null when it does not exist. */
  async getVolume(name: string): Promise<ApiVolume | null> {
    try {
      return parseVolume((await this.request('GET', `/v1/volumes/${encodeURIComponent(name)}`)) as Json);
    } catch (err) {
      if (isAbsent(err)) return null;
      throw err;
    }
  }

  /**
   * `qos`: limits set with the volume (left out of the request when null). `encrypted`: with a fresh
   * data key wrapped by the owning tenant's KEK (the daemon's; left out of the request when false).
   */
  async createVolume(name: string, sizeBytes: number, qos: ApiQos | null = null, encrypted = false, replicas: number | null = null): Promise<ApiVolume> {
    const body = { name, size: sizeBytes, ...(qos === null ? {} : { qos }), ...(encrypted ? { encrypted } : {}), ...(replicas === null ? {} : { replicas }) };
    return parseVolume((await this.request('POST', '/v1/volumes', body)) as Json);
  }

  /**
   * O(1) clone of "VOL@SNAP" or of the live volume "VOL". `encrypted` (when given) is what the caller
   * expects the source to be: the daemon refuses the clone (400) when the source is otherwise.
   */
  async cloneVolume(name: string, from: string, qos: ApiQos | null = null, encrypted: boolean | null = null): Promise<ApiVolume> {
    const body = { name, from, ...(qos === null ? {} : { qos }), ...(encrypted === null ? {} : { encrypted }) };
    return parseVolume((await this.request('POST', '/v1/volumes', body)) as Json);
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<ApiVolume> {
    const path = `/v1/volumes/${encodeURIComponent(name)}`;
    return parseVolume((await this.request('PATCH', path, { size: sizeBytes })) as Json);
  }

  /** Deletes the volume (waiting for the job when the API answers 202); true if it existed. */
  async deleteVolume(name: string): Promise<boolean> {
    try {
      const res = await this.request('DELETE', `/v1/volumes/${encodeURIComponent(name)}`);
      const jobId = res && typeof (res as Json).id === 'string' ? (res as Json).id as string : null;
      if (jobId !== null) await this.waitJob(jobId);
      return true;
    } catch (err) {
      if (isAbsent(err)) return false;
      throw err;
    }
  }

  /** Polls a job until it ends; a failed job throws its problem. Bounded by jobWaitMsMax. */
  private async waitJob(id: string): Promise<void> {
    const deadline = Date.now() + jobWaitMsMax;
    while (Date.now() < deadline) {
      const job = (await this.request('GET', `/v1/jobs/${encodeURIComponent(id)}`)) as Json;
      if (job.state === 'failed' || job.state === 'interrupted') { // interrupted: a daemon restart ended it
        const error = (job.error ?? {}) as Json;
        throw new ApiProblem(500, str(error, 'code') || 'internal_error', str(error, 'message') || 'job failed');
      }
      if (job.state !== 'running' && job.state !== 'queued' && job.state !== 'pending') return;
      await new Promise((resolve) => setTimeout(resolve, jobPollIntervalMs));
    }
    throw new CsiError(Status.DEADLINE_EXCEEDED, `job ${id} did not finish within ${jobWaitMsMax} ms`);
  }

  async listSnapshots(volume?: string): Promise<ApiSnapshot[]> {
    return this.all(volume === undefined ? '/v1/snapshots' : `/v1/volumes/${encodeURIComponent(volume)}/snapshots`, parseSnapshot);
  }

  async createSnapshot(volume: string, name: string): Promise<ApiSnapshot> {
    const path = `/v1/volumes/${encodeURIComponent(volume)}/snapshots`;
    const res = (await this.request('POST', path, { name })) as Json;
    return parseSnapshot({ volume, ...res });
  }

  /** Deletes "VOL@SNAP"; true if it existed. */
  async deleteSnapshot(volume: string, name: string): Promise<boolean> {
    const path = `/v1/volumes/${encodeURIComponent(volume)}/snapshots/${encodeURIComponent(name)}`;
    try {
      await this.request('DELETE', path);
      return true;
    } catch (err) {
      const gone = err instanceof ApiProblem
        && (err.httpStatus === 404 || err.code === 'snapshot_not_found' || err.code === 'volume_not_found');
      if (gone) return false;
      throw err;
    }
  }
}
