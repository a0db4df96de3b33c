// Which token a controller call acts with, and which tenant that makes it. A request's secrets
// (the provisioner/snapshotter/resizer Secrets of Kubernetes) carry a Cairn API token under the key
// `token`; without secrets the plugin's own token (--token-file) is used. A token's role and tenant
// come from the daemon (GET /v1/whoami) once; one CairnApi per token, kept in a bounded cache.
import { createHash } from 'node:crypto';
import { CairnApi, type ApiPrincipal } from './api-client.js';
import { apiSessionsMax } from './constants.js';
import { CsiError, Status, invalidArgument } from './errors.js';
import type { StringMap } from './messages.js';
import { volumeIdOf, type SnapshotId, type VolumeRef } from './names.js';
import { qualify, splitQualified } from '../tenancy/names.js';

/** The secret key holding the Cairn API token (in the Secret a StorageClass names). */
export const tokenSecretKey = 'token';

/** A token's client and who it is: `tenant` null for an admin (which sees every tenant). */
export interface Session { api: CairnApi; role: ApiPrincipal['role']; tenant: string | null }

interface Entry { api: CairnApi; principal: Promise<ApiPrincipal> }

export class Sessions {
  /** Insertion order is use order (an entry used again moves to the end): the first is the oldest. */
  private readonly byToken = new Map<string, Entry>();

  constructor(private readonly baseUrl: string, private readonly ownToken: string | null) {}

  /** The plugin's own token (calls without secrets: ListVolumes, ListSnapshots, GetCapacity, the node). */
  own(): Promise<Session> {
    return this.session(this.ownToken);
  }

  /**
   * The session for a request's secrets: their `token`, or the plugin's own when there are no
   * secrets. Secrets without a `token` are INVALID_ARGUMENT rather than a silent fall back to what
   * may be a more powerful token.
   */
  forSecrets(secrets: StringMap | null | undefined, what: string): Promise<Session> {
    const keys = Object.keys(secrets ?? {});
    if (keys.length === 0) return this.own();
    const token = secrets![tokenSecretKey];
    if (token === undefined || token.trim() === '') {
      throw invalidArgument(`${what}: the secrets hold no "${tokenSecretKey}" key (keys given: ${keys.join(', ')})`);
    }
    return this.session(token.trim());
  }

  private async session(token: string | null): Promise<Session> {
    // Keyed by a digest: the map never holds the token as a key that might end up in a dump.
    const key = token === null ? '' : createHash('sha256').update(token).digest('hex');
    let entry = this.byToken.get(key);
    if (entry !== undefined) {
      this.byToken.delete(key);
      this.byToken.set(key, entry);
    } else {
      const api = new CairnApi(this.baseUrl, token);
      entry = { api, principal: api.whoami() };
      if (this.byToken.size >= apiSessionsMax) this.byToken.delete(this.byToken.keys().next().value as string);
      this.byToken.set(key, entry);
    }
    let principal: ApiPrincipal;
    try {
      principal = await entry.principal;
    } catch (err) {
      // Not cached: a daemon that was down, or a token created a moment later, works on the next call.
      if (this.byToken.get(key) === entry) this.byToken.delete(key);
      throw err;
    }
    return { api: entry.api, role: principal.role, tenant: principal.tenant };
  }
}

const denied = (id: string, session: Session): CsiError => new CsiError(Status.PERMISSION_DENIED,
  `${id} belongs to another tenant than the token's (${session.tenant}); use a token of its tenant in the secrets`);

/**
 * The name the session's token addresses `ref` by: an admin the engine name ("T/NAME"), a tenant
 * its own name ("NAME"). An id of another tenant is PERMISSION_DENIED, decided from the id alone
 * (no daemon call, so it says nothing about whether the volume exists).
 */
export function apiNameOf(session: Session, ref: VolumeRef): string {
  if (session.tenant === null) return volumeIdOf(ref);
  if (ref.tenant !== session.tenant) throw denied(volumeIdOf(ref), session);
  return ref.name;
}

/** "VOL@SNAP" as the session's token addresses the snapshot. */
export function apiSnapshotNameOf(session: Session, id: SnapshotId): { volume: string; snapshot: string } {
  return { volume: apiNameOf(session, { tenant: id.tenant, name: id.volume }), snapshot: id.snapshot };
}

/** The CSI id of a volume (or "VOL@SNAP") the session's token named `apiName`. */
export function idFromApi(session: Session, apiName: string): string {
  return session.tenant === null ? apiName : qualify(session.tenant, apiName);
}

/** The tenant a volume id or an API name seen by the session belongs to. */
export function tenantOfApiName(session: Session, apiName: string): string {
  return session.tenant ?? splitQualified(apiName).tenant;
}

