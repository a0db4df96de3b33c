// One NVMe/TCP connection = one queue (admin or I/O). Owns the socket, the receive queue and the
// reply writer; frames PDUs (every length checked against a bound before it is waited for), checks
// digests, keeps the command slots (TTAG = slot index) and the R2T flow of host data, and sends
// C2HData and CapsuleResp. What a command does is decided by its queue: fabrics.ts before and at
// Connect, controller.ts for the admin queue, io.ts for I/O queues. Protocol errors get a
// C2HTermReq, then the connection closes (NVMe/TCP 1.0 "Transport Errors").
import type net from 'node:net';
import { crc32c } from '@node-rs/crc32';
import * as c from './constants.js';
import { RecvQueue } from '../nbd/recv-queue.js';
import { ReplyWriter } from '../nbd/reply-writer.js';
import type { ReadBufferPool } from '../nbd/read-buffers.js';
import { socketReadingIntoSlabs, type Slab, type SlabPool } from '../nbd/recv-slabs.js';
import { c2hDataHeaderInto, c2hTermReq, capsuleRespInto, crc32cOf, hostHeaderBytes, icResp, r2tInto, smallPduBytes } from './pdu.js';
import { nvmeStatus as status, SCT_GENERIC, SC_COMMAND_SEQUENCE_ERROR, SC_INVALID_FIELD, SC_SGL_INVALID_DATA_LENGTH, SC_SGL_INVALID_TYPE,
  SC_TRANSIENT_TRANSPORT_ERROR } from './status.js';

/** One command in flight; slots are made once per connection and reused (no allocation per command). */
export interface Command {
  readonly index: number;
  busy: boolean;
  readonly sqe: Buffer;
  cid: number;
  /** Bytes the SGL describes: host data to receive, or the most data to send back. */
  dataBytes: number;
  /** Host data (views of the receive queue), once complete. */
  data: Buffer[];
  receivedBytes: number;
  /** An R2T for the data went out: H2CData for it is expected (and only then). */
  r2tSent: boolean;
  digestError: boolean;
  /** Receive slabs the data views sit in, released with the slot (the engine is done with the data by then). */
  readonly pins: Slab[];
}

/** What a connection asks of its queue's owner. */
export interface QueueHandler {
  /** Whether the command moves data from the host (its opcode's direction bits, fabrics by FCTYPE). */
  hostToController(sqe: Buffer): boolean;
  execute(connection: NvmfConnection, command: Command): void;
  /** The connection closed (or was closed). */
  closed(connection: NvmfConnection): void;
}

export interface ConnectionOptions {
  /** The handler until Connect (fabrics.ts): it replaces itself with the queue's own. */
  handler: QueueHandler;
  readBuffers: ReadBufferPool;
  /** Socket reads land in these (recv-slabs.ts), for as many connections as the pool has readers. */
  slabs: SlabPool;
  log(event: string, fields: Record<string, unknown>): void;
}

/** A data transfer direction: opcode bits 1..0 (01 host to controller), NVMe base "Opcodes". */
export function opcodeHostToController(opcode: number): boolean { return (opcode & 3) === 1; }

