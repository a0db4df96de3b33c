// The tenant's NBD key in a node stage secret (Kubernetes: the StorageClass's
// csi.storage.k8s.io/node-stage-secret-name). The key goes into a psk file (mode 0600, one line
// "IDENTITY:HEXKEY", the format of gnutls psktool, qemu's tls-creds-psk keys.psk and libnbd's
// tls-psk-file) under the state directory for as long as the volume is staged; it is never in the
// attachment state, a command line or a log line.
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from './errors.js';
import type { StringMap } from './messages.js';

/** Stage secret keys: the psk file line, or its two halves. */
export const nbdPskSecretKey = 'nbdPsk';
export const nbdPskIdentitySecretKey = 'nbdPskIdentity';
export const nbdPskKeySecretKey = 'nbdPskKey';

const identityBytesMax = 128;
const keyHexCharsMax = 256;

export interface NbdKey { identity: string; keyHex: string }
/** A key written for a staged volume: its identity and the psk file holding it. */
export interface NbdPsk { identity: string; file: string }

/** The NBD key in a stage secret, or null when it holds none (a plain NBD attach). */
export function nbdKeyOf(secrets: StringMap | null | undefined, what: string): NbdKey | null {
  const s = secrets ?? {};
  let identity: string | undefined;
  let keyHex: string | undefined;
  if (s[nbdPskSecretKey] !== undefined) {
    const line = s[nbdPskSecretKey].trim();
    const colon = line.lastIndexOf(':');
    if (colon <= 0) throw invalidArgument(`${what}: secret ${nbdPskSecretKey} must be IDENTITY:HEXKEY (as cairn tenant nbd-key create prints it)`);
    identity = line.slice(0, colon);
    keyHex = line.slice(colon + 1);
  } else if (s[nbdPskIdentitySecretKey] !== undefined || s[nbdPskKeySecretKey] !== undefined) {
    identity = s[nbdPskIdentitySecretKey]?.trim();
    keyHex = s[nbdPskKeySecretKey]?.trim();
    if (!identity || !keyHex) throw invalidArgument(`${what}: secrets ${nbdPskIdentitySecretKey} and ${nbdPskKeySecretKey} go together`);
  } else {
    return null;
  }
  // Messages name the rule, never the value (it is a secret).
  if (identity.length > identityBytesMax || !/^[\x21-\x7e]+$/.test(identity)) {
    throw invalidArgument(`${what}: the NBD key identity must be 1-${identityBytesMax} printable ASCII characters without spaces`);
  }
  if (keyHex.length > keyHexCharsMax || !/^([0-9a-fA-F]{2})+$/.test(keyHex)) {
    throw invalidArgument(`${what}: the NBD key must be hex digits (an even number, at most ${keyHexCharsMax})`);
  }
  return { identity, keyHex: keyHex.toLowerCase() };
}

/** The directory of a volume's psk file: ids hold '/' (TENANT/NAME), which no volume name holds as '~'. */
export const pskDirOf = (stateDir: string, volumeId: string): string => join(stateDir, 'psk', volumeId.replace('/', '~'));

/** Writes the key for `volumeId` (replacing an earlier one) and returns where. */
export function writePskFile(stateDir: string, volumeId: string, key: NbdKey): NbdPsk {
  const dir = pskDirOf(stateDir, volumeId);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const file = join(dir, 'keys.psk'); // qemu's tls-creds-psk reads DIR/keys.psk
  writeFileSync(file, `${key.identity}:${key.keyHex}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { identity: key.identity, file };
}

export function removePskFile(stateDir: string, volumeId: string): void {
  rmSync(pskDirOf(stateDir, volumeId), { recursive: true, force: true });
}
