// TcpTransport: the replication port. One persistent TCP connection per peer (opened on first use,
// reopened after a failure), many requests in flight on it, replies matched by request id. A
// connection starts with a hello each way naming the nodes; with a cluster secret both sides prove
// they hold it (HMAC-SHA256 over both nonces) before any request is served, and the connection runs
// inside TLS 1.2 with a pre-shared key derived from the secret (ECDHE-PSK: encrypted, forward secret,
// no certificates to manage), since writes of encrypted volumes cross it in plaintext. Frames: tcp-framing.ts.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { ReplReply, ReplRequest } from './messages.js';
import type { AddressBook, Transport } from './transport.js';
import { TransportError } from './transport.js';
import { encodeFrame, FrameDecoder, FrameError, FrameKind, type Frame, type FrameKindValue } from './tcp-framing.js';
import { replyProblem, requestProblem } from './tcp-validate.js';

/** Connect + hello exchange must finish within this (a request's own timeout may end it sooner). */
export const HANDSHAKE_TIMEOUT_MS = 3000;
/** Requests one inbound connection runs at once; beyond it the socket stops being read. */
export const REQUESTS_INBOUND_INFLIGHT_MAX = 4096;
/** Connections this node accepts at once (peers hold one each; strangers are dropped at the hello). */
export const CONNECTIONS_INBOUND_MAX = 1024;
/** A node name in a hello (a DNS name's length). */
const NODE_NAME_BYTES_MAX = 253;
const NONCE_BYTES = 32;
const TCP_KEEPALIVE_DELAY_MS = 2000;
/** TLS-PSK on the link: one identity (every node holds the same secret) and ECDHE-PSK with ChaCha20-Poly1305 (Node offers PSK with TLS 1.2 only). */
const LINK_PSK_IDENTITY = 'cairn-repl-v1';
const LINK_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305';

/** The link's pre-shared key: HKDF-SHA256 of the cluster secret (the HMAC proofs use the secret itself). */
function linkKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'cairn-repl-link', 'cairn-repl-v1 tls-psk', 32));
}

export type TransportLog = (event: string, fields: Record<string, unknown>) => void;

export interface TcpTransportOptions {
  /** This node's name (sent in the hello; the peer's handler sees it as `from`). */
  self: string;
  listen: { host: string; port: number };
  /** host:port of a peer's replication port (looked up at each connect). */
  addressOf: AddressBook;
  /** Shared by every node: strangers without it cannot open a connection either way. */
  clusterSecret?: string;
  /** With a cluster secret: run the link inside TLS-PSK (default true; false keeps plain TCP with the HMAC proofs). */
  encrypt?: boolean;
  log?: TransportLog;
}

type Handler = (from: string, request: ReplRequest) => Promise<ReplReply>;

interface Hello { node: string; nonce: string; proof?: string }

function proofOf(secret: string, role: 'server' | 'client', firstNonce: string, secondNonce: string, from: string, to: string): string {
  return createHmac('sha256', secret).update(`cairn-repl-v1\n${role}\n${firstNonce}\n${secondNonce}\n${from}\n${to}`).digest('hex');
}

function proofMatches(expected: string, got: unknown): boolean {
  if (typeof got !== 'string' || got.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(expected), Buffer.from(got));
}

function parseHello(message: unknown): Hello {
  const m = message as Partial<Hello> | null;
  if (!m || typeof m.node !== 'string' || m.node.length === 0 || Buffer.byteLength(m.node) > NODE_NAME_BYTES_MAX ||
    typeof m.nonce !== 'string' || !/^[0-9a-f]+$/.test(m.nonce) || m.nonce.length !== NONCE_BYTES * 2) {
    throw new FrameError('malformed hello');
  }
  return { node: m.node, nonce: m.nonce, ...(typeof m.proof === 'string' ? { proof: m.proof } : {}) };
}

function errorText(error: unknown): string { return error instanceof Error ? error.message : String(error); }

const corked = new WeakSet<net.Socket>();

/** Writes a frame's buffers; every frame written in the same tick leaves in one writev. */
function writeBuffers(socket: net.Socket, buffers: Buffer[]): void {
  if (!corked.has(socket)) {
    corked.add(socket);
    socket.cork();
    process.nextTick(() => { corked.delete(socket); socket.uncork(); });
  }
  for (const b of buffers) socket.write(b);
}