export class NvmfConnection {
  private readonly recv = new RecvQueue(c.HEADER_BYTES_MAX + c.DIGEST_BYTES);
  private readonly writer: ReplyWriter;
  private slots: Command[] = [];
  private freeSlots: number[] = [];
  private slotsMax = c.ADMIN_QUEUE_ENTRIES_MAX;
  private icDone = false;
  private stopped = false;
  private idleTimer: NodeJS.Timeout | null;
  private r2tBytesInFlight = 0;
  /**
   * Small PDUs are encoded one after the other in the arena; [arenaSentBytes, arenaUsedBytes) is not
   * yet handed to the socket. It goes as one buffer at the end of the round (setImmediate) or before a
   * data buffer, so the byte order on the wire is the order of sending.
   */
  private arena = Buffer.allocUnsafeSlow(c.SEND_ARENA_BYTES);
  private arenaSentBytes = 0;
  private arenaUsedBytes = 0;
  private arenaFlushScheduled = false;
  private readonly arenaFlushBound = (): void => { this.arenaFlushScheduled = false; this.pushArena(); this.writer.flush(); };
  private pausedForSends = false;
  /** Read data being read or sent, and reads waiting for room under READ_BYTES_IN_FLIGHT_MAX (io.ts). */
  readBytesInFlight = 0;
  readonly readsWaiting: (() => void)[] = [];
  private readonly r2tWaiting: Command[] = [];
  private inFlight = 0;
  private drainWaiter: (() => void) | null = null;
  headerDigest = false;
  dataDigest = false;
  /** Set at Connect. */
  qid = -1;
  sqEntries = 0;
  private sqhd = 0;
  /** Connect CATTR: SQ flow control disabled by the host, so C2HData may carry SUCCESS. */
  sqFlowDisabled = false;
  inCapsuleBytesMax = c.ADMIN_IN_CAPSULE_BYTES;
  handler: QueueHandler;
  readonly peer: string;
  /** The address the host reached us at (the discovery log's traddr when the listener is a wildcard). */
  readonly localAddress: string;
  readonly readBuffers: ReadBufferPool;
  private isClosed = false;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  private readonly socket: net.Socket;

  /** `accepted` comes paused (pauseOnConnect), so no byte is read before the slabs are set up. */
  constructor(accepted: net.Socket, private readonly opts: ConnectionOptions) {
    const reader = opts.slabs.tryReader();
    const adopted = reader ? socketReadingIntoSlabs(accepted, reader, (chunk, slab) => { this.recv.push(chunk, slab); this.pump(); }) : null;
    if (reader && !adopted) reader.close();
    const socket = adopted ?? accepted;
    this.socket = socket;
    if (adopted === null) {
      socket.on('data', (chunk: Buffer) => { this.recv.push(chunk); this.pump(); });
      socket.resume();
    }
    this.handler = opts.handler;
    this.readBuffers = opts.readBuffers;
    this.closed = new Promise((resolve) => { this.resolveClosed = resolve; });
    this.peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unknown';
    this.localAddress = socket.localAddress ?? '127.0.0.1';
    this.writer = new ReplyWriter(socket);
    socket.setNoDelay(true);
    socket.on('error', (error: Error) => { this.opts.log('nvmf_socket_error', { peer: this.peer, error: error.message }); socket.destroy(); });
    socket.on('close', () => this.onClose());
    socket.on('drain', () => {
      if (this.pausedForSends && !this.stopped) { this.pausedForSends = false; this.socket.resume(); }
      if (!this.stopped) this.pump();
    });
    // ICReq and Connect must come soon: a connection that never speaks holds nothing for long.
    this.idleTimer = setTimeout(() => this.hangUp('no Connect in time'), c.CONNECT_IDLE_MS_MAX);
    this.idleTimer.unref();
  }

  /** Connect accepted: the queue's size and handler are known now. */
  connected(qid: number, sqEntries: number, handler: QueueHandler, inCapsuleBytesMax: number): void {
    this.qid = qid;
    this.sqEntries = sqEntries;
    this.slotsMax = sqEntries;
    this.handler = handler;
    this.inCapsuleBytesMax = inCapsuleBytesMax;
    if (this.idleTimer) { clearTimeout(this.idleTimer); this.idleTimer = null; }
  }

  get commandsInFlight(): number { return this.inFlight; }

