// The NVM command set on I/O queues: Read, Write (FUA), Flush, Write Zeroes (DEAC: deallocate),
// Dataset Management (deallocate ranges) and Compare, on the namespace's engine target by id.
// Every range is checked against the namespace before the engine is called, so a bad LBA gets LBA
// Out of Range with DNR; engine errors map through statusForEngineError.
import * as c from './constants.js';
import type { Command, NvmfConnection, QueueHandler } from './connection.js';
import { opcodeHostToController } from './connection.js';
import type { Controller } from './controller.js';
import { nvmeStatus as status, statusForEngineError, STATUS_ANA_INACCESSIBLE, SCT_GENERIC, SCT_MEDIA, SC_COMPARE_FAILURE, SC_INVALID_FIELD, SC_INVALID_NAMESPACE, SC_INVALID_OPCODE,
  SC_LBA_OUT_OF_RANGE, SC_NAMESPACE_WRITE_PROTECTED, SC_SGL_INVALID_DATA_LENGTH } from './status.js';
import type { Target } from '../engine/index.js';
import { LBA_SIZE_BYTES } from './namespaces.js';

export const IO_FLUSH = 0x00;
export const IO_WRITE = 0x01;
export const IO_READ = 0x02;
export const IO_COMPARE = 0x05;
export const IO_WRITE_ZEROES = 0x08;
export const IO_DATASET_MANAGEMENT = 0x09;
const FABRICS = 0x7f;
const FCTYPE_DISCONNECT = 0x08;
/** CDW12 bits of Read/Write/Write Zeroes. */
const CDW12_FUA = 1 << 30;
const CDW12_DEAC = 1 << 25;
/** DSM CDW11: attribute deallocate. */
const DSM_AD = 1 << 2;

export interface IoCounters { readCommands: number; writeCommands: number; readBytes: number; writtenBytes: number }

const OUT_OF_RANGE = status(SCT_GENERIC, SC_LBA_OUT_OF_RANGE, true);
const FUA = { fua: true } as const;
const WRITE_PROTECTED = status(SCT_GENERIC, SC_NAMESPACE_WRITE_PROTECTED, true);

export class IoQueue implements QueueHandler {
  constructor(private readonly controller: Controller) {}

  hostToController(sqe: Buffer): boolean {
    return sqe[0] === FABRICS ? (sqe[4]! & 3) === 1 : opcodeHostToController(sqe[0]!);
  }

  closed(connection: NvmfConnection): void { this.controller.registry.ioQueueClosed(this.controller, connection); }

  execute(connection: NvmfConnection, command: Command): void {
    const controller = this.controller;
    controller.touch();
    const sqe = command.sqe;
    const opcode = sqe[0]!;
    if (opcode === FABRICS) {
      if (sqe[4] !== FCTYPE_DISCONNECT) { connection.refuse(command, SC_INVALID_FIELD); return; }
      connection.complete(command, 0);
      connection.finish();
      return;
    }
    const engine = controller.engine!;
    // ANA: on a path whose namespace is Inaccessible (this node is not the volume's primary) every
    // I/O command fails with that status and no DNR, so the host's multipath retries on another path.
    const nsid = sqe.readUInt32LE(4);
    if (controller.identity.ana === true) {
      const t = controller.target(nsid);
      if (t !== null && controller.anaStateOf(t.name) === 'inaccessible') { connection.complete(command, STATUS_ANA_INACCESSIBLE); return; }
    }
    if (opcode === IO_FLUSH) {
      engine.flush().then(() => connection.complete(command, 0), (error: unknown) => connection.complete(command, statusForEngineError(error)));
      return;
    }
    const target = controller.target(nsid);
    if (target === null) { connection.refuse(command, SC_INVALID_NAMESPACE); return; }
    switch (opcode) {
      case IO_READ: this.read(connection, command, target); return;
      case IO_WRITE: this.write(connection, command, target); return;
      case IO_COMPARE: this.compare(connection, command, target); return;
      case IO_WRITE_ZEROES: this.writeZeroes(connection, command, target); return;
      case IO_DATASET_MANAGEMENT: this.datasetManagement(connection, command, target); return;
      default: connection.refuse(command, SC_INVALID_OPCODE);
    }
  }

  /** The command's byte range, or a status when it is out of the namespace or over the transfer bound. */
  private range(command: Command, target: Target, withData: boolean): { offsetBytes: number; lengthBytes: number } | number {
    const sqe = command.sqe;
    // SLBA past 2^53 loses precision but stays past any namespace's end: still out of range.
    const slba = sqe.readUInt32LE(40) + sqe.readUInt32LE(44) * 0x100000000;
    const lengthBytes = ((sqe.readUInt32LE(48) & 0xffff) + 1) * LBA_SIZE_BYTES;
    const offsetBytes = slba * LBA_SIZE_BYTES;
    // The size as resolved: a resize event makes the controller resolve the target again (registry.ts).
    if (offsetBytes + lengthBytes > target.sizeBytes) return OUT_OF_RANGE;
    if (withData) {
      if (lengthBytes > c.DATA_TRANSFER_BYTES_MAX) return status(SCT_GENERIC, SC_INVALID_FIELD, true);
      if (command.dataBytes < lengthBytes) return status(SCT_GENERIC, SC_SGL_INVALID_DATA_LENGTH, true);
    }
    return { offsetBytes, lengthBytes };
  }

