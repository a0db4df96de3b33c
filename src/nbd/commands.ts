// Execution of one transmission request against the engine (proto.md "Request types"): validation of
// flags and ranges, the engine call, and the reply (simple, or structured chunks with holes for sparse
// reads and one BLOCK_STATUS chunk per selected metadata context).
import type { ReadBufferPool } from './read-buffers.js';
import type { Engine } from '../engine/index.js';
import * as c from './constants.js';
import {
  simpleReplyHeader, chunkDataHeader, chunkHole, chunkError, chunkBlockStatus, type Handle,
} from './replies.js';
import { nbdErrnoOf, messageOf } from './errno.js';
import { blockStatusDescriptors } from './block-status.js';
import type { MetaContext } from './meta-context.js';
import type { Slab } from './recv-slabs.js';

export interface Request {
  type: number;
  flags: number;
  handle: Handle;
  offsetBytes: number;
  lengthBytes: number;
  /** A WRITE's payload as views of the socket chunks it arrived in; null for other commands. */
  payload: Buffer[] | null;
  /** The receive slabs the payload sits in, released when the request is done. */
  pins: Slab[];
  /** Bytes this request holds while in flight (payload or read length), for backpressure. */
  costBytes: number;
}

/** Queues a reply part; `onSent` runs once the socket has taken it (and every part before it). */
export type Send = (data: Buffer, onSent?: () => void) => void;

export interface CommandContext {
  engine: Engine;
  targetId: number;
  /** Negotiated size; requests past it are refused even if the volume grew since. */
  sizeBytes: number;
  readOnly: boolean;
  structuredReplies: boolean;
  /** Longest READ/WRITE/CACHE accepted: REQUEST_BYTES_MAX if the client agreed on block sizes, else unlimited. */
  payloadBytesMax: number;
  metaContexts: MetaContext[];
  send: Send;
  /**
   * The reply stream to oneself until `release`: other replies are held back meanwhile. A simple READ
   * reply sent in pieces needs it, as nothing may come between its header and the end of its data.
   */
  claimReplies(): Promise<{ send: Send; release(): void }>;
  readBuffers: ReadBufferPool;
  /** Hard disconnect: a simple READ reply that fails after its first piece went out cannot carry the error. */
  hangUp(reason: string): void;
  /** Set once the export is going away (deleted, reverted, server shutdown): new requests get ESHUTDOWN. */
  draining(): boolean;
}

/** Command flags each command accepts; FUA is valid on every command (proto.md "Command flags"). */
function allowedFlags(type: number, structuredReplies: boolean): number {
  switch (type) {
    case c.NBD_CMD_READ: return c.NBD_CMD_FLAG_FUA | (structuredReplies ? c.NBD_CMD_FLAG_DF : 0);
    case c.NBD_CMD_WRITE_ZEROES: return c.NBD_CMD_FLAG_FUA | c.NBD_CMD_FLAG_NO_HOLE | c.NBD_CMD_FLAG_FAST_ZERO;
    case c.NBD_CMD_BLOCK_STATUS: return c.NBD_CMD_FLAG_FUA | c.NBD_CMD_FLAG_REQ_ONE;
    default: return c.NBD_CMD_FLAG_FUA;
  }
}

class RequestError extends Error {
  constructor(readonly errorNumber: number, message: string) { super(message); }
}