  /** Parses every complete PDU buffered. */
  private pump(): void {
    while (!this.stopped) {
      // A host that does not read our PDUs does not get more work done for it meanwhile.
      if (this.socket.writableLength > c.SEND_BYTES_QUEUED_MAX) {
        this.pausedForSends = true;
        this.socket.pause();
        return;
      }
      if (this.recv.length < c.COMMON_HEADER_BYTES) return;
      const [head, at] = this.recv.peek(c.COMMON_HEADER_BYTES);
      const type = head[at]!;
      const flags = head[at + 1]!;
      const hlen = head[at + 2]!;
      const pdo = head[at + 3]!;
      const plen = head.readUInt32LE(at + 4);
      const expectedHlen = hostHeaderBytes(type);
      if (expectedHlen === null) { this.fatal(c.FES_INVALID_HEADER_FIELD, 0, 'unknown PDU type'); return; }
      if (hlen !== expectedHlen) { this.fatal(c.FES_INVALID_HEADER_FIELD, 2, 'bad HLEN'); return; }
      if ((type === c.PDU_IC_REQ) === this.icDone) { this.fatal(c.FES_PDU_SEQUENCE_ERROR, 0, 'ICReq out of sequence'); return; }
      const digested = type !== c.PDU_IC_REQ && type !== c.PDU_H2C_TERM_REQ && this.headerDigest;
      const headerBytes = hlen + (digested ? c.DIGEST_BYTES : 0);
      const limit = this.plenMax(type, headerBytes);
      if (plen < headerBytes || plen > limit) {
        this.fatal(plen > limit && type !== c.PDU_IC_REQ ? c.FES_DATA_LIMIT_EXCEEDED : c.FES_INVALID_HEADER_FIELD, 4, `PLEN ${plen} outside [${headerBytes}, ${limit}]`);
        return;
      }
      if (this.recv.length < plen) return;
      const [header, hat] = this.recv.peek(headerBytes);
      if (digested && ((flags & c.FLAG_HDGST) === 0 || crc32c(header.subarray(hat, hat + hlen)) !== header.readUInt32LE(hat + hlen))) {
        this.fatal(c.FES_HEADER_DIGEST_ERROR, 0, 'header digest');
        return;
      }
      switch (type) {
        case c.PDU_IC_REQ: this.onIcReq(header, hat); break;
        case c.PDU_H2C_TERM_REQ: this.hangUp(`host terminated: FES ${header.readUInt16LE(hat + 8)}`); return;
        case c.PDU_CAPSULE_CMD: if (!this.onCapsule(header, hat, flags, pdo, plen, headerBytes)) return; break;
        case c.PDU_H2C_DATA: if (!this.onH2CData(header, hat, flags, pdo, plen, headerBytes)) return; break;
      }
    }
  }

  private plenMax(type: number, headerBytes: number): number {
    const dd = this.dataDigest ? c.DIGEST_BYTES : 0;
    switch (type) {
      case c.PDU_IC_REQ: return c.IC_HEADER_BYTES;
      case c.PDU_CAPSULE_CMD: return headerBytes + this.inCapsuleBytesMax + dd;
      case c.PDU_H2C_DATA: return headerBytes + c.MAXH2CDATA_BYTES + dd;
      default: return headerBytes + c.TERM_REQ_DATA_BYTES_MAX;
    }
  }

  private onIcReq(header: Buffer, at: number): void {
    const pfv = header.readUInt16LE(at + 8);
    const hpda = header[at + 10]!;
    const dgst = header[at + 11]!;
    this.recv.skip(c.IC_HEADER_BYTES);
    if (pfv !== c.PFV) { this.fatal(c.FES_INVALID_HEADER_FIELD, 8, `PFV ${pfv}`); return; }
    // HPDA > 0 would ask us to pad our data PDUs; Linux and SPDK hosts send 0, so only 0 is offered.
    if (hpda !== 0) { this.fatal(c.FES_INVALID_HEADER_FIELD, 10, `HPDA ${hpda}`); return; }
    this.headerDigest = (dgst & c.DGST_HEADER) !== 0;
    this.dataDigest = (dgst & c.DGST_DATA) !== 0;
    this.icDone = true;
    this.sendBuffer(icResp(dgst & (c.DGST_HEADER | c.DGST_DATA)));
  }

