// Pools on files (sparse) or raw block devices: the production entry points.
import { access, stat } from 'node:fs/promises';
import { BLOCK_SIZE_BYTES } from './constants.js';
import { FileDevice } from './device/file-device.js';
import { createPool, openPool, checkPool } from './pool.js';
import { InvalidSize } from './errors.js';
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
  const { preallocate = 'off', ...poolOpts } = opts;
  const device = isDevice ? await FileDevice.open(path) : await FileDevice.create(path, Math.floor(sizeBytes / BLOCK_SIZE_BYTES), preallocate === 'full');
  try {
    return await createPool(device, poolOpts);
  } catch (err) {
    await device.close();
    throw err;
  }
}

export async function openPoolFile(path: string, opts: PoolOptions = {}): Promise<Engine> {
  const device = await FileDevice.open(path);
  try {
    return await openPool(device, opts);
  } catch (err) {
    await device.close();
    throw err;
  }
}

/** Opens the pool at `path`, or creates it (with `opts.preallocate`) when there is none. */
export async function openOrCreatePoolFile(path: string, sizeBytes: number, opts: PoolFileOptions = {}): Promise<Engine> {
  const exists = await access(path).then(() => true, () => false);
  if (!exists) return createPoolFile(path, sizeBytes, opts);
  const { preallocate: _ignored, ...poolOpts } = opts;
  return openPoolFile(path, poolOpts);
}

export async function checkPoolFile(path: string): Promise<CheckReport> {
  const device = await FileDevice.open(path);
  try { return await checkPool(device); } finally { await device.close(); }
}