/** Throws the RequestError a request gets before it runs, if any (also for WRITEs served in pieces). */
export function validate(ctx: CommandContext, request: Request): void {
  const { type, flags, offsetBytes, lengthBytes } = request;
  if (ctx.draining()) throw new RequestError(c.NBD_ESHUTDOWN, 'export is going away (deleted, reverted or server shutting down)');
  if (type > c.NBD_CMD_BLOCK_STATUS || type === c.NBD_CMD_DISC) throw new RequestError(c.NBD_EINVAL, `unknown command ${type}`);
  if ((flags & ~allowedFlags(type, ctx.structuredReplies)) !== 0) {
    throw new RequestError(c.NBD_EINVAL, `flags 0x${flags.toString(16)} not valid for command ${type}`);
  }
  if (type === c.NBD_CMD_FLUSH) return;
  if (lengthBytes === 0) throw new RequestError(c.NBD_EINVAL, 'zero-length request');
  const writes = type === c.NBD_CMD_WRITE || type === c.NBD_CMD_TRIM || type === c.NBD_CMD_WRITE_ZEROES;
  if (writes && ctx.readOnly) throw new RequestError(c.NBD_EPERM, 'export is read-only (a snapshot)');
  if (offsetBytes + lengthBytes > ctx.sizeBytes) {
    // proto.md: SHOULD return ENOSPC for a write past the end; EINVAL for the other commands.
    const errorNumber = type === c.NBD_CMD_WRITE || type === c.NBD_CMD_WRITE_ZEROES ? c.NBD_ENOSPC : c.NBD_EINVAL;
    throw new RequestError(errorNumber, `range ${offsetBytes}+${lengthBytes} past export end ${ctx.sizeBytes}`);
  }
  // proto.md: SHOULD be EINVAL past the advertised maximum block size (WRITE is refused before its
  // payload is read, in transmission.ts). WRITE_ZEROES stays liberal: it carries no payload, a client
  // may zero a whole hole in one request, and the engine zeroes in bounded steps (zeroRange).
  if ((type === c.NBD_CMD_READ || type === c.NBD_CMD_CACHE) && lengthBytes > ctx.payloadBytesMax) {
    throw new RequestError(c.NBD_EINVAL, `${type === c.NBD_CMD_READ ? 'read' : 'cache'} over ${ctx.payloadBytesMax} bytes`);
  }
  // proto.md: a DF read is one data chunk, which could not carry an error found after it started; past
  // one piece the server may answer EOVERFLOW.
  if (type === c.NBD_CMD_READ && (flags & c.NBD_CMD_FLAG_DF) !== 0 && lengthBytes > c.REQUEST_BYTES_MAX) {
    throw new RequestError(c.NBD_EOVERFLOW, `a DF read over ${c.REQUEST_BYTES_MAX} bytes cannot be one chunk`);
  }
  if (type === c.NBD_CMD_BLOCK_STATUS && (!ctx.structuredReplies || ctx.metaContexts.length === 0)) {
    throw new RequestError(c.NBD_EINVAL, 'no metadata context selected');
  }
  // FAST_ZERO: fail fast if zeroing would be slow; allocating zeroed blocks (NO_HOLE) writes data.
  if (type === c.NBD_CMD_WRITE_ZEROES && (flags & c.NBD_CMD_FLAG_FAST_ZERO) !== 0 && (flags & c.NBD_CMD_FLAG_NO_HOLE) !== 0) {
    throw new RequestError(c.NBD_ENOTSUP, 'NO_HOLE zeroing writes blocks: not fast');
  }
}

export async function execute(ctx: CommandContext, request: Request): Promise<void> {
  try {
    validate(ctx, request);
    await run(ctx, request);
  } catch (error) {
    replyFailure(ctx, request.handle, error);
  }
}

/** The error reply for a refused request (RequestError) or a failed engine call. */
export function replyFailure(ctx: Pick<CommandContext, 'structuredReplies' | 'send'>, handle: Handle, error: unknown): void {
  const errorNumber = error instanceof RequestError ? error.errorNumber : nbdErrnoOf(error);
  const message = error instanceof RequestError ? error.message : messageOf(error);
  replyError(ctx, handle, errorNumber, message);
}

export function replyError(ctx: Pick<CommandContext, 'structuredReplies' | 'send'>, handle: Handle, errorNumber: number, message: string): void {
  // proto.md: with structured replies, errors SHOULD be structured (they carry a message) and a READ
  // MUST NOT get a simple reply.
  ctx.send(ctx.structuredReplies ? chunkError(handle, errorNumber, message) : simpleReplyHeader(handle, errorNumber));
}

function replyOk(ctx: CommandContext, handle: Handle): void {
  ctx.send(simpleReplyHeader(handle, 0));
}

