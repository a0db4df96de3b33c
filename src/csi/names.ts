// CSI ids and names. A volume id is the engine's name of the volume: "NAME" for the default
// tenant, "TENANT/NAME" for another (what an admin token sees), so an id names one volume in the
// pool whichever token a later call carries; a snapshot id is "VOLUME-ID@SNAP". A CSI name (the
// CO's idempotency key, e.g. "pvc-<uid>") becomes the Cairn name itself when it is a valid Cairn
// name, otherwise a deterministic hash of it, so a retried call finds its object.
import { createHash } from 'node:crypto';
import { cairnNameLengthMax, nameBytesMax } from './constants.js';
import { CsiError, Status, invalidArgument } from './errors.js';
import { DEFAULT_TENANT, qualify, tenantNameProblem } from '../tenancy/names.js';

const cairnNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
// CSI spec, CreateVolumeRequest.name: any Unicode string except these control characters.
const bannedCharacters = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/;

export function isCairnName(name: string): boolean {
  return name.length > 0 && name.length <= cairnNameLengthMax && cairnNamePattern.test(name);
}

/** Maps a CSI `name` to the Cairn name it is stored under (deterministic). */
export function cairnNameFor(csiName: string, prefix: string): string {
  if (csiName === '') throw invalidArgument('name is required');
  if (Buffer.byteLength(csiName) > nameBytesMax) throw invalidArgument(`name is longer than ${nameBytesMax} bytes`);
  if (bannedCharacters.test(csiName)) throw invalidArgument('name contains a control character the CSI spec bans');
  if (isCairnName(csiName)) return csiName;
  return hashedName(csiName, prefix);
}

const hashedName = (csiName: string, prefix: string): string =>
  `${prefix}-${createHash('sha256').update(csiName).digest('hex').slice(0, 40)}`;

// The engine's own rule for volume and snapshot names (src/engine/names.ts): ids of volumes made
// outside CSI (with ':' or '+') are ids too. Group snapshot members use '+', which cairnNameFor
// never passes through, so a group's snapshot name cannot clash with a single snapshot's.
const engineNamePattern = /^[A-Za-z0-9][A-Za-z0-9._:+-]*$/;
const engineNameBytesMax = 160;
const isEngineName = (name: string): boolean =>
  name.length > 0 && Buffer.byteLength(name) <= engineNameBytesMax && engineNamePattern.test(name);

/** A volume as an id names it: its tenant and the name the tenant knows it by. */
export interface VolumeRef { tenant: string; name: string }

/** Parses a volume id ("NAME" or "TENANT/NAME"); null when it cannot name a Cairn volume. */
export function parseVolumeId(id: string): VolumeRef | null {
  const slash = id.indexOf('/');
  const tenant = slash < 0 ? DEFAULT_TENANT : id.slice(0, slash);
  const name = slash < 0 ? id : id.slice(slash + 1);
  // "default/NAME" is not an id: the default tenant's volumes keep their plain names.
  if (slash >= 0 && (tenant === DEFAULT_TENANT || tenantNameProblem(tenant) !== null)) return null;
  return isEngineName(name) ? { tenant, name } : null;
}

export const volumeIdOf = (ref: VolumeRef): string => qualify(ref.tenant, ref.name);

/** A snapshot as an id names it: its volume's tenant and name, and the snapshot's name. */
export interface SnapshotId { tenant: string; volume: string; snapshot: string }

/** Parses "VOLUME-ID@SNAP"; null when the id cannot name a Cairn snapshot (so it cannot exist). */
export function parseSnapshotId(id: string): SnapshotId | null {
  const at = id.indexOf('@');
  if (at < 0) return null;
  const volume = parseVolumeId(id.slice(0, at));
  const snapshot = id.slice(at + 1);
  if (volume === null || !isEngineName(snapshot)) return null;
  return { tenant: volume.tenant, volume: volume.name, snapshot };
}

export const snapshotIdOf = (id: SnapshotId): string => `${qualify(id.tenant, id.volume)}@${id.snapshot}`;

/** Prefix of the Cairn snapshot name every member of a group snapshot shares. */
export const groupSnapshotPrefix = 'g+';

/** The Cairn snapshot name of a CSI group snapshot's members (deterministic, never a single snapshot's). */
export function groupSnapshotNameFor(csiName: string): string {
  const name = cairnNameFor(csiName, 'group');
  return groupSnapshotPrefix + (groupSnapshotPrefix.length + name.length <= cairnNameLengthMax ? name : hashedName(csiName, 'group'));
}

/** A group snapshot id: the tenant and the members' snapshot name ("g+NAME" or "TENANT/g+NAME"). */
export function parseGroupSnapshotId(id: string): { tenant: string; snapshot: string } | null {
  const ref = parseVolumeId(id);
  if (ref === null || !ref.name.startsWith(groupSnapshotPrefix) || ref.name.length === groupSnapshotPrefix.length) return null;
  return { tenant: ref.tenant, snapshot: ref.name };
}

/**
 * A CSI token that carries the daemon API's own page token (src/api/paging.ts), so a page is one
 * API call (a seek in the engine's index), not a fetch of the whole list.
 */
export function encodeApiPageToken(apiToken: string): string {
  return Buffer.from(JSON.stringify({ v: 2, api: apiToken })).toString('base64url');
}

/** null for the first page; CSI spec: a starting_token that is not valid is ABORTED. */
export function decodeApiPageToken(token: string): string | null {
  if (token === '') return null;
  try {
    const decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { v?: unknown; api?: unknown };
    if (decoded.v === 2 && typeof decoded.api === 'string' && decoded.api !== '') return decoded.api;
  } catch {
    // not JSON: fall through to ABORTED
  }
  throw new CsiError(Status.ABORTED, `starting_token ${JSON.stringify(token)} is not valid`);
}

