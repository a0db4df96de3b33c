// Authentication and authorization of API requests. Every route declares who may call it (`access`);
// the route table wraps every handler with authorize(), so a route cannot be registered without a
// rule. Tokens are checked against the catalog on every request, so a revocation holds at once.
// Failed attempts are counted and slowed down per client address.
import type { FastifyRequest } from 'fastify';
import type { Principal, TenantStore } from '../tenancy/store.js';
import { TenancyError } from '../tenancy/errors.js';

/**
 * public: no token (the OpenAPI document). read: any valid token. write: an admin or tenant token
 * (not a reader). admin: an admin token only.
 */
export type Access = 'public' | 'read' | 'write' | 'admin';

/** Failures from one address within this window add up; a quiet window forgets them. */
export const authFailureWindowMs = 60_000;
/** First failures answer at once; from then on each waits twice as long as the last, up to the cap. */
export const authFailuresFree = 3;
export const authDelayStepMs = 100;
export const authDelayMaxMs = 5_000;
/** Client addresses tracked at once (a flood of addresses cannot grow the map without bound). */
export const authTrackedAddressesMax = 10_000;

export type AuthFailureReason = 'missing' | 'malformed' | 'invalid';

export class Authenticator {
  private readonly failures = new Map<string, { count: number; lastMs: number }>();

  constructor(
    private readonly store: TenantStore,
    private readonly onFailure: (reason: AuthFailureReason) => void = () => {},
    private readonly nowMs: () => number = Date.now,
    /** false: no back-off (tests that send hundreds of bad tokens on purpose). */
    private readonly backoff = true,
  ) {}

  /** The request's principal, or a 401 (after the address's back-off delay). */
  async authenticate(request: FastifyRequest): Promise<Principal> {
    const header = request.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer +(\S+) *$/i.exec(header) : null;
    const principal = m === null ? null : this.store.verifyToken(m[1]!);
    if (principal !== null) return principal;
    const reason: AuthFailureReason = header === undefined ? 'missing' : m === null ? 'malformed' : 'invalid';
    this.onFailure(reason);
    if (this.backoff) await this.delayFor(request.ip);
    throw new TenancyError('unauthorized', reason === 'missing' ? 'this request needs a token: Authorization: Bearer TOKEN' : 'the token is not valid (wrong, revoked or expired)');
  }

  private async delayFor(address: string): Promise<void> {
    const now = this.nowMs();
    let entry = this.failures.get(address);
    if (entry === undefined || now - entry.lastMs > authFailureWindowMs) {
      if (this.failures.size >= authTrackedAddressesMax) this.forgetOldest(now);
      entry = { count: 0, lastMs: now };
      this.failures.set(address, entry);
    }
    entry.count += 1;
    entry.lastMs = now;
    const over = entry.count - authFailuresFree;
    if (over <= 0) return;
    const ms = Math.min(authDelayMaxMs, authDelayStepMs * 2 ** Math.min(over - 1, 16));
    await new Promise((r) => setTimeout(r, ms));
  }

  private forgetOldest(now: number): void {
    for (const [address, entry] of this.failures) if (now - entry.lastMs > authFailureWindowMs) this.failures.delete(address);
    // Still full of recent failures: drop the first (oldest inserted) to stay bounded.
    if (this.failures.size >= authTrackedAddressesMax) this.failures.delete(this.failures.keys().next().value as string);
  }
}

/** Refuses `principal` for a route of `access` (403); 'public' and 'read' admit every principal. */
export function authorize(access: Access, principal: Principal): void {
  if (access === 'admin' && principal.role !== 'admin') throw new TenancyError('forbidden', 'this action needs an admin token');
  if (access === 'write' && principal.role === 'reader') throw new TenancyError('forbidden', 'a reader token may not change anything');
}
