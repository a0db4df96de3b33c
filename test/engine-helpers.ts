// Shared helpers for engine tests: temp pools on real files, and a pool-check assertion.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createPoolFile } from '../src/engine/index.js';
import { createPool } from '../src/engine/pool.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import type { Engine, PoolOptions } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';

export const MiB = 1024 * 1024;

export async function tempPool(sizeBytes = 256 * MiB, opts: PoolOptions = {}): Promise<{ engine: CairnEngine; path: string; cleanup: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'cairn-test-'));
  const path = join(dir, 'pool');
  const engine = (await createPoolFile(path, sizeBytes, { commitIntervalMs: 0, ...opts })) as CairnEngine;
  return {
    engine, path,
    cleanup: async () => { await engine.close().catch(() => undefined); rmSync(dir, { recursive: true, force: true }); },
  };
}

export async function assertClean(engine: Engine): Promise<void> {
  const report = await engine.check();
  assert.deepEqual(report.problems, [], 'pool check finds no problems');
  assert.equal(report.ok, true);
}

export function pattern(seed: number, bytes: number): Buffer {
  const buf = Buffer.alloc(bytes);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < bytes; i += 4) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; buf.writeUInt32LE(x, i); }
  return buf;
}

/** Engine events collected by `eventOptions`. */
export type Events = Array<{ event: string; fields: Record<string, unknown> }>;

/** Options of a pool that commits only when asked, its events pushed to `events`. */
export function eventOptions(events?: Events): PoolOptions {
  return { commitIntervalMs: 0, log: (event, fields) => events?.push({ event, fields }) };
}

/** A pool of `poolBlocks` on a simulated device (seeded) with one volume `v` of `volumeBytes`. */
export async function simPoolWithVolume(poolBlocks: number, volumeBytes: number, seed: number): Promise<{ device: SimDevice; engine: CairnEngine; id: number }> {
  const device = new SimDevice(poolBlocks, new Prng(seed));
  const engine = await createPool(device, eventOptions());
  await engine.createVolume('v', volumeBytes);
  return { device, engine, id: engine.resolve('v').id };
}
