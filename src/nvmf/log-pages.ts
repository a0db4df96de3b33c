// The log pages a Get Log Page reads (base spec 2.0 section 5.16, NVMe-oF 1.1 section 5.3 for the
// discovery log), each built whole and then cut at the host's offset and length by admin.ts. All are
// small (at most a few KiB, the discovery log 1 KiB per entry), so building whole is cheap.
import {
  ADMIN_ABORT, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_GET_FEATURES, ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_KEEP_ALIVE,
  ADMIN_SET_FEATURES, IO_COMPARE, IO_DATASET_MANAGEMENT, IO_FLUSH, IO_READ, IO_WRITE, IO_WRITE_ZEROES,
} from './status.js';

export const ERROR_LOG_ENTRY_BYTES = 64;
export const SMART_LOG_BYTES = 512;
export const FIRMWARE_SLOT_LOG_BYTES = 512;
export const CHANGED_NAMESPACES_MAX = 1024;
export const CHANGED_NAMESPACES_LOG_BYTES = CHANGED_NAMESPACES_MAX * 4;
export const COMMANDS_EFFECTS_LOG_BYTES = 4096;
export const DISCOVERY_LOG_HEADER_BYTES = 1024;
export const DISCOVERY_ENTRY_BYTES = 1024;
/** Entries a discovery log holds at most (a tenant per entry; 1 MiB of log). */
export const DISCOVERY_ENTRIES_MAX = 1023;
/** A SMART data unit: 1000 units of 512 bytes (base spec 2.0 figure 207). */
export const SMART_DATA_UNIT_BYTES = 512_000n;
/** The changed namespace list's first entry when more than 1024 namespaces changed. */
export const CHANGED_NAMESPACES_OVERFLOW = 0xffffffff;

export interface SmartCounters {
  /** In SMART data units (SMART_DATA_UNIT_BYTES, rounded up: `dataUnits`). */
  dataUnitsRead: bigint;
  dataUnitsWritten: bigint;
  readCommands: bigint;
  writeCommands: bigint;
  /** Pool space in use, 0..1: reported as Percentage Used (the closest a thin pool has to wear). */
  poolUsedFraction: number;
  mediaErrors: bigint;
}

export interface DiscoveryEntry {
  trtype: 'tcp';
  adrfam: 'ipv4' | 'ipv6';
  subtype: 'nvme' | 'discovery';
  portId: number;
  /** 0xFFFF: the dynamic controller model. */
  cntlid: number;
  asqsz: number;
  trsvcid: string;
  subnqn: string;
  traddr: string;
  secureChannel: boolean;
}

/** Bytes counted as SMART data units, rounded up as the spec asks. */
export function dataUnits(bytes: bigint): bigint {
  return (bytes + SMART_DATA_UNIT_BYTES - 1n) / SMART_DATA_UNIT_BYTES;
}

/** A 128-bit little-endian counter; values past 2^64 cannot occur here, the high half stays 0. */
function u128(buf: Buffer, offset: number, value: bigint): void {
  buf.writeBigUInt64LE(value < 0n ? 0n : value & 0xffffffffffffffffn, offset);
}

/** Error Information log (01h): no errors recorded, so every entry reads as zeroes. */
export function errorLog(entries: number): Buffer {
  return Buffer.alloc(entries * ERROR_LOG_ENTRY_BYTES);
}

/** SMART / Health Information log (02h), for the whole controller (LPA bit 0 clear: not per namespace). */
export function smartLog(s: SmartCounters): Buffer {
  const log = Buffer.alloc(SMART_LOG_BYTES);
  log[0] = 0; // critical warning: none
  log.writeUInt16LE(0, 1); // composite temperature: 0, no sensor (a network target has no temperature of its own)
  log[3] = 100; // available spare: a pool has no spare blocks to run out of
  log[4] = 10; // available spare threshold
  log[5] = Math.min(255, Math.max(0, Math.round(s.poolUsedFraction * 100))); // percentage used
  u128(log, 32, s.dataUnitsRead);
  u128(log, 48, s.dataUnitsWritten);
  u128(log, 64, s.readCommands);
  u128(log, 80, s.writeCommands);
  u128(log, 160, s.mediaErrors);
  return log;
}

/** Firmware Slot Information log (03h): slot 1 active, holding `firmware`. */
export function firmwareSlotLog(firmware: string): Buffer {
  const log = Buffer.alloc(FIRMWARE_SLOT_LOG_BYTES);
  log[0] = 0x01; // AFI: slot 1 active
  log.fill(0x20, 8, 16);
  log.write(firmware.replace(/[^\x20-\x7e]/g, '?').slice(0, 8), 8, 8, 'ascii');
  return log;
}

