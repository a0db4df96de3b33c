// One client connection: owns the socket (plain, then possibly TLS), the receive queue and the reply
// writer; runs the handshake, then hands the socket's data to the transmission loop. Every way a
// connection can end (DISC, ABORT, protocol violation, export gone, server close, client vanished)
// comes through end()/hangUp() and settles `closed`. What the client may open is its view of the
// exports, asked of the server once for the plain connection and again for the identity TLS proves.
import type net from 'node:net';
import type { Engine, TargetEvent } from '../engine/index.js';
import * as c from './constants.js';
import { RecvQueue } from './recv-queue.js';
import { ReplyWriter } from './reply-writer.js';
import { negotiate, HangUp, type HandshakeIo } from './handshake.js';
import { Transmission } from './transmission.js';
import { describePeer, type PeerIdentity, type TlsUpgrader } from './tls.js';
import type { BusyPoller } from './busy-poll.js';
import type { ReadBufferPool } from './read-buffers.js';
import { socketReadingIntoSlabs, type Slab, type SlabPool } from './recv-slabs.js';
import type { FairShare, TenantShare } from './fair-share.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import { splitQualified } from '../tenancy/names.js';

export interface ConnectionContext {
  /** The exports a client with this identity sees; null: none (its options are refused). */
  exportsFor(peer: PeerIdentity): Engine | null;
  tls: TlsUpgrader | null;
  handshakeIdleMs: number;
  shuttingDown(): boolean;
  log(event: string, fields: Record<string, unknown>): void;
  poller: BusyPoller;
  readBuffers: ReadBufferPool;
  /** Where socket reads land (recv-slabs.ts), for as many connections as it has readers. */
  slabs: SlabPool;
  /** Fair sharing between tenants (fair-share.ts); null: off. */
  fair: FairShare | null;
}

/**
 * An export view may report that a target it serves is lost on its own (a forwarded export whose
 * primary cannot be reached any more): the connection then drains and closes, so the client reconnects
 * (and finds the volume where it now lives). `release` is called when the connection ends (the view
 * closes what it opened for it, e.g. a relay's connection).
 */
export interface TargetLoss {
  onTargetLost(id: number, listener: () => void): () => void;
  release(): void;
}

function reportsLoss(engine: Engine): engine is Engine & TargetLoss {
  return typeof (engine as Partial<TargetLoss>).onTargetLost === 'function';
}

/** The tenant whose volume a connection serves: its view's, or the engine name's prefix for the whole engine. */
function tenantOf(engine: Engine, targetName: string): string {
  return engine instanceof ScopedEngine ? engine.tenant : splitQualified(targetName).tenant;
}


export class NbdConnection {
  private socket: net.Socket;
  private readonly recv = new RecvQueue(c.REQUEST_HEADER_BYTES);
  private readonly writer: ReplyWriter;
  private transmission: Transmission | null = null;
  private waiter: { bytes: number; resolve: () => void; reject: (error: Error) => void } | null = null;
  /** A handshake waiting for the client to read queued replies (a streamed LIST). */
  private drainWaiter: { resolve: () => void; reject: (error: Error) => void } | null = null;
  /** Armed while the handshake waits on the client (handshakeIdleMs). */
  private idleTimer: NodeJS.Timeout | null = null;
  private tlsActive = false;
  private peerIdentity: PeerIdentity = { kind: 'plain' };
  private exports: Engine | null;
  private ending = false;
  private isClosed = false;
  private stopLossWatch: (() => void) | null = null;
  private negotiatedView: (Engine & TargetLoss) | null = null;
  private resolveClosed!: () => void;
  readonly closed: Promise<void> = new Promise((resolve) => { this.resolveClosed = resolve; });
  /** Target id once in transmission (for engine events). */
  targetId: number | null = null;
  readonly peer: string;
  /** Whether socket reads land in the server's slabs (false: Node's own buffers). */
  private readonly recvSlabs: boolean;

