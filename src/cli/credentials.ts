// Which token and CA the CLI presents to the daemon. The token, in order: --token, CAIRN_TOKEN, the
// file named by CAIRN_TOKEN_FILE, then the daemon's bootstrap admin token (STATE_DIR/POOL.admin-token,
// POOL being CAIRN_POOL or ./data/cairn.pool and STATE_DIR CAIRN_STATE_DIR or the pool's directory)
// when this user can read it.
// The CA (--ca, CAIRN_CA) verifies an HTTPS daemon whose certificate no system CA signed.
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CliError } from './client.js';

export const defaultPoolPath = './data/cairn.pool';

export interface Credentials {
  token: string | null; tokenSource: string | null; ca: Buffer | null;
  /** A client certificate and key (PEM) for a daemon that requires one (--api-tls-client-ca). */
  cert: Buffer | null; key: Buffer | null;
}

function readPem(path: string | undefined, what: string): Buffer | null {
  if (path === undefined || path === '') return null;
  try { return readFileSync(path); } catch (err) {
    throw new CliError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function readToken(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new CliError(`cannot read the token file ${path} (${what}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function adminTokenFile(env: NodeJS.ProcessEnv): string {
  const pool = env.CAIRN_POOL ?? defaultPoolPath;
  return join(env.CAIRN_STATE_DIR ?? dirname(pool), `${basename(pool)}.admin-token`);
}

export function resolveCredentials(flags: { token?: string; ca?: string; clientCert?: string; clientKey?: string }, env: NodeJS.ProcessEnv): Credentials {
  let token: string | null = null, tokenSource: string | null = null;
  if (flags.token !== undefined) { token = flags.token; tokenSource = '--token'; }
  else if (env.CAIRN_TOKEN !== undefined && env.CAIRN_TOKEN !== '') { token = env.CAIRN_TOKEN; tokenSource = 'CAIRN_TOKEN'; }
  else if (env.CAIRN_TOKEN_FILE !== undefined && env.CAIRN_TOKEN_FILE !== '') { token = readToken(env.CAIRN_TOKEN_FILE, 'CAIRN_TOKEN_FILE'); tokenSource = env.CAIRN_TOKEN_FILE; }
  else {
    const path = adminTokenFile(env);
    try { token = readFileSync(path, 'utf8').trim(); tokenSource = path; } catch { /* not this user's daemon, or none: no token */ }
  }
  const ca = readPem(flags.ca ?? env.CAIRN_CA, 'CA file');
  const cert = readPem(flags.clientCert ?? env.CAIRN_CLIENT_CERT, 'client certificate');
  const key = readPem(flags.clientKey ?? env.CAIRN_CLIENT_KEY, 'client key');
  if ((cert === null) !== (key === null)) throw new CliError('a client certificate and its key go together (--client-cert and --client-key)');
  return { token: token === '' ? null : token, tokenSource, ca, cert, key };
}
