// The transmission phase of one connection: requests are parsed in place from the receive queue and
// run concurrently (replies may go out of order, proto.md "Transmission"), bounded by requests and bytes
// in flight and by queued reply bytes; past a bound the socket is paused until requests complete.
import * as c from './constants.js';
import { execute, replyError, replyFailure, validate, pieceEndBytes, type CommandContext, type Request } from './commands.js';
import type { RecvQueue } from './recv-queue.js';
import type { Negotiated } from './handshake.js';
import type { Engine } from '../engine/index.js';
import type { ReadBufferPool } from './read-buffers.js';
import type { Slab } from './recv-slabs.js';
import { simpleReplyHeader } from './replies.js';
import type { TenantShare } from './fair-share.js';

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
  /** The connection's tenant's share of the server while tenants overlap (fair-share.ts); null: none. */
  share: TenantShare | null;
}

/**
 * A WRITE longer than REQUEST_BYTES_MAX, from a client that did not agree on block sizes: its payload is
 * written in pieces as it arrives, so it never sits in memory whole.
 */
interface LargeWrite {
  request: Request;
  /** Where the next piece starts, and where the payload ends (export bytes). */
  nextBytes: number;
  endBytes: number;
  piecesRunning: number;
  /** The first piece's failure, which becomes the reply. */
  error: unknown;
}

export class Transmission {
  private requestsInFlight = 0;
  private bytesInFlight = 0;
  /** Bytes of an oversized WRITE payload still to be dropped. */
  private discardBytesRemaining = 0;
  /** The WRITE whose payload is being taken in pieces; no other request is parsed meanwhile. */
  private largeWrite: LargeWrite | null = null;
  /** A simple READ reply in pieces holds the reply stream (commands.ts claimReplies); others wait here. */
  private repliesClaimed = false;
  private readonly claimWaiters: (() => void)[] = [];
  private held: { data: Buffer; onSent?: () => void }[] = [];
  private heldBytes = 0;
  /** No more requests are parsed (DISC received or the connection is ending). */
  private stopped = false;
  private isDraining = false;
  private pausedForBounds = false;
  private readonly ctx: CommandContext;
  private readonly completeBound = (request: Request): void => this.complete(request);
  private readonly share: TenantShare | null;

