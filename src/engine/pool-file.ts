// Pools on files (sparse) or raw block devices: the production entry points.
import { access, link, open, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BLOCK_SIZE_BYTES } from './constants.js';
import { FileDevice } from './device/file-device.js';
import { createPool, openPool, checkPool } from './pool.js';
import { InvalidArgument, InvalidSize, assert } from './errors.js';
import type { CheckReport, Engine, PoolOptions } from './types.js';

/**
 * How a new pool file is laid down: 'off' sparse (space is taken from the filesystem as data
 * arrives), 'full' written end to end with zeros first (qemu-img's preallocation=full).
 */
export type Preallocation = 'off' | 'full';

export interface PoolFileOptions extends PoolOptions {
  /** For a new pool file (a block device is used as it is). Default 'off'. */
  preallocate?: Preallocation;
}

/**
 * Creates a pool in a new file of `sizeBytes` (sparse unless preallocated), or on an existing raw
 * block device (whose whole size is used; `sizeBytes` is ignored there).
 */
export async function createPoolFile(path: string, sizeBytes: number, opts: PoolFileOptions = {}): Promise<Engine> {
  const isDevice = await stat(path).then((s) => s.isBlockDevice(), () => false);
  if (!isDevice && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1024 * 1024)) throw new InvalidSize(`pool size must be at least 1 MiB, got ${sizeBytes}`);
  if (isDevice) return engineOn(await FileDevice.open(path), (device) => createPool(device, opts));
  const sizeBlocks = Math.floor(sizeBytes / BLOCK_SIZE_BYTES);
  assert(sizeBlocks > 0 && sizeBlocks * BLOCK_SIZE_BYTES <= sizeBytes, 'a pool file of whole blocks (at least 1 MiB, checked above)');
  if (opts.preallocate !== 'full') return engineOn(await FileDevice.create(path, sizeBlocks), (device) => createPool(device, opts));
  // Writing a large file end to end takes minutes: it is laid down and formatted under a temporary
  // name and linked to `path` only when complete, so a process killed half-way leaves no file at
  // `path` that the next start would take for a damaged pool (a stale temporary is ours to replace).
  if (await exists(path)) throw new InvalidArgument(`${path} exists already (EEXIST): no new pool goes over it`);
  const temporary = `${path}.preallocating`;
  await unlink(temporary).catch(() => undefined); // absent, the usual case; otherwise create() below reports the cause
  const engine = await engineOn(await FileDevice.create(temporary, sizeBlocks, true), (device) => createPool(device, opts));
  try {
    await link(temporary, path); // fails, rather than replacing it, if a pool appeared at `path` meanwhile
    await unlink(temporary);
    await syncDirectory(dirname(path));
  } catch (err) {
    await engine.close();
    await unlink(temporary).catch(() => undefined); // the error thrown is the cause; the next create removes a stale temporary
    throw err;
  }
  return engine;
}

/** The engine `start` makes on `device`; the device is closed if that fails. */
async function engineOn(device: FileDevice, start: (device: FileDevice) => Promise<Engine>): Promise<Engine> {
  try {
    return await start(device);
  } catch (err) {
    await device.close();
    throw err;
  }
}

function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** Makes a directory's entries (a new name) durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try { await handle.sync(); } finally { await handle.close(); }
}

export async function openPoolFile(path: string, opts: PoolOptions = {}): Promise<Engine> {
  return engineOn(await FileDevice.open(path), (device) => openPool(device, opts));
}

/** Opens the pool at `path`, or creates it (with `opts.preallocate`) when there is none. */
export async function openOrCreatePoolFile(path: string, sizeBytes: number, opts: PoolFileOptions = {}): Promise<Engine> {
  return await exists(path) ? openPoolFile(path, opts) : createPoolFile(path, sizeBytes, opts);
}

export async function checkPoolFile(path: string): Promise<CheckReport> {
  const device = await FileDevice.open(path);
  try { return await checkPool(device); } finally { await device.close(); }
}
