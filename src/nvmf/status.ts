// STAND-IN until nvmfadmin's status.ts is merged (contract: the status field without phase bit,
// value = (DNR<<14)|(M<<13)|(SCT<<8)|SC; the transport shifts it left by 1 into CQE dword 3 bits 16..31).
import { CairnError } from '../engine/index.js';

export const STATUS_DNR = 0x4000;
export const SCT_GENERIC = 0;
export const SCT_COMMAND_SPECIFIC = 1;
export const SCT_MEDIA = 2;
export const SC_SUCCESS = 0x00;
export const SC_INVALID_OPCODE = 0x01;
export const SC_INVALID_FIELD = 0x02;
export const SC_DATA_TRANSFER_ERROR = 0x04;
export const SC_INTERNAL = 0x06;
export const SC_INVALID_NAMESPACE = 0x0b;
export const SC_COMMAND_SEQUENCE_ERROR = 0x0c;
export const SC_SGL_INVALID_DATA_LENGTH = 0x0f;
export const SC_SGL_INVALID_TYPE = 0x11;
export const SC_NAMESPACE_WRITE_PROTECTED = 0x20;
export const SC_TRANSIENT_TRANSPORT_ERROR = 0x22;
export const SC_LBA_OUT_OF_RANGE = 0x80;
export const SC_CAPACITY_EXCEEDED = 0x81;
// Command specific (SCT 1).
export const SC_INVALID_QUEUE_IDENTIFIER = 0x01;
export const SC_INVALID_QUEUE_SIZE = 0x02;
export const SC_ASYNC_EVENT_LIMIT_EXCEEDED = 0x05;
export const SC_CONNECT_INCOMPATIBLE_FORMAT = 0x80;
export const SC_CONNECT_CONTROLLER_BUSY = 0x81;
export const SC_CONNECT_INVALID_PARAMETERS = 0x82;
export const SC_CONNECT_INVALID_HOST = 0x84;
export const SC_INVALID_PROPERTY = 0x03;
// Media (SCT 2).
export const SC_COMPARE_FAILURE = 0x85;
export const SC_ACCESS_DENIED = 0x86;

export function status(sct: number, sc: number, dnr = false): number {
  return (dnr ? STATUS_DNR : 0) | (sct << 8) | sc;
}

export function statusForEngineError(err: unknown): number {
  const code = err instanceof CairnError ? err.code : '';
  switch (code) {
    case 'out_of_range': return status(SCT_GENERIC, SC_LBA_OUT_OF_RANGE, true);
    case 'read_only': return status(SCT_GENERIC, SC_NAMESPACE_WRITE_PROTECTED, true);
    case 'pool_full': return status(SCT_GENERIC, SC_CAPACITY_EXCEEDED, true);
    case 'volume_locked': return status(SCT_MEDIA, SC_ACCESS_DENIED, true);
    case 'volume_not_found': case 'snapshot_not_found': return status(SCT_GENERIC, SC_INVALID_NAMESPACE, true);
    default: return status(SCT_GENERIC, SC_INTERNAL);
  }
}