  constructor(private readonly io: TransmissionIo, engine: Engine, negotiated: Negotiated) {
    this.share = io.share;
    this.ctx = {
      engine,
      targetId: negotiated.target.id,
      sizeBytes: negotiated.sizeBytes,
      readOnly: negotiated.target.readOnly,
      structuredReplies: negotiated.structuredReplies,
      metaContexts: negotiated.metaContexts,
      payloadBytesMax: negotiated.blockSizesAgreed ? c.REQUEST_BYTES_MAX : c.PAYLOAD_BYTES_UNLIMITED,
      send: (data, onSent) => {
        if (!this.repliesClaimed) { io.send(data, onSent); return; }
        this.held.push({ data, onSent });
        this.heldBytes += data.length;
      },
      claimReplies: () => this.claimReplies(),
      hangUp: (reason) => { this.stopped = true; io.hangUp(reason); },
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
      if (this.requestsInFlight >= c.REQUESTS_IN_FLIGHT_MAX || this.bytesInFlight >= c.REQUEST_BYTES_IN_FLIGHT_MAX ||
        this.io.queuedReplyBytes() + this.heldBytes > c.REPLY_BYTES_QUEUED_MAX ||
        // Only a connection with requests of its own in flight waits: their completions pump it again.
        (this.share !== null && this.requestsInFlight > 0 && this.share.inFlight() >= this.share.cap())) {
        this.pausedForBounds = true;
        this.io.pauseReading();
        return;
      }
      if (this.largeWrite) {
        if (!this.takeLargeWritePiece(this.largeWrite)) break;
        continue;
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
        if (lengthBytes > c.REQUEST_BYTES_MAX) {
          // Never buffered whole: past the client's maximum it is refused and its payload dropped as
          // it streams in (as nbdkit does); otherwise it is written in pieces as it arrives.
          recv.skip(c.REQUEST_HEADER_BYTES);
          if (lengthBytes > this.ctx.payloadBytesMax) {
            this.discardBytesRemaining = lengthBytes;
            replyError(this.ctx, handle, c.NBD_EINVAL, `write over ${this.ctx.payloadBytesMax} bytes`);
          } else {
            this.startLargeWrite({ type, flags, handle, offsetBytes, lengthBytes, payload: null, costBytes: 0, pins: [] });
          }
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
      const costBytes = type === c.NBD_CMD_READ ? Math.min(lengthBytes, c.REQUEST_BYTES_MAX) : lengthBytes * Number(payload !== null);
      const request: Request = { type, flags, handle, offsetBytes, lengthBytes, payload, costBytes, pins };
      this.requestsInFlight++;
      this.share?.started();
      this.bytesInFlight += costBytes;
      void execute(this.ctx, request).then(() => this.completeBound(request));
    }
    this.pausedForBounds = false;
    this.io.resumeReading();
  }

  private async claimReplies(): Promise<{ send: CommandContext['send']; release(): void }> {
    while (this.repliesClaimed) await new Promise<void>((resolve) => this.claimWaiters.push(resolve));
    this.repliesClaimed = true;
    let released = false;
    return {
      send: (data, onSent) => this.io.send(data, onSent),
      release: () => {
        if (released) return;
        released = true;
        this.repliesClaimed = false;
        const held = this.held;
        this.held = [];
        this.heldBytes = 0;
        for (const part of held) this.io.send(part.data, part.onSent);
        this.claimWaiters.shift()?.();
        if (this.pausedForBounds && !this.stopped) this.pump();
      },
    };
  }

  private startLargeWrite(request: Request): void {
    try {
      validate(this.ctx, request);
    } catch (error) {
      replyFailure(this.ctx, request.handle, error);
      this.discardBytesRemaining = request.lengthBytes;
      return;
    }
    this.requestsInFlight++;
    this.share?.started();
    const endBytes = request.offsetBytes + request.lengthBytes;
    this.largeWrite = { request, nextBytes: request.offsetBytes, endBytes, piecesRunning: 0, error: null };
  }

  /**
   * Starts the large write's next piece once its payload is all here; false while it is not. Pieces
   * end on 4 KiB boundaries of the export, so two of them never read-modify-write the same block.
   */
  private takeLargeWritePiece(write: LargeWrite): boolean {
    const pieceEnd = pieceEndBytes(write.nextBytes, write.endBytes);
    const lengthBytes = pieceEnd - write.nextBytes;
    if (this.io.recv.length < lengthBytes) return false;
    const pins: Slab[] = [];
    const payload = this.io.recv.takeViews(lengthBytes, pins);
    const at = write.nextBytes;
    write.nextBytes = pieceEnd;
    if (pieceEnd === write.endBytes) this.largeWrite = null;
    write.piecesRunning++;
    this.bytesInFlight += lengthBytes;
    this.ctx.engine.write(this.ctx.targetId, at, payload)
      .catch((error: unknown) => { write.error ??= error; })
      .then(() => {
        for (const slab of pins) slab.unref();
        this.bytesInFlight -= lengthBytes;
        write.piecesRunning--;
        if (write.piecesRunning === 0 && write.nextBytes === write.endBytes) void this.finishLargeWrite(write);
        else if (this.pausedForBounds && !this.stopped) this.pump();
      });
    return true;
  }

  /** Every piece has been written: FUA makes them all durable, then the one reply. */
  private async finishLargeWrite(write: LargeWrite): Promise<void> {
    const { handle, flags } = write.request;
    try {
      if (write.error !== null) throw write.error;
      if ((flags & c.NBD_CMD_FLAG_FUA) !== 0) await this.ctx.engine.flush();
      this.ctx.send(simpleReplyHeader(handle, 0));
    } catch (error) {
      replyFailure(this.ctx, handle, error);
    }
    this.complete(write.request);
  }

  /** The connection closed: nothing more will be read; running requests finish and are dropped. */
  stop(): void { this.stopped = true; }

  private complete(request: Request): void {
    // The engine is done with the payload (its device writes have all finished): its slabs may be reused.
    for (const slab of request.pins) slab.unref();
    this.requestsInFlight--;
    this.share?.ended();
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
