// Applies a Cairn export stream to a pool. The stream is first spooled to a temporary file while its
// every checksum is verified, so a truncated or corrupt stream is rejected before the target changes.
// A full stream creates the volume; an incremental one needs the target's latest snapshot to carry the
// stream's base guid and the volume to be unchanged since; a failed apply is rolled back (delete/revert).
import { createReadStream, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { DataKey, Engine, SnapshotInfo } from '../engine/index.js';
import { asBuffer, readStream } from './reader.js';
import { StreamCorrupt, type StreamHeader } from './format.js';
import { identify } from './identity.js';

export class StreamRefused extends Error {
  constructor(readonly code: 'stream_base_mismatch' | 'target_modified' | 'name_taken' | 'volume_not_found' | 'invalid_argument',
    message: string) {
    super(message);
    this.name = 'StreamRefused';
  }
}

export interface ImportResult { volume: string; snapshot: SnapshotInfo; incremental: boolean; dataBytes: number }

async function spoolAndVerify(source: AsyncIterable<Buffer | Uint8Array | string>, spoolPath: string,
  onHeader: (h: StreamHeader) => void): Promise<void> {
  const handle = await fsp.open(spoolPath, 'wx', 0o600);
  try {
    async function* tee(): AsyncGenerator<Buffer> {
      for await (const chunk of source) {
        const buf = asBuffer(chunk);
        await handle.write(buf);
        yield buf;
      }
    }
    let sawTrailer = false;
    for await (const item of readStream(tee())) {
      if (item.type === 'header') onHeader(item.header);
      if (item.type === 'trailer') sawTrailer = true;
    }
    if (!sawTrailer) throw new StreamCorrupt('no trailer');
  } finally {
    await handle.close();
  }
}

/** Checks the target against the header; returns the base snapshot name for an incremental stream. */
function checkTarget(engine: Engine, volume: string, header: StreamHeader): string | null {
  const snapName = header.snapshot.fullName.split('@')[1] ?? 'imported';
  const exists = engine.listVolumes().some((v) => v.name === volume);
  if (header.base === null) {
    if (exists) throw new StreamRefused('name_taken', `volume ${volume} already exists (a full stream creates it)`);
    return null;
  }
  if (!exists) throw new StreamRefused('volume_not_found', `volume not found: ${volume} (an incremental stream needs it)`);
  const info = engine.getVolume(volume);
  const latest = info.snapshots[info.snapshots.length - 1];
  if (latest === undefined || identify(engine, `${volume}@${latest}`).guid !== header.base.guid) {
    throw new StreamRefused('stream_base_mismatch',
      `the latest snapshot of ${volume} is not the stream's base ${header.base.fullName}`);
  }
  if (info.snapshots.includes(snapName)) throw new StreamRefused('name_taken', `snapshot ${volume}@${snapName} exists`);
  return latest;
}

/** Record writes in flight while applying a verified stream (ranges never overlap within a stream). */
export const importWritesInFlightMax = 8;

async function applyRecords(engine: Engine, id: number, spoolPath: string,
  onProgress: (fraction: number) => void, totalBytes: number, sealed: boolean): Promise<number> {
  let dataBytes = 0;
  let doneBytes = 0;
  const inFlight = new Set<Promise<void>>();
  let failure: unknown = null;
  for await (const item of readStream(createReadStream(spoolPath, { highWaterMark: 1024 * 1024 }))) {
    if (item.type !== 'record') continue;
    const r = item.record;
    const recordBytes = r.data !== null ? r.data.length + 20 : 20;
    const write = (r.data === null ? engine.writeZeroes(id, r.offsetBytes, r.lengthBytes)
      : sealed ? engine.writeSealed(id, r.offsetBytes, r.data) : engine.write(id, r.offsetBytes, r.data))
      .then(() => {
        doneBytes += recordBytes;
        onProgress(Math.min(1, doneBytes / Math.max(1, totalBytes)));
      }, (err: unknown) => { failure ??= err; })
      .finally(() => inFlight.delete(write));
    inFlight.add(write);
    if (r.data !== null) dataBytes += r.lengthBytes;
    if (inFlight.size >= importWritesInFlightMax) await Promise.race(inFlight);
    if (failure !== null) break;
  }
  await Promise.all(inFlight);
  if (failure !== null) throw failure;
  return dataBytes;
}

/**
 * A rollback after a failed import that itself fails must not vanish: the import's error (the one the
 * caller sees, logged by the API) gains a sentence saying what could not be undone and why, so the
 * operator knows the target was left changed.
 */
function noteRollbackFailure(err: unknown, what: string, rollbackErr: unknown): void {
  const why = rollbackErr instanceof Error ? rollbackErr.message : String(rollbackErr);
  if (err instanceof Error) err.message = `${err.message}; rolling back failed too (${what}: ${why})`;
}

/**
 * What a raw stream needs from the key holder: the stream's data key from its wrapped form (unwrapped by
 * the importing tenant's KEK, refused when it holds another), re-wrapped by that tenant's current KEK.
 */
export type StreamKeyOpener = (wrappedKey: Buffer) => Promise<DataKey>;

/** A raw stream's data key, checked against an incremental target's own key (the same lineage's). */
async function rawKey(engine: Engine, volume: string, header: StreamHeader, openKey: StreamKeyOpener | undefined): Promise<DataKey | null> {
  if (header.encryption === undefined) return null;
  if (openKey === undefined) throw new StreamRefused('invalid_argument', 'this is a raw stream of an encrypted snapshot, and no key holder is configured to open its key');
  const key = await openKey(Buffer.from(header.encryption.wrappedKey, 'base64'));
  if (header.base !== null) {
    const info = engine.getVolume(volume);
    if (info.encryption === null) throw new StreamRefused('invalid_argument', `${volume} is not encrypted: a raw incremental stream applies only to the encrypted volume it was made for`);
    // The key-check value decides: a target of another lineage's key is refused (wrong_key), never written.
    engine.unlockKey(info.encryption.keyId, key.dek);
  }
  return key;
}

export async function importStream(engine: Engine, volume: string,
  source: AsyncIterable<Buffer | Uint8Array | string>, spoolDir: string,
  onProgress: (fraction: number) => void = () => {}, openKey?: StreamKeyOpener): Promise<ImportResult> {
  const spoolPath = join(spoolDir, `.cairn-import-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    let header: StreamHeader | null = null;
    // Fail fast on a wrong target; the check is repeated below, just before anything changes.
    await spoolAndVerify(source, spoolPath, (h) => { header = h; checkTarget(engine, volume, h); });
    if (header === null) throw new StreamCorrupt('no header');
    const h: StreamHeader = header;
    const base = checkTarget(engine, volume, h);
    const key = await rawKey(engine, volume, h, openKey);
    const sealed = key !== null;
    const snapName = h.snapshot.fullName.split('@')[1] ?? 'imported';
    const totalBytes = (await fsp.stat(spoolPath)).size;
    let dataBytes: number;
    if (base === null) {
      await engine.createVolume(volume, h.sizeBytes, key === null ? {} : { encryption: key });
      key?.dek.fill(0);
      try {
        dataBytes = await applyRecords(engine, engine.resolve(volume).id, spoolPath, onProgress, totalBytes, sealed);
        await engine.flush();
      } catch (err) {
        await engine.deleteVolume(volume).catch((rollbackErr: unknown) => noteRollbackFailure(err, `deleting the new volume ${volume}`, rollbackErr));
        throw err;
      }
    } else {
      const before = engine.getVolume(volume);
      if ((await engine.diff(`${volume}@${base}`, volume)).length > 0) {
        throw new StreamRefused('target_modified', `${volume} was written after ${volume}@${base}; revert it first`);
      }
      try {
        if (h.sizeBytes !== before.sizeBytes) await engine.resizeVolume(volume, h.sizeBytes, { allowShrink: true });
        dataBytes = await applyRecords(engine, engine.resolve(volume).id, spoolPath, onProgress, totalBytes, sealed);
        await engine.flush();
      } catch (err) {
        // Roll the target back to exactly what it was: it equalled its latest snapshot (checked above).
        await engine.revertVolume(volume, base).catch((rollbackErr: unknown) => noteRollbackFailure(err, `reverting ${volume} to @${base}`, rollbackErr));
        if (engine.getVolume(volume).sizeBytes !== before.sizeBytes) {
          await engine.resizeVolume(volume, before.sizeBytes, { allowShrink: true })
            .catch((rollbackErr: unknown) => noteRollbackFailure(err, `resizing ${volume} back to ${before.sizeBytes} bytes`, rollbackErr));
        }
        throw err;
      }
    }
    // The sender's guid goes into the snapshot's catalog record, in the snapshot's own commit.
    const [snapshot] = await engine.createSnapshots([`${volume}@${snapName}`], { streamGuid: h.snapshot.guid });
    if (snapshot === undefined) throw new Error('createSnapshots returned nothing');
    return { volume, snapshot, incremental: base !== null, dataBytes };
  } finally {
    await fsp.rm(spoolPath, { force: true });
  }
}
