// The replication port's frames. Each frame: u32 length (of what follows it) | u8 kind | u32 request
// id | u32 header length | header (JSON) | payload. The header is the message with every Buffer
// replaced by a reference {"$cairnBuf":[offset,length]} into the payload, so data travels as raw
// bytes (never base64). Both bounds are checked before anything is allocated; a frame that breaks
// one is a protocol error and the connection is closed.

/** Largest payload (a write or resync-data of the engine's largest request, with room to spare). */
export const FRAME_PAYLOAD_BYTES_MAX = 16 * 1024 * 1024;
/** Largest JSON header (a message without its data: names, numbers, a catalog reply). */
export const FRAME_HEADER_BYTES_MAX = 64 * 1024;
/** kind + request id + header length. */
const FRAME_FIXED_BYTES = 1 + 4 + 4;
export const FRAME_BYTES_MAX = FRAME_FIXED_BYTES + FRAME_HEADER_BYTES_MAX + FRAME_PAYLOAD_BYTES_MAX;
const LENGTH_BYTES = 4;
const BUFFER_REF = '$cairnBuf';

export const FrameKind = {
  /** First frame each way: {node, nonce} (+ the server's proof when a cluster secret is set). */
  hello: 1,
  /** Client's second frame: {proof} (HMAC of the server's nonce), or {} without a secret. */
  auth: 2,
  request: 3,
  reply: 4,
} as const;
export type FrameKindValue = (typeof FrameKind)[keyof typeof FrameKind];
const KINDS = new Set<number>(Object.values(FrameKind));

export class FrameError extends Error {
  readonly code = 'frame_error';
  constructor(message: string) { super(message); this.name = 'FrameError'; }
}

export interface Frame {
  kind: FrameKindValue;
  requestId: number;
  message: unknown;
}

/**
 * Encodes a frame as a list of buffers for one corked write: the fixed part with the header, then
 * the message's Buffers as they are (no copy of the data).
 */
export function encodeFrame(kind: FrameKindValue, requestId: number, message: unknown): Buffer[] {
  const payload: Buffer[] = [];
  let payloadBytes = 0;
  // Buffers are swapped for references before JSON.stringify sees them: a replacer would get them
  // only after Buffer.prototype.toJSON had turned every byte into a number (costly for 1 MiB).
  const withRefs = replaceBuffers(message, (b) => {
    const ref = { [BUFFER_REF]: [payloadBytes, b.byteLength] };
    payload.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
    payloadBytes += b.byteLength;
    return ref;
  }, 0);
  const header = JSON.stringify(withRefs) ?? 'null';
  const headerBytes = Buffer.byteLength(header);
  if (headerBytes > FRAME_HEADER_BYTES_MAX) throw new FrameError(`frame header of ${headerBytes} bytes is over ${FRAME_HEADER_BYTES_MAX}`);
  if (payloadBytes > FRAME_PAYLOAD_BYTES_MAX) throw new FrameError(`frame payload of ${payloadBytes} bytes is over ${FRAME_PAYLOAD_BYTES_MAX}`);
  const fixed = Buffer.allocUnsafe(LENGTH_BYTES + FRAME_FIXED_BYTES + headerBytes);
  fixed.writeUInt32BE(FRAME_FIXED_BYTES + headerBytes + payloadBytes, 0);
  fixed.writeUInt8(kind, 4);
  fixed.writeUInt32BE(requestId >>> 0, 5);
  fixed.writeUInt32BE(headerBytes, 9);
  fixed.write(header, 13, 'utf8');
  return [fixed, ...payload];
}

/** Bound on the nesting of a message (a walk of a malformed, cyclic or hostile value ends). */
const MESSAGE_DEPTH_MAX = 32;

