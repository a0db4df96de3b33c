// The daemon's lifecycle: lock the pool, open (or create) it, wire the instrumented engine into the
// NBD server and the REST API, report the bound addresses, and on shutdown stop accepting, let the
// NBD server finish in-flight I/O, flush, close the engine and release the lock.
import { CapacityHistory, CAPACITY_SAMPLE_MS_DEFAULT } from '../api/capacity-history.js';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { openOrCreatePoolFile, checksumKernel, xtsKernel, type Engine, type PoolFileOptions } from '../engine/index.js';
import { startNbdServer } from '../nbd/server.js';
import type { BusyPollStats } from '../nbd/busy-poll.js';
import { startNvmfServer } from '../nvmf/server.js';
import { NvmeHostAccess } from '../nvmf/host-access.js';
import { NVMF_DISCOVERY_PORT_DEFAULT } from './config.js';
import { buildApi } from '../api/server.js';
import { JobManager } from '../api/jobs.js';
import { JobStore, jobFilePath, restoreJobs } from '../api/job-store.js';
import { apiContext } from '../api/context.js';
import { bootstrapTokenNameOf, ensureBootstrapToken } from './bootstrap-token.js';
import { migrateSideFile, sideFilePath } from '../stream/identity.js';
import type { TlsConfig } from '../nbd/tls.js';
import { TenantStore } from '../tenancy/store.js';
import { DEFAULT_TENANT, splitQualified } from '../tenancy/names.js';
import { KeyManager } from '../tenancy/key-manager.js';
import { TenancyError } from '../tenancy/errors.js';
import type { ClusterConfig, DaemonConfig, NbdTlsConfig } from './config.js';
import { nbdAccess, type NbdAccess } from './nbd-access.js';
import { lockPool } from './lock.js';
import { Metrics } from './metrics.js';
import { InstrumentedEngine } from './instrumented-engine.js';
import { QosEngine } from '../qos/qos-engine.js';
import { eventLogger } from './logger.js';
import { batchHelperThreads } from './thread-policy.js';
import { ForwardingExports } from './nbd-forward.js';
import { anaProvider, clusterNamespaceIdentities, cntlidRangeOf } from './nvmf-ana.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import type { ClusterHandle } from '../cluster/handle.js';
import type { ClusterStarter } from './cluster-start.js';
import type { ClusterDataKeys } from '../cluster/node.js';
import { followClusterQos } from './cluster-qos.js';
import { clusterAddresses, reservePorts } from './cluster-addresses.js';

/** How long shutdown waits for running jobs (flatten resumes after restart, so it need not finish). */
export const shutdownJobsWaitMs = 5000;
/** How long shutdown waits for open HTTP requests (e.g. an export stream) before cutting them. */
export const shutdownHttpWaitMs = 5000;

export interface Daemon {
  apiUrl: string;
  nbdUri: string | null;
  /** NVMe/TCP I/O and discovery ports (null: NVMe/TCP off; discoveryPort null: no discovery listener). */
  nvmf: { port: number; discoveryPort: number | null } | null;
  engine: Engine;
  /** This node's cluster handle (--cluster), else null. */
  cluster: ClusterHandle | null;
  /** The NBD server's busy-polling counts (null: no NBD listener); the benchmark reads them. */
  nbdPollStats(): BusyPollStats | null;
  close(): Promise<void>;
}

/** What a test may put in place of the real pieces (a fake cluster instead of etcd + TCP + ClusterNode). */
export interface DaemonDeps {
  startCluster?: ClusterStarter;
  /** Aborted by a stop request during start-up: a wait for etcd ends early (StartAbandoned). */
  startAbort?: AbortSignal;
}

/** The NBD server's TLS settings: the configured files, and the pool's tenant keys when asked for. */
function nbdTlsOptions(config: NbdTlsConfig, access: NbdAccess): TlsConfig {
  const { tenantKeys, ...files } = config;
  return tenantKeys === true ? { ...files, pskLookup: access.pskLookup } : files;
}

function hostForUri(host: string): string { return host.includes(':') ? `[${host}]` : host; }

export function nbdExportUri(base: string, name: string): string {
  return `${base}/${encodeURIComponent(name).replace(/%40/g, '@')}`;
}

/**
 * The URI `tenant`'s client opens export `name` by. Plain NBD serves only the default tenant; every
 * other tenant is reached over TLS (its NBD key, or a certificate naming it): nbds://, with the key's
 * identity as the user when the tenant has exactly one key (libnbd takes the PSK identity from there;
 * the key itself stays in the client's tls-psk-file). Null where no client of the tenant gets in.
 */
