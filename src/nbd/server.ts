// The NBD server: listens on TCP and/or a unix socket, runs one NbdConnection per client, routes
// engine target events (deleted / reverted / resized) to the connections of that target, and closes
// gracefully (in-flight requests finish, new ones get ESHUTDOWN, bounded by CLOSE_DRAIN_MS_MAX).
import net from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import type { Engine } from '../engine/index.js';
import * as c from './constants.js';
import { NbdConnection } from './connection.js';
import { TlsUpgrader, type PeerIdentity, type TlsConfig } from './tls.js';
import { BusyPoller, type BusyPollStats } from './busy-poll.js';
import { ReadBufferPool } from './read-buffers.js';
import { SlabPool } from './recv-slabs.js';
import { FairShare, type FairShareOptions } from './fair-share.js';

export interface NbdServerOptions {
  /** TCP listen address (default 127.0.0.1:10809; port 0 = ephemeral). */
  host?: string;
  port?: number;
  /** Also (with host/port) or instead (alone) listen on a unix socket. */
  socketPath?: string;
  tls?: TlsConfig;
  /**
   * The exports a client sees, by who it is: asked when it connects ({kind:'plain'}) and again after
   * STARTTLS with the identity TLS proved. Default: `engine` for everyone. Null: nothing (every option
   * but STARTTLS and ABORT gets NBD_REP_ERR_POLICY). Names outside the returned view do not exist.
   */
  exportsFor?: (peer: PeerIdentity) => Engine | null;
  /** Longest wait on a client in the handshake: its next option, or reading our replies (default 30 s). */
  handshakeIdleMs?: number;
  log?: (event: string, fields: Record<string, unknown>) => void;
  /**
   * After a request arrives, keep the event loop polling (not sleeping) this long for the next one
   * (default BUSY_POLL_MICROS_DEFAULT; 0 turns it off). Lowers latency at low queue depth for CPU.
   */
  busyPollMicros?: number;
  /**
   * Fair sharing between tenants while more than one is busy (fair-share.ts): each gets its weighted
   * share of FAIR_BUDGET_DEFAULT requests in flight. Default on; false turns it off.
   */
  fairShare?: FairShareOptions | false;
}

export interface NbdServer {
  readonly port: number | null;
  readonly socketPath: string | null;
  connections(): number;
  /** What the busy poller did so far (busy-poll.ts). */
  pollStats(): BusyPollStats;
  close(): Promise<void>;
}

export async function startNbdServer(engine: Engine, opts: NbdServerOptions): Promise<NbdServer> {
  const log = opts.log ?? ((): void => {});
  const handshakeIdleMs = opts.handshakeIdleMs ?? c.HANDSHAKE_IDLE_MS_DEFAULT;
  const tls = opts.tls ? new TlsUpgrader(opts.tls, handshakeIdleMs) : null;
  const live = new Set<NbdConnection>();
  let shuttingDown = false;
  const poller = new BusyPoller(opts.busyPollMicros ?? c.BUSY_POLL_MICROS_DEFAULT);
  const readBuffers = new ReadBufferPool(c.READ_BUFFERS_POOLED_BYTES_MAX);
  const slabs = new SlabPool(c.RECV_SLAB_BYTES, c.RECV_SLABS_IDLE_MAX, c.RECV_SLAB_READERS_MAX);
  const exportsFor = opts.exportsFor ?? ((): Engine => engine);
  const fair = opts.fairShare === false ? null : new FairShare(opts.fairShare ?? {});
  const ctx = { exportsFor, tls, handshakeIdleMs, shuttingDown: () => shuttingDown, log, poller, readBuffers, slabs, fair };

  const onSocket = (socket: net.Socket): void => {
    if (shuttingDown || live.size >= c.CONNECTIONS_MAX) {
      log('nbd_connection_refused', { reason: shuttingDown ? 'shutting down' : 'too many connections' });
      socket.destroy();
      return;
    }
    const connection = new NbdConnection(socket, ctx);
    live.add(connection);
    void connection.closed.then(() => live.delete(connection));
    void connection.run();
  };

  const unsubscribe = engine.onTargetEvent((event) => {
    for (const connection of live) if (connection.targetId === event.id) connection.onTargetEvent(event);
  });

  const listeners: net.Server[] = [];
  let port: number | null = null;
  const wantTcp = opts.socketPath === undefined || opts.port !== undefined || opts.host !== undefined;
  try {
    if (wantTcp) {
      const server = net.createServer({ noDelay: true, pauseOnConnect: true }, onSocket);
      await listen(server, { host: opts.host ?? c.HOST_DEFAULT, port: opts.port ?? c.PORT_DEFAULT });
      listeners.push(server);
      port = (server.address() as net.AddressInfo).port;
    }
    if (opts.socketPath !== undefined) {
      await removeStaleSocket(opts.socketPath);
      const server = net.createServer({ pauseOnConnect: true }, onSocket);
      await listen(server, { path: opts.socketPath });
      listeners.push(server);
    }
  } catch (error) {
    unsubscribe();
    for (const server of listeners) server.close();
    throw error;
  }
  log('nbd_listening', { port, socketPath: opts.socketPath ?? null, tls: tls ? (tls.required ? 'required' : 'optional') : 'off' });

  let closing: Promise<void> | null = null;
  return {
    port,
    socketPath: opts.socketPath ?? null,
    connections: () => live.size,
    pollStats: () => poller.stats,
    close: () => {
      closing ??= (async () => {
        shuttingDown = true;
        poller.stop();
        const stopped = listeners.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
        for (const connection of live) connection.drain();
        const all = Promise.all([...live].map((connection) => connection.closed));
        const timer = setTimeout(() => { for (const connection of live) connection.destroy(); }, c.CLOSE_DRAIN_MS_MAX);
        await all;
        clearTimeout(timer);
        await Promise.all(stopped);
        unsubscribe();
        // Already gone is fine; a stale socket file is replaced at the next start (see below).
        if (opts.socketPath !== undefined) await unlink(opts.socketPath).catch(() => undefined);
        log('nbd_closed', {});
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

/** A socket file left by a previous run would make listen fail with EADDRINUSE; regular files are kept. */
async function removeStaleSocket(path: string): Promise<void> {
  // Nothing at the path (ENOENT) is the usual case; anything else shows again when listen fails.
  const stat = await lstat(path).catch(() => null);
  if (stat?.isSocket()) await unlink(path);
}