/** A copy of `value` with every Uint8Array replaced by `swap(it)`; plain data only. */
function replaceBuffers(value: unknown, swap: (b: Uint8Array) => unknown, depth: number): unknown {
  if (value instanceof Uint8Array) return swap(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MESSAGE_DEPTH_MAX) throw new FrameError(`message nested deeper than ${MESSAGE_DEPTH_MAX}`);
  if (Array.isArray(value)) return value.map((v) => replaceBuffers(v, swap, depth + 1));
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return value; // e.g. a Date
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = replaceBuffers(v, swap, depth + 1);
  return out;
}

function decodeBody(body: Buffer): Frame {
  const kind = body.readUInt8(0);
  if (!KINDS.has(kind)) throw new FrameError(`unknown frame kind ${kind}`);
  const requestId = body.readUInt32BE(1);
  const headerBytes = body.readUInt32BE(5);
  if (headerBytes > FRAME_HEADER_BYTES_MAX || FRAME_FIXED_BYTES + headerBytes > body.length) {
    throw new FrameError(`frame header length ${headerBytes} does not fit the frame of ${body.length} bytes`);
  }
  const payload = body.subarray(FRAME_FIXED_BYTES + headerBytes);
  let parsed: unknown;
  try {
    // No reviver: V8 parses plain JSON several times faster than with one (a reviver is called for
    // every value); the references are swapped for payload views in one walk afterwards.
    parsed = JSON.parse(body.toString('utf8', FRAME_FIXED_BYTES, FRAME_FIXED_BYTES + headerBytes));
  } catch (error) {
    throw new FrameError(`frame header is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const message = resolveRefs(parsed, payload, 0);
  return { kind: kind as FrameKindValue, requestId, message };
}

/** `value` (freshly parsed, so changed in place) with every {"$cairnBuf":[offset,length]} replaced by its payload view. */
function resolveRefs(value: unknown, payload: Buffer, depth: number): unknown {
  if (value === null || typeof value !== 'object') return value;
  // encodeFrame refuses deeper messages, so a deeper header is not one of ours.
  if (depth >= MESSAGE_DEPTH_MAX) throw new FrameError(`frame header nested deeper than ${MESSAGE_DEPTH_MAX}`);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const r = resolveRefs(v, payload, depth + 1);
      if (r !== v) value[i] = r;
    }
    return value;
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  const ref = record[BUFFER_REF];
  if (keys.length === 1 && Array.isArray(ref)) return payloadSlice(payload, ref);
  for (const k of keys) {
    const v = record[k];
    const r = resolveRefs(v, payload, depth + 1);
    // defineProperty, not assignment: a "__proto__" key stays a plain own property, as JSON.parse made it.
    if (r !== v) Object.defineProperty(record, k, { value: r, writable: true, enumerable: true, configurable: true });
  }
  return record;
}

function payloadSlice(payload: Buffer, ref: unknown[]): Buffer {
  const [offset, length] = ref;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || (offset as number) < 0 || (length as number) < 0 ||
    (offset as number) + (length as number) > payload.length) {
    throw new FrameError(`buffer reference [${String(offset)}, ${String(length)}] is outside the payload of ${payload.length} bytes`);
  }
  return payload.subarray(offset as number, (offset as number) + (length as number));
}

/** Splits a byte stream into frames; push() throws FrameError on the first bad frame. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.bufferedBytes < LENGTH_BYTES) return frames;
      const length = this.peekLength();
      if (length < FRAME_FIXED_BYTES || length > FRAME_BYTES_MAX) {
        throw new FrameError(`frame length ${length} is outside [${FRAME_FIXED_BYTES}, ${FRAME_BYTES_MAX}]`);
      }
      if (this.bufferedBytes < LENGTH_BYTES + length) return frames;
      const bytes = this.take(LENGTH_BYTES + length);
      frames.push(decodeBody(bytes.subarray(LENGTH_BYTES)));
    }
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= LENGTH_BYTES) return first.readUInt32BE(0);
    return Buffer.concat(this.chunks, LENGTH_BYTES).readUInt32BE(0);
  }

  /** The next `n` bytes as one buffer (a view when one chunk holds them). */
  private take(n: number): Buffer {
    this.bufferedBytes -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const used = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, used);
      filled += used;
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}
