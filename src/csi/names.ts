// CSI ids and names. Volume id = the Cairn volume name; snapshot id = "VOL@SNAP". A CSI name
// (the CO's idempotency key, e.g. "pvc-<uid>") becomes the Cairn name itself when it is a
// valid Cairn name, otherwise a deterministic hash of it, so a retried call finds its object.
import { createHash } from 'node:crypto';
import { cairnNameLengthMax, nameBytesMax } from './constants.js';
import { CsiError, Status, invalidArgument } from './errors.js';

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
  const digest = createHash('sha256').update(csiName).digest('hex').slice(0, 40);
  return `${prefix}-${digest}`;
}

export interface SnapshotId { volume: string; snapshot: string }

/** Parses "VOL@SNAP"; null when the id cannot name a Cairn snapshot (so it cannot exist). */
export function parseSnapshotId(id: string): SnapshotId | null {
  const at = id.indexOf('@');
  if (at < 0) return null;
  const volume = id.slice(0, at);
  const snapshot = id.slice(at + 1);
  if (!isCairnName(volume) || !isCairnName(snapshot)) return null;
  return { volume, snapshot };
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

