// The transmission phase of one connection: requests are parsed in place from the receive queue and
// run concurrently (replies may go out of order, proto.md "Transmission"), bounded by requests and bytes
// in flight and by queued reply bytes; past a bound the socket is paused until requests complete.
import * as c from './constants.js';
import { execute, replyError, type CommandContext, type Request } from './commands.js';
import type { RecvQueue } from './recv-queue.js';
import type { Negotiated } from './handshake.js';
import type { Engine } from '../engine/index.js';
import type { ReadBufferPool } from './read-buffers.js';
import type { Slab } from './recv-slabs.js';

/** What the connection provides to the transmission loop. */
export interface TransmissionIo {
  recv: RecvQueue;
  send(data: Buffer, onSent?: () => void): void;
  queuedReplyBytes(): number;
  pauseReading(): void;
  resumeReading(): void;
  /** Ends the session after flushing queued replies (soft end after DISC or drain). */
  end(): void;
  /** Protocol violation: hard disconnect. */
  hangUp(reason: string): void;
  log(event: string, fields: Record<string, unknown>): void;
  readBuffers: ReadBufferPool;
}

export class Transmission {
  private requestsInFlight = 0;
  private bytesInFlight = 0;
  /** Bytes of an oversized WRITE payload still to be dropped. */
  private discardBytesRemaining = 0;
  /** No more requests are parsed (DISC received or the connection is ending). */
  private stopped = false;
  private isDraining = false;
  private pausedForBounds = false;
  private readonly ctx: CommandContext;
  private readonly completeBound = (request: Request): void => this.complete(request);

  constructor(private readonly io: TransmissionIo, engine: Engine, negotiated: Negotiated) {
    this.ctx = {
      engine,
      targetId: negotiated.target.id,
      sizeBytes: negotiated.sizeBytes,
      readOnly: negotiated.target.readOnly,
      structuredReplies: negotiated.structuredReplies,
      metaContexts: negotiated.metaContexts,
      send: (data, onSent) => io.send(data, onSent),
      readBuffers: io.readBuffers,
      draining: () => this.isDraining,
    };
  }

  get inFlight(): number { return this.requestsInFlight; }

  /**
   * The export is going away or the server shuts down: requests already running finish, new ones get
   * ESHUTDOWN (proto.md: the client then MUST disconnect softly), and once nothing is in flight the
   * session ends.
   */
  drain(): void {
    this.isDraining = true;
    this.maybeEnd();
  }

  /** Parses and starts every complete request in the receive queue that the bounds allow. */
  pump(): void {
    const recv = this.io.recv;
    while (!this.stopped) {
      if (this.discardBytesRemaining > 0) {
        this.discardBytesRemaining -= recv.skip(this.discardBytesRemaining);
        if (this.discardBytesRemaining > 0) break;
        continue;
      }
      if (this.requestsInFlight >= c.requestsInFlightMax || this.bytesInFlight >= c.requestBytesInFlightMax ||
        this.io.queuedReplyBytes() > c.replyBytesQueuedMax) {
        this.pausedForBounds = true;
        this.io.pauseReading();
        return;
      }
      if (recv.length < c.REQUEST_HEADER_BYTES) break;
      const [header, at] = recv.peek(c.REQUEST_HEADER_BYTES);
      if (header.readUInt32BE(at) !== c.NBD_REQUEST_MAGIC) {
        this.stopped = true;
        this.io.hangUp('bad request magic');
        return;
      }
      const flags = header.readUInt16BE(at + 4);
      const type = header.readUInt16BE(at + 6);
      const handle = { hi: header.readUInt32BE(at + 8), lo: header.readUInt32BE(at + 12) };
      // Offsets past 2^53 lose precision but are past any export's end, so they still fail the range check.
      const offsetBytes = header.readUInt32BE(at + 16) * 0x100000000 + header.readUInt32BE(at + 20);
      const lengthBytes = header.readUInt32BE(at + 24);
      let payload: Buffer[] | null = null;
      const pins: Slab[] = [];
      if (type === c.NBD_CMD_WRITE) {
        if (lengthBytes > c.requestBytesMax) {
          // Refused without allocating: the payload is dropped as it streams in (as nbdkit does).
          recv.skip(c.REQUEST_HEADER_BYTES);
          this.discardBytesRemaining = lengthBytes;
          replyError(this.ctx, handle, c.NBD_EINVAL, `write over ${c.requestBytesMax} bytes`);
          continue;
        }
        if (recv.length < c.REQUEST_HEADER_BYTES + lengthBytes) break;
        recv.skip(c.REQUEST_HEADER_BYTES);
        payload = recv.takeViews(lengthBytes, pins);
      } else {
        recv.skip(c.REQUEST_HEADER_BYTES);
      }
      if (type === c.NBD_CMD_DISC) {
        // proto.md: handle all outstanding requests, then close; DISC has no reply.
        this.stopped = true;
        this.isDraining = true;
        this.maybeEnd();
        return;
      }
      const costBytes = type === c.NBD_CMD_READ ? Math.min(lengthBytes, c.requestBytesMax) : lengthBytes * Number(payload !== null);
      const request: Request = { type, flags, handle, offsetBytes, lengthBytes, payload, costBytes, pins };
      this.requestsInFlight++;
      this.bytesInFlight += costBytes;
      void execute(this.ctx, request).then(() => this.completeBound(request));
    }
    this.pausedForBounds = false;
    this.io.resumeReading();
  }

  /** The connection closed: nothing more will be read; running requests finish and are dropped. */
  stop(): void { this.stopped = true; }

  private complete(request: Request): void {
    // The engine is done with the payload (its device writes have all finished): its slabs may be reused.
    for (const slab of request.pins) slab.unref();
    this.requestsInFlight--;
    this.bytesInFlight -= request.costBytes;
    if (this.isDraining) this.maybeEnd();
    else if (this.pausedForBounds && !this.stopped) this.pump();
  }

  /** Called when queued replies drained: reading may resume. */
  onWritable(): void {
    if (this.pausedForBounds && !this.stopped) this.pump();
  }

  private maybeEnd(): void {
    if (this.isDraining && this.requestsInFlight === 0) {
      this.stopped = true;
      this.io.end();
    }
  }
}
