// Pools on files (sparse) or raw block devices: the production entry points.
import { access, stat } from 'node:fs/promises';
import { BLOCK_SIZE_BYTES } from './constants.js';
import { FileDevice } from './device/file-device.js';
import { createPool, openPool, checkPool } from './pool.js';
import { InvalidSize } from './errors.js';
import type { CheckReport, Engine, PoolOptions } from './types.js';

/**
 * Creates a pool in a new sparse file of `sizeBytes`, or on an existing raw block device (whose
 * whole size is used; `sizeBytes` is ignored there).
 */
export async function createPoolFile(path: string, sizeBytes: number, opts: PoolOptions = {}): Promise<Engine> {
  const isDevice = await stat(path).then((s) => s.isBlockDevice(), () => false);
  if (!isDevice && (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1024 * 1024)) throw new InvalidSize(`pool size must be at least 1 MiB, got ${sizeBytes}`);
  const device = isDevice ? await FileDevice.open(path) : await FileDevice.create(path, Math.floor(sizeBytes / BLOCK_SIZE_BYTES));
  try {
    return await createPool(device, opts);
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

export async function openOrCreatePoolFile(path: string, sizeBytes: number, opts: PoolOptions = {}): Promise<Engine> {
  const exists = await access(path).then(() => true, () => false);
  return exists ? openPoolFile(path, opts) : createPoolFile(path, sizeBytes, opts);
}

export async function checkPoolFile(path: string): Promise<CheckReport> {
  const device = await FileDevice.open(path);
  try { return await checkPool(device); } finally { await device.close(); }
}