  private read(connection: NvmfConnection, command: Command, target: Target): void {
    const range = this.range(command, target, true);
    if (typeof range === 'number') { connection.complete(command, range); return; }
    const counters = this.controller.counters;
    counters.readCommands++;
    counters.readBytes += range.lengthBytes;
    // Read buffers are bounded per connection: past the bound a read waits until earlier data is sent.
    if (connection.readBytesInFlight > 0 && connection.readBytesInFlight + range.lengthBytes > c.READ_BYTES_IN_FLIGHT_MAX) {
      connection.readsWaiting.push(() => this.startRead(connection, command, target, range.offsetBytes, range.lengthBytes));
      return;
    }
    this.startRead(connection, command, target, range.offsetBytes, range.lengthBytes);
  }

  private startRead(connection: NvmfConnection, command: Command, target: Target, offsetBytes: number, lengthBytes: number): void {
    const pool = connection.readBuffers;
    const buffer = pool.acquire(lengthBytes);
    connection.readBytesInFlight += lengthBytes;
    const done = (): void => {
      pool.release(buffer);
      connection.readBytesInFlight -= lengthBytes;
      const next = connection.readsWaiting.shift();
      if (next !== undefined) next();
    };
    this.controller.engine!.read(target.id, offsetBytes, lengthBytes, buffer).then(
      (data) => connection.completeWithData(command, data, done),
      (error: unknown) => { done(); connection.complete(command, statusForEngineError(error)); },
    );
  }

  private write(connection: NvmfConnection, command: Command, target: Target): void {
    if (target.readOnly) { connection.complete(command, WRITE_PROTECTED); return; }
    const range = this.range(command, target, true);
    if (typeof range === 'number') { connection.complete(command, range); return; }
    if (command.receivedBytes !== range.lengthBytes) { connection.complete(command, status(SCT_GENERIC, SC_SGL_INVALID_DATA_LENGTH, true)); return; }
    const counters = this.controller.counters;
    counters.writeCommands++;
    counters.writtenBytes += range.lengthBytes;
    const fua = (command.sqe.readUInt32LE(48) & CDW12_FUA) !== 0 || this.controller.writeThrough;
    this.controller.engine!.write(target.id, range.offsetBytes, command.data, fua ? FUA : undefined).then(
      () => connection.complete(command, 0),
      (error: unknown) => connection.complete(command, statusForEngineError(error)),
    );
  }

  private compare(connection: NvmfConnection, command: Command, target: Target): void {
    const range = this.range(command, target, true);
    if (typeof range === 'number') { connection.complete(command, range); return; }
    if (command.receivedBytes !== range.lengthBytes) { connection.complete(command, status(SCT_GENERIC, SC_SGL_INVALID_DATA_LENGTH, true)); return; }
    const expected = Buffer.concat(command.data, range.lengthBytes);
    this.controller.engine!.read(target.id, range.offsetBytes, range.lengthBytes).then(
      (data) => connection.complete(command, data.equals(expected) ? 0 : status(SCT_MEDIA, SC_COMPARE_FAILURE, true)),
      (error: unknown) => connection.complete(command, statusForEngineError(error)),
    );
  }

  private writeZeroes(connection: NvmfConnection, command: Command, target: Target): void {
    if (target.readOnly) { connection.complete(command, WRITE_PROTECTED); return; }
    const range = this.range(command, target, false);
    if (typeof range === 'number') { connection.complete(command, range); return; }
    const cdw12 = command.sqe.readUInt32LE(48);
    // DEAC: the blocks may be deallocated (a hole reads as zeroes); without it they stay allocated.
    const opts = { fua: (cdw12 & CDW12_FUA) !== 0 || this.controller.writeThrough, noHole: (cdw12 & CDW12_DEAC) === 0 };
    this.controller.engine!.writeZeroes(target.id, range.offsetBytes, range.lengthBytes, opts).then(
      () => connection.complete(command, 0),
      (error: unknown) => connection.complete(command, statusForEngineError(error)),
    );
  }

  private datasetManagement(connection: NvmfConnection, command: Command, target: Target): void {
    const sqe = command.sqe;
    const ranges = (sqe.readUInt32LE(40) & 0xff) + 1;
    if (command.receivedBytes < ranges * c.DSM_RANGE_BYTES) { connection.complete(command, status(SCT_GENERIC, SC_SGL_INVALID_DATA_LENGTH, true)); return; }
    // Only deallocate does anything; the access hints (IDR/IDW) need no action.
    if ((sqe.readUInt32LE(44) & DSM_AD) === 0) { connection.complete(command, 0); return; }
    if (target.readOnly) { connection.complete(command, WRITE_PROTECTED); return; }
    const engine = this.controller.engine!;
    const sizeBytes = target.sizeBytes;
    const list = Buffer.concat(command.data, ranges * c.DSM_RANGE_BYTES);
    const rangeAt = (i: number): [number, number] => {
      const at = i * c.DSM_RANGE_BYTES;
      return [(list.readUInt32LE(at + 8) + list.readUInt32LE(at + 12) * 0x100000000) * LBA_SIZE_BYTES, list.readUInt32LE(at + 4) * LBA_SIZE_BYTES];
    };
    // Every range is checked before any is trimmed: a refused command changes nothing.
    for (let i = 0; i < ranges; i++) {
      const [offsetBytes, lengthBytes] = rangeAt(i);
      if (offsetBytes + lengthBytes > sizeBytes) { connection.complete(command, OUT_OF_RANGE); return; }
    }
    const trims: Promise<void>[] = [];
    for (let i = 0; i < ranges; i++) {
      const [offsetBytes, lengthBytes] = rangeAt(i);
      if (lengthBytes > 0) trims.push(engine.trim(target.id, offsetBytes, lengthBytes));
    }
    Promise.all(trims).then(
      () => connection.complete(command, 0),
      (error: unknown) => connection.complete(command, statusForEngineError(error)),
    );
  }
}