function writeFrame(socket: net.Socket, kind: FrameKindValue, requestId: number, message: unknown): void {
  writeBuffers(socket, encodeFrame(kind, requestId, message));
}

function splitAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new TransportError(`bad replication address "${address}"`);
  return { host, port };
}

interface Pending {
  resolve(reply: ReplReply): void;
  reject(error: TransportError): void;
  timer: NodeJS.Timeout;
  sentMs: number;
}

/** The outbound connection to one peer: its handshake, its requests in flight. */
class PeerConnection {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private lastReceivedMs = 0;
  private closed = false;
  /** Resolves once the hello exchange is done (requests wait for it). */
  readonly ready: Promise<void>;

  constructor(
    private readonly socket: net.Socket,
    private readonly peer: string,
    private readonly owner: TcpTransport,
    self: string,
    secret: string | undefined,
    private readonly onClose: (conn: PeerConnection) => void,
  ) {
    const nonce = randomBytes(NONCE_BYTES).toString('hex');
    const decoder = new FrameDecoder();
    let handshakeDone = false;
    let settleReady!: (error?: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      settleReady = (error) => (error ? reject(error) : resolve());
    });
    this.ready.catch(() => undefined); // (the requests waiting on it report the failure)
    const handshakeTimer = setTimeout(() => this.fail(new TransportError(`${peer}: no hello within ${HANDSHAKE_TIMEOUT_MS} ms`)), HANDSHAKE_TIMEOUT_MS);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
    socket.on(socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect', () => writeFrame(socket, FrameKind.hello, 0, { node: self, nonce }));
    socket.on('data', (chunk: Buffer) => {
      this.lastReceivedMs = Date.now();
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        this.fail(new TransportError(`${peer}: bad frame: ${errorText(error)}`));
        return;
      }
      for (const frame of frames) {
        if (this.closed) return;
        if (!handshakeDone) {
          try {
            const hello = frame.kind === FrameKind.hello ? parseHello(frame.message) : null;
            if (!hello) throw new FrameError(`expected a hello, got frame kind ${frame.kind}`);
            if (hello.node !== peer) throw new FrameError(`the node at this address is "${hello.node}", not "${peer}"`);
            if (secret !== undefined && !proofMatches(proofOf(secret, 'server', nonce, hello.nonce, peer, self), hello.proof)) {
              throw new FrameError('the peer did not prove the cluster secret');
            }
            const proof = secret === undefined ? undefined : proofOf(secret, 'client', hello.nonce, nonce, self, peer);
            writeFrame(socket, FrameKind.auth, 0, proof === undefined ? {} : { proof });
            handshakeDone = true;
            clearTimeout(handshakeTimer);
            settleReady();
          } catch (error) {
            this.fail(new TransportError(`${peer}: handshake failed: ${errorText(error)}`));
            return;
          }
          continue;
        }
        if (frame.kind !== FrameKind.reply) {
          this.fail(new TransportError(`${peer}: unexpected frame kind ${frame.kind}`));
          return;
        }
        const problem = replyProblem(frame.message);
        if (problem !== null) {
          this.fail(new TransportError(`${peer}: malformed reply: ${problem}`));
          return;
        }
        const p = this.pending.get(frame.requestId);
        if (!p) continue; // a reply after its request timed out: the caller has moved on
        this.pending.delete(frame.requestId);
        clearTimeout(p.timer);
        p.resolve(frame.message as ReplReply);
      }
    });
    let secured = !(socket instanceof tls.TLSSocket);
    if (!secured) socket.once('secureConnect', () => { secured = true; });
    socket.on('error', (error) => this.fail(new TransportError(secured ? `${peer}: ${error.message}`
      : `${peer}: TLS handshake failed (does it hold the same cluster secret?): ${error.message}`)));
    socket.on('close', () => {
      clearTimeout(handshakeTimer);
      this.fail(new TransportError(`${peer}: connection closed`));
      settleReady(new TransportError(`${peer}: connection closed before the hello`));
    });
  }

  get isClosed(): boolean { return this.closed; }

  async request(request: ReplRequest, timeoutMs: number, startedMs: number): Promise<ReplReply> {
    let frame: Buffer[];
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    try {
      frame = encodeFrame(FrameKind.request, id, request);
    } catch (error) {
      throw new TransportError(`${this.peer}: request not sent: ${errorText(error)}`);
    }
    return await new Promise<ReplReply>((resolve, reject) => {
      const remainingMs = Math.max(0, timeoutMs - (Date.now() - startedMs));
      const timer = setTimeout(() => this.timeout(id, timeoutMs), remainingMs);
      this.pending.set(id, { resolve, reject, timer, sentMs: Date.now() });
      this.ready.then(() => {
        if (this.closed || !this.pending.has(id)) return;
        writeBuffers(this.socket, frame);
      }, () => {
        // The connection failed before the hello: fail() rejected this request and logged why.
      });
    });
  }

  private timeout(id: number, timeoutMs: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.reject(new TransportError(`${this.peer}: no reply within ${timeoutMs} ms`));
    // Nothing heard on the connection since this request went out: treat it as dead, so the next
    // request dials again instead of queueing behind a half-open socket.
    if (this.lastReceivedMs < p.sentMs) this.fail(new TransportError(`${this.peer}: connection silent for ${timeoutMs} ms`));
  }

  fail(error: TransportError): void {
    if (this.closed) return;
    this.closed = true;
    this.owner.logEvent('repl_connection_lost', { peer: this.peer, error: error.message, requestsFailed: this.pending.size });
    this.socket.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    this.onClose(this);
  }
}

