// The error of a call that reached a node which is not (or no longer) the volume's primary: data I/O
// runs only on the primary, so the caller (NBD forwarder, NVMe ANA, API) goes to the primary instead.
import { CairnError } from '../engine/index.js';
import { NOT_PRIMARY_CODE } from './handle.js';

export class NotPrimary extends CairnError {
  constructor(volume: string, primary: string | null) {
    super(NOT_PRIMARY_CODE, `this node is not the primary of ${volume}${primary === null ? ' (no primary is alive)' : ` (its primary is node ${primary})`}`, 'EIO');
    this.name = 'NotPrimary';
  }
}

/** The errno a block protocol reports for an engine code carried over the replication protocol. */
const ERRNO_BY_CODE: Record<string, CairnError['errno']> = {
  volume_not_found: 'ENXIO', snapshot_not_found: 'ENXIO', pool_full: 'ENOSPC', key_slots_full: 'ENOSPC',
  read_only: 'EPERM', volume_locked: 'EACCES', wrong_key: 'EACCES', pool_closed: 'ESHUTDOWN',
  io_error: 'EIO', checksum_error: 'EIO', not_primary: 'EIO', internal_error: 'EIO',
};

/** Rebuilds on the caller's side the CairnError a remote node answered with (admin forwarding). */
export function remoteError(code: string, message: string): CairnError {
  // The code came from another node's CairnError (or the cluster's own codes): kept as it is, so the
  // API maps it to the same status as on the node that raised it.
  return new CairnError(code as CairnError['code'], message, ERRNO_BY_CODE[code] ?? 'EIO');
}
