// Snapshot identities for export streams. A snapshot's guid is derived from a per-pool uuid, its
// pool-unique id and its creation time; a snapshot created by importing a stream keeps the guid of
// the snapshot it was received from, so an incremental stream finds its base in another pool.
// State lives in a small JSON file beside the pool, replaced atomically (write, fsync, rename).
import { createHash, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Engine } from '../engine/index.js';
import type { SnapshotIdentity } from './format.js';

interface RegistryFile { poolUuid: string; received: Record<string, string> }

export class IdentityRegistry {
  private constructor(private readonly path: string, private state: RegistryFile) {}

  /** Loads (or creates) the registry file `${stateDir}/${basename(poolPath)}.streams.json`. */
  static async open(poolPath: string, stateDir = dirname(poolPath)): Promise<IdentityRegistry> {
    const path = join(stateDir, `${basename(poolPath)}.streams.json`);
    let state: RegistryFile;
    try {
      const parsed = JSON.parse(await fsp.readFile(path, 'utf8')) as Partial<RegistryFile>;
      state = { poolUuid: String(parsed.poolUuid), received: parsed.received ?? {} };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      state = { poolUuid: randomUUID(), received: {} };
    }
    const registry = new IdentityRegistry(path, state);
    await registry.save();
    return registry;
  }

  identify(engine: Engine, fullName: string): SnapshotIdentity {
    const snap = engine.getSnapshot(fullName);
    const received = this.state.received[String(snap.id)];
    const guid = received ?? createHash('sha256')
      .update(`${this.state.poolUuid}:${snap.id}:${snap.createdMs}`).digest('hex').slice(0, 32);
    return { fullName: snap.fullName, id: snap.id, createdMs: snap.createdMs, guid };
  }

  /** Marks local snapshot `id` as received from a stream whose snapshot had `guid`. */
  async recordReceived(engine: Engine, id: number, guid: string): Promise<void> {
    const live = new Set(engine.listSnapshots().map((s) => String(s.id)));
    const received: Record<string, string> = {};
    for (const [key, value] of Object.entries(this.state.received)) if (live.has(key)) received[key] = value;
    received[String(id)] = guid;
    this.state = { ...this.state, received };
    await this.save();
  }

  private async save(): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const handle = await fsp.open(tmp, 'w');
    try {
      await handle.writeFile(JSON.stringify(this.state));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, this.path);
  }
}
