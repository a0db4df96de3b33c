// A small NBD client (proto.md): fixed newstyle handshake with NBD_OPT_GO (after NBD_OPT_STARTTLS and a
// TLS-PSK handshake when given a key), then transmission with simple replies and many requests in
// flight, matched by cookie. The cluster's NBD forwarder uses it
// to relay a client's requests to the volume's primary node. Simple replies only: a READ's reply is
// its header and exactly the requested bytes, so the stream needs no chunk parsing.
import net from 'node:net';
import tls from 'node:tls';
import * as c from './constants.js';
import { pskCiphers } from './tls.js';

/** A TLS-PSK credential (an NBD key: identity and key bytes) the client proves itself with. */
export interface NbdClientPsk { identity: string; key: Buffer }

/** How long connect + handshake may take before the attempt fails. */
export const CLIENT_CONNECT_MS_MAX = 5000;
/** Requests one client keeps in flight; more wait for a slot (bounded memory on both sides). */
export const CLIENT_REQUESTS_IN_FLIGHT_MAX = 128;
/** Longest export name it sends (proto.md: at most 4096 bytes). */
const EXPORT_NAME_BYTES_MAX = 4096;
/** Option replies the handshake reads before it gives up on a server that never ends GO. */
const OPTION_REPLIES_MAX = 64;
/** Largest option reply payload it accepts (INFO replies are tiny; an error message is text). */
const OPTION_REPLY_BYTES_MAX = 64 * 1024;

export class NbdClientError extends Error {
  /** The NBD error number of a failed request (0 for a connection or protocol failure). */
  constructor(message: string, readonly errorNumber = 0) { super(message); this.name = 'NbdClientError'; }
}

export interface NbdClientExport { sizeBytes: number; flags: number }

interface Pending {
  /** Bytes of data the reply carries after its header (a READ's length; 0 otherwise). */
  readBytes: number;
  resolve(data: Buffer | null): void;
  reject(error: Error): void;
}

