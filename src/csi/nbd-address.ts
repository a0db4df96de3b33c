// Where the node attaches a volume from: a fixed NBD address given with --nbd, or (the default) the
// export URI the daemon reports for the volume (`nbdUri` in GET /v1/volumes/NAME), so the node needs
// only the API's address. A daemon bound to every address (0.0.0.0, ::) reports that address, which
// no other host can dial: the host the API was reached at stands in for it.
import { CairnApi, problemToCsi } from './api-client.js';
import { failedPrecondition, notFound } from './errors.js';
import { nbdUri } from './attach.js';

export type NbdSource = { kind: 'fixed'; address: string } | { kind: 'api'; api: CairnApi; apiUrl: string };

/** The source for `--nbd` when given, else the daemon behind `apiUrl`. */
export function nbdSource(nbd: string | null | undefined, api: CairnApi, apiUrl: string): NbdSource {
  return nbd !== undefined && nbd !== null && nbd !== '' ? { kind: 'fixed', address: nbd } : { kind: 'api', api, apiUrl };
}

const unspecifiedHosts = new Set(['0.0.0.0', '[::]', '::', '[::0]']);

/** `reported` with an unspecified host (a daemon bound to every address) replaced by the API's host. */
export function reachableUri(reported: string, apiUrl: string): string {
  const uri = new URL(reported);
  if (!unspecifiedHosts.has(uri.hostname)) return reported;
  uri.hostname = new URL(apiUrl).hostname;
  return uri.toString();
}

/** The NBD URI to attach `volumeId` from; NOT_FOUND for an unknown volume. */
export async function exportUriOf(source: NbdSource, volumeId: string): Promise<string> {
  if (source.kind === 'fixed') return nbdUri(source.address, volumeId);
  const volume = await source.api.getVolume(volumeId).catch((err: unknown) => { throw problemToCsi(err, `look up ${volumeId}`); });
  if (volume === null) throw notFound(`volume ${volumeId} does not exist`);
  if (volume.nbdUri === null) {
    throw failedPrecondition(`the Cairn daemon at ${source.apiUrl} serves no NBD over TCP; start it with --nbd, or give the node --nbd HOST:PORT`);
  }
  return reachableUri(volume.nbdUri, source.apiUrl);
}
