// The admin queue's handler: fabrics commands on it (Property Get/Set, Disconnect), Keep Alive and
// Async Event Request (the transport's own), and every other admin command through admin.ts.
import type { Command, NvmfConnection, QueueHandler } from './connection.js';
import { opcodeHostToController } from './connection.js';
import type { Controller } from './controller.js';
import { FCTYPE_DISCONNECT, FCTYPE_PROPERTY_GET, FCTYPE_PROPERTY_SET, OPCODE_FABRICS, PROP_CC, fabricsHostToController } from './fabrics.js';
import { executeAdmin } from './admin.js';
import { SC_INVALID_FIELD } from './status.js';

const OPCODE_ASYNC_EVENT_REQUEST = 0x0c;
const OPCODE_KEEP_ALIVE = 0x18;

/** The admin queue's handler. */
export class AdminQueue implements QueueHandler {
  constructor(private readonly controller: Controller) {}

  hostToController(sqe: Buffer): boolean {
    return sqe[0] === OPCODE_FABRICS ? fabricsHostToController(sqe) : opcodeHostToController(sqe[0]!);
  }

  execute(connection: NvmfConnection, command: Command): void {
    const controller = this.controller;
    controller.touch();
    const sqe = command.sqe;
    switch (sqe[0]) {
      case OPCODE_FABRICS: this.fabrics(connection, command); return;
      case OPCODE_KEEP_ALIVE: connection.complete(command, 0); return;
      case OPCODE_ASYNC_EVENT_REQUEST: controller.holdAsyncEvent(command); return;
    }
    const hostData = command.receivedBytes > 0 ? Buffer.concat(command.data, command.receivedBytes) : null;
    const result = executeAdmin(controller.adminContext(), sqe, hostData);
    if (result.status === 0 && result.data !== null) connection.completeWithData(command, result.data, undefined, result.dw0);
    else connection.complete(command, result.status, result.dw0);
  }

  private fabrics(connection: NvmfConnection, command: Command): void {
    const sqe = command.sqe;
    const controller = this.controller;
    switch (sqe[4]) {
      case FCTYPE_PROPERTY_GET: {
        const value = controller.property(sqe.readUInt32LE(44));
        if (value === null) { connection.refuseField(command); return; }
        const eight = (sqe[40]! & 7) === 1;
        connection.complete(command, 0, Number(value & 0xffffffffn), eight ? Number(value >> 32n) : 0);
        return;
      }
      case FCTYPE_PROPERTY_SET: {
        const offset = sqe.readUInt32LE(44);
        if (offset !== PROP_CC) { connection.refuseField(command); return; }
        controller.setCc(sqe.readUInt32LE(48));
        connection.complete(command, 0);
        return;
      }
      case FCTYPE_DISCONNECT:
        // The controller goes when its admin connection has closed (closed() below).
        connection.complete(command, 0);
        connection.finish();
        return;
      default: connection.refuse(command, SC_INVALID_FIELD);
    }
  }

  closed(): void { this.controller.registry.teardown(this.controller, 'admin queue closed'); }
}