/** A byte queue over socket chunks: take exactly n bytes once they are there. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;
  push(chunk: Buffer): void { this.chunks.push(chunk); this.length += chunk.length; }
  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0]!;
      const used = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, used);
      filled += used;
      if (used === head.length) this.chunks.shift(); else this.chunks[0] = head.subarray(used);
    }
    this.length -= n;
    return out;
  }
}

export class NbdClient {
  private readonly queue = new ByteQueue();
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private waiting: { bytes: number; resolve: () => void } | null = null;
  /** The reply header whose data has not all arrived yet. */
  private current: { cookie: bigint; error: number; pending: Pending } | null = null;
  private slotWaiters: Array<() => void> = [];
  private failure: Error | null = null;
  /** False during the handshake (bytes wait for readExactly), true once replies are parsed as they come. */
  private transmitting = false;
  private closedResolve!: () => void;
  /** Settles when the connection is gone (any reason); every request then fails. */
  readonly closed: Promise<void> = new Promise((resolve) => { this.closedResolve = resolve; });
  export: NbdClientExport = { sizeBytes: 0, flags: 0 };

  private constructor(private socket: net.Socket) {
    socket.setNoDelay(true);
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onDataBound);
    socket.on('error', this.onErrorBound);
    socket.on('close', this.onCloseBound);
  }

  private detach(socket: net.Socket): void {
    socket.off('data', this.onDataBound);
    socket.off('error', this.onErrorBound);
    socket.off('close', this.onCloseBound);
  }

  private readonly onDataBound = (chunk: Buffer): void => this.onData(chunk);
  private readonly onErrorBound = (error: Error): void => this.fail(new NbdClientError(`connection to the NBD server failed: ${error.message}`));
  private readonly onCloseBound = (): void => this.fail(new NbdClientError('the NBD server closed the connection'));

  /** Connects to host:port and opens `name` with NBD_OPT_GO (over TLS-PSK first when `psk` is given). */
  static async open(host: string, port: number, name: string, timeoutMs = CLIENT_CONNECT_MS_MAX, psk: NbdClientPsk | null = null): Promise<NbdClient> {
    if (Buffer.byteLength(name) > EXPORT_NAME_BYTES_MAX) throw new NbdClientError('export name too long');
    const socket = net.connect({ host, port });
    const client = new NbdClient(socket);
    const timer = setTimeout(() => client.fail(new NbdClientError(`no NBD handshake with ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    try {
      await client.handshake(name, psk);
      return client;
    } catch (error) {
      client.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  get failed(): boolean { return this.failure !== null; }

  read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    return this.request(c.NBD_CMD_READ, 0, offsetBytes, lengthBytes, null, lengthBytes) as Promise<Buffer>;
  }
  async write(offsetBytes: number, data: Buffer | readonly Buffer[], fua: boolean): Promise<void> {
    const length = Buffer.isBuffer(data) ? data.length : data.reduce((n, b) => n + b.length, 0);
    await this.request(c.NBD_CMD_WRITE, fua ? c.NBD_CMD_FLAG_FUA : 0, offsetBytes, length, data, 0);
  }
  async trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    await this.request(c.NBD_CMD_TRIM, fua ? c.NBD_CMD_FLAG_FUA : 0, offsetBytes, lengthBytes, null, 0);
  }
  async writeZeroes(offsetBytes: number, lengthBytes: number, fua: boolean, noHole: boolean): Promise<void> {
    const flags = (fua ? c.NBD_CMD_FLAG_FUA : 0) | (noHole ? c.NBD_CMD_FLAG_NO_HOLE : 0);
    await this.request(c.NBD_CMD_WRITE_ZEROES, flags, offsetBytes, lengthBytes, null, 0);
  }
  async flush(): Promise<void> { await this.request(c.NBD_CMD_FLUSH, 0, 0, 0, null, 0); }

  /** NBD_CMD_DISC (proto.md: the server finishes what is in flight), then the socket closes. */
  close(): void {
    if (this.failure === null && this.socket.writable) {
      this.socket.end(requestHeader(c.NBD_CMD_DISC, 0, 0n, 0, 0));
    }
    this.fail(new NbdClientError('closed'));
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private async request(type: number, flags: number, offsetBytes: number, lengthBytes: number, payload: Buffer | readonly Buffer[] | null, readBytes: number): Promise<Buffer | null> {
    while (this.pending.size >= CLIENT_REQUESTS_IN_FLIGHT_MAX && this.failure === null) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    if (this.failure !== null) throw this.failure;
    const cookie = this.nextCookie++;
    return new Promise<Buffer | null>((resolve, reject) => {
      this.pending.set(cookie, { readBytes, resolve, reject });
      const header = requestHeader(type, flags, cookie, offsetBytes, lengthBytes);
      if (payload === null) { this.socket.write(header); return; }
      this.socket.cork();
      this.socket.write(header);
      for (const piece of Buffer.isBuffer(payload) ? [payload] : payload) this.socket.write(piece);
      this.socket.uncork();
    });
  }

  private onData(chunk: Buffer): void {
    this.queue.push(chunk);
    if (this.transmitting) { this.parseReplies(); return; }
    if (this.waiting !== null && this.queue.length >= this.waiting.bytes) { const w = this.waiting; this.waiting = null; w.resolve(); }
  }

  /** Transmission: simple reply headers, each followed by a READ's data when it succeeded. */
  private parseReplies(): void {
    for (;;) {
      if (this.current === null) {
        if (this.queue.length < c.SIMPLE_REPLY_HEADER_BYTES) return;
        const header = this.queue.take(c.SIMPLE_REPLY_HEADER_BYTES);
        if (header.readUInt32BE(0) !== c.NBD_SIMPLE_REPLY_MAGIC) {
          this.fail(new NbdClientError(`bad reply magic 0x${header.readUInt32BE(0).toString(16)}`));
          return;
        }
        const cookie = header.readBigUInt64BE(8);
        const pending = this.pending.get(cookie);
        if (pending === undefined) { this.fail(new NbdClientError(`reply for unknown cookie ${cookie}`)); return; }
        this.current = { cookie, error: header.readUInt32BE(4), pending };
      }
      const { cookie, error, pending } = this.current;
      // proto.md: a failed READ's simple reply carries no data.
      const dataBytes = error === 0 ? pending.readBytes : 0;
      if (this.queue.length < dataBytes) return;
      const data = dataBytes > 0 ? this.queue.take(dataBytes) : null;
      this.current = null;
      this.pending.delete(cookie);
      this.slotWaiters.shift()?.();
      if (error !== 0) pending.reject(new NbdClientError(`the NBD server answered error ${error}`, error));
      else pending.resolve(data ?? (pending.readBytes === 0 ? null : Buffer.alloc(0)));
    }
  }

  private fail(error: Error): void {
    if (this.failure !== null) return;
    this.failure = error;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    for (const wake of this.slotWaiters.splice(0)) wake();
    if (this.waiting !== null) { const w = this.waiting; this.waiting = null; w.resolve(); }
    this.socket.destroy();
    this.closedResolve();
  }

  private async readExactly(n: number): Promise<Buffer> {
    if (this.queue.length < n) {
      if (this.failure !== null) throw this.failure;
      await new Promise<void>((resolve) => { this.waiting = { bytes: n, resolve }; });
      if (this.queue.length < n) throw this.failure ?? new NbdClientError('connection closed');
    }
    return this.queue.take(n);
  }

  private writeOption(option: number, data: Buffer): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(c.IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([header, data]));
  }

  /** One option reply: its type and data (bounded). */
  private async readOptionReply(): Promise<{ type: number; data: Buffer }> {
    const header = await this.readExactly(20);
    if (header.readBigUInt64BE(0) !== c.OPTION_REPLY_MAGIC) throw new NbdClientError('bad option reply magic');
    const type = header.readUInt32BE(12);
    const length = header.readUInt32BE(16);
    if (length > OPTION_REPLY_BYTES_MAX) throw new NbdClientError(`option reply of ${length} bytes`);
    return { type, data: await this.readExactly(length) };
  }

  /** NBD_OPT_STARTTLS, then a TLS-PSK handshake on the same socket (proto.md "TLS support"). */
  private async startTls(psk: NbdClientPsk): Promise<void> {
    this.writeOption(c.NBD_OPT_STARTTLS, Buffer.alloc(0));
    const reply = await this.readOptionReply();
    if (reply.type !== c.NBD_REP_ACK) throw new NbdClientError(`the NBD server refused STARTTLS: ${reply.data.toString('utf8') || `error 0x${reply.type.toString(16)}`}`);
    if (this.queue.length !== 0) throw new NbdClientError('data after the STARTTLS acknowledgement');
    const raw = this.socket;
    this.detach(raw);
    const secure = tls.connect({
      socket: raw, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: pskCiphers,
      pskCallback: () => ({ identity: psk.identity, psk: psk.key }),
      // PSK proves both ends: there is no certificate to check.
      checkServerIdentity: () => undefined,
    });
    this.socket = secure;
    this.attach(secure);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      void this.closed.then(() => reject(this.failure ?? new NbdClientError('TLS handshake failed')));
    });
  }

  private async handshake(name: string, psk: NbdClientPsk | null): Promise<void> {
    const greeting = await this.readExactly(18);
    if (greeting.readBigUInt64BE(0) !== c.NBDMAGIC || greeting.readBigUInt64BE(8) !== c.IHAVEOPT) throw new NbdClientError('not a newstyle NBD server');
    const serverFlags = greeting.readUInt16BE(16);
    if ((serverFlags & c.NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new NbdClientError('the NBD server does not speak fixed newstyle');
    const clientFlags = Buffer.alloc(4);
    // NO_ZEROES only without TLS (proto.md: a client that uses TLS should not set it; nothing here needs it).
    clientFlags.writeUInt32BE(c.NBD_FLAG_C_FIXED_NEWSTYLE | (psk === null && serverFlags & c.NBD_FLAG_NO_ZEROES ? c.NBD_FLAG_C_NO_ZEROES : 0));
    this.socket.write(clientFlags);
    if (psk !== null) await this.startTls(psk);
    const nameBytes = Buffer.from(name, 'utf8');
    const go = Buffer.alloc(4 + nameBytes.length + 2);
    go.writeUInt32BE(nameBytes.length, 0);
    nameBytes.copy(go, 4);
    go.writeUInt16BE(0, 4 + nameBytes.length); // no information requests: NBD_INFO_EXPORT always comes
    this.writeOption(c.NBD_OPT_GO, go);
    let gotExport = false;
    for (let i = 0; i < OPTION_REPLIES_MAX; i++) {
      const { type, data } = await this.readOptionReply();
      if (type === c.NBD_REP_ACK) {
        if (!gotExport) throw new NbdClientError('GO acknowledged without NBD_INFO_EXPORT');
        this.transmitting = true;
        this.parseReplies();
        return;
      }
      if (type === c.NBD_REP_INFO && data.length >= 12 && data.readUInt16BE(0) === c.NBD_INFO_EXPORT) {
        this.export = { sizeBytes: Number(data.readBigUInt64BE(2)), flags: data.readUInt16BE(10) };
        gotExport = true;
        continue;
      }
      if ((type & 0x80000000) !== 0) throw new NbdClientError(`the NBD server refused export ${JSON.stringify(name)}: ${data.toString('utf8') || `error 0x${type.toString(16)}`}`);
    }
    throw new NbdClientError('too many option replies');
  }
}

function requestHeader(type: number, flags: number, cookie: bigint, offsetBytes: number, lengthBytes: number): Buffer {
  const header = Buffer.allocUnsafe(c.REQUEST_HEADER_BYTES);
  header.writeUInt32BE(c.NBD_REQUEST_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(cookie, 8);
  header.writeBigUInt64BE(BigInt(offsetBytes), 16);
  header.writeUInt32BE(lengthBytes, 24);
  return header;
}