async function run(ctx: CommandContext, request: Request): Promise<void> {
  const { engine, targetId } = ctx;
  const { offsetBytes, lengthBytes, flags, handle } = request;
  const fua = (flags & c.NBD_CMD_FLAG_FUA) !== 0;
  switch (request.type) {
    case c.NBD_CMD_READ: return read(ctx, request);
    case c.NBD_CMD_WRITE:
      await engine.write(targetId, offsetBytes, request.payload ?? [], fua ? { fua } : undefined);
      return replyOk(ctx, handle);
    case c.NBD_CMD_FLUSH:
      // proto.md: every write replied to before the flush is durable before the flush reply;
      // engine.flush() covers every write completed before the call.
      await engine.flush();
      return replyOk(ctx, handle);
    case c.NBD_CMD_TRIM:
      await engine.trim(targetId, offsetBytes, lengthBytes, { fua });
      return replyOk(ctx, handle);
    case c.NBD_CMD_WRITE_ZEROES:
      await engine.writeZeroes(targetId, offsetBytes, lengthBytes, { fua, noHole: (flags & c.NBD_CMD_FLAG_NO_HOLE) !== 0 });
      return replyOk(ctx, handle);
    case c.NBD_CMD_CACHE:
      await prefetch(ctx, offsetBytes, lengthBytes);
      return replyOk(ctx, handle);
    case c.NBD_CMD_BLOCK_STATUS: return blockStatus(ctx, request);
  }
}

async function read(ctx: CommandContext, request: Request): Promise<void> {
  const { offsetBytes, lengthBytes } = request;
  if (lengthBytes <= c.REQUEST_BYTES_MAX) {
    await readPart(ctx, ctx.send, request, offsetBytes, lengthBytes, true, true);
    return;
  }
  // Longer than one piece (a client that did not agree on block sizes): read and sent piece by piece.
  // Structured chunks of other replies may come in between (proto.md); a simple reply's data may not.
  if (ctx.structuredReplies) { await readInPieces(ctx, ctx.send, request); return; }
  const claim = await ctx.claimReplies();
  try {
    await readInPieces(ctx, claim.send, request);
  } finally {
    claim.release();
  }
}

/** Each piece is read once the piece before the last has left, so at most two are held. */
async function readInPieces(ctx: CommandContext, send: Send, request: Request): Promise<void> {
  const { offsetBytes, lengthBytes } = request;
  const end = offsetBytes + lengthBytes;
  let previousSent: Promise<void> = Promise.resolve();
  for (let at = offsetBytes; at < end;) {
    const pieceEnd = pieceEndBytes(at, end);
    const first = at === offsetBytes;
    let onSent!: () => void;
    const sent = new Promise<void>((resolve) => { onSent = resolve; });
    try {
      await readPart(ctx, send, request, at, pieceEnd - at, first, pieceEnd === end, onSent);
    } catch (error) {
      // A simple reply's header and first pieces are gone: the error cannot follow them (proto.md).
      if (!first && !ctx.structuredReplies) { ctx.hangUp(`read failed after its reply began: ${messageOf(error)}`); return; }
      throw error;
    }
    await previousSent;
    previousSent = sent;
    at = pieceEnd;
  }
  await previousSent;
}

/** End of the piece starting at `at`: LARGE_REQUEST_PIECE_BYTES on, rounded down to a 4 KiB boundary of the export. */
export function pieceEndBytes(at: number, end: number): number {
  const unit = c.BLOCK_SIZE_PREFERRED_BYTES;
  return Math.min(end, Math.floor((at + c.LARGE_REQUEST_PIECE_BYTES) / unit) * unit);
}

/**
 * Reads [offsetBytes, +lengthBytes) of the request and queues its reply part: with a simple reply the
 * header goes before the first part; with structured replies the last part carries DONE. `onSent`
 * runs once the socket has taken the part.
 */
