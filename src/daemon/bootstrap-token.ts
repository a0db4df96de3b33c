// The admin token a fresh daemon makes for whoever started it: written, mode 0600, to
// STATE_DIR/POOL.admin-token (named by the pool, like its jobs file, so pools sharing a directory
// keep their own), where the CLI finds it (cli/credentials.ts). Kept while it still verifies; made
// again when the file is missing or its token was revoked (the pool's catalog holds only its hash).
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { TenantStore } from '../tenancy/store.js';

export const bootstrapTokenName = 'bootstrap-admin';

/**
 * The bootstrap token's name: one per node on a cluster node (tokens are shared by every node, and
 * each node makes its own for whoever started it; another node's must not be taken for a lost one).
 */
export function bootstrapTokenNameOf(node: string | null): string { return node === null ? bootstrapTokenName : `${bootstrapTokenName}-${node}`; }

export function adminTokenPath(poolPath: string, stateDir: string): string { return join(stateDir, `${basename(poolPath)}.admin-token`); }

/** Ensures the pool's admin token file holds a valid admin token; returns whether a new one was made. */
export async function ensureBootstrapToken(store: TenantStore, poolPath: string, stateDir: string, name = bootstrapTokenName): Promise<{ path: string; created: boolean }> {
  const path = adminTokenPath(poolPath, stateDir);
  if (existsSync(path)) {
    const principal = store.verifyToken(readFileSync(path, 'utf8').trim());
    if (principal !== null && principal.role === 'admin') {
      chmodSync(path, 0o600);
      return { path, created: false };
    }
  }
  // The old bootstrap token (its file lost or replaced) is revoked, so exactly one exists.
  if (store.listTokens().some((t) => t.name === name)) await store.revokeToken(name);
  const { token } = await store.createToken({ role: 'admin', name });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${token}\n`, { mode: 0o600 });
  renameSync(tmp, path);
  return { path, created: true };
}