  private readonly onData = (chunk: Buffer, slab: Slab | null = null): void => {
    if (this.ending) return;
    this.recv.push(chunk, slab);
    if (this.transmission) { this.ctx.poller.kick(); this.transmission.pump(); return; }
    if (this.recv.length > c.HANDSHAKE_BUFFERED_BYTES_MAX) this.socket.pause();
    if (this.waiter && this.recv.length >= this.waiter.bytes) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve();
    }
  };
  private readonly onClose = (): void => this.closedNow();
  private readonly onError = (error: Error): void => {
    // A client that closes without waiting for our last reply (proto.md lets one do so after ABORT)
    // is routine, not a warning.
    const code = (error as NodeJS.ErrnoException).code;
    const routine = code === 'ECONNRESET' || code === 'EPIPE';
    this.ctx.log(routine ? 'nbd_peer_reset' : 'nbd_socket_error', { peer: this.peer, error: error.message });
    this.socket.destroy();
  };
  private readonly onDrain = (): void => {
    if (this.drainWaiter) {
      const waiter = this.drainWaiter;
      this.drainWaiter = null;
      this.stopIdleTimer();
      waiter.resolve();
    }
    this.transmission?.onWritable();
  };

  /** `accepted` comes paused (the server's pauseOnConnect), so no byte is read before the slabs are set up. */
  constructor(accepted: net.Socket, private readonly ctx: ConnectionContext) {
    const reader = ctx.slabs.tryReader();
    const adopted = reader ? socketReadingIntoSlabs(accepted, reader, (chunk, slab) => this.onData(chunk, slab)) : null;
    if (reader && !adopted) reader.close();
    if (!adopted) accepted.resume();
    const raw = adopted ?? accepted;
    this.recvSlabs = adopted !== null;
    this.socket = raw;
    this.peer = raw.remoteAddress ? `${raw.remoteAddress}:${raw.remotePort}` : 'unix';
    this.writer = new ReplyWriter(raw);
    this.exports = this.viewFor(this.peerIdentity);
    raw.setNoDelay(true);
    this.attach(raw);
  }

  async run(): Promise<void> {
    // The handshake's bounds: the idle timer (armed in waitFor/waitWritable) ends a client that
    // pauses too long on any one option; OPTIONS_PER_HANDSHAKE_MAX (handshake.ts) ends one that never stops.
    try {
      const negotiated = await negotiate(this.handshakeIo());
      if (negotiated === null) { this.end(); return; }
      this.targetId = negotiated.target.id;
      this.ctx.log('nbd_connected', { peer: this.peer, export: negotiated.target.name, tls: this.tlsActive, identity: describePeer(this.peerIdentity),
        recvSlabs: this.recvSlabs && !this.tlsActive, structured: negotiated.structuredReplies, contexts: negotiated.metaContexts.map((m) => m.name) });
      const io = this.transmissionIo();
      io.share = this.ctx.fair?.share(tenantOf(negotiated.engine, negotiated.target.name)) ?? null;
      this.transmission = new Transmission(io, negotiated.engine, negotiated);
      if (reportsLoss(negotiated.engine)) {
        this.negotiatedView = negotiated.engine;
        const id = negotiated.target.id;
        this.stopLossWatch = negotiated.engine.onTargetLost(id, () => this.onTargetEvent({ type: 'deleted', id }));
      }
      this.transmission.pump();
    } catch (error) {
      if (!this.isClosed) {
        this.ctx.log('nbd_handshake_failed', { peer: this.peer, error: error instanceof Error ? error.message : String(error) });
        this.hangUp(error instanceof HangUp ? error.message : 'handshake failed');
      }
    } finally {
      this.stopIdleTimer();
    }
  }

  /** The client's view of the exports; one that cannot be had (the callback threw) is no view. */
  private viewFor(peer: PeerIdentity): Engine | null {
    try {
      return this.ctx.exportsFor(peer);
    } catch (error) {
      this.ctx.log('nbd_access_failed', { peer: this.peer, identity: describePeer(peer), error: error instanceof Error ? error.message : String(error) });
      return null;
    }
  }

  private startIdleTimer(): void {
    this.stopIdleTimer();
    this.idleTimer = setTimeout(() => this.hangUp('handshake idle'), this.ctx.handshakeIdleMs);
    this.idleTimer.unref();
  }

  private stopIdleTimer(): void {
    if (this.idleTimer !== null) { clearTimeout(this.idleTimer); this.idleTimer = null; }
  }

  /** The engine reports a change to the exported target (types.ts TargetEvent). */
  onTargetEvent(event: TargetEvent): void {
    if (event.type === 'resized') {
      // The negotiated size stays (the protocol has no size change without NBD_FLAG_SEND_RESIZE);
      // new connections see the new size. I/O past the new end of a shrunk volume fails in the engine.
      this.ctx.log('nbd_target_resized', { peer: this.peer, id: event.id, sizeBytes: event.sizeBytes });
      return;
    }
    this.ctx.log('nbd_target_gone', { peer: this.peer, id: event.id, reason: event.type });
    this.drain();
  }

  /** Server shutdown or export gone: finish in-flight requests, refuse new ones, then close. */
  drain(): void {
    if (this.transmission) { this.transmission.drain(); return; }
    // Still haggling: proto.md says further options SHOULD get NBD_REP_ERR_SHUTDOWN (the handshake
    // answers them so, and ACKs an ABORT), after which the client disconnects itself. One that stays
    // silent is hung up after a short grace, so shutdown does not wait on it.
    setTimeout(() => {
      if (this.transmission) this.transmission.drain(); // a GO that was already past its check
      else this.hangUp('shutting down');
    }, c.HANDSHAKE_SHUTDOWN_GRACE_MS).unref();
  }

  destroy(): void { this.socket.destroy(); }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.on('drain', this.onDrain);
  }

  private closedNow(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.ending = true;
    this.stopLossWatch?.();
    this.transmission?.stop();
    this.negotiatedView?.release();
    this.recv.clear();
    if (this.waiter) { this.waiter.reject(new Error('connection closed')); this.waiter = null; }
    if (this.drainWaiter) { this.drainWaiter.reject(new Error('connection closed')); this.drainWaiter = null; }
    this.stopIdleTimer();
    this.ctx.log('nbd_disconnected', { peer: this.peer });
    this.resolveClosed();
  }

  /** Soft end: flush queued replies, close our side (TLS close_notify first), destroy after a linger. */
  private end(): void {
    if (this.ending) return;
    this.ending = true;
    this.writer.flush();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), c.END_LINGER_MS).unref();
  }

  /** Hard disconnect after a protocol violation (proto.md allows it on a broken MUST). */
  private hangUp(reason: string): void {
    if (this.isClosed) return;
    this.ctx.log('nbd_hang_up', { peer: this.peer, reason });
    this.transmission?.stop();
    this.end();
    if (this.waiter) { this.waiter.reject(new HangUp(reason)); this.waiter = null; }
    if (this.drainWaiter) { this.drainWaiter.reject(new HangUp(reason)); this.drainWaiter = null; }
  }

  private waitFor(bytes: number): Promise<void> {
    if (this.recv.length >= bytes) return Promise.resolve();
    if (this.isClosed || this.ending) return Promise.reject(new Error('connection closed'));
    this.socket.resume();
    this.startIdleTimer();
    return new Promise((resolve, reject) => {
      this.waiter = {
        bytes,
        resolve: () => { this.stopIdleTimer(); resolve(); },
        reject: (error) => { this.stopIdleTimer(); reject(error); },
      };
    });
  }

  /**
   * Sends what is queued; if the client has not read more than HANDSHAKE_REPLY_BYTES_QUEUED_MAX yet,
   * waits (idle-timed) for it to, else yields one turn of the event loop so a long list does not
   * hold up other connections.
   */
  private waitWritable(): Promise<void> {
    this.writer.flush();
    if (this.isClosed || this.ending) return Promise.reject(new Error('connection closed'));
    if (this.writer.queuedBytes() <= c.HANDSHAKE_REPLY_BYTES_QUEUED_MAX) return new Promise((resolve) => setImmediate(resolve));
    this.startIdleTimer();
    return new Promise((resolve, reject) => { this.drainWaiter = { resolve, reject }; });
  }

  private handshakeIo(): HandshakeIo {
    return {
      read: async (n) => {
        await this.waitFor(n);
        return this.recv.take(n);
      },
      discard: async (n) => {
        let remaining = n;
        while (remaining > 0) {
          await this.waitFor(1);
          remaining -= this.recv.skip(remaining);
        }
      },
      send: (data) => this.writer.send(data),
      writable: () => this.waitWritable(),
      tlsRequired: () => (this.ctx.tls ? this.ctx.tls.required : null),
      tlsActive: () => this.tlsActive,
      startTls: () => this.startTls(),
      exports: () => this.exports,
      shuttingDown: () => this.ctx.shuttingDown(),
      log: (event, fields) => this.ctx.log(event, fields),
    };
  }

  private async startTls(): Promise<void> {
    const tls = this.ctx.tls;
    if (!tls) throw new HangUp('TLS not configured');
    this.writer.flush();
    const raw = this.socket;
    raw.removeListener('data', this.onData);
    raw.removeListener('drain', this.onDrain);
    raw.pause();
    // proto.md: after the ACK all data is TLS; plaintext already sent by the client is a violation.
    if (this.recv.length > 0) throw new HangUp('plaintext data after STARTTLS');
    const { socket: secure, peer } = await tls.upgrade(raw);
    this.socket = secure;
    this.writer.setSocket(secure);
    this.tlsActive = true;
    this.attach(secure);
    this.peerIdentity = peer;
    this.exports = this.viewFor(peer);
    this.ctx.log('nbd_tls_identity', { peer: this.peer, identity: describePeer(peer), access: this.exports !== null });
  }

  private transmissionIo() {
    return {
      recv: this.recv,
      send: (data: Buffer, onSent?: () => void) => this.writer.send(data, onSent, (this.transmission?.inFlight ?? 0) <= 1),
      queuedReplyBytes: () => this.writer.queuedBytes(),
      pauseReading: () => this.socket.pause(),
      resumeReading: () => { if (!this.ending) this.socket.resume(); },
      end: () => this.end(),
      hangUp: (reason: string) => this.hangUp(reason),
      log: (event: string, fields: Record<string, unknown>) => this.ctx.log(event, fields),
      readBuffers: this.ctx.readBuffers,
      share: null as TenantShare | null,
    };
  }
}
