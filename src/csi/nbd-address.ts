// Where the node attaches a volume from: a fixed NBD address given with --nbd, or (the default) the
// address the daemon reports for the volume (`nbdUri` in GET /v1/volumes/NAME, or the pool's `nbd`
// when the plugin's token cannot see the volume's tenant), so the node needs only the API's address.
// A daemon bound to every address (0.0.0.0, ::) reports that address, which no other host can dial:
// the host the API was reached at stands in for it. The export name is the volume as the NBD
// connection sees it: a tenant's key sees its own volumes under their plain names (docs/nbd.md
// "TLS and tenants"); a plain connection sees the default tenant's. A locked volume (encrypted, its
// tenant's KEK unavailable) is refused before anything is attached: its I/O would fail (EPERM).
import { problemToCsi } from './api-client.js';
import { failedPrecondition, notFound, unavailable } from './errors.js';
import { parseVolumeId } from './names.js';
import type { NbdPsk } from './nbd-keys.js';
import { apiNameOf, type Session } from './sessions.js';

export type NbdSource = { kind: 'fixed'; address: string } | { kind: 'api'; session: () => Promise<Session>; apiUrl: string };

/** The source for `--nbd` when given, else the daemon behind `apiUrl` (asked with the plugin's own token). */
export function nbdSource(nbd: string | null | undefined, sessions: { own(): Promise<Session> }, apiUrl: string): NbdSource {
  return nbd !== undefined && nbd !== null && nbd !== ''
    ? { kind: 'fixed', address: nbd } : { kind: 'api', session: () => sessions.own(), apiUrl };
}

const unspecifiedHosts = new Set(['0.0.0.0', '[::]', '::', '[::0]']);

/** `reported` with an unspecified host (a daemon bound to every address) replaced by the API's host. */
export function reachableUri(reported: string, apiUrl: string): string {
  const uri = new URL(reported);
  if (!unspecifiedHosts.has(uri.hostname)) return reported;
  uri.hostname = new URL(apiUrl).hostname;
  return uri.toString();
}

/** "HOST:PORT" of an nbd:// URI. */
const hostOf = (uri: string): string => new URL(uri).host;

/** HOST:PORT of the NBD server holding `volumeId`; NOT_FOUND for a volume the API says does not exist. */
async function serverOf(source: NbdSource, volumeId: string): Promise<string> {
  if (source.kind === 'fixed') return source.address;
  const ref = parseVolumeId(volumeId);
  if (ref === null) throw notFound(`volume ${volumeId} does not exist`);
  const fail = (what: string) => (err: unknown): never => { throw problemToCsi(err, what); };
  const session = await source.session();
  const noNbd = () => failedPrecondition(`the Cairn daemon at ${source.apiUrl} serves no NBD over TCP; start it with --nbd, or give the node --nbd HOST:PORT`);
  if (session.tenant !== null && session.tenant !== ref.tenant) {
    // The node's token is another tenant's: the volume stays unseen, the pool still names the server.
    const pool = await session.api.pool().catch(fail('get pool'));
    if (pool.nbd === null) throw noNbd();
    return hostOf(reachableUri(pool.nbd, source.apiUrl));
  }
  const volume = await session.api.getVolume(apiNameOf(session, ref)).catch(fail(`look up ${volumeId}`));
  if (volume === null) throw notFound(`volume ${volumeId} does not exist`);
  if (volume.nbdUri === null) throw noNbd();
  if (volume.locked) {
    // UNAVAILABLE, not FAILED_PRECONDITION: it unlocks on its own once the KEK is back, so the
    // kubelet's retry of this same call succeeds then (see problemToCsi for volume_locked).
    throw unavailable(`volume ${volumeId} is locked: it is encrypted and its tenant's key-encryption key is unavailable `
      + '(it unlocks when the key provider is back, or with cairn tenant unlock)');
  }
  return hostOf(reachableUri(volume.nbdUri, source.apiUrl));
}

/**
 * The URI to attach `volumeId` from: nbd://HOST:PORT/VOLUME-ID over plain NBD, or with a TLS-PSK key
 * nbds://IDENTITY@HOST:PORT/NAME?tls-psk-file=FILE (libnbd's URI form; the key stays in the file).
 */
export async function exportUriOf(source: NbdSource, volumeId: string, psk: NbdPsk | null = null): Promise<string> {
  const server = await serverOf(source, volumeId);
  if (psk === null) return `nbd://${server}/${encodeURIComponent(volumeId)}`;
  const ref = parseVolumeId(volumeId);
  if (ref === null) throw notFound(`volume ${volumeId} does not exist`);
  const query = new URLSearchParams({ 'tls-psk-file': psk.file });
  return `nbds://${encodeURIComponent(psk.identity)}@${server}/${encodeURIComponent(ref.name)}?${query.toString()}`;
}
