// Fabrics commands (NVMe over Fabrics 1.1, opcode 0x7F, FCTYPE at SQE byte 4): Connect, which makes
// a connection a queue (QID 0 creates a controller, QID > 0 joins one by CNTLID), Property Get/Set
// for the controller registers the host reads and writes (CAP, VS, CC, CSTS), and Disconnect.
import * as c from './constants.js';
import type { Command, NvmfConnection, QueueHandler } from './connection.js';
import type { ControllerRegistry } from './registry.js';
import { nvmeStatus as status, SCT_COMMAND_SPECIFIC, SCT_GENERIC, SC_CONNECT_INCOMPATIBLE_FORMAT, SC_CONNECT_INVALID_PARAMETERS, SC_INVALID_FIELD,
  SC_SGL_INVALID_DATA_LENGTH } from './status.js';

export const OPCODE_FABRICS = 0x7f;
export const FCTYPE_PROPERTY_SET = 0x00;
export const FCTYPE_CONNECT = 0x01;
export const FCTYPE_PROPERTY_GET = 0x04;
export const FCTYPE_DISCONNECT = 0x08;

/** Connect data (1024 bytes): HOSTID, CNTLID, SUBNQN, HOSTNQN. */
export const CONNECT_DATA_BYTES = 1024;
export const CONNECT_DATA_CNTLID_OFFSET = 16;
export const CONNECT_DATA_SUBNQN_OFFSET = 256;
export const CONNECT_DATA_HOSTNQN_OFFSET = 512;
const NQN_FIELD_BYTES = 256;
/** Connect SQE fields (byte offsets), for IPO in a Connect Invalid Parameters response. */
export const CONNECT_SQE_QID_OFFSET = 42;
export const CONNECT_SQE_SQSIZE_OFFSET = 44;
/** Dynamic controller model: the host asks for any controller. */
export const CNTLID_DYNAMIC = 0xffff;

// Controller properties (register offsets).
export const PROP_CAP = 0x00;
export const PROP_VS = 0x08;
export const PROP_CC = 0x14;
export const PROP_CSTS = 0x1c;
export const VERSION_1_3 = 0x00010300;

export interface ConnectRequest {
  qid: number;
  /** Entries (SQSIZE + 1). */
  sqEntries: number;
  sqFlowDisabled: boolean;
  keepAliveMs: number;
  hostId: Buffer;
  cntlid: number;
  subnqn: string;
  hostnqn: string;
}

/** A Connect refused with Connect Invalid Parameters: which field (IATTR 1 = data, 0 = SQE) at which offset. */
export function invalidParameters(inData: boolean, offset: number): { status: number; dw0: number } {
  return { status: status(SCT_COMMAND_SPECIFIC, SC_CONNECT_INVALID_PARAMETERS, true), dw0: ((inData ? 1 : 0) << 16) | offset };
}

function nqnField(data: Buffer, offset: number): string {
  const field = data.subarray(offset, offset + NQN_FIELD_BYTES);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

export function fabricsHostToController(sqe: Buffer): boolean { return (sqe[4]! & 3) === 1; }

/** The handler of a connection until its Connect: only Connect is accepted. */
export class PreConnect implements QueueHandler {
  constructor(private readonly registry: ControllerRegistry, private readonly discoveryOnly: boolean) {}

  hostToController(sqe: Buffer): boolean { return sqe[0] === OPCODE_FABRICS && fabricsHostToController(sqe); }

  execute(connection: NvmfConnection, command: Command): void {
    const sqe = command.sqe;
    if (sqe[0] !== OPCODE_FABRICS || sqe[4] !== FCTYPE_CONNECT || connection.qid >= 0) { connection.refuseSequence(command); return; }
    if (sqe.readUInt16LE(40) !== 0) {
      connection.complete(command, status(SCT_COMMAND_SPECIFIC, SC_CONNECT_INCOMPATIBLE_FORMAT, true));
      return;
    }
    if (command.receivedBytes !== CONNECT_DATA_BYTES) {
      connection.complete(command, status(SCT_GENERIC, command.receivedBytes === 0 ? SC_INVALID_FIELD : SC_SGL_INVALID_DATA_LENGTH, true));
      return;
    }
    const data = Buffer.concat(command.data, CONNECT_DATA_BYTES);
    const request: ConnectRequest = {
      qid: sqe.readUInt16LE(CONNECT_SQE_QID_OFFSET),
      sqEntries: sqe.readUInt16LE(CONNECT_SQE_SQSIZE_OFFSET) + 1,
      sqFlowDisabled: (sqe[46]! & c.CONNECT_CATTR_SQ_FLOW_DISABLED) !== 0,
      keepAliveMs: sqe.readUInt32LE(48),
      hostId: Buffer.from(data.subarray(0, 16)),
      cntlid: data.readUInt16LE(CONNECT_DATA_CNTLID_OFFSET),
      subnqn: nqnField(data, CONNECT_DATA_SUBNQN_OFFSET),
      hostnqn: nqnField(data, CONNECT_DATA_HOSTNQN_OFFSET),
    };
    const result = this.registry.connect(connection, request, this.discoveryOnly);
    connection.complete(command, result.status, result.dw0);
  }

  closed(): void {}
}
