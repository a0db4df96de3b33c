// One process owns a pool: a lock file beside it (`POOL.lock`) holds the owner's pid. It is created
// with O_EXCL; a lock whose pid is no longer a live process is stale and is taken over.
import { promises as fsp, readFileSync } from 'node:fs';

export class PoolLocked extends Error {
  constructor(readonly poolPath: string, readonly pid: number) {
    super(`pool ${poolPath} is in use by another cairn process (pid ${pid}); stop it first`);
    this.name = 'PoolLocked';
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try { process.kill(pid, 0); } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
  // A recycled pid that is not a node process cannot hold a pool lock.
  try { return /node|cairn/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8')); } catch { return true; }
}

export interface PoolLock { path: string; release(): Promise<void> }

/** Takes the lock of `poolPath` or throws PoolLocked naming the owner. */
export async function lockPool(poolPath: string): Promise<PoolLock> {
  const path = `${poolPath}.lock`;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      const handle = await fsp.open(path, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.sync();
      await handle.close();
      return {
        path,
        async release() {
          // Only remove our own lock (a takeover after a stale detection would have rewritten it).
          const owner = Number((await fsp.readFile(path, 'utf8').catch(() => '')).trim());
          if (owner === process.pid) await fsp.rm(path, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number((await fsp.readFile(path, 'utf8').catch(() => '')).trim());
    if (alive(owner) && owner !== process.pid) throw new PoolLocked(poolPath, owner);
    // Stale: rename it away atomically (only one contender succeeds), then retry the create.
    await fsp.rename(path, `${path}.stale-${process.pid}`).then(() => fsp.rm(`${path}.stale-${process.pid}`, { force: true }), () => {});
  }
  throw new Error(`cannot take the lock ${path}`);
}