export function tenantExportUri(
  where: { plainBase: string | null; tls: NbdTlsConfig | null; tenancy: TenantStore }, tenant: string, name: string,
): string | null {
  if (where.plainBase === null) return null;
  if (tenant === DEFAULT_TENANT && where.tls?.required !== true) return nbdExportUri(where.plainBase, name);
  if (where.tls === null) return null;
  const keys = where.tls.tenantKeys === true ? where.tenancy.listNbdKeys(tenant) : [];
  const user = keys.length === 1 ? `${encodeURIComponent(keys[0]!.identity)}@` : '';
  return nbdExportUri(where.plainBase.replace(/^nbd:\/\//, `nbds://${user}`), name);
}

/** The built dashboard: dist/ui beside dist/src (this file runs from dist/src/daemon). */
function dashboardDir(): string { return fileURLToPath(new URL('../../ui/', import.meta.url)); }

async function withTimeout(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => { timer = setTimeout(() => r(false), ms); });
  const done = await Promise.race([work.then(() => true, () => true), timeout]);
  clearTimeout(timer);
  return done;
}

export async function startDaemon(config: DaemonConfig, logger: Logger, deps: DaemonDeps = {}): Promise<Daemon> {
  const poolPath = resolve(config.poolPath);
  const stateDir = resolve(config.stateDir ?? dirname(poolPath));
  mkdirSync(dirname(poolPath), { recursive: true });
  mkdirSync(stateDir, { recursive: true });
  const lock = await lockPool(poolPath);
  const metrics = new Metrics();
  const engineLog = eventLogger(logger, 'engine');
  const poolOptions: PoolFileOptions = {
    preallocate: config.poolPreallocate,
    log: (event, fields) => { metrics.onEngineEvent(event, fields); engineLog(event, fields); },
  };
  if (config.cacheBytesMax !== null) poolOptions.cacheBytesMax = config.cacheBytesMax;
  if (config.commitIntervalMs !== null) poolOptions.commitIntervalMs = config.commitIntervalMs;
  if (config.rewind) poolOptions.rewind = true;
  if (config.poolPreallocate === 'full' && !existsSync(poolPath)) {
    logger.info({ event: 'pool_preallocate', pool: poolPath, bytes: config.poolSizeBytes }, 'writing the new pool file end to end (preallocate=full)');
  }
  let raw: Engine;
  try {
    raw = await openOrCreatePoolFile(poolPath, config.poolSizeBytes, poolOptions);
  } catch (err) {
    await lock.release();
    throw err;
  }
  const helperThreadsBatched = batchHelperThreads();
  // The I/O metrics time the local engine: on a cluster node that is both the primary's local apply
  // of client I/O and what replicas apply for other primaries (each once). QoS is outermost and sees
  // only client I/O (on the primary, before replication): replica-side requests bypass it, so a
  // tenant's limits are spent once per request, not once per copy.
  const local = new InstrumentedEngine(raw, metrics);
  let cluster: ClusterHandle | null = null;
  // The key manager reads the cluster's view of the pool, so it starts after the cluster: until then a
  // member asked for an encrypted copy refuses (the primary retries it as a rebuild).
  let keysLate: KeyManager | null = null;
  const dataKeys: ClusterDataKeys = {
    newDataKey: (vol) => keysLate === null ? Promise.reject(new TenancyError('tenant_busy', 'the key manager is starting')) : keysLate.newDataKey(splitQualified(vol).tenant),
    refusal: (vol) => keysLate === null ? 'the key manager is starting' : keysLate.copyRefusal(splitQualified(vol).tenant),
  };
  if (config.cluster !== null) {
    try {
      config = await reservePorts(config);
      const start = deps.startCluster ?? (await import('./cluster-start.js')).startCluster;
      cluster = await start({
        config: config as ClusterConfig, engine: local, addresses: clusterAddresses(config as ClusterConfig), dataKeys, log: eventLogger(logger, 'cluster'),
        ...(deps.startAbort !== undefined ? { startAbort: deps.startAbort } : {}),
      });
      metrics.attachCluster(cluster);
    } catch (err) {
      await raw.close().catch((closeErr: unknown) => logger.warn({ event: 'start_cleanup_failed', what: 'closing the pool', err: closeErr }, 'undoing a failed start: closing the pool failed'));
      await lock.release();
      throw err;
    }
  }
  const engine = new QosEngine(cluster?.engine ?? local, { log: eventLogger(logger, 'qos') });
  metrics.attach(engine);
  metrics.attachQos(() => engine.control.waitTotals());
  const cleanup: Array<() => Promise<void>> = [];
  if (cluster !== null) { const c = cluster; cleanup.push(() => c.close()); }
  try {
    await engine.control.load();
    if (cluster !== null) {
      const stop = followClusterQos(cluster, local, engine.control, eventLogger(logger, 'cluster'));
      cleanup.push(async () => stop());
    }
    const sideFile = sideFilePath(poolPath, stateDir);
    const migrated = await migrateSideFile(engine, sideFile);
    if (migrated !== null) {
      logger.info({ event: 'stream_identities_migrated', from: sideFile, snapshots: migrated }, 'stream identities moved into the catalog; side file removed');
    }
    const tenancy = new TenantStore(engine);
    // Encrypted volumes unlock before any protocol serves them; a tenant whose KEK is away stays locked (retried).
    const keys = new KeyManager(engine, { log: eventLogger(logger, 'keys'), ...(config.kekRetryMs !== null ? { retryMs: config.kekRetryMs } : {}) });
    await keys.start();
    keysLate = keys;
    cleanup.push(async () => keys.close());
    const access = nbdAccess(engine, tenancy);
    const clusterCopy = cluster;
    const nbdLog = eventLogger(logger, 'nbd');
    // A tenant's volume whose primary is another node is relayed with one of the tenant's NBD keys (nbd-forward.ts).
    const tenantPsk = (tenant: string) => {
      for (const k of tenancy.listNbdKeys(tenant)) {
        const found = tenancy.pskLookup(k.identity);
        if (found !== null) return { identity: k.identity, key: found.key };
      }
      return null;
    };
    const nbd = config.nbd === null && config.nbdSocketPath === null ? null : await startNbdServer(engine, {
      ...(config.nbd !== null ? { host: config.nbd.host, port: config.nbd.port } : {}),
      ...(config.nbdSocketPath !== null ? { socketPath: config.nbdSocketPath } : {}),
      ...(config.nbdTls !== null ? { tls: nbdTlsOptions(config.nbdTls, access) } : {}),
      // On a cluster node an export whose primary is elsewhere is relayed there (nbd-forward.ts).
      exportsFor: clusterCopy === null ? access.exportsFor : (peer) => {
        const view = access.exportsFor(peer);
        return view === null ? null : new ForwardingExports(view, clusterCopy, view instanceof ScopedEngine ? view.tenant : null, nbdLog, tenantPsk);
      },
      // Tenants share the server by their QoS weight while more than one is busy.
      fairShare: { weightOf: (tenant) => engine.control.tenantLimits(tenant).weight },
      ...(config.nbdBusyPollMicros !== null ? { busyPollMicros: config.nbdBusyPollMicros } : {}),
      log: nbdLog,
    });
    if (nbd !== null) cleanup.push(() => nbd.close());
    const nbdBaseUri = nbd !== null && nbd.port !== null && config.nbd !== null
      ? `nbd://${hostForUri(config.nbd.host)}:${nbd.port}` : null;
    const nvmfConfig = config.nvmf;
    const nvmf = nvmfConfig === null ? null : await startNvmfServer(engine, {
      host: nvmfConfig.host, port: nvmfConfig.port,
      discovery: config.nvmfDiscovery === 'auto' ? { host: nvmfConfig.host, port: NVMF_DISCOVERY_PORT_DEFAULT } : config.nvmfDiscovery,
      ...(config.nvmfAdvertise !== null ? { advertise: { host: config.nvmfAdvertise.host, ...(config.nvmfAdvertise.port !== null ? { port: config.nvmfAdvertise.port } : {}) } } : {}),
      nqnBase: config.nvmfNqnBase,
      ...(config.nvmfInCapsuleBytes !== null ? { inCapsuleBytes: config.nvmfInCapsuleBytes } : {}),
      tenancy, hostAccess: new NvmeHostAccess(tenancy),
      // Tenants share the target by their QoS weight while more than one is busy, as on NBD.
      fairShare: { weightOf: (tenant) => engine.control.tenantLimits(tenant).weight },
      log: eventLogger(logger, 'nvmf'),
      // A cluster node reports ANA path states and takes its own CNTLID range (nvmf-ana.ts).
      ...(cluster === null ? {} : {
        ana: anaProvider(cluster), cntlidRange: cntlidRangeOf(cluster.self), namespaceIdentities: clusterNamespaceIdentities(cluster),
      }),
    });
    if (nvmf !== null) {
      cleanup.push(() => nvmf.close());
      metrics.attachNvmf(() => ({ controllers: nvmf.registry.size, connections: nvmf.connections() }));
    }
    const jobStore = new JobStore(jobFilePath(poolPath, stateDir));
    const jobLog = eventLogger(logger, 'jobs');
    const jobs = new JobManager(jobStore, jobLog);
    await restoreJobs(jobs, jobStore, engine, jobLog);
    const bootstrap = await ensureBootstrapToken(tenancy, poolPath, stateDir, bootstrapTokenNameOf(cluster?.self ?? null));
    if (bootstrap.created) logger.info({ event: 'admin_token_created', path: bootstrap.path }, `admin token written to ${bootstrap.path} (mode 0600)`);
    const ctx = apiContext({
      rootEngine: engine, jobManager: jobs, tenancy, keys, qos: engine.control, poolPath, spoolDir: stateDir, nbdBaseUri, cluster,
      exportUri: (tenant, name) => tenantExportUri({ plainBase: nbdBaseUri, tls: config.nbdTls, tenancy }, tenant, name),
    });
    const apiTls = config.apiTls;
    const capacity = new CapacityHistory(() => engine.stats(), config.capacitySampleMs ?? CAPACITY_SAMPLE_MS_DEFAULT);
    capacity.start();
    cleanup.push(async () => capacity.stop());
    const { app } = buildApi(ctx, {
      logger: logger.child({ component: 'api' }), metrics: () => metrics.render(), ioTotals: async () => metrics.ioTotals(),
      capacityHistory: () => capacity.view(),
      uiDir: dashboardDir(),
      onAuthFailure: (reason) => metrics.authFailures.inc({ reason }),
      ...(apiTls === null ? {} : {
        https: {
          cert: readFileSync(apiTls.certFile), key: readFileSync(apiTls.keyFile),
          ...(apiTls.clientCaFile !== undefined ? { clientCa: readFileSync(apiTls.clientCaFile) } : {}),
        },
      }),
    });
    await app.listen({ host: config.api.host, port: config.api.port });
    const address = app.server.address();
    const apiPort = typeof address === 'object' && address !== null ? address.port : config.api.port;
    const apiUrl = `${apiTls === null ? 'http' : 'https'}://${hostForUri(config.api.host)}:${apiPort}`;
    logger.info({ event: 'ready', api: apiUrl, nbd: nbdBaseUri, nbdSocket: nbd?.socketPath ?? null,
      nvmf: nvmf === null ? null : { port: nvmf.port, discoveryPort: nvmf.discoveryPort }, pool: poolPath,
      poolSizeBytes: engine.stats().sizeBytes, checksumKernel, xtsKernel, helperThreadsBatched }, 'cairn ready');
    let closing: Promise<void> | null = null;
    const close = async (): Promise<void> => {
      logger.info({ event: 'shutdown_begin' }, 'shutting down');
      // 1. Stop accepting HTTP; give open requests (exports, imports) a bounded time.
      const httpClosed = app.close();
      if (!(await withTimeout(httpClosed, shutdownHttpWaitMs))) app.server.closeAllConnections();
      // 2. NBD: stop accepting, finish in-flight requests (throttled ones no longer wait), close connections.
      engine.control.releaseAll();
      if (nbd !== null) await nbd.close();
      // 2b. NVMe/TCP the same way: in-flight commands finish, then every queue closes.
      if (nvmf !== null) await nvmf.close();
      // 3. Jobs: a flatten resumes after restart, so waiting is bounded.
      await withTimeout(jobs.drain(), shutdownJobsWaitMs);
      // 3b. Leave the cluster (its lease revoked: another member takes over our primaries at once).
      if (cluster !== null) await cluster.close();
      // Jobs still running stay `running` in the file; the next start settles them (job-store.ts).
      await jobs.close().catch((err: unknown) => jobLog('jobs_save_failed', { error: err instanceof Error ? err.message : String(err) }));
      // 4. Everything acknowledged becomes durable, then the pool closes cleanly.
      await engine.flush();
      await engine.close();
      await lock.release();
      logger.info({ event: 'shutdown_done' }, 'cairn stopped');
    };
    return {
      apiUrl, nbdUri: nbdBaseUri, nvmf: nvmf === null ? null : { port: nvmf.port, discoveryPort: nvmf.discoveryPort }, engine, cluster,
      nbdPollStats: () => nbd?.pollStats() ?? null, close: () => (closing ??= close()),
    };
  } catch (err) {
    // The start failed with `err`, which the caller reports; a failure to undo a step is logged, not
    // thrown over it.
    const undo = (what: string) => (undoErr: unknown): void => logger.warn({ event: 'start_cleanup_failed', what, err: undoErr }, `undoing a failed start: ${what} failed`);
    for (const step of cleanup.reverse()) await step().catch(undo('a started service'));
    await engine.close().catch(undo('closing the pool'));
    await lock.release();
    throw err;
  }
}