export class TcpTransport implements Transport {
  private readonly server: net.Server;
  private readonly peers = new Map<string, PeerConnection>();
  private readonly inbound = new Set<net.Socket>();
  private handler: Handler | null = null;
  private closed = false;
  private readonly log: TransportLog;
  /** The link's TLS-PSK key (null: plain TCP). */
  private readonly pskKey: Buffer | null;

  constructor(private readonly options: TcpTransportOptions) {
    if (options.self.length === 0) throw new Error('TcpTransport: empty node name');
    this.log = options.log ?? (() => undefined);
    this.pskKey = options.clusterSecret !== undefined && options.encrypt !== false ? linkKey(options.clusterSecret) : null;
    const key = this.pskKey;
    if (key === null) {
      this.server = net.createServer((socket) => this.accept(socket));
    } else {
      this.server = tls.createServer({
        pskCallback: (_socket, identity) => (identity === LINK_PSK_IDENTITY ? key : null),
        ciphers: LINK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      }, (socket) => this.accept(socket));
      // A stranger without the secret fails here, before any frame is read.
      this.server.on('tlsClientError', (error, socket) => this.log('repl_connection_dropped', { remote: `${socket.remoteAddress}:${socket.remotePort}`, peer: null, reason: `tls: ${error.message}` }));
      // accept() counts connections once their handshake is done; these bound the ones still in it (a handshake costs the server work).
      this.server.maxConnections = CONNECTIONS_INBOUND_MAX;
    }
  }

  /** Starts listening; resolves with the port (useful with port 0). */
  async start(): Promise<{ port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.listen.port, this.options.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address();
    return { port: typeof address === 'object' && address ? address.port : this.options.listen.port };
  }

  serve(handler: Handler): void { this.handler = handler; }

  /** @internal */
  logEvent(event: string, fields: Record<string, unknown>): void { this.log(event, fields); }

  async request(to: string, request: ReplRequest, timeoutMs: number): Promise<ReplReply> {
    const startedMs = Date.now();
    if (this.closed) throw new TransportError('transport closed');
    let conn = this.peers.get(to);
    if (!conn || conn.isClosed) {
      conn = this.connect(to);
      this.peers.set(to, conn);
    }
    return await conn.request(request, timeoutMs, startedMs);
  }

  private connect(to: string): PeerConnection {
    const address = this.options.addressOf(to);
    if (address === null) throw new TransportError(`no replication address known for node "${to}"`);
    const { host, port } = splitAddress(address);
    const key = this.pskKey;
    const socket = key === null ? net.connect({ host, port }) : tls.connect({
      host, port, ciphers: LINK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
      pskCallback: () => ({ identity: LINK_PSK_IDENTITY, psk: key }),
      // No certificate in a PSK handshake: the key is the peer's proof (and the HMAC hello names the node).
      checkServerIdentity: () => undefined,
    });
    return new PeerConnection(socket, to, this, this.options.self, this.options.clusterSecret, (c) => {
      if (this.peers.get(to) === c) this.peers.delete(to);
    });
  }

