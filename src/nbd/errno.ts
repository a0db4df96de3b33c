// Maps engine errors to the NBD error numbers a reply may carry (proto.md "Error values": only
// EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN are defined).
import { CairnError } from '../engine/index.js';
import { NBD_EIO, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from './constants.js';

export function nbdErrnoOf(error: unknown): number {
  if (!(error instanceof CairnError)) return NBD_EIO;
  switch (error.errno) {
    case 'EPERM': return NBD_EPERM;
    // A locked encrypted volume: the protocol has no EACCES; EPERM ("Operation not permitted") is the closest it defines.
    case 'EACCES': return NBD_EPERM;
    case 'ENOSPC': return NBD_ENOSPC;
    case 'EINVAL': return NBD_EINVAL;
    case 'ESHUTDOWN': return NBD_ESHUTDOWN;
    // ENXIO (the export was deleted under the connection) has no NBD value: report an I/O error.
    case 'ENXIO': return NBD_EIO;
    case 'EIO': return NBD_EIO;
  }
}

export function messageOf(error: unknown): string {
  if (error instanceof CairnError) return `${error.code}: ${error.message}`;
  if (error instanceof Error) return `internal error: ${error.message}`;
  return 'internal error';
}
