// The Cairn export stream format, version 1 (docs/cli.md "Stream format"): encoding and decoding of
// the header, the records and the trailer. Every part carries a CRC32C; the trailer also holds the
// record counts and a CRC32C over every byte before it, so truncation and corruption are detected.
import { crc32c } from '@node-rs/crc32';

export const streamMagic = Buffer.from('CAIRNSTR', 'ascii');
export const streamVersion = 1;
/**
 * A raw stream of an encrypted snapshot (`export --raw`): version 2, so a reader that knows only
 * version 1 refuses it rather than take its sealed blocks for data. Plain streams stay version 1.
 */
export const streamVersionRaw = 2;
/** Largest data payload of one record; ranges are split to this bound. */
export const recordDataBytesMax = 1024 * 1024;
/** Largest JSON header we accept (names are short; this bounds a corrupt length field). */
export const headerJsonBytesMax = 64 * 1024;

export const recordTagData = 0x41544144; // "DATA" little-endian
export const recordTagZero = 0x4f52455a; // "ZERO": the range reads as zeroes (a hole)
export const recordTagEnd = 0x21444e45; // "END!": the trailer

/** magic(8) version(u32) jsonLength(u32) */
export const headerFixedBytes = 16;
/** tag(u32) offset(u64) length(u32) crc(u32): crc covers tag..length and the data */
export const recordHeaderBytes = 20;
/** tag(u32) records(u64) dataBytes(u64) crc(u32): crc is the running CRC32C of all bytes before it */
export const trailerBytes = 24;

/** The identity of a snapshot as the stream records it: the guid is what import compares. */
export interface SnapshotIdentity {
  /** "VOL@SNAP" in the pool the stream came from. */
  fullName: string;
  /** Pool-unique id in the source pool. */
  id: number;
  createdMs: number;
  /** 32 hex chars; stable across export/import (docs/cli.md "Snapshot identity"). */
  guid: string;
}

export interface StreamHeader {
  version: number;
  sizeBytes: number;
  blockSizeBytes: number;
  snapshot: SnapshotIdentity;
  /** The base of an incremental stream, or null for a full stream. */
  base: SnapshotIdentity | null;
  /**
   * Raw streams only (version 2): the data records hold blocks sealed under the lineage's data key
   * (AES-256-XTS, the logical block as tweak), and this is that key wrapped by the sending tenant's KEK
   * (base64): only a pool whose tenant holds the same KEK can import it (like `zfs send -w`).
   */
  encryption?: { wrappedKey: string };
}

export interface StreamRecord {
  kind: 'data' | 'zero';
  offsetBytes: number;
  lengthBytes: number;
  /** Present for 'data' records. */
  data: Buffer | null;
}

export interface StreamTrailer { records: number; dataBytes: number }

export class StreamCorrupt extends Error {
  readonly code = 'stream_corrupt';
  constructor(message: string) { super(`invalid stream: ${message}`); this.name = 'StreamCorrupt'; }
}

export function encodeHeader(header: StreamHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(headerFixedBytes + json.length + 4);
  streamMagic.copy(out, 0);
  out.writeUInt32LE(header.encryption === undefined ? streamVersion : streamVersionRaw, 8);
  out.writeUInt32LE(json.length, 12);
  json.copy(out, headerFixedBytes);
  out.writeUInt32LE(crc32c(out.subarray(0, headerFixedBytes + json.length)), headerFixedBytes + json.length);
  return out;
}

export function encodeRecordHeader(kind: 'data' | 'zero', offsetBytes: number, lengthBytes: number,
  data: Buffer | null): Buffer {
  const out = Buffer.alloc(recordHeaderBytes);
  out.writeUInt32LE(kind === 'data' ? recordTagData : recordTagZero, 0);
  out.writeBigUInt64LE(BigInt(offsetBytes), 4);
  out.writeUInt32LE(lengthBytes, 12);
  let crc = crc32c(out.subarray(0, 16));
  if (data !== null) crc = crc32c(data, crc);
  out.writeUInt32LE(crc, 16);
  return out;
}

/** The trailer; `runningCrc` is the CRC32C of every stream byte before the trailer's crc field. */
export function encodeTrailer(trailer: StreamTrailer, crcBeforeTrailer: number): Buffer {
  const out = Buffer.alloc(trailerBytes);
  out.writeUInt32LE(recordTagEnd, 0);
  out.writeBigUInt64LE(BigInt(trailer.records), 4);
  out.writeBigUInt64LE(BigInt(trailer.dataBytes), 12);
  const crc = crc32c(out.subarray(0, 20), crcBeforeTrailer);
  out.writeUInt32LE(crc, 20);
  return out;
}

function isIdentity(v: unknown): v is SnapshotIdentity {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.fullName === 'string' && typeof o.id === 'number' && typeof o.createdMs === 'number' &&
    typeof o.guid === 'string' && /^[0-9a-f]{32}$/.test(o.guid);
}

/** A raw stream's wrapped key: a KEK-wrapped data key is ~81 bytes; this bounds a corrupt header. */
const wrappedKeyChars = /^[A-Za-z0-9+/]{4,1024}={0,2}$/;

export function parseHeaderJson(json: Buffer, version = streamVersion): StreamHeader {
  let v: unknown;
  try { v = JSON.parse(json.toString('utf8')); } catch { throw new StreamCorrupt('header is not JSON'); }
  if (typeof v !== 'object' || v === null) throw new StreamCorrupt('header is not an object');
  const o = v as Record<string, unknown>;
  const sizeOk = typeof o.sizeBytes === 'number' && Number.isSafeInteger(o.sizeBytes) && o.sizeBytes > 0;
  if (o.version !== version || !sizeOk || typeof o.blockSizeBytes !== 'number' ||
      !isIdentity(o.snapshot) || !(o.base === null || isIdentity(o.base))) {
    throw new StreamCorrupt('header fields are missing or malformed');
  }
  const enc = o.encryption as { wrappedKey?: unknown } | undefined;
  const rawOk = version === streamVersionRaw
    ? typeof enc === 'object' && enc !== null && typeof enc.wrappedKey === 'string' && wrappedKeyChars.test(enc.wrappedKey)
    : enc === undefined;
  if (!rawOk) throw new StreamCorrupt(version === streamVersionRaw ? 'raw stream header without a well-formed wrapped key' : 'a version-1 stream carries no key');
  return o as unknown as StreamHeader;
}
