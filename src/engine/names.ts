// Name rules for volumes and snapshots, and parsing of "VOL@SNAP" references.
import { NAME_BYTES_MAX, SETTING_KEY_BYTES_MAX } from './constants.js';
import { InvalidArgument, InvalidName, InvalidSize, assert } from './errors.js';
import { BLOCK_SIZE_BYTES } from './types.js';
import { VOLUME_BYTES_MAX } from './constants.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:+-]*$/;

export function validateName(name: string, what: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidName(String(name), `${what} name is empty`);
  if (Buffer.byteLength(name) > NAME_BYTES_MAX) throw new InvalidName(name, `${what} name longer than ${NAME_BYTES_MAX} bytes`);
  if (!NAME_RE.test(name)) throw new InvalidName(name, `${what} name must start with a letter or digit and hold only letters, digits and . _ : + -`);
  // The catalog splits VOLUME@SNAPSHOT at the first '@': a valid name never holds one.
  assert(!name.includes('@'), 'a valid name holds no @');
}

/**
 * A volume's name: NAME, or TENANT/NAME for a volume owned by a tenant other than the default one
 * (the layer above the engine keeps tenants; to the engine the prefix is part of the name, so names
 * are unique within a tenant and a pool without tenants reads as before).
 */
export function validateVolumeName(name: string): void {
  if (typeof name !== 'string') throw new InvalidName(String(name), 'volume name is not a string');
  const slash = name.indexOf('/');
  if (slash < 0) { validateName(name, 'volume'); return; }
  if (name.indexOf('/', slash + 1) >= 0) throw new InvalidName(name, 'volume name holds more than one /');
  validateName(name.slice(0, slash), 'tenant');
  validateName(name.slice(slash + 1), 'volume');
  if (Buffer.byteLength(name) > NAME_BYTES_MAX) throw new InvalidName(name, `tenant and volume name longer than ${NAME_BYTES_MAX} bytes together`);
}

/** A setting's key: printable ASCII without spaces, at most SETTING_KEY_BYTES_MAX bytes. */
export function validateSettingKey(key: string): void {
  if (typeof key !== 'string' || !/^[\x21-\x7e]+$/.test(key)) throw new InvalidArgument(`setting key ${JSON.stringify(key)} must be printable ASCII without spaces`);
  if (key.length > SETTING_KEY_BYTES_MAX) throw new InvalidArgument(`setting key ${key} is longer than ${SETTING_KEY_BYTES_MAX} bytes`);
}

export function parseRef(ref: string): { volume: string; snapshot: string | null } {
  if (typeof ref !== 'string') throw new InvalidName(String(ref), 'not a string');
  const at = ref.indexOf('@');
  if (at < 0) return { volume: ref, snapshot: null };
  assert(at < ref.length, 'the @ is inside the reference');
  return { volume: ref.slice(0, at), snapshot: ref.slice(at + 1) };
}

export function validateSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new InvalidSize(`size must be a positive integer number of bytes, got ${sizeBytes}`);
  if (sizeBytes % BLOCK_SIZE_BYTES !== 0) throw new InvalidSize(`size must be a multiple of ${BLOCK_SIZE_BYTES} bytes, got ${sizeBytes}`);
  if (sizeBytes > VOLUME_BYTES_MAX) throw new InvalidSize(`size ${sizeBytes} exceeds the maximum volume size of ${VOLUME_BYTES_MAX} bytes`);
  assert(sizeBytes / BLOCK_SIZE_BYTES <= VOLUME_BYTES_MAX / BLOCK_SIZE_BYTES, 'a valid size is at most the volume bound in blocks');
}
