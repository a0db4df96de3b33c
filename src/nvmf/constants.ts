// NVMe/TCP transport constants (NVMe/TCP Transport Specification 1.0, "PDU Formats") and the target's
// bounds. Every length a host sends is checked against one of these before anything is buffered or
// allocated, so a hostile PLEN or SGL length cannot pin memory.
import { assert } from '../engine/index.js';

// PDU types (common header byte 0).
export const PDU_IC_REQ = 0x00;
export const PDU_IC_RESP = 0x01;
export const PDU_H2C_TERM_REQ = 0x02;
export const PDU_C2H_TERM_REQ = 0x03;
export const PDU_CAPSULE_CMD = 0x04;
export const PDU_CAPSULE_RESP = 0x05;
export const PDU_H2C_DATA = 0x06;
export const PDU_C2H_DATA = 0x07;
export const PDU_R2T = 0x09;

// Common header flags (byte 1).
export const FLAG_HDGST = 0x01;
export const FLAG_DDGST = 0x02;
/** H2CData / C2HData: the last PDU of the command's transfer. */
export const FLAG_DATA_LAST = 0x04;
/** C2HData: the command succeeded, no CapsuleResp follows (only when SQ flow control is off). */
export const FLAG_DATA_SUCCESS = 0x08;

// Header lengths (HLEN) by PDU type.
export const COMMON_HEADER_BYTES = 8;
export const IC_HEADER_BYTES = 128;
export const CAPSULE_CMD_HEADER_BYTES = 72;
export const CAPSULE_RESP_HEADER_BYTES = 24;
export const DATA_HEADER_BYTES = 24;
export const R2T_HEADER_BYTES = 24;
export const TERM_HEADER_BYTES = 24;
export const DIGEST_BYTES = 4;
export const SQE_BYTES = 64;
export const CQE_BYTES = 16;
/** The largest header a host may send, with its digest: what the receive queue's scratch must hold. */
export const HEADER_BYTES_MAX = IC_HEADER_BYTES;

/** ICReq/ICResp PFV: protocol format version 1.0. */
export const PFV = 0;
/** ICReq DGST bits. */
export const DGST_HEADER = 0x01;
export const DGST_DATA = 0x02;

// C2HTermReq fatal error status (FES).
export const FES_INVALID_HEADER_FIELD = 0x01;
export const FES_PDU_SEQUENCE_ERROR = 0x02;
export const FES_HEADER_DIGEST_ERROR = 0x03;
export const FES_DATA_OUT_OF_RANGE = 0x04;
export const FES_DATA_LIMIT_EXCEEDED = 0x05;
export const FES_UNSUPPORTED_PARAMETER = 0x06;
/** A TermReq's PLEN is at most 152 (the Linux host refuses a longer one): 24 header + 128 bytes of the offending PDU. */
export const TERM_REQ_PLEN_MAX = 152;
export const TERM_REQ_DATA_BYTES_MAX = TERM_REQ_PLEN_MAX - 24;

// SGL descriptor identifier (SQE byte 39): type in the high nibble, subtype in the low one.
/** Data block, offset subtype: the data is in the capsule (after the SQE). */
export const SGL_IN_CAPSULE = 0x01;
/** Transport data block, transport-specific subtype A: the data moves by R2T/H2CData or C2HData. */
export const SGL_TRANSPORT = 0x5a;

/** Connect CATTR bit 2: the host disabled SQ flow control (then C2HData may carry the SUCCESS flag). */
export const CONNECT_CATTR_SQ_FLOW_DISABLED = 0x04;

