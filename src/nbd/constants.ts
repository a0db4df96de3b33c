// NBD protocol numbers (NetworkBlockDevice/nbd doc/proto.md) and Cairn's bounds for the NBD server.
// Every bound is a named constant with its unit; the relations between them are asserted once at load
// (TigerBeetle style) so that a bad edit fails at start-up, not under load.
import { assert } from '../engine/index.js';

// Handshake magics (proto.md "Newstyle negotiation").
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** Option reply magic (proto.md "Fixed newstyle negotiation"). */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option reply types.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Requests and replies.
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;

// base:allocation flags (proto.md "Metadata contexts").
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** qemu:dirty-bitmap:* contexts: bit 0 set = dirty (changed). */
export const NBD_STATE_DIRTY = 1 << 0;

// Error values (proto.md "Error values"): the only numbers a reply may carry.
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// ---- Bounds ----
export const PORT_DEFAULT = 10809;
export const HOST_DEFAULT = '127.0.0.1';
/** Largest READ/WRITE payload; advertised as the maximum block size (proto.md: clients assume 32 MiB). */
export const REQUEST_BYTES_MAX = 32 * 1024 * 1024;
/**
 * The maximum for clients that did not ask for block size constraints (proto.md: the default maximum
 * is "effectively unlimited", 0xffffffff). Such requests are served in pieces of
 * LARGE_REQUEST_PIECE_BYTES, so memory stays bounded by REQUEST_BYTES_IN_FLIGHT_MAX however long they are.
 */
export const PAYLOAD_BYTES_UNLIMITED = 0xffffffff;
/** READs and WRITEs longer than REQUEST_BYTES_MAX are served in pieces of this size (4 KiB aligned). */
export const LARGE_REQUEST_PIECE_BYTES = 4 * 1024 * 1024;
/** Advertised minimum and preferred block size: the engine accepts any byte offset (read-modify-write). */
export const BLOCK_SIZE_BYTES_MIN = 1;
export const BLOCK_SIZE_PREFERRED_BYTES = 4096;
/** Requests of one connection processed concurrently; past it the socket is paused (backpressure). */
export const REQUESTS_IN_FLIGHT_MAX = 128;
/** Busy-poll window after each request (µs), see busy-poll.ts. */
export const BUSY_POLL_MICROS_DEFAULT = 200;
/**
 * Receive slabs (recv-slabs.ts): their size (on 1 MiB writes 2 and 4 MiB measured alike, 1 MiB ~10 %
 * and 256 KiB ~15 % slower), how many idle ones a server keeps, and how many connections read into
 * them at once (each pins one: at most 64 MiB).
 */
export const RECV_SLAB_BYTES = 2 * 1024 * 1024;
export const RECV_SLABS_IDLE_MAX = 16;
export const RECV_SLAB_READERS_MAX = 32;
/** Bytes of READ reply buffers kept for reuse, per server (see read-buffers.ts). */
export const READ_BUFFERS_POOLED_BYTES_MAX = 64 * 1024 * 1024;
/** CACHE reads its range in steps of this size (see prefetch in commands.ts). */
export const CACHE_PREFETCH_STEP_BYTES = 4 * 1024 * 1024;
/** Payload and read bytes of one connection's in-flight requests. */
export const REQUEST_BYTES_IN_FLIGHT_MAX = 128 * 1024 * 1024;
/** Reply bytes queued on a socket the client is not reading; past it we stop reading requests. */
export const REPLY_BYTES_QUEUED_MAX = 64 * 1024 * 1024;
/** Option data we buffer; longer options are skipped and answered NBD_REP_ERR_TOO_BIG. */
export const OPTION_BYTES_MAX = 64 * 1024;
/** Export names listed by NBD_OPT_LIST (the catalog holds at most 2^24 records; a list is streamed). */
export const EXPORTS_LISTED_MAX = 1_000_000;
/**
 * Options one handshake may send before we treat it as denial of service and hang up: enough for a
 * client that asks about every listed export (`nbdinfo --list` sends INFO and LIST_META_CONTEXT per
 * export), plus the options around them.
 */
export const OPTIONS_PER_HANDSHAKE_MAX = 4 * EXPORTS_LISTED_MAX + 1024;
/** Export names and strings (proto.md: MUST be no longer than 4096 bytes). */
export const STRING_BYTES_MAX = 4096;
/**
 * A client in the handshake that leaves us waiting this long (for its next option, the rest of one,
 * or for it to read our replies) is disconnected. Per option, not for the whole negotiation: a
 * client walking 100 000 exports keeps talking far longer than any one pause (libnbd 1.14 holds each
 * LIST_META_CONTEXT ~200 ms in its socket with MSG_MORE over TCP: `nbdinfo --list` then spends ~6
 * hours on 100 000 exports). The whole negotiation is bounded by OPTIONS_PER_HANDSHAKE_MAX instead of
 * a clock; what it holds meanwhile is one of CONNECTIONS_MAX slots, as an idle transmission does.
 */