async function readPart(ctx: CommandContext, send: Send, request: Request, offsetBytes: number, lengthBytes: number, first: boolean, last: boolean, onSent?: () => void): Promise<void> {
  const { engine, targetId } = ctx;
  const { handle } = request;
  // The reply is read into a pooled buffer, returned to the pool once the socket has taken the reply.
  const pooled = ctx.readBuffers.acquire(lengthBytes);
  let inReply = false;
  try {
    const fragmentable = ctx.structuredReplies && (request.flags & c.NBD_CMD_FLAG_DF) === 0 && lengthBytes >= c.SPARSE_READ_BYTES_MIN;
    // Large read: fetch the data and the hole map together; holes go out as OFFSET_HOLE chunks. (Not
    // with Promise.all: its generic lookups showed in the profile of 4 KiB reads, which need no map.)
    const extentsPending = fragmentable ? engine.extents(targetId, offsetBytes, lengthBytes).catch(() => null) : null;
    const data = await engine.read(targetId, offsetBytes, lengthBytes, pooled);
    const extents = extentsPending === null ? null : await extentsPending;
    // An unaligned read comes back in a buffer of its own: the pooled one was not used.
    inReply = data.buffer === pooled.buffer;
    const release = inReply ? () => { ctx.readBuffers.release(pooled); onSent?.(); } : onSent;
    if (!ctx.structuredReplies) {
      if (first) send(simpleReplyHeader(handle, 0));
      send(data, release);
      return;
    }
    const pieces = fragmentable ? readPieces(offsetBytes, lengthBytes, extents) : [{ offsetBytes, lengthBytes, hole: false }];
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      const final = i === pieces.length - 1;
      const done = last && final;
      // Socket writes complete in order: the last part's callback means the whole reply was taken.
      if (piece.hole) send(chunkHole(handle, done, piece.offsetBytes, piece.lengthBytes), final ? release : undefined);
      else {
        const start = piece.offsetBytes - offsetBytes;
        send(chunkDataHeader(handle, done, piece.offsetBytes, piece.lengthBytes));
        send(data.subarray(start, start + piece.lengthBytes), final ? release : undefined);
      }
    }
  } finally {
    if (!inReply) ctx.readBuffers.release(pooled);
  }
}

/**
 * CACHE (proto.md: the client plans to access the range; the server MAY prefetch): the range is read
 * and dropped, in steps of CACHE_PREFETCH_STEP_BYTES, which brings its tree nodes into the engine's cache
 * and its data into the page cache, where later reads find it without touching the disk. A read that
 * fails (a checksum mismatch, EIO) is the command's error: proto.md says the server MUST set it.
 */
async function prefetch(ctx: CommandContext, offsetBytes: number, lengthBytes: number): Promise<void> {
  const end = offsetBytes + lengthBytes;
  const scratch = ctx.readBuffers.acquire(Math.min(lengthBytes, c.CACHE_PREFETCH_STEP_BYTES));
  try {
    for (let at = offsetBytes; at < end; at += c.CACHE_PREFETCH_STEP_BYTES) {
      await ctx.engine.read(ctx.targetId, at, Math.min(c.CACHE_PREFETCH_STEP_BYTES, end - at), scratch);
    }
  } finally {
    ctx.readBuffers.release(scratch);
  }
}

interface Piece { offsetBytes: number; lengthBytes: number; hole: boolean }

/** Splits a read into data and hole pieces covering it exactly; unknown parts are data. */
export function readPieces(offsetBytes: number, lengthBytes: number, extents: { offsetBytes: number; lengthBytes: number; hole: boolean }[] | null): Piece[] {
  const end = offsetBytes + lengthBytes;
  const pieces: Piece[] = [];
  const add = (from: number, to: number, hole: boolean): void => {
    if (to <= from) return;
    const last = pieces[pieces.length - 1];
    if (last && last.hole === hole && last.offsetBytes + last.lengthBytes === from) last.lengthBytes += to - from;
    else pieces.push({ offsetBytes: from, lengthBytes: to - from, hole });
  };
  let position = offsetBytes;
  for (const extent of extents ?? []) {
    const from = Math.max(extent.offsetBytes, position);
    const to = Math.min(extent.offsetBytes + extent.lengthBytes, end);
    if (to <= from) continue;
    add(position, from, false);
    add(from, to, extent.hole);
    position = to;
  }
  add(position, end, false);
  return pieces;
}

async function blockStatus(ctx: CommandContext, request: Request): Promise<void> {
  const onlyOne = (request.flags & c.NBD_CMD_FLAG_REQ_ONE) !== 0;
  const results = await Promise.all(ctx.metaContexts.map((context) =>
    blockStatusDescriptors(ctx.engine, ctx.targetId, context, request.offsetBytes, request.lengthBytes, onlyOne)));
  // proto.md: exactly one BLOCK_STATUS chunk per selected context; the last one carries DONE.
  for (let i = 0; i < results.length; i++) {
    const done = i === results.length - 1;
    ctx.send(chunkBlockStatus(request.handle, done, ctx.metaContexts[i]!.id, results[i]!.lengths, results[i]!.flags));
  }
}