  /** An inbound connection: hello (and proof), then requests served concurrently. */
  private accept(socket: net.Socket): void {
    if (this.closed) { socket.destroy(); return; }
    if (this.inbound.size >= CONNECTIONS_INBOUND_MAX) {
      this.log('repl_connection_refused', { remote: `${socket.remoteAddress}:${socket.remotePort}`, reason: `${CONNECTIONS_INBOUND_MAX} connections open` });
      socket.destroy();
      return;
    }
    this.inbound.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
    const secret = this.options.clusterSecret;
    const self = this.options.self;
    const decoder = new FrameDecoder();
    const nonce = randomBytes(NONCE_BYTES).toString('hex');
    let peer: Hello | null = null;
    let authenticated = false;
    let inflight = 0;
    const drop = (reason: string): void => {
      this.log('repl_connection_dropped', { remote: `${socket.remoteAddress}:${socket.remotePort}`, peer: peer?.node ?? null, reason });
      socket.destroy();
    };
    const handshakeTimer = setTimeout(() => { if (!authenticated) drop('no hello in time'); }, HANDSHAKE_TIMEOUT_MS);
    socket.on('close', () => { clearTimeout(handshakeTimer); this.inbound.delete(socket); });
    socket.on('error', (error) => this.log('repl_connection_error', { peer: peer?.node ?? null, error: error.message }));
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (error) {
        drop(errorText(error));
        return;
      }
      for (const frame of frames) {
        if (socket.destroyed) return;
        try {
          if (peer === null) {
            if (frame.kind !== FrameKind.hello) throw new FrameError(`expected a hello, got frame kind ${frame.kind}`);
            peer = parseHello(frame.message);
            const proof = secret === undefined ? undefined : proofOf(secret, 'server', peer.nonce, nonce, self, peer.node);
            writeFrame(socket, FrameKind.hello, 0, { node: self, nonce, ...(proof === undefined ? {} : { proof }) });
            continue;
          }
          if (!authenticated) {
            if (frame.kind !== FrameKind.auth) throw new FrameError(`expected the auth frame, got kind ${frame.kind}`);
            const got = (frame.message as { proof?: unknown } | null)?.proof;
            if (secret !== undefined && !proofMatches(proofOf(secret, 'client', nonce, peer.nonce, peer.node, self), got)) {
              throw new FrameError(`"${peer.node}" did not prove the cluster secret`);
            }
            authenticated = true;
            clearTimeout(handshakeTimer);
            continue;
          }
          if (frame.kind !== FrameKind.request) throw new FrameError(`unexpected frame kind ${frame.kind}`);
        } catch (error) {
          drop(errorText(error));
          return;
        }
        inflight++;
        if (inflight >= REQUESTS_INBOUND_INFLIGHT_MAX) socket.pause();
        void this.handle(peer.node, frame).then((reply) => {
          inflight--;
          if (inflight < REQUESTS_INBOUND_INFLIGHT_MAX && socket.isPaused()) socket.resume();
          if (socket.destroyed) return;
          try {
            writeFrame(socket, FrameKind.reply, frame.requestId, reply);
          } catch (error) {
            // A reply over the frame bounds (or not JSON): the sender gets an error reply, not silence.
            writeFrame(socket, FrameKind.reply, frame.requestId, { ok: false, code: 'reply_unencodable', message: errorText(error) });
          }
        });
      }
    });
  }

  private async handle(from: string, frame: Frame): Promise<ReplReply> {
    const handler = this.handler;
    if (!handler) return { ok: false, code: 'not_serving', message: `node "${this.options.self}" serves no replication requests yet` };
    const problem = requestProblem(frame.message);
    if (problem !== null) return { ok: false, code: 'bad_request', message: problem };
    try {
      return await handler(from, frame.message as ReplRequest);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      return { ok: false, code: typeof code === 'string' ? code : 'internal', message: errorText(error) };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const conn of this.peers.values()) conn.fail(new TransportError('transport closed'));
    this.peers.clear();
    for (const socket of this.inbound) socket.destroy();
    this.inbound.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