  /** false: the connection is ending. */
  private onCapsule(header: Buffer, at: number, flags: number, pdo: number, plen: number, headerBytes: number): boolean {
    const command = this.takeSlot();
    if (command === null) { this.fatal(c.FES_PDU_SEQUENCE_ERROR, 0, `more than ${this.slotsMax} commands outstanding`); return false; }
    header.copy(command.sqe, 0, at + c.COMMON_HEADER_BYTES, at + c.COMMON_HEADER_BYTES + c.SQE_BYTES);
    this.recv.skip(headerBytes);
    const dd = this.dataDigest ? c.DIGEST_BYTES : 0;
    const inCapsule = plen > headerBytes ? plen - headerBytes - dd : 0;
    if (plen > headerBytes && (pdo !== headerBytes || inCapsule <= 0)) {
      this.releaseSlot(command);
      this.fatal(c.FES_INVALID_HEADER_FIELD, 3, `PDO ${pdo}`);
      return false;
    }
    const sqe = command.sqe;
    command.cid = sqe.readUInt16LE(2);
    command.receivedBytes = 0;
    command.r2tSent = false;
    command.digestError = false;
    command.data = [];
    if (this.sqEntries > 0) this.sqhd = (this.sqhd + 1) % this.sqEntries;
    const sglBytes = sqe.readUInt32LE(32);
    const sglType = sqe[39]!;
    command.dataBytes = sglBytes;
    if (inCapsule > 0) {
      const views = this.recv.takeViews(inCapsule, command.pins);
      if (dd > 0) {
        const [digest, dat] = this.recv.peek(c.DIGEST_BYTES);
        command.digestError = (flags & c.FLAG_DDGST) === 0 || crc32cOf(views) !== digest.readUInt32LE(dat);
        this.recv.skip(c.DIGEST_BYTES);
      }
      // The SGL must describe exactly the data in the capsule, at offset 0.
      if (sglType !== c.SGL_IN_CAPSULE || sglBytes !== inCapsule || sqe.readBigUInt64LE(24) !== 0n) {
        this.fatal(c.FES_INVALID_HEADER_FIELD, 3, `in-capsule data ${inCapsule} bytes, SGL type ${sglType} length ${sglBytes}`);
        return false;
      }
      if (command.digestError) { this.complete(command, status(SCT_GENERIC, SC_TRANSIENT_TRANSPORT_ERROR)); return true; }
      command.data = views;
      command.receivedBytes = inCapsule;
      this.start(command);
      return true;
    }
    if (sglBytes > 0 && sglType !== c.SGL_TRANSPORT) {
      this.complete(command, status(SCT_GENERIC, sglType === c.SGL_IN_CAPSULE ? SC_SGL_INVALID_DATA_LENGTH : SC_SGL_INVALID_TYPE, true));
      return true;
    }
    // Checked before any R2T or buffer: a hostile length costs nothing.
    if (sglBytes > c.DATA_TRANSFER_BYTES_MAX) {
      this.complete(command, status(SCT_GENERIC, SC_SGL_INVALID_DATA_LENGTH, true));
      return true;
    }
    if (sglBytes > 0 && this.handler.hostToController(sqe)) {
      this.requestData(command);
      return true;
    }
    this.start(command);
    return true;
  }

  private onH2CData(header: Buffer, at: number, flags: number, pdo: number, plen: number, headerBytes: number): boolean {
    const cccid = header.readUInt16LE(at + 8);
    const ttag = header.readUInt16LE(at + 10);
    const datao = header.readUInt32LE(at + 12);
    const datal = header.readUInt32LE(at + 16);
    const dd = this.dataDigest ? c.DIGEST_BYTES : 0;
    const command = this.slots[ttag];
    if (command === undefined || !command.busy || !command.r2tSent || command.cid !== cccid || command.receivedBytes === command.dataBytes) {
      this.fatal(c.FES_INVALID_HEADER_FIELD, 10, `H2CData for no transfer (ttag ${ttag})`);
      return false;
    }
    if (datal === 0 || pdo !== headerBytes || plen !== headerBytes + datal + dd) { this.fatal(c.FES_INVALID_HEADER_FIELD, 16, 'H2CData length'); return false; }
    if (datao !== command.receivedBytes || datao + datal > command.dataBytes) { this.fatal(c.FES_DATA_OUT_OF_RANGE, 12, 'H2CData offset'); return false; }
    this.recv.skip(headerBytes);
    const views = this.recv.takeViews(datal, command.pins);
    if (dd > 0) {
      const [digest, dat] = this.recv.peek(c.DIGEST_BYTES);
      if ((flags & c.FLAG_DDGST) === 0 || crc32cOf(views) !== digest.readUInt32LE(dat)) command.digestError = true;
      this.recv.skip(c.DIGEST_BYTES);
    }
    for (const view of views) command.data.push(view);
    command.receivedBytes += datal;
    const last = (flags & c.FLAG_DATA_LAST) !== 0;
    if (last !== (command.receivedBytes === command.dataBytes)) { this.fatal(c.FES_PDU_SEQUENCE_ERROR, 1, 'LAST_PDU flag'); return false; }
    if (!last) return true;
    this.r2tBytesInFlight -= command.dataBytes;
    this.nextR2T();
    if (command.digestError) this.complete(command, status(SCT_GENERIC, SC_TRANSIENT_TRANSPORT_ERROR));
    else this.start(command);
    return true;
  }