// Bounds.
/** I/O queues a controller may have (Number of Queues granted is at most this). */
export const IO_QUEUES_MAX = 64;
/** Entries per queue (CAP.MQES + 1); also the commands in flight per queue connection. */
export const QUEUE_ENTRIES_MAX = 128;
/** The admin queue's entries (Connect SQSIZE on QID 0 is bounded by this). */
export const ADMIN_QUEUE_ENTRIES_MAX = 32;
/** In-capsule data on the admin queue: the Linux host sends up to 8 KiB there (NVME_TCP_ADMIN_CCSZ). */
export const ADMIN_IN_CAPSULE_BYTES = 8192;
/** In-capsule data on I/O queues unless --nvmf-in-capsule-bytes says otherwise. */
export const IN_CAPSULE_BYTES_DEFAULT = 8192;
export const IN_CAPSULE_BYTES_MAX = 128 * 1024;
/** The largest H2CData payload a host may send (ICResp MAXH2CDATA). */
export const MAXH2CDATA_BYTES = 128 * 1024;
/** One command's data transfer at most (Identify MDTS = log2 of this in 4 KiB pages). */
export const DATA_TRANSFER_BYTES_MAX = 1024 * 1024;
export const MDTS_LOG2_PAGES = 8;
export const MEMORY_PAGE_BYTES = 4096;
/** Write data outstanding by R2T on one connection at most; further R2Ts wait for it to arrive. */
export const R2T_BYTES_IN_FLIGHT_MAX = 4 * 1024 * 1024;
/** A connection's send arena for small PDUs (responses, R2Ts, data headers); a full one is replaced, not reused. */
export const SEND_ARENA_BYTES = 64 * 1024;
/** PDUs queued to a host that is not reading them: past this, its socket is not read until they drain. */
export const SEND_BYTES_QUEUED_MAX = 8 * 1024 * 1024;
/** Read data (engine reads running or queued to send) per connection; further reads wait their turn. */
export const READ_BYTES_IN_FLIGHT_MAX = 16 * 1024 * 1024;
/** DSM ranges per command (NR is 0-based in 8 bits). */
export const DSM_RANGES_MAX = 256;
export const DSM_RANGE_BYTES = 16;
/** Controllers (admin connections) alive at once; a Connect past it gets Controller Busy. */
export const CONTROLLERS_MAX = 1024;
/** Connections at once per listener (queues of every controller, and connections still in ICReq). */
export const CONNECTIONS_MAX = 4096;
/** The first PDU (ICReq) must arrive within this, and a Connect must follow within it too. */
export const CONNECT_IDLE_MS_MAX = 10_000;
/** Keep-alive slack: a controller goes after KATO + max(this, KATO / 2) without a command. */
export const KEEP_ALIVE_SLACK_MS = 2_000;
/** Keep-alive granularity reported in Identify KAS (units of 100 ms). */
export const KAS_MS = 100;
/** Namespaces are re-scanned this often while a controller is live (catches created volumes). */
export const NAMESPACE_RESCAN_MS = 1_000;
/** Graceful close: in-flight commands get this long before sockets are cut. */
export const CLOSE_DRAIN_MS_MAX = 5_000;
/** CAP.TO: worst-case CSTS.RDY delay, in 500 ms units. */
export const CAP_TIMEOUT_500MS_UNITS = 20;
/** Receive slabs (src/nbd/recv-slabs.ts): size, idle ones kept, connections reading into them at most. */
export const RECV_SLAB_BYTES = 2 * 1024 * 1024;
export const RECV_SLABS_IDLE_MAX = 16;
export const RECV_SLAB_READERS_MAX = 64;
/** Read buffers kept for reuse per server. */
export const READ_BUFFERS_POOLED_BYTES_MAX = 64 * 1024 * 1024;

export const PORT_DEFAULT = 4420;
export const DISCOVERY_PORT_DEFAULT = 8009;

assert(MEMORY_PAGE_BYTES * 2 ** MDTS_LOG2_PAGES === DATA_TRANSFER_BYTES_MAX, 'MDTS matches the transfer bound');
assert(MAXH2CDATA_BYTES % 4 === 0 && MAXH2CDATA_BYTES >= 4096, 'MAXH2CDATA: multiple of 4, at least 4 KiB (the host checks)');
assert(IN_CAPSULE_BYTES_DEFAULT <= IN_CAPSULE_BYTES_MAX && IN_CAPSULE_BYTES_MAX <= DATA_TRANSFER_BYTES_MAX, 'in-capsule bound within a transfer');
assert(ADMIN_IN_CAPSULE_BYTES >= 8192, 'the admin queue takes 8 KiB in capsule');
assert(R2T_BYTES_IN_FLIGHT_MAX >= DATA_TRANSFER_BYTES_MAX, 'one whole transfer fits the R2T budget');
assert(READ_BYTES_IN_FLIGHT_MAX >= DATA_TRANSFER_BYTES_MAX && SEND_BYTES_QUEUED_MAX >= DATA_TRANSFER_BYTES_MAX, 'one whole read fits the read bounds');
assert(DSM_RANGES_MAX * DSM_RANGE_BYTES <= ADMIN_IN_CAPSULE_BYTES * 2, 'DSM ranges fit a small transfer');
assert(QUEUE_ENTRIES_MAX <= 0x10000 && ADMIN_QUEUE_ENTRIES_MAX <= QUEUE_ENTRIES_MAX, 'queue sizes fit 16 bits');
assert(TERM_HEADER_BYTES + TERM_REQ_DATA_BYTES_MAX === TERM_REQ_PLEN_MAX, 'a term request fits its bound');
