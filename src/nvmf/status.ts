// NVMe numbers shared by the admin and I/O paths: status codes, opcodes, feature and log page ids, and
// the mapping of engine errors to an NVMe status. A status here is the completion's 15-bit "status
// field without the phase bit": (DNR << 14) | (M << 13) | (SCT << 8) | SC (NVMe base spec 2.0, figure
// 92). The transport shifts it left by one into CQE dword 3 bits 16..31 (bit 16 is the phase tag).

/** Do Not Retry: the same command would fail the same way. */
export const STATUS_DNR = 0x4000;
/** More: there is more status information in the error log page. */
export const STATUS_MORE = 0x2000;

export const SCT_GENERIC = 0x0;
export const SCT_COMMAND_SPECIFIC = 0x1;
export const SCT_MEDIA = 0x2;
export const SCT_PATH = 0x3;

/** A status from its type and code, with the do-not-retry bit when `dnr`. */
export function nvmeStatus(sct: number, sc: number, dnr = false): number {
  return (dnr ? STATUS_DNR : 0) | ((sct & 0x7) << 8) | (sc & 0xff);
}

export function statusType(status: number): number { return (status >> 8) & 0x7; }
export function statusCode(status: number): number { return status & 0xff; }
export function statusDnr(status: number): boolean { return (status & STATUS_DNR) !== 0; }

// Generic command status (SCT 0).
export const SC_SUCCESS = 0x00;
export const SC_INVALID_OPCODE = 0x01;
export const SC_INVALID_FIELD = 0x02;
export const SC_COMMAND_ID_CONFLICT = 0x03;
export const SC_DATA_TRANSFER_ERROR = 0x04;
export const SC_INTERNAL = 0x06;
export const SC_ABORT_REQUESTED = 0x07;
export const SC_ABORT_SQ_DELETED = 0x08;
export const SC_INVALID_NAMESPACE = 0x0b;
export const SC_COMMAND_SEQUENCE_ERROR = 0x0c;
export const SC_SGL_INVALID_LAST_DESCRIPTOR = 0x0d;
export const SC_SGL_INVALID_COUNT = 0x0e;
export const SC_SGL_INVALID_DATA_LENGTH = 0x0f;
export const SC_SGL_INVALID_TYPE = 0x11;
export const SC_SGL_INVALID_OFFSET = 0x16;
export const SC_NAMESPACE_WRITE_PROTECTED = 0x20;
export const SC_COMMAND_INTERRUPTED = 0x21;
export const SC_TRANSIENT_TRANSPORT_ERROR = 0x22;
export const SC_LBA_OUT_OF_RANGE = 0x80;
export const SC_CAPACITY_EXCEEDED = 0x81;
export const SC_NAMESPACE_NOT_READY = 0x82;

// Command specific status (SCT 1).
export const SC_INVALID_QUEUE_ID = 0x01;
export const SC_INVALID_QUEUE_SIZE = 0x02;
export const SC_ASYNC_EVENT_LIMIT_EXCEEDED = 0x05;
export const SC_INVALID_LOG_PAGE = 0x09;
export const SC_FEATURE_NOT_SAVEABLE = 0x0d;
export const SC_FEATURE_NOT_CHANGEABLE = 0x0e;
export const SC_FEATURE_NOT_NAMESPACE_SPECIFIC = 0x0f;
export const SC_CONFLICTING_ATTRIBUTES = 0x80;
// NVMe over Fabrics command specific status (SCT 1), for Connect (NVMe-oF 1.1 figure 21 / base 2.0 figure 103).
export const SC_CONNECT_INCOMPATIBLE_FORMAT = 0x80;
export const SC_CONNECT_CONTROLLER_BUSY = 0x81;
export const SC_CONNECT_INVALID_PARAMETERS = 0x82;
export const SC_CONNECT_RESTART_DISCOVERY = 0x83;
export const SC_CONNECT_INVALID_HOST = 0x84;
export const SC_DISCOVERY_RESTART = 0x90;
export const SC_AUTH_REQUIRED = 0x91;