export const HANDSHAKE_IDLE_MS_DEFAULT = 30_000;
/** NBD_OPT_LIST sends this many names, then lets the event loop run and the socket drain. */
export const EXPORTS_LISTED_PER_BATCH = 512;
/** Reply bytes queued during the handshake past which a streamed list waits for the client to read. */
export const HANDSHAKE_REPLY_BYTES_QUEUED_MAX = 4 * 1024 * 1024;
/** On close(), how long open connections get to finish in-flight requests. */
export const CLOSE_DRAIN_MS_MAX = 5_000;
export const CONNECTIONS_MAX = 1024;
/** Block-status descriptors per context per reply (proto.md allows returning fewer than the range). */
export const BLOCK_STATUS_DESCRIPTORS_MAX = 64 * 1024;
/** `qemu:dirty-bitmap:since:SNAP` contexts LIST names one by one; past it, one namespace record (meta-context.ts). */
export const META_CONTEXTS_LISTED_MAX = 256;
/** Metadata contexts one connection may select. */
export const META_CONTEXTS_SELECTED_MAX = 64;
/** Reads at least this long with structured replies are split into data and hole chunks. */
export const SPARSE_READ_BYTES_MIN = 64 * 1024;
/** Smallest size class of pooled READ reply buffers (read-buffers.ts): one engine block. */
export const READ_BUFFER_CLASS_BYTES_MIN = 4096;
/**
 * A receive slab (recv-slabs.ts) is left for the next one when less than this is free: a socket read
 * into less room than this costs more system calls than the slab saves.
 */
export const SLAB_FREE_BYTES_MIN = 64 * 1024;

/** Bytes buffered during the handshake before the server stops reading (a GO with a maximal name fits). */
export const HANDSHAKE_BUFFERED_BYTES_MAX = 2 * OPTION_BYTES_MAX;
/** After the server ends a connection, how long the client gets to close its side before the socket is destroyed. */
export const END_LINGER_MS = 2_000;
/** At shutdown, how long a connection still in the handshake may go on hearing NBD_REP_ERR_SHUTDOWN. */
export const HANDSHAKE_SHUTDOWN_GRACE_MS = 1_000;

assert(REQUEST_BYTES_MAX >= 32 * 1024 * 1024, 'max payload must be at least 32 MiB (clients assume it)');
assert(REQUEST_BYTES_IN_FLIGHT_MAX >= REQUEST_BYTES_MAX, 'one maximal request must fit in flight');
assert(REPLY_BYTES_QUEUED_MAX >= REQUEST_BYTES_MAX, 'one maximal read reply must fit in the queue');
assert(OPTION_BYTES_MAX >= 4 + STRING_BYTES_MAX + 2 + 2 * 16, 'a GO with a maximal name must fit');
assert((BLOCK_SIZE_PREFERRED_BYTES & (BLOCK_SIZE_PREFERRED_BYTES - 1)) === 0, 'preferred block size: power of 2');
assert(REQUEST_BYTES_MAX % BLOCK_SIZE_PREFERRED_BYTES === 0, 'max payload: multiple of preferred size');
assert(LARGE_REQUEST_PIECE_BYTES <= REQUEST_BYTES_MAX && LARGE_REQUEST_PIECE_BYTES % BLOCK_SIZE_PREFERRED_BYTES === 0, 'pieces: aligned, within one request');
assert(SPARSE_READ_BYTES_MIN <= REQUEST_BYTES_MAX, 'sparse read threshold within payload bound');
assert((READ_BUFFER_CLASS_BYTES_MIN & (READ_BUFFER_CLASS_BYTES_MIN - 1)) === 0, 'reply buffer classes are powers of 2');
assert(SLAB_FREE_BYTES_MIN <= REQUEST_BYTES_MAX, 'a slab takes at least one read of a payload piece');
assert(OPTIONS_PER_HANDSHAKE_MAX > EXPORTS_LISTED_MAX, 'a client may ask about every listed export');
assert(HANDSHAKE_REPLY_BYTES_QUEUED_MAX >= EXPORTS_LISTED_PER_BATCH * (20 + 4 + STRING_BYTES_MAX), 'one batch of LIST replies fits the queue bound');
