// Transmission flags for an export, truthful to what the server does (proto.md "Transmission flags").
import {
  NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES, NBD_FLAG_SEND_DF, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_FAST_ZERO,
} from './constants.js';

export function transmissionFlags(readOnly: boolean, structuredReplies: boolean): number {
  // CAN_MULTI_CONN: the engine has one cache shared by all connections, and engine.flush() makes every
  // completed write durable whichever connection made it.
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN |
    NBD_FLAG_SEND_CACHE;
  if (readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  // proto.md: SEND_DF MUST be clear unless structured replies were negotiated.
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  return flags;
}
