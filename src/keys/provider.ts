// The KEK layer's whole surface: the layer above opens a tenant's key-encryption key from its reference
// and wraps and unwraps data keys (DEKs) with it, without knowing whether the KEK is a file or sits in
// an HSM. Everything else in src/keys/ is behind this file.
import { openFileKek } from './file-kek.js';
import { openPkcs11KekIsolated } from './pkcs11-host.js';
import { parseKekRef } from './ref.js';

export { KekError, KekUnavailable, KekWrongKey, KekRefInvalid, type KekErrorCode } from './errors.js';

export interface KekProvider {
  /** The reference it was opened from, with nothing secret in it (safe to log and store). */
  readonly ref: string;
  /** 16 hex chars identifying the KEK without revealing it (stable across restarts). */
  readonly fingerprint: string;
  /** Wraps a DEK (any length multiple of 8, >= 16 bytes; Cairn uses 64): RFC 3394 AES key wrap. */
  wrap(dek: Buffer): Promise<Buffer>;
  /** Unwraps; throws KekWrongKey when the integrity check fails (wrong KEK or damaged blob). */
  unwrap(wrapped: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/**
 * Checks a reference's syntax and Cairn's rules (no pin-value, a module path or CAIRN_PKCS11_MODULE in
 * `env`) without I/O; throws KekRefInvalid. Meant for the API, to refuse bad input before storing it.
 */
export function validateKekRef(ref: string, env: NodeJS.ProcessEnv = process.env): void {
  parseKekRef(ref, env);
}

/**
 * Opens the KEK a reference names, reading the key file or PIN anew (a key that comes back is seen by
 * the next open). Throws KekRefInvalid for a bad reference, KekUnavailable when the key cannot be used.
 */
export async function openKek(ref: string, env: NodeJS.ProcessEnv = process.env): Promise<KekProvider> {
  const parsed = parseKekRef(ref, env);
  return parsed.kind === 'file' ? openFileKek(ref, parsed.path) : openPkcs11KekIsolated(ref, parsed, env);
}