  /** Asks the host for the command's data by R2T, when the connection's budget of outstanding R2T data allows. */
  private requestData(command: Command): void {
    if (this.r2tBytesInFlight > 0 && this.r2tBytesInFlight + command.dataBytes > c.R2T_BYTES_IN_FLIGHT_MAX) {
      this.r2tWaiting.push(command);
      return;
    }
    this.r2tBytesInFlight += command.dataBytes;
    command.r2tSent = true;
    // reserve() may replace the arena: it is called before the arena is read.
    const at = this.reserve(smallPduBytes(this.headerDigest));
    r2tInto(this.arena, at, this.headerDigest, command.cid, command.index, 0, command.dataBytes);
  }

  private nextR2T(): void {
    while (this.r2tWaiting.length > 0) {
      const next = this.r2tWaiting[0]!;
      if (this.r2tBytesInFlight > 0 && this.r2tBytesInFlight + next.dataBytes > c.R2T_BYTES_IN_FLIGHT_MAX) return;
      this.r2tWaiting.shift();
      this.requestData(next);
    }
  }

  private start(command: Command): void {
    // Only Connect may come before Connect (fabrics.ts checks what it is).
    this.handler.execute(this, command);
  }

  /** Sends the CQE of `command` and frees its slot. */
  complete(command: Command, statusField: number, dw0 = 0, dw1 = 0): void {
    if (!command.busy) return;
    const at = this.reserve(smallPduBytes(this.headerDigest));
    capsuleRespInto(this.arena, at, this.headerDigest, command.cid, Math.max(this.qid, 0), this.sqhd, statusField, dw0, dw1);
    this.releaseSlot(command);
  }

  /**
   * Sends controller-to-host data (at most what the SGL asked for) then completes with success: by
   * the SUCCESS flag of the last C2HData when the host disabled SQ flow control (it then needs no
   * SQHD), else by a CapsuleResp. `onSent` runs once the socket has taken `data`.
   */
  completeWithData(command: Command, data: Buffer, onSent?: () => void, dw0 = 0): void {
    if (!command.busy) { onSent?.(); return; }
    const bytes = Math.min(data.length, command.dataBytes);
    if (bytes === 0) { onSent?.(); this.complete(command, 0, dw0); return; }
    const payload = data.subarray(0, bytes);
    const success = this.sqFlowDisabled && dw0 === 0;
    const flags = c.FLAG_DATA_LAST | (success ? c.FLAG_DATA_SUCCESS : 0);
    const at = this.reserve(smallPduBytes(this.headerDigest));
    c2hDataHeaderInto(this.arena, at, this.headerDigest, this.dataDigest, command.cid, 0, bytes, flags);
    this.sendBuffer(payload, onSent);
    if (this.dataDigest) {
      const digestAt = this.reserve(c.DIGEST_BYTES);
      this.arena.writeUInt32LE(crc32c(payload), digestAt);
    }
    if (success) this.releaseSlot(command);
    else this.complete(command, 0, dw0);
  }

  /** Completes a command with a status on behalf of an asynchronous completer that may find the slot reused. */
  get isOpen(): boolean { return !this.isClosed && !this.stopped; }