// Path related status (SCT 3): ANA (base spec 2.0 figure 104).
export const SC_ANA_PERSISTENT_LOSS = 0x01;
export const SC_ANA_INACCESSIBLE = 0x02;
export const SC_ANA_TRANSITION = 0x03;
/** An I/O command on a path whose namespace is ANA Inaccessible: no DNR, so the host retries on another path. */
export const STATUS_ANA_INACCESSIBLE = nvmeStatus(SCT_PATH, SC_ANA_INACCESSIBLE);

// Media and data integrity errors (SCT 2).
export const SC_WRITE_FAULT = 0x80;
export const SC_UNRECOVERED_READ_ERROR = 0x81;
export const SC_COMPARE_FAILURE = 0x85;
export const SC_ACCESS_DENIED = 0x86;

/** Connect refused for a host not on the subsystem's allow-list. */
export const STATUS_CONNECT_INVALID_HOST = nvmeStatus(SCT_COMMAND_SPECIFIC, SC_CONNECT_INVALID_HOST, true);
export const STATUS_SUCCESS = 0;
export const STATUS_INVALID_OPCODE = nvmeStatus(SCT_GENERIC, SC_INVALID_OPCODE, true);
export const STATUS_INVALID_FIELD = nvmeStatus(SCT_GENERIC, SC_INVALID_FIELD, true);
export const STATUS_INVALID_NAMESPACE = nvmeStatus(SCT_GENERIC, SC_INVALID_NAMESPACE, true);
export const STATUS_INTERNAL = nvmeStatus(SCT_GENERIC, SC_INTERNAL);
export const STATUS_INVALID_LOG_PAGE = nvmeStatus(SCT_COMMAND_SPECIFIC, SC_INVALID_LOG_PAGE, true);

// Admin command opcodes (base spec 2.0 figure 138; 0x7F is the Fabrics command).
export const ADMIN_DELETE_IO_SQ = 0x00;
export const ADMIN_CREATE_IO_SQ = 0x01;
export const ADMIN_GET_LOG_PAGE = 0x02;
export const ADMIN_DELETE_IO_CQ = 0x04;
export const ADMIN_CREATE_IO_CQ = 0x05;
export const ADMIN_IDENTIFY = 0x06;
export const ADMIN_ABORT = 0x08;
export const ADMIN_SET_FEATURES = 0x09;
export const ADMIN_GET_FEATURES = 0x0a;
export const ADMIN_ASYNC_EVENT_REQUEST = 0x0c;
export const ADMIN_NAMESPACE_MANAGEMENT = 0x0d;
export const ADMIN_FIRMWARE_COMMIT = 0x10;
export const ADMIN_FIRMWARE_DOWNLOAD = 0x11;
export const ADMIN_KEEP_ALIVE = 0x18;
export const ADMIN_FABRICS = 0x7f;
export const ADMIN_FORMAT_NVM = 0x80;

// NVM command set I/O opcodes.
export const IO_FLUSH = 0x00;
export const IO_WRITE = 0x01;
export const IO_READ = 0x02;
export const IO_WRITE_UNCORRECTABLE = 0x04;
export const IO_COMPARE = 0x05;
export const IO_WRITE_ZEROES = 0x08;
export const IO_DATASET_MANAGEMENT = 0x09;

// Fabrics command types (the FCTYPE byte of opcode 0x7F).
export const FCTYPE_PROPERTY_SET = 0x00;
export const FCTYPE_CONNECT = 0x01;
export const FCTYPE_PROPERTY_GET = 0x04;
export const FCTYPE_AUTH_SEND = 0x05;
export const FCTYPE_AUTH_RECEIVE = 0x06;
export const FCTYPE_DISCONNECT = 0x08;

