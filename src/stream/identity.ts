// Snapshot identities for export streams. A snapshot's guid lives in its catalog record (the engine's
// snapshotStreamGuid): derived at create from the pool uuid, or, for a snapshot created by importing
// a stream, the guid of the snapshot it was received from, so an incremental stream finds its base in
// another pool. Pools from before kept the guids in a side file, POOL.streams.json: migrated here.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Engine } from '../engine/index.js';
import type { SnapshotIdentity } from './format.js';

export function identify(engine: Engine, fullName: string): SnapshotIdentity {
  const snap = engine.getSnapshot(fullName);
  return { fullName: snap.fullName, id: snap.id, createdMs: snap.createdMs, guid: engine.snapshotStreamGuid(snap.fullName) };
}

export class SideFileInvalid extends Error {
  constructor(readonly path: string, why: string) {
    super(`stream identity file ${path} is not valid (${why}); move it away to start without it`);
    this.name = 'SideFileInvalid';
  }
}

interface SideFile { poolUuid: string; received: Record<string, string> }

function parseSideFile(path: string, text: string): SideFile {
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch (err) { throw new SideFileInvalid(path, (err as Error).message); }
  const p = parsed as Partial<SideFile> | null;
  if (p === null || typeof p !== 'object' || typeof p.poolUuid !== 'string') throw new SideFileInvalid(path, 'no poolUuid');
  const received = p.received ?? {};
  if (typeof received !== 'object' || Object.values(received).some((g) => typeof g !== 'string' || !/^[0-9a-f]{32}$/.test(g))) {
    throw new SideFileInvalid(path, 'received is not a map of 32-hex guids');
  }
  return { poolUuid: p.poolUuid, received };
}

/** Where the old daemon kept a pool's stream identities. */
export function sideFilePath(poolPath: string, stateDir = dirname(poolPath)): string {
  return join(stateDir, `${basename(poolPath)}.streams.json`);
}

/**
 * Moves the guids of an old side file into the catalog, once, before the API serves: every live
 * snapshot gets the guid the old registry handed out (received, or derived from the file's own
 * uuid), durably; then the file is removed and its directory synced. Removed rather than renamed:
 * the catalog is the one source from now on, and a stale copy left beside the pool would be wrong as
 * soon as the next stream is received. If the process dies between the two steps, the next open
 * repeats the migration with the same result (no snapshot is created in between). Returns the count
 * migrated, or null when there was no side file.
 */
export async function migrateSideFile(engine: Engine, path: string): Promise<number | null> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const side = parseSideFile(path, text);
  const guids = new Map<number, string>();
  for (const snap of engine.listSnapshots()) {
    guids.set(snap.id, side.received[String(snap.id)] ?? createHash('sha256')
      .update(`${side.poolUuid}:${snap.id}:${snap.createdMs}`).digest('hex').slice(0, 32));
  }
  const adopted = guids.size === 0 ? 0 : await engine.adoptStreamGuids(guids);
  await fsp.rm(path);
  const dir = await fsp.open(dirname(path), 'r');
  try { await dir.sync(); } finally { await dir.close(); }
  return adopted;
}
