// Parses and verifies a Cairn export stream (format.ts) from any async source of byte chunks.
// Yields the header, then each record after its CRC32C checks out, then the trailer after the counts
// and the whole-stream CRC32C check out. A truncated or corrupt stream throws StreamCorrupt.
import { crc32c } from '@node-rs/crc32';
import {
  StreamCorrupt, streamVersionRaw, headerFixedBytes, headerJsonBytesMax, parseHeaderJson, recordDataBytesMax,
  recordHeaderBytes, recordTagData, recordTagEnd, recordTagZero, streamMagic, streamVersion,
  trailerBytes, type StreamHeader, type StreamRecord, type StreamTrailer,
} from './format.js';

export type StreamItem =
  | { type: 'header'; header: StreamHeader }
  | { type: 'record'; record: StreamRecord }
  | { type: 'trailer'; trailer: StreamTrailer };

/** A Buffer view of a chunk, without copying bytes. */
export function asBuffer(chunk: Buffer | Uint8Array | string): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk);
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** Reads exact byte counts out of a chunked source, keeping a running CRC32C of what was consumed. */
class ExactReader {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private done = false;
  crc = 0;
  consumedBytes = 0;
  constructor(private readonly source: AsyncIterator<Buffer | Uint8Array | string>) {}

  private async fill(wantBytes: number): Promise<boolean> {
    while (this.bufferedBytes < wantBytes && !this.done) {
      const next = await this.source.next();
      if (next.done === true) { this.done = true; break; }
      const chunk = asBuffer(next.value);
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
    }
    return this.bufferedBytes >= wantBytes;
  }

  /** Exactly `lengthBytes`, or StreamCorrupt('truncated'). */
  async read(lengthBytes: number, what: string): Promise<Buffer> {
    if (!(await this.fill(lengthBytes))) {
      throw new StreamCorrupt(`truncated at byte ${this.consumedBytes + this.bufferedBytes} (reading ${what})`);
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, lengthBytes);
    const rest = all.subarray(lengthBytes);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    this.consumedBytes += lengthBytes;
    return out;
  }

  /** Updates the running CRC with bytes that count toward the whole-stream checksum. */
  account(bytes: Buffer): void { this.crc = crc32c(bytes, this.crc); }

  async atEnd(): Promise<boolean> { return !(await this.fill(1)); }
}

async function readHeader(reader: ExactReader): Promise<StreamHeader> {
  const fixed = await reader.read(headerFixedBytes, 'header');
  if (!fixed.subarray(0, 8).equals(streamMagic)) throw new StreamCorrupt('not a Cairn stream (bad magic)');
  const version = fixed.readUInt32LE(8);
  if (version !== streamVersion && version !== streamVersionRaw) throw new StreamCorrupt(`unsupported stream version ${version}`);
  const jsonBytes = fixed.readUInt32LE(12);
  if (jsonBytes > headerJsonBytesMax) throw new StreamCorrupt('header too large');
  const json = await reader.read(jsonBytes, 'header');
  const crcBytes = await reader.read(4, 'header checksum');
  const crc = crc32c(json, crc32c(fixed));
  if (crc !== crcBytes.readUInt32LE(0)) throw new StreamCorrupt('header checksum mismatch');
  reader.account(fixed); reader.account(json); reader.account(crcBytes);
  return parseHeaderJson(json, version);
}

async function readRecord(reader: ExactReader, header: StreamHeader, tag: number,
  head: Buffer): Promise<StreamRecord> {
  const rest = await reader.read(recordHeaderBytes - 4, 'record header');
  const full = Buffer.concat([head, rest]);
  const offsetBytes = Number(full.readBigUInt64LE(4));
  const lengthBytes = full.readUInt32LE(12);
  if (lengthBytes === 0 || lengthBytes > recordDataBytesMax || offsetBytes + lengthBytes > header.sizeBytes) {
    throw new StreamCorrupt(`record out of bounds (offset ${offsetBytes}, length ${lengthBytes})`);
  }
  const data = tag === recordTagData ? await reader.read(lengthBytes, 'record data') : null;
  let crc = crc32c(full.subarray(0, 16));
  if (data !== null) crc = crc32c(data, crc);
  if (crc !== full.readUInt32LE(16)) throw new StreamCorrupt(`record checksum mismatch at offset ${offsetBytes}`);
  reader.account(full);
  if (data !== null) reader.account(data);
  return { kind: data !== null ? 'data' : 'zero', offsetBytes, lengthBytes, data };
}

async function readTrailer(reader: ExactReader, head: Buffer, records: number,
  dataBytes: number): Promise<StreamTrailer> {
  const rest = await reader.read(trailerBytes - 4, 'trailer');
  const full = Buffer.concat([head, rest]);
  const crc = crc32c(full.subarray(0, 20), reader.crc);
  if (crc !== full.readUInt32LE(20)) throw new StreamCorrupt('whole-stream checksum mismatch');
  const trailer = { records: Number(full.readBigUInt64LE(4)), dataBytes: Number(full.readBigUInt64LE(12)) };
  if (trailer.records !== records || trailer.dataBytes !== dataBytes) {
    throw new StreamCorrupt('trailer counts do not match the records');
  }
  if (!(await reader.atEnd())) throw new StreamCorrupt('bytes after the trailer');
  return trailer;
}

/** Parses `source` and yields verified items; throws StreamCorrupt on any defect. */
export async function* readStream(
  source: AsyncIterable<Buffer | Uint8Array | string>,
): AsyncGenerator<StreamItem> {
  const reader = new ExactReader(source[Symbol.asyncIterator]());
  const header = await readHeader(reader);
  yield { type: 'header', header };
  let records = 0;
  let dataBytes = 0;
  let endBytes = 0;
  for (;;) {
    const head = await reader.read(4, 'record tag');
    const tag = head.readUInt32LE(0);
    if (tag === recordTagEnd) {
      yield { type: 'trailer', trailer: await readTrailer(reader, head, records, dataBytes) };
      return;
    }
    if (tag !== recordTagData && tag !== recordTagZero) throw new StreamCorrupt(`unknown record tag 0x${tag.toString(16)}`);
    const record = await readRecord(reader, header, tag, head);
    // Records ascend and never overlap, so an importer may apply several at once in any order.
    if (record.offsetBytes < endBytes) throw new StreamCorrupt(`record at ${record.offsetBytes} overlaps or precedes the one before`);
    endBytes = record.offsetBytes + record.lengthBytes;
    records += 1;
    if (record.data !== null) dataBytes += record.lengthBytes;
    yield { type: 'record', record };
  }
}
