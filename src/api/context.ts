// What the API handlers share: the engine and jobs as the current request may see them (its tenant's
// view, from request-scope.ts), the tenancy store, and how to name a volume's NBD export.
import type { Engine } from '../engine/index.js';
import type { JobManager } from './jobs.js';
import type { Principal, TenantStore } from '../tenancy/store.js';
import { assert } from '../engine/index.js';
import { requestScope, type JobsView } from './request-scope.js';
import { recordLimits, type QosLimits } from '../qos/limits.js';
import { splitQualified } from '../tenancy/names.js';
import { TenancyError } from '../tenancy/errors.js';
import type { FastifyRequest } from 'fastify';
import type { QosControl } from '../qos/qos-control.js';
import type { KeyManager } from '../tenancy/key-manager.js';
import type { ClusterHandle, ReplicaView } from '../cluster/handle.js';
import { qualify } from '../tenancy/names.js';

export interface ApiContext {
  /** The current request's engine: the root engine for an admin, its tenant's view otherwise. */
  readonly engine: Engine;
  /** The current request's jobs (a tenant sees and starts only its own). */
  readonly jobs: JobsView;
  /** Who the current request acts as (null on a public route). */
  principal(): Principal | null;
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
  /**
   * The URI a client of the volume's tenant opens it by (`name` as the current request names it): the
   * tenant's own name for it, over nbds:// for a tenant other than `default` (plain NBD serves only
   * `default`), null where no NBD client of that tenant can reach it.
   */
  nbdUri(name: string): string | null;
  /** The cluster this node belongs to (issue 22); null on a single node. */
  cluster: ClusterHandle | null;
  /** The engine's name of a volume the current request names (a tenant's own name gets its prefix). */
  engineName(name: string): string;
  /** A volume's replicas, epoch and QoS limits when it has a cluster record (`name` as the request names it), else null. */
  replication(name: string): { replicas: ReplicaView[]; epoch: number; qos: QosLimits | null } | null;
}

export type ApiContextInit = Omit<ApiContext, 'engine' | 'jobs' | 'principal' | 'nbdUri' | 'cluster' | 'engineName' | 'replication'> & {
  cluster?: ClusterHandle | null;
  /** The URI of `tenant`'s export `name` (the tenant's own name for it), or null if unreachable. */
  exportUri(tenant: string, name: string): string | null;
};

function scope() {
  const s = requestScope.getStore();
  assert(s !== undefined, 'ctx.engine and ctx.jobs are used inside a request (daemon code uses rootEngine/jobManager)');
  return s;
}

export function apiContext(init: ApiContextInit): ApiContext {
  const { exportUri, cluster = null, ...rest } = init;
  const engineName = (name: string): string => {
    const tenant = requestScope.getStore()?.principal?.tenant ?? null;
    return tenant === null ? name : qualify(tenant, name);
  };
  return {
    ...rest,
    cluster,
    engineName,
    replication: (name) => {
      if (cluster === null) return null;
      const record = cluster.volume(engineName(name));
      return record === null ? null : { replicas: cluster.replicas(record.name), epoch: record.epoch, qos: recordLimits(record.qos) };
    },
    get engine() { return scope().engine; },
    get jobs() { return scope().jobs; },
    principal: () => scope().principal,
    nbdUri: (name) => {
      // A tenant's request names its volumes by their own names; an admin's by the engine's (T/NAME).
      const tenant = requestScope.getStore()?.principal?.tenant ?? null;
      if (tenant !== null) return exportUri(tenant, name);
      const split = splitQualified(name);
      return exportUri(split.tenant, split.name);
    },
  };
}

/** How long DELETE waits for a delete before answering 202 with a job instead. */
export const deleteWaitMs = 1000;

/**
 * The `:tenant` of a tenant-scoped route (NBD keys, NVMe hosts), checked: a tenant's token reaches its
 * own tenant only, and another tenant is "not found", never "forbidden" (no hint that it exists).
 */
export function ownTenantParam(ctx: ApiContext): (req: FastifyRequest) => string {
  return (req) => {
    const tenant = (req.params as { tenant: string }).tenant;
    const principal = ctx.principal();
    const mine = principal === null || principal.tenant === null || principal.tenant === tenant;
    if (!mine || !ctx.tenancy.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
    return tenant;
  };
}