/** Changed Namespace List log (04h): NSIDs as given; more than 1024 changed → FFFFFFFFh in entry 0. */
export function changedNamespacesLog(nsids: readonly number[]): Buffer {
  const log = Buffer.alloc(CHANGED_NAMESPACES_LOG_BYTES);
  if (nsids.length > CHANGED_NAMESPACES_MAX) {
    log.writeUInt32LE(CHANGED_NAMESPACES_OVERFLOW, 0);
    return log;
  }
  nsids.forEach((nsid, i) => log.writeUInt32LE(nsid >>> 0, i * 4));
  return log;
}

// Commands Supported and Effects entry bits (base spec 2.0 figure 210).
const CSUPP = 1 << 0;
const LBCC = 1 << 1; // logical block content change

/** Commands Supported and Effects log (05h): what executeAdmin and the I/O path answer. */
export function commandsEffectsLog(opts: { compare: boolean }): Buffer {
  const log = Buffer.alloc(COMMANDS_EFFECTS_LOG_BYTES);
  const admin = (opcode: number, effects: number): void => { log.writeUInt32LE(effects, opcode * 4); };
  const io = (opcode: number, effects: number): void => { log.writeUInt32LE(effects, 1024 + opcode * 4); };
  for (const op of [ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_ABORT, ADMIN_SET_FEATURES, ADMIN_GET_FEATURES, ADMIN_ASYNC_EVENT_REQUEST, ADMIN_KEEP_ALIVE]) {
    admin(op, CSUPP);
  }
  io(IO_FLUSH, CSUPP);
  io(IO_WRITE, CSUPP | LBCC);
  io(IO_READ, CSUPP);
  if (opts.compare) io(IO_COMPARE, CSUPP);
  io(IO_WRITE_ZEROES, CSUPP | LBCC);
  io(IO_DATASET_MANAGEMENT, CSUPP | LBCC);
  return log;
}

const TRTYPE_TCP = 3;
const ADRFAM_IPV4 = 1;
const ADRFAM_IPV6 = 2;
const SUBTYPE_NVME = 2;
/** The discovery subsystem a host is talking to (NVMe-oF 1.1 "current discovery subsystem"). */
const SUBTYPE_CURRENT_DISCOVERY = 3;
const TREQ_SECURE_CHANNEL_REQUIRED = 0x1;
const TREQ_SECURE_CHANNEL_NOT_REQUIRED = 0x2;

/** A text field padded with spaces, as TRADDR and TRSVCID are (NVMe-oF 1.1 figure 38). */
function spacePadded(buf: Buffer, offset: number, bytes: number, text: string): void {
  buf.fill(0x20, offset, offset + bytes);
  buf.write(text, offset, bytes, 'ascii');
}

/** Discovery log (70h): header with generation counter and record count, then one 1 KiB entry each. */
export function discoveryLog(generation: bigint, entries: readonly DiscoveryEntry[]): Buffer {
  const count = Math.min(entries.length, DISCOVERY_ENTRIES_MAX);
  const log = Buffer.alloc(DISCOVERY_LOG_HEADER_BYTES + count * DISCOVERY_ENTRY_BYTES);
  log.writeBigUInt64LE(generation & 0xffffffffffffffffn, 0); // GENCTR
  log.writeBigUInt64LE(BigInt(count), 8); // NUMREC
  log.writeUInt16LE(0, 16); // RECFMT 0
  for (let i = 0; i < count; i++) {
    const e = entries[i]!;
    const off = DISCOVERY_LOG_HEADER_BYTES + i * DISCOVERY_ENTRY_BYTES;
    log[off] = TRTYPE_TCP;
    log[off + 1] = e.adrfam === 'ipv6' ? ADRFAM_IPV6 : ADRFAM_IPV4;
    log[off + 2] = e.subtype === 'discovery' ? SUBTYPE_CURRENT_DISCOVERY : SUBTYPE_NVME;
    log[off + 3] = e.secureChannel ? TREQ_SECURE_CHANNEL_REQUIRED : TREQ_SECURE_CHANNEL_NOT_REQUIRED;
    log.writeUInt16LE(e.portId & 0xffff, off + 4);
    log.writeUInt16LE(e.cntlid & 0xffff, off + 6);
    log.writeUInt16LE(e.asqsz & 0xffff, off + 8);
    spacePadded(log, off + 32, 32, e.trsvcid);
    log.write(e.subnqn, off + 256, 255, 'utf8'); // SUBNQN, NUL-padded
    spacePadded(log, off + 512, 256, e.traddr);
    // TSAS (768..1023) for TCP: SECTYPE 0, no security.
  }
  return log;
}