// Feature identifiers (base spec 2.0 figure 323).
export const FEATURE_ARBITRATION = 0x01;
export const FEATURE_POWER_MANAGEMENT = 0x02;
export const FEATURE_TEMPERATURE_THRESHOLD = 0x04;
export const FEATURE_ERROR_RECOVERY = 0x05;
export const FEATURE_VOLATILE_WRITE_CACHE = 0x06;
export const FEATURE_NUMBER_OF_QUEUES = 0x07;
export const FEATURE_INTERRUPT_COALESCING = 0x08;
export const FEATURE_INTERRUPT_VECTOR_CONFIG = 0x09;
export const FEATURE_WRITE_ATOMICITY = 0x0a;
export const FEATURE_ASYNC_EVENT_CONFIG = 0x0b;
export const FEATURE_AUTONOMOUS_POWER_STATE = 0x0c;
export const FEATURE_TIMESTAMP = 0x0e;
export const FEATURE_KEEP_ALIVE_TIMER = 0x0f;
export const FEATURE_HOST_IDENTIFIER = 0x81;

// Log page identifiers (base spec 2.0 figure 202; 0x70 is the discovery log, NVMe-oF).
export const LOG_SUPPORTED_PAGES = 0x00;
export const LOG_ERROR = 0x01;
export const LOG_SMART = 0x02;
export const LOG_FIRMWARE_SLOT = 0x03;
export const LOG_CHANGED_NAMESPACES = 0x04;
export const LOG_COMMANDS_EFFECTS = 0x05;
export const LOG_ANA = 0x0c;
export const LOG_DISCOVERY = 0x70;

// Asynchronous event completion dword 0 (base spec 2.0 figure 150): type, information, log page.
export const AEN_TYPE_NOTICE = 0x2;
export const AEN_INFO_NAMESPACE_ATTRIBUTE_CHANGED = 0x00;
export const AEN_INFO_DISCOVERY_LOG_CHANGED = 0xf0;
export const AEN_INFO_ANA_CHANGE = 0x03;

/** Completion dword 0 of an Asynchronous Event Request that reports `info` of `type` with its log page. */
export function asyncEventDw0(type: number, info: number, logPage: number): number {
  return ((logPage & 0xff) << 16 | (info & 0xff) << 8 | (type & 0x7)) >>> 0;
}

/** The fields of an error that the mapping looks at: a CairnError (engine) has both. */
export interface ErrorLike { code?: unknown; name?: unknown }

/**
 * The NVMe status for an error the engine (or a ScopedEngine over it) threw during a command.
 * What a retry cannot fix carries DNR, so the host fails the I/O at once instead of retrying it
 * (Linux nvme_decide_disposition retries only without DNR).
 */
export function statusForEngineError(err: unknown): number {
  const code = typeof err === 'object' && err !== null ? (err as ErrorLike).code : undefined;
  switch (code) {
    case 'out_of_range': case 'invalid_size':
      return nvmeStatus(SCT_GENERIC, SC_LBA_OUT_OF_RANGE, true);
    case 'read_only':
      return nvmeStatus(SCT_GENERIC, SC_NAMESPACE_WRITE_PROTECTED, true);
    case 'pool_full': case 'key_slots_full':
      return nvmeStatus(SCT_GENERIC, SC_CAPACITY_EXCEEDED, true);
    case 'volume_locked':
      return nvmeStatus(SCT_MEDIA, SC_ACCESS_DENIED, true);
    case 'volume_not_found': case 'snapshot_not_found':
      return nvmeStatus(SCT_GENERIC, SC_INVALID_NAMESPACE, true);
    case 'invalid_argument':
      return nvmeStatus(SCT_GENERIC, SC_INVALID_FIELD, true);
    case 'not_primary':
      // A cluster node that is not (or no longer) the volume's primary: the host's multipath moves.
      return STATUS_ANA_INACCESSIBLE;
    case 'checksum_error':
      // The block's checksum failed: the data cannot be read back, a retry reads the same bytes.
      return nvmeStatus(SCT_MEDIA, SC_UNRECOVERED_READ_ERROR, true);
    default:
      // io_error, pool_closed, internal errors: perhaps transient (a daemon restarting), so no DNR.
      return nvmeStatus(SCT_GENERIC, SC_INTERNAL);
  }
}