  /** Room for `bytes` of small PDUs in the arena: where to encode them. */
  private reserve(bytes: number): number {
    if (this.arenaUsedBytes + bytes > this.arena.length) {
      this.pushArena();
      // The old arena's bytes may still sit in the socket's queue: a new one, never a rewrite.
      this.arena = Buffer.allocUnsafeSlow(c.SEND_ARENA_BYTES);
      this.arenaSentBytes = 0;
      this.arenaUsedBytes = 0;
    }
    const at = this.arenaUsedBytes;
    this.arenaUsedBytes += bytes;
    if (!this.arenaFlushScheduled) {
      this.arenaFlushScheduled = true;
      setImmediate(this.arenaFlushBound);
    }
    return at;
  }

  /** Hands the arena's pending small PDUs to the socket, as one buffer. */
  private pushArena(): void {
    if (this.arenaUsedBytes === this.arenaSentBytes) return;
    this.writer.send(this.arena.subarray(this.arenaSentBytes, this.arenaUsedBytes));
    this.arenaSentBytes = this.arenaUsedBytes;
  }

  /** A buffer of its own (read data, rare PDUs), after the small PDUs queued before it. */
  private sendBuffer(data: Buffer, onSent?: () => void): void {
    this.pushArena();
    this.writer.send(data, onSent);
  }

  private takeSlot(): Command | null {
    let index = this.freeSlots.pop();
    if (index === undefined) {
      if (this.slots.length >= this.slotsMax) return null;
      index = this.slots.length;
      this.slots.push({ index, busy: false, sqe: Buffer.alloc(c.SQE_BYTES), cid: 0, dataBytes: 0, data: [], receivedBytes: 0, r2tSent: false, digestError: false, pins: [] });
    }
    const command = this.slots[index]!;
    command.busy = true;
    this.inFlight++;
    return command;
  }

  private releaseSlot(command: Command): void {
    command.busy = false;
    command.data = [];
    for (const slab of command.pins) slab.unref();
    command.pins.length = 0;
    this.freeSlots.push(command.index);
    this.inFlight--;
    if (this.inFlight === 0 && this.drainWaiter) this.drainWaiter();
  }

  /** A command with a status error the handler found before running it. */
  refuse(command: Command, sc: number, dnr = true): void { this.complete(command, status(SCT_GENERIC, sc, dnr)); }
  refuseSequence(command: Command): void { this.refuse(command, SC_COMMAND_SEQUENCE_ERROR); }
  refuseField(command: Command): void { this.refuse(command, SC_INVALID_FIELD); }

  /** Protocol error: C2HTermReq with the offending header, then close. */
  fatal(fes: number, fei: number, reason: string): void {
    if (this.stopped) return;
    const shown = Math.min(this.recv.length, c.HEADER_BYTES_MAX);
    let offending = Buffer.alloc(0);
    if (shown > 0) {
      const [head, at] = this.recv.peek(shown);
      offending = Buffer.from(head.subarray(at, at + shown));
    }
    this.opts.log('nvmf_protocol_error', { peer: this.peer, qid: this.qid, reason, fes });
    this.sendBuffer(c2hTermReq(fes, fei, offending));
    this.writer.flush();
    this.stopped = true;
    this.socket.end();
    // A host that does not close after our TermReq is cut off (it may not send anything more).
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  hangUp(reason: string): void {
    if (this.isClosed) return;
    this.opts.log('nvmf_hang_up', { peer: this.peer, qid: this.qid, reason });
    this.stopped = true;
    this.socket.destroy();
  }

  /** Server close: no new commands; in-flight ones finish (bounded by the caller), then the socket closes. */
  async drain(): Promise<void> {
    this.stopped = true;
    this.socket.pause();
    if (this.inFlight > 0) await new Promise<void>((resolve) => { this.drainWaiter = resolve; });
    this.pushArena();
    this.writer.flush();
    this.socket.end();
  }

  destroy(): void { this.stopped = true; this.socket.destroy(); }

  /** Ends the connection after what is queued has been sent (Disconnect: its response goes out first). */
  finish(): void {
    this.stopped = true;
    this.pushArena();
    this.writer.flush();
    this.socket.end();
    // A host that does not close its side is cut off.
    setTimeout(() => this.socket.destroy(), c.CLOSE_DRAIN_MS_MAX).unref();
  }

  private onClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.stopped = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.recv.clear();
    this.drainWaiter?.();
    this.handler.closed(this);
    this.resolveClosed();
  }
}
