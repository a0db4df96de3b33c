// The REST API as the dashboard calls it: every request carries the session's token
// (Authorization: Bearer); errors become ApiError with the problem's `detail`; a 401 signs out.

/** Where the token lives: this tab only, gone when it closes. */
const tokenKey = 'cairn.token';
/** Items per page when listing everything (the API's page bound). */
const pageItems = 1000;

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, readonly detail: string) { super(detail); }
}

let token: string | null = sessionStorage.getItem(tokenKey);
const signedOutListeners = new Set<() => void>();

export function currentToken(): string | null { return token; }
export function setToken(t: string | null): void {
  token = t;
  if (t === null) sessionStorage.removeItem(tokenKey); else sessionStorage.setItem(tokenKey, t);
}
export function onSignedOut(fn: () => void): () => void { signedOutListeners.add(fn); return () => signedOutListeners.delete(fn); }

export interface Answer<T> { data: T; status: number; next: string | null }

export async function call<T>(method: string, path: string, body?: unknown): Promise<Answer<T>> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let r: Response;
  try {
    r = await fetch(path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    throw new ApiError(0, 'network', `the daemon did not answer (${err instanceof Error ? err.message : String(err)})`);
  }
  const text = await r.text();
  let parsed: unknown = null;
  try { parsed = text === '' ? null : JSON.parse(text); } catch {
    // Not JSON (a proxy's error page): the status line is all there is to say.
    parsed = null;
  }
  if (!r.ok) {
    const p = (parsed ?? {}) as { code?: string; detail?: string };
    if (r.status === 401 && token !== null) { setToken(null); for (const fn of signedOutListeners) fn(); }
    throw new ApiError(r.status, p.code ?? 'http_error', p.detail ?? `${r.status} ${r.statusText}`);
  }
  return { data: parsed as T, status: r.status, next: r.headers.get('cairn-next-page-token') };
}

export async function get<T>(path: string): Promise<T> { return (await call<T>('GET', path)).data; }

/** Every item of a paged list, page after page. */
export async function listAll<T>(path: string): Promise<T[]> {
  const out: T[] = [];
  let pageToken: string | null = null;
  const sep = path.includes('?') ? '&' : '?';
  do {
    const page: Answer<T[]> = await call<T[]>('GET', `${path}${sep}limit=${pageItems}${pageToken === null ? '' : `&pageToken=${encodeURIComponent(pageToken)}`}`);
    out.push(...page.data);
    pageToken = page.next;
  } while (pageToken !== null);
  return out;
}

export const enc = encodeURIComponent;

// The API's objects, as the dashboard reads them (src/api/schemas.ts).
export interface Qos { iopsMax: number | null; readIopsMax: number | null; writeIopsMax: number | null; bpsMax: number | null; readBpsMax: number | null; writeBpsMax: number | null; burstSeconds: number }
export interface Volume {
  name: string; id: number; size: number; mappedBytes: number; exclusiveBytes: number | null; createdMs: number;
  origin: string | null; snapshotCount: number; flattenProgress: number | null; nbdUri: string | null; qos: Qos | null; encrypted: boolean; locked: boolean;
  /** Present when the daemon runs in a cluster (storage nodes). */
  replicas?: Array<{ node: string; state: string; rebuildProgress?: number | null; primary?: boolean }>;
}
export interface Snapshot { name: string; volume: string; snapshot: string; id: number; size: number; mappedBytes: number; createdMs: number; nbdUri: string | null }
export interface CapacityHistory { intervalMs: number; samples: Array<{ timeMs: number; size: number; allocatedBytes: number; freeBytes: number; metadataBytes: number | null }> }
export interface Pool { path: string; size: number; allocatedBytes: number; freeBytes: number; blockSize: number; volumes: number; snapshots: number; generation: number; checksumErrors: number; pendingDeleteNodes: number; metadataBytes: number | null; nbd: string | null }
export interface Job { id: string; kind: string; target: string; state: 'running' | 'succeeded' | 'failed' | 'interrupted'; progress: number; error: { code: string; message: string } | null; createdAt: string; finishedAt: string | null }
export interface TreeNode { name: string; kind: 'volume' | 'snapshot'; size: number; mappedBytes: number; exclusiveBytes: number | null; createdMs: number | null; current: boolean; deleted?: boolean; children: TreeNode[] }
export interface Whoami { role: 'admin' | 'tenant' | 'reader'; tenant: string | null; tokenName: string }
export interface Tenant { name: string; createdAt: string | null; volumes: number }
export interface Diff { from: string; to: string; changedBytes: number; ranges: Array<{ offset: number; length: number }> }
export interface VolumeIo { name: string; readOps: number; writeOps: number; readBytes: number; writeBytes: number; latencyCounts: number[] }
export interface IoStats { timeMs: number; bucketsSeconds: number[]; volumes: VolumeIo[] }

/** Waits for a job to finish, telling `onProgress` along the way; throws its error when it failed. */
export async function waitForJob(id: string, onProgress: (fraction: number) => void, pollMs = 300): Promise<Job> {
  for (;;) {
    const job = await get<Job>(`/v1/jobs/${enc(id)}`);
    onProgress(job.progress);
    if (job.state === 'succeeded') return job;
    if (job.state !== 'running') throw new ApiError(500, job.error?.code ?? job.state, job.error?.message ?? `job ${job.state}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
