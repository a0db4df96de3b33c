// What the API handlers share (the stores, the engine itself), and what each request gets on top: the
// engine and jobs as its principal may see them (its tenant's view, from request-scope.ts), and how to
// name a volume's NBD export for that tenant.
import type { Engine } from '../engine/index.js';
import type { JobManager } from './jobs.js';
import type { Principal, TenantStore } from '../tenancy/store.js';
import { assert } from '../engine/index.js';
import type { JobsView, RequestScope } from './request-scope.js';
import { recordLimits, type QosLimits } from '../qos/limits.js';
import { splitQualified } from '../tenancy/names.js';
import { TenancyError } from '../tenancy/errors.js';
import type { FastifyRequest } from 'fastify';
import type { QosControl } from '../qos/qos-control.js';
import type { KeyManager } from '../tenancy/key-manager.js';
import type { ClusterHandle, ReplicaView } from '../cluster/handle.js';
import { qualify } from '../tenancy/names.js';

/** What every request shares: the engine itself, the stores, and where NBD clients connect. */
export interface SharedApiContext {
  /** The engine itself, for daemon-level work outside requests. */
  rootEngine: Engine;
  jobManager: JobManager;
  tenancy: TenantStore;
  /** Tenants' key-encryption keys and the data keys of encrypted volumes (src/tenancy/key-manager.ts). */
  keys: KeyManager;
  /** Volume and tenant QoS limits (src/qos): shared by every request, keyed by volume id and tenant name. */
  qos: QosControl;
  poolPath: string;
  /** Where import spools a stream while verifying it (a directory on the pool's file system). */
  spoolDir: string;
  /** "nbd://HOST:PORT" of the NBD server, or null when NBD is off. */
  nbdBaseUri: string | null;
  /** The cluster this node belongs to (issue 22); null on a single node. */
  cluster: ClusterHandle | null;
  /** The context one request's handler gets: its principal's view of the engine and jobs. */
  forRequest(scope: RequestScope): ApiContext;
}

/**
 * One request's context, handed to its handler (routes.ts). Passed explicitly, not found through
 * AsyncLocalStorage: that turns on promise hooks for the whole process, a cost every NBD, NVMe/TCP
 * and replication request would pay. A route module's own `ctx` is the shared one, which has no
 * `engine`: a handler that forgot to take its request's context does not compile.
 */
export interface ApiContext extends SharedApiContext {
  /** The current request's engine: the root engine for an admin, its tenant's view otherwise. */
  readonly engine: Engine;
  /** The current request's jobs (a tenant sees and starts only its own). */
  readonly jobs: JobsView;
  /** Who the current request acts as (null on a public route). */
  principal(): Principal | null;
  /**
   * The URI a client of the volume's tenant opens it by (`name` as the current request names it): the
   * tenant's own name for it, over nbds:// for a tenant other than `default` (plain NBD serves only
   * `default`), null where no NBD client of that tenant can reach it.
   */
  nbdUri(name: string): string | null;
  /** The engine's name of a volume the current request names (a tenant's own name gets its prefix). */
  engineName(name: string): string;
  /** A volume's replicas, epoch and QoS limits when it has a cluster record (`name` as the request names it), else null. */
  replication(name: string): { replicas: ReplicaView[]; epoch: number; qos: QosLimits | null } | null;
}

export type ApiContextInit = Omit<SharedApiContext, 'cluster' | 'forRequest'> & {
  cluster?: ClusterHandle | null;
  /** The URI of `tenant`'s export `name` (the tenant's own name for it), or null if unreachable. */
  exportUri(tenant: string, name: string): string | null;
};

export function apiContext(init: ApiContextInit): SharedApiContext {
  const { exportUri, cluster = null, ...rest } = init;
  const shared: SharedApiContext = {
    ...rest,
    cluster,
    forRequest: (scope) => {
      assert(scope.engine !== undefined && scope.jobs !== undefined, 'a request scope has an engine and jobs');
      const tenant = scope.principal?.tenant ?? null;
      const engineName = (name: string): string => (tenant === null ? name : qualify(tenant, name));
      return {
        ...shared,
        engine: scope.engine,
        jobs: scope.jobs,
        principal: () => scope.principal,
        engineName,
        replication: (name) => {
          if (cluster === null) return null;
          const record = cluster.volume(engineName(name));
          return record === null ? null : { replicas: cluster.replicas(record.name), epoch: record.epoch, qos: recordLimits(record.qos) };
        },
        nbdUri: (name) => {
          // A tenant's request names its volumes by their own names; an admin's by the engine's (T/NAME).
          if (tenant !== null) return exportUri(tenant, name);
          const split = splitQualified(name);
          return exportUri(split.tenant, split.name);
        },
      };
    },
  };
  return shared;
}

/** How long DELETE waits for a delete before answering 202 with a job instead. */
export const deleteWaitMs = 1000;

/**
 * The `:tenant` of a tenant-scoped route (NBD keys, NVMe hosts), checked: a tenant's token reaches its
 * own tenant only, and another tenant is "not found", never "forbidden" (no hint that it exists).
 */
export function ownTenantParam(ctx: ApiContext, req: FastifyRequest): string {
  const tenant = (req.params as { tenant: string }).tenant;
  const principal = ctx.principal();
  const mine = principal === null || principal.tenant === null || principal.tenant === tenant;
  if (!mine || !ctx.tenancy.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
  return tenant;
}
