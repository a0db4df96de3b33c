// Who a request acts as, and its view of the engine and jobs: a tenant's token gets the tenant-scoped
// engine, so a handler's `ctx.engine` (context.ts: its request's context) cannot reach another tenant's
// names. Daemon code outside requests holds the root engine itself.
import type { Engine } from '../engine/index.js';
import type { Principal } from '../tenancy/store.js';
import type { JobManager, JobView } from './jobs.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import { qualify, splitQualified } from '../tenancy/names.js';

export interface RequestScope {
  /** null: a public route (no token asked). */
  principal: Principal | null;
  engine: Engine;
  jobs: JobsView;
}

/** The jobs one principal may see and start: a tenant's by its own names, stored by engine names. */
export interface JobsView {
  get(id: string): JobView | undefined;
  list(): JobView[];
  start: JobManager['start'];
}

function tenantJobs(jobs: JobManager, tenant: string): JobsView {
  const mine = (v: JobView): boolean => splitQualified(v.target).tenant === tenant;
  const out = (v: JobView): JobView => ({ ...v, target: splitQualified(v.target).name });
  return {
    get: (id) => { const v = jobs.get(id); return v !== undefined && mine(v) ? out(v) : undefined; },
    list: () => jobs.list().filter(mine).map(out),
    start: (kind, target, work) => {
      // Stored under the engine's name: a flatten resumed after a restart runs on the root engine.
      const handle = jobs.start(kind, qualify(tenant, target), work);
      // `view` is read again after the job ends (its state): a getter, not a copy taken now.
      return { done: handle.done, recorded: handle.recorded, setProgress: handle.setProgress, get view() { return out(handle.view); } };
    },
  };
}

/** The scope of a request by `principal` (null: public): an admin gets the root engine and every job. */
export function scopeFor(principal: Principal | null, root: Engine, jobs: JobManager): RequestScope {
  if (principal === null || principal.tenant === null) return { principal, engine: root, jobs };
  return { principal, engine: new ScopedEngine(root, principal.tenant), jobs: tenantJobs(jobs, principal.tenant) };
}
