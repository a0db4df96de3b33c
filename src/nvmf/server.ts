// The NVMe/TCP target: an I/O listener (subsystems: one per tenant, and the discovery subsystem) and
// a discovery listener (the discovery subsystem only), one NvmfConnection per TCP connection (= one
// queue), one controller registry for both. Graceful close: listeners stop, in-flight commands finish
// (bounded by CLOSE_DRAIN_MS_MAX), then every connection closes.
import net from 'node:net';
import type { Engine } from '../engine/index.js';
import type { TenantStore } from '../tenancy/store.js';
import { ReadBufferPool } from '../nbd/read-buffers.js';
import { SlabPool } from '../nbd/recv-slabs.js';
import { FairShare, type FairShareOptions } from '../nbd/fair-share.js';
import * as c from './constants.js';
import { NvmfConnection } from './connection.js';
import { ControllerRegistry } from './registry.js';
import { PreConnect } from './fabrics.js';
import { NamespaceView, ensurePoolIdentity, type NamespaceIdentities } from './namespaces.js';
import { NQN_BASE_DEFAULT, NvmeHostAccess } from './host-access.js';
import type { AnaProvider } from './ana.js';

export interface NvmfServerOptions {
  host: string;
  /** I/O port (default 4420; 0: ephemeral). */
  port?: number;
  /** Discovery listener; default: the same host, port 8009 (0: ephemeral); null: none. */
  discovery?: { host: string; port: number } | null;
  /** What the discovery log page tells hosts to connect to; default the listen address. */
  advertise?: { host: string; port?: number };
  nqnBase?: string;
  inCapsuleBytes?: number;
  tenancy: TenantStore;
  hostAccess?: NvmeHostAccess;
  /** Fair sharing of I/O between tenants while more than one is busy (as NBD's); default on; false: off. */
  fairShare?: FairShareOptions | false;
  log?: (event: string, fields: Record<string, unknown>) => void;
  /** ANA reporting on a cluster node (ana.ts); none: no ANA. Its changes also refresh `namespaceIdentities`. */
  ana?: AnaProvider;
  /** Namespace identities shared by a cluster's nodes (namespaces.ts); none: the pool's own. */
  namespaceIdentities?: NamespaceIdentities;
  /** The CNTLIDs this node hands out (registry.ts: a cluster's nodes take disjoint ranges). */
  cntlidRange?: { first: number; last: number };
}

export interface NvmfServer {
  readonly port: number;
  /** null: no discovery listener. */
  readonly discoveryPort: number | null;
  readonly registry: ControllerRegistry;
  connections(): number;
  close(): Promise<void>;
}

export async function startNvmfServer(engine: Engine, opts: NvmfServerOptions): Promise<NvmfServer> {
  const log = opts.log ?? ((): void => {});
  const inCapsuleBytes = opts.inCapsuleBytes ?? c.IN_CAPSULE_BYTES_DEFAULT;
  if (!Number.isInteger(inCapsuleBytes) || inCapsuleBytes < 0 || inCapsuleBytes > c.IN_CAPSULE_BYTES_MAX || inCapsuleBytes % 16 !== 0) {
    throw new RangeError(`in-capsule bytes must be a multiple of 16 in [0, ${c.IN_CAPSULE_BYTES_MAX}], got ${inCapsuleBytes}`);
  }
  const live = new Set<NvmfConnection>();
  let shuttingDown = false;
  const readBuffers = new ReadBufferPool(c.READ_BUFFERS_POOLED_BYTES_MAX);
  const slabs = new SlabPool(c.RECV_SLAB_BYTES, c.RECV_SLABS_IDLE_MAX, c.RECV_SLAB_READERS_MAX);
  // Durable before a host sees an NGUID, UUID or serial derived from it.
  const identity = await ensurePoolIdentity(engine);
  const advertised = { host: opts.advertise?.host ?? opts.host, port: 0, discoveryPort: 0 };
  const namespaces = new NamespaceView(engine, identity, opts.namespaceIdentities ?? null);
  // Subscribed before the registry's own listener: identities are fresh when it re-reads the namespaces.
  const stopIdentities = opts.ana?.onChange(() => { namespaces.identitiesVersion += 1; namespaces.invalidate(); }) ?? (() => {});
  const registry = new ControllerRegistry(engine, {
    nqnBase: opts.nqnBase ?? NQN_BASE_DEFAULT,
    tenancy: opts.tenancy,
    hostAccess: opts.hostAccess ?? new NvmeHostAccess(opts.tenancy),
    namespaces,
    poolIdentity: identity,
    inCapsuleBytes,
    advertise: advertised,
    fair: opts.fairShare === false ? null : new FairShare(opts.fairShare ?? {}),
    log,
    ana: opts.ana ?? null,
    ...(opts.cntlidRange !== undefined ? { cntlidRange: opts.cntlidRange } : {}),
  });

  const onSocket = (discoveryOnly: boolean) => (socket: net.Socket): void => {
    if (shuttingDown || live.size >= c.CONNECTIONS_MAX) {
      log('nvmf_connection_refused', { reason: shuttingDown ? 'shutting down' : 'too many connections' });
      socket.destroy();
      return;
    }
    const connection = new NvmfConnection(socket, { handler: new PreConnect(registry, discoveryOnly), readBuffers, slabs, log });
    live.add(connection);
    void connection.closed.then(() => live.delete(connection));
  };

  const io = net.createServer({ noDelay: true, pauseOnConnect: true }, onSocket(false));
  const discoveryAddress = opts.discovery === undefined ? { host: opts.host, port: c.DISCOVERY_PORT_DEFAULT } : opts.discovery;
  const disc = discoveryAddress === null ? null : net.createServer({ noDelay: true, pauseOnConnect: true }, onSocket(true));
  try {
    await listen(io, { host: opts.host, port: opts.port ?? c.PORT_DEFAULT });
    if (disc !== null && discoveryAddress !== null) await listen(disc, discoveryAddress);
  } catch (error) {
    io.close();
    disc?.close();
    registry.close();
    stopIdentities();
    throw error;
  }
  const port = (io.address() as net.AddressInfo).port;
  const discoveryPort = disc === null ? null : (disc.address() as net.AddressInfo).port;
  advertised.port = opts.advertise?.port ?? port;
  // Without a discovery listener the I/O port serves the discovery subsystem too (its log names it).
  advertised.discoveryPort = discoveryPort ?? advertised.port;
  log('nvmf_listening', { host: opts.host, port, discoveryPort, advertise: `${advertised.host}:${advertised.port}`, inCapsuleBytes });

  let closing: Promise<void> | null = null;
  return {
    port,
    discoveryPort,
    registry,
    connections: () => live.size,
    close: () => {
      closing ??= (async () => {
        shuttingDown = true;
        for (const controller of registry.all()) controller.abortAsyncEvents();
        const stopped = [io, ...(disc === null ? [] : [disc])].map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
        const drained = Promise.all([...live].map((connection) => connection.drain()));
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([drained, new Promise<void>((resolve) => { timer = setTimeout(resolve, c.CLOSE_DRAIN_MS_MAX); })]);
        clearTimeout(timer);
        registry.close();
        stopIdentities();
        for (const connection of live) connection.destroy();
        await Promise.all(stopped);
        log('nvmf_closed', {});
      })();
      return closing;
    },
  };
}

function listen(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => { server.off('error', reject); resolve(); });
  });
}
