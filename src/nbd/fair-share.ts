// Fair sharing of the server between tenants when more than one is busy: each tenant may have at most
// its weighted share of a budget of requests in flight across its connections; a connection over its
// tenant's share stops parsing (its socket is paused, as for the in-flight bounds) until its own
// requests complete. So a tenant's flood cannot fill the thread pool's queue and the event loop ahead
// of another tenant's requests: those wait behind at most the flood's share. With one tenant busy
// nothing is capped. Cost per request: a counter and, while tenants overlap, a walk of the busy ones.
import { DEFAULT_TENANT } from '../tenancy/names.js';

/** Requests in flight shared among busy tenants (split by weight; each gets at least one). */
export const FAIR_BUDGET_DEFAULT = 8;
/** A tenant with nothing in flight still counts as busy this long after its last request (a QD-1 client between requests). */
export const FAIR_IDLE_MS_DEFAULT = 20;
/** No busy tenant is held below this many in flight: below it a fast flood pauses and resumes its socket per request, which costs the event loop more than it frees. */
export const FAIR_CAP_MIN = 4;

interface TenantState { name: string; inFlight: number; lastMs: number }

export interface FairShareOptions {
  budget?: number;
  idleMs?: number;
  /** The tenant's weight (QoS `weight`, default 100). */
  weightOf?: (tenant: string) => number;
  nowMs?: () => number;
}

/** One tenant's handle, held by its connections. */
export interface TenantShare {
  started(): void;
  ended(): void;
  /** How many requests the tenant may have in flight now (Infinity while it is the only busy one). */
  cap(): number;
  /** The tenant's requests in flight, over all its connections. */
  inFlight(): number;
  readonly tenant: string;
}

export class FairShare {
  private readonly tenants = new Map<string, TenantState>();
  private readonly budget: number;
  private readonly idleMs: number;
  private readonly weightOf: (tenant: string) => number;
  private readonly nowMs: () => number;

  constructor(opts: FairShareOptions = {}) {
    this.budget = opts.budget ?? FAIR_BUDGET_DEFAULT;
    this.idleMs = opts.idleMs ?? FAIR_IDLE_MS_DEFAULT;
    this.weightOf = opts.weightOf ?? (() => 100);
    this.nowMs = opts.nowMs ?? (() => performance.now());
  }

  share(tenant: string = DEFAULT_TENANT): TenantShare {
    let state = this.tenants.get(tenant);
    if (state === undefined) this.tenants.set(tenant, state = { name: tenant, inFlight: 0, lastMs: -Infinity });
    const s = state;
    return {
      tenant,
      started: () => { s.inFlight++; s.lastMs = this.nowMs(); },
      ended: () => { s.inFlight--; s.lastMs = this.nowMs(); },
      cap: () => this.capOf(s),
      inFlight: () => s.inFlight,
    };
  }

  private busy(s: TenantState, now: number): boolean { return s.inFlight > 0 || now - s.lastMs < this.idleMs; }

  private capOf(mine: TenantState): number {
    if (this.tenants.size < 2) return Infinity;
    const now = this.nowMs();
    let others = 0, weights = 0;
    for (const s of this.tenants.values()) {
      if (s === mine || !this.busy(s, now)) continue;
      others++;
      weights += Math.max(1, this.weightOf(s.name));
    }
    if (others === 0) return Infinity;
    const w = Math.max(1, this.weightOf(mine.name));
    return Math.max(FAIR_CAP_MIN, Math.floor(this.budget * w / (w + weights)));
  }
}
