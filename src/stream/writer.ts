// Produces a Cairn export stream (format.ts) of a snapshot: a full stream holds every mapped extent,
// an incremental one the ranges engine.diff(base, snapshot) reports (holes there become ZERO records).
// The record plan is walked twice (count, then send) so the exact stream length is known up front.
import { crc32c } from '@node-rs/crc32';
import type { ByteRange, Engine } from '../engine/index.js';
import { StreamRefused } from './import.js';
import {
  encodeHeader, encodeRecordHeader, encodeTrailer, recordDataBytesMax, recordHeaderBytes, trailerBytes,
  type SnapshotIdentity, type StreamHeader,
} from './format.js';

/** Extents are asked for in windows of this size so memory stays bounded on huge volumes. */
export const extentWindowBytes = 1024 * 1024 * 1024;

interface PlannedRecord { kind: 'data' | 'zero'; offsetBytes: number; lengthBytes: number }

export interface ExportPlan {
  header: StreamHeader;
  /** Exact length of the stream in bytes. */
  streamBytes: number;
  dataBytes: number;
  records: number;
  /** The stream's bytes; each call walks the snapshot afresh. */
  chunks(onProgress?: (fraction: number) => void): AsyncGenerator<Buffer>;
}

function* split(kind: 'data' | 'zero', offsetBytes: number, lengthBytes: number): Generator<PlannedRecord> {
  for (let at = offsetBytes; at < offsetBytes + lengthBytes; at += recordDataBytesMax) {
    yield { kind, offsetBytes: at, lengthBytes: Math.min(recordDataBytesMax, offsetBytes + lengthBytes - at) };
  }
}

async function* planRecords(engine: Engine, id: number, ranges: ByteRange[] | null,
  sizeBytes: number): AsyncGenerator<PlannedRecord> {
  const windows: ByteRange[] = ranges ?? [];
  if (ranges === null) {
    for (let at = 0; at < sizeBytes; at += extentWindowBytes) {
      windows.push({ offsetBytes: at, lengthBytes: Math.min(extentWindowBytes, sizeBytes - at) });
    }
  }
  for (const range of windows) {
    const end = Math.min(range.offsetBytes + range.lengthBytes, sizeBytes);
    if (end <= range.offsetBytes) continue;
    const extents = await engine.extents(id, range.offsetBytes, end - range.offsetBytes);
    for (const extent of extents) {
      // A full stream goes to a new, empty volume: holes need no record there.
      if (extent.hole && ranges === null) continue;
      yield* split(extent.hole ? 'zero' : 'data', extent.offsetBytes, extent.lengthBytes);
    }
  }
}

/** Sorted and merged: the format requires ascending, non-overlapping records (reader.ts). */
export function coalesce(ranges: ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges.slice().sort((x, y) => x.offsetBytes - y.offsetBytes)) {
    const last = out[out.length - 1];
    if (last !== undefined && r.offsetBytes <= last.offsetBytes + last.lengthBytes) {
      last.lengthBytes = Math.max(last.lengthBytes, r.offsetBytes + r.lengthBytes - last.offsetBytes);
    } else {
      out.push({ offsetBytes: r.offsetBytes, lengthBytes: r.lengthBytes });
    }
  }
  return out;
}

/**
 * Plans the stream of `snapshotFullName` ("VOL@SNAP"), full or (with `base`) incremental.
 * `identify` gives each snapshot's stream identity (its guid survives export/import).
 */
export async function planExport(engine: Engine, snapshotFullName: string, base: string | null,
  identify: (fullName: string) => SnapshotIdentity, opts: { raw?: boolean } = {}): Promise<ExportPlan> {
  const target = engine.resolve(snapshotFullName);
  const snapshot = engine.getSnapshot(snapshotFullName);
  const raw = opts.raw === true;
  let encryption: StreamHeader['encryption'];
  if (raw) {
    if (snapshot.encryption === null) throw new StreamRefused('invalid_argument', `${snapshotFullName} is not encrypted: a raw stream is of an encrypted snapshot (export it without --raw)`);
    const key = engine.listKeys().find((k) => k.members.includes(snapshot.fullName));
    if (key === undefined || key.wrapped[0] === undefined) throw new StreamRefused('invalid_argument', `no key found for ${snapshotFullName}`);
    encryption = { wrappedKey: key.wrapped[0].toString('base64') };
  }
  const baseIdentity = base === null ? null : identify(engine.getSnapshot(base).fullName);
  const ranges = base === null ? null : coalesce(await engine.diff(base, snapshotFullName));
  const header: StreamHeader = {
    version: 1, sizeBytes: snapshot.sizeBytes, blockSizeBytes: 4096,
    snapshot: identify(snapshot.fullName), base: baseIdentity,
    ...(encryption !== undefined ? { version: 2, encryption } : {}),
  };
  const headerBytes = encodeHeader(header);
  let records = 0;
  let dataBytes = 0;
  for await (const r of planRecords(engine, target.id, ranges, snapshot.sizeBytes)) {
    records += 1;
    if (r.kind === 'data') dataBytes += r.lengthBytes;
  }
  const streamBytes = headerBytes.length + records * recordHeaderBytes + dataBytes + trailerBytes;
  async function* chunks(onProgress?: (fraction: number) => void): AsyncGenerator<Buffer> {
    let crc = crc32c(headerBytes);
    yield headerBytes;
    let sentRecords = 0;
    let sentDataBytes = 0;
    for await (const r of planRecords(engine, target.id, ranges, snapshot.sizeBytes)) {
      // Raw: sealed under the lineage's key (records are whole blocks: extents are block-granular).
      const data = r.kind !== 'data' ? null
        : raw ? await engine.readSealed(target.id, r.offsetBytes, r.lengthBytes) : await engine.read(target.id, r.offsetBytes, r.lengthBytes);
      const head = encodeRecordHeader(r.kind, r.offsetBytes, r.lengthBytes, data);
      crc = crc32c(head, crc);
      yield head;
      if (data !== null) { crc = crc32c(data, crc); yield data; sentDataBytes += data.length; }
      sentRecords += 1;
      onProgress?.(dataBytes === 0 ? 1 : sentDataBytes / dataBytes);
    }
    yield encodeTrailer({ records: sentRecords, dataBytes: sentDataBytes }, crc);
  }
  return { header, streamBytes, dataBytes, records, chunks };
}
