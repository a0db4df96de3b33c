// Encoding of everything the server sends: option replies (handshake) and simple / structured reply
// chunks (transmission). Pure functions from values to Buffers; the transmission loop batches them
// into one socket write (see reply-writer.ts).
import {
  OPTION_REPLY_MAGIC, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC, SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES, NBD_REPLY_TYPE_ERROR, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, NBD_INFO_EXPORT, NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME, NBD_INFO_DESCRIPTION, STRING_BYTES_MAX,
} from './constants.js';

/** The 64-bit client handle, kept as two 32-bit halves so no BigInt is made per request. */
export interface Handle { hi: number; lo: number }

export function optionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const dataBytes = data ? data.length : 0;
  const out = Buffer.allocUnsafe(20 + dataBytes);
  out.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(dataBytes, 16);
  if (data) data.copy(out, 20);
  return out;
}

/** An error reply carrying a human-readable message (proto.md: error replies MAY carry a string). */
export function optionError(option: number, errorType: number, message: string): Buffer {
  return optionReply(option, errorType, Buffer.from(truncateUtf8(message, STRING_BYTES_MAX)));
}

export function serverReplyData(name: string): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.allocUnsafe(4 + nameBytes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  return out;
}

export function metaContextReplyData(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.allocUnsafe(4 + nameBytes.length);
  out.writeUInt32BE(contextId, 0);
  nameBytes.copy(out, 4);
  return out;
}

export function infoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  out.writeUInt16BE(NBD_INFO_EXPORT, 0);
  out.writeBigUInt64BE(BigInt(sizeBytes), 2);
  out.writeUInt16BE(transmissionFlags, 10);
  return out;
}

export function infoBlockSize(minBytes: number, preferredBytes: number, maxBytes: number): Buffer {
  const out = Buffer.allocUnsafe(14);
  out.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  out.writeUInt32BE(minBytes, 2);
  out.writeUInt32BE(preferredBytes, 6);
  out.writeUInt32BE(maxBytes, 10);
  return out;
}

export function infoString(infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const bytes = Buffer.from(truncateUtf8(text, STRING_BYTES_MAX));
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(infoType, 0);
  bytes.copy(out, 2);
  return out;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes. */
export function exportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : 124));
  out.writeBigUInt64BE(BigInt(sizeBytes), 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

export function simpleReplyHeader(handle: Handle, errorNumber: number): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errorNumber, 4);
  out.writeUInt32BE(handle.hi, 8);
  out.writeUInt32BE(handle.lo, 12);
  return out;
}

function writeChunkHeader(out: Buffer, handle: Handle, flags: number, type: number, payloadBytes: number): void {
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  out.writeUInt32BE(handle.hi, 8);
  out.writeUInt32BE(handle.lo, 12);
  out.writeUInt32BE(payloadBytes, 16);
}

/** NBD_REPLY_TYPE_NONE with DONE: a successful structured reply with no payload. */
export function chunkNone(handle: Handle): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeChunkHeader(out, handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
  return out;
}

/** Header + offset of an OFFSET_DATA chunk; the data follows as its own buffer (no copy). */
export function chunkDataHeader(handle: Handle, done: boolean, offsetBytes: number, dataBytes: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeChunkHeader(out, handle, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataBytes);
  writeU64(out, STRUCTURED_REPLY_HEADER_BYTES, offsetBytes);
  return out;
}

export function chunkHole(handle: Handle, done: boolean, offsetBytes: number, holeBytes: number): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  writeChunkHeader(out, handle, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
  writeU64(out, STRUCTURED_REPLY_HEADER_BYTES, offsetBytes);
  out.writeUInt32BE(holeBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return out;
}

/** NBD_REPLY_TYPE_ERROR with DONE and a message for the human at the client. */
export function chunkError(handle: Handle, errorNumber: number, message: string): Buffer {
  const text = Buffer.from(truncateUtf8(message, STRING_BYTES_MAX));
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.length);
  writeChunkHeader(out, handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length);
  out.writeUInt32BE(errorNumber, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt16BE(text.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  text.copy(out, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return out;
}

/** One BLOCK_STATUS chunk: context id then (length, flags) descriptor pairs. */
export function chunkBlockStatus(handle: Handle, done: boolean, contextId: number, lengths: number[], flags: number[]): Buffer {
  const payloadBytes = 4 + 8 * lengths.length;
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  writeChunkHeader(out, handle, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, payloadBytes);
  out.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let position = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (let i = 0; i < lengths.length; i++) {
    out.writeUInt32BE(lengths[i]!, position);
    out.writeUInt32BE(flags[i]!, position + 4);
    position += 8;
  }
  return out;
}

function writeU64(out: Buffer, position: number, value: number): void {
  out.writeUInt32BE(Math.floor(value / 0x100000000), position);
  out.writeUInt32BE(value >>> 0, position + 4);
}

/** Cuts a string to at most maxBytes of UTF-8 without splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  let bytes = Buffer.from(text).subarray(0, maxBytes);
  while (bytes.length > 0 && (bytes[bytes.length - 1]! & 0xc0) === 0x80) bytes = bytes.subarray(0, bytes.length - 1);
  if (bytes.length > 0 && bytes[bytes.length - 1]! >= 0xc0) bytes = bytes.subarray(0, bytes.length - 1);
  return bytes.toString();
}
