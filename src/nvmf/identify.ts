// The Identify data structures (4096 bytes each, little endian) at the byte offsets of the NVMe base
// spec 2.0 (figures 275 controller, 280 NVM namespace, 278 descriptor list) and NVMe-oF 1.1 (the
// fabrics fields of Identify Controller). Pure builders: admin.ts decides which one a command gets.
// The fields Linux checks are commented with what it does with them (drivers/nvme/host/core.c
// nvme_init_identify, fabrics.c, tcp.c nvme_tcp_setup_ctrl).
import { LBA_SIZE_LOG2, type NvmfNamespace } from './namespaces.js';
import { ANA_GROUPS_MAX, ANA_NAMESPACES_MAX, ANA_TRANSITION_SECONDS } from './ana.js';

export const IDENTIFY_BYTES = 4096;
/** Active namespace list: at most 1024 NSIDs per Identify. */
export const ACTIVE_NAMESPACES_PER_LIST_MAX = 1024;
/** Outstanding Asynchronous Event Requests a controller holds (AERL is this minus one). */
export const ASYNC_EVENTS_MAX = 4;
/** Abort commands at once (ACL is this minus one); admin.ts answers every Abort "not aborted". */
export const ABORTS_MAX = 4;
/** NVMe 1.3.0: namespace descriptor lists (CNS 03h) and SUBNQN are read by hosts from 1.3 on. */
export const NVME_VERSION = 0x00010300;
export const CNTRLTYPE_IO = 1;
export const CNTRLTYPE_DISCOVERY = 2;
/** Keep Alive Support is in units of 100 ms. */
export const KAS_UNIT_MS = 100;

// Controller attribute bits.
const CMIC_MULTI_CONTROLLER = 1 << 1;
/** CMIC bit 3: ANA reporting (Linux multipath.c reads the ANA log only with it). */
const CMIC_ANA_REPORTING = 1 << 3;
const OAES_NAMESPACE_ATTRIBUTE = 1 << 8;
const OAES_ANA_CHANGE = 1 << 11;
/** ANACAP: Optimized and Inaccessible states are reported (bits 0 and 2); ANAGRPID may change while attached (bit 6 clear). */
const ANACAP_OPTIMIZED_INACCESSIBLE = (1 << 0) | (1 << 2);
const OAES_DISCOVERY_LOG_CHANGE = 1 << 31;
const CTRATT_HOST_ID_128 = 1 << 0;

/** The asynchronous event notices a controller offers (OAES): what Set Features 0Bh may enable beyond SMART warnings. */
export function asyncEventsSupported(discovery: boolean, ana = false): number {
  return (discovery ? OAES_DISCOVERY_LOG_CHANGE : OAES_NAMESPACE_ATTRIBUTE | (ana ? OAES_ANA_CHANGE : 0)) >>> 0;
}
const LPA_COMMANDS_EFFECTS = 1 << 1;
const LPA_EXTENDED_DATA = 1 << 2;
const ONCS_COMPARE = 1 << 0;
const ONCS_DATASET_MANAGEMENT = 1 << 2;
const ONCS_WRITE_ZEROES = 1 << 3;
/** Present, and a Flush with the broadcast NSID is not supported (bits 2:1 = 10b). */
const VWC_PRESENT_NO_BROADCAST_FLUSH = 0x1 | (0x2 << 1);
/** SGLs supported without alignment (bits 1:0 = 01b, which Linux requires), and the address as an offset (in-capsule data). */
const SGLS_SUPPORTED = (1 << 0) | (1 << 20);
const OFCS_DISCONNECT = 1 << 0;

export interface ControllerIdentity {
  cntlid: number;
  subnqn: string;
  /** 20 ASCII characters at most (namespaces.ts controllerSerial). */
  serial: string;
  model: string;
  /** 8 ASCII characters at most. */
  firmware: string;
  discovery: boolean;
  /** An I/O command capsule's size: the 64-byte SQE plus in-capsule data bytes; a multiple of 16. */
  ioccszBytes: number;
  ioQueuesMax: number;
  /** Entries of a queue at most (MAXCMD: the host sizes its queues no larger). */
  queueEntriesMax: number;
  /** Maximum data transfer as a power of two of 4 KiB pages (MDTS); 0: no limit. */
  mdtsLog2Pages: number;
  /** Keep-alive granularity (KAS, in 100 ms units on the wire). */
  kasMs: number;
  /**
   * NN: the largest NSID a host may find. NSIDs are engine ids + 1 and ids only grow, so give NSID_MAX
   * (namespaces.ts): a lower value hides every volume whose id passes it.
   */
  namespaceCountMax: number;
  /** Whether the transport implements Compare (ONCS bit 0); default true. */
  compare?: boolean;
  /** ANA reporting (a cluster node, ana.ts): CMIC bit 3, ANACAP, ANATT, groups, MNAN. */
  ana?: boolean;
}

function le16(buf: Buffer, offset: number, value: number): void { buf.writeUInt16LE(value & 0xffff, offset); }
function le32(buf: Buffer, offset: number, value: number): void { buf.writeUInt32LE(value >>> 0, offset); }
function le64(buf: Buffer, offset: number, value: number | bigint): void { buf.writeBigUInt64LE(BigInt(value), offset); }

/** An ASCII field padded with spaces (SN, MN, FR: spec 2.0 section 1.5 "ASCII string"). */
function ascii(buf: Buffer, offset: number, bytes: number, text: string): void {
  buf.fill(0x20, offset, offset + bytes);
  buf.write(text.replace(/[^\x20-\x7e]/g, '?').slice(0, bytes), offset, bytes, 'ascii');
}

/** An NQN field: UTF-8, NUL-padded to its size (the last byte stays NUL). */
function nqnField(buf: Buffer, offset: number, bytes: number, nqn: string): void {
  buf.fill(0, offset, offset + bytes);
  buf.write(nqn, offset, bytes - 1, 'utf8');
}

/** The in-capsule data bytes an I/O queue accepts under `ioccszBytes`. */
export function inCapsuleDataBytes(identity: ControllerIdentity): number {
  return identity.ioccszBytes - 64;
}

/** Identify Controller (CNS 01h). */
export function identifyController(c: ControllerIdentity): Buffer {
  if (c.ioccszBytes < 64 || c.ioccszBytes % 16 !== 0) throw new Error(`ioccszBytes must be a multiple of 16 of at least 64, got ${c.ioccszBytes}`);
  const id = Buffer.alloc(IDENTIFY_BYTES);
  // 0 VID, 2 SSVID: 0 (no PCI vendor: a fabrics controller).
  ascii(id, 4, 20, c.serial);
  ascii(id, 24, 40, c.model);
  ascii(id, 64, 8, c.firmware);
  id[72] = 6; // RAB: arbitration burst 2^6, what nvmet reports; meaningless over TCP.
  const ana = c.ana === true && !c.discovery;
  // Several hosts (and, in a cluster, several nodes' controllers) attach one tenant's subsystem at once.
  id[76] = c.discovery ? 0 : CMIC_MULTI_CONTROLLER | (ana ? CMIC_ANA_REPORTING : 0);
  id[77] = c.mdtsLog2Pages; // Linux caps max_hw_sectors from it
  le16(id, 78, c.cntlid); // Linux: "Mismatching cntlid" unless it equals the Connect response's
  le32(id, 80, NVME_VERSION);
  le32(id, 92, asyncEventsSupported(c.discovery, ana)); // Linux enables these AENs (Set Features 0Bh)
  le32(id, 96, CTRATT_HOST_ID_128);
  id[111] = c.discovery ? CNTRLTYPE_DISCOVERY : CNTRLTYPE_IO;
  le16(id, 256, 0); // OACS: no namespace management, format, firmware download, ...
  id[258] = ABORTS_MAX - 1; // ACL
  id[259] = ASYNC_EVENTS_MAX - 1; // AERL
  id[260] = 0x3; // FRMW: one firmware slot, read-only
  // LPA: commands supported and effects (Linux reads it at init), extended data (NUMDU, offsets: the discovery log).
  id[261] = c.discovery ? LPA_EXTENDED_DATA : LPA_COMMANDS_EFFECTS | LPA_EXTENDED_DATA;
  id[262] = 0; // ELPE: one error log entry (always empty)
  id[263] = 0; // NPSS: one power state
  le16(id, 266, 343); // WCTEMP, Kelvin (no sensor: the SMART log reports no temperature)
  le16(id, 268, 373); // CCTEMP
  // KAS: Linux refuses a fabrics I/O controller without it ("keep-alive support is mandatory for fabrics").
  le16(id, 320, Math.max(1, Math.ceil(c.kasMs / KAS_UNIT_MS)));
  if (ana) {
    id[343] = ANA_TRANSITION_SECONDS; // ANATT
    id[344] = ANACAP_OPTIMIZED_INACCESSIBLE;
    le32(id, 348, ANA_GROUPS_MAX); // ANAGRPMAX
    le32(id, 352, ANA_GROUPS_MAX); // NANAGRPID
  }
  id[512] = 0x66; // SQES: 64-byte entries, required and maximum
  id[513] = 0x44; // CQES: 16-byte entries
  le16(id, 514, c.queueEntriesMax); // MAXCMD: Linux refuses 0, and shrinks its queues to it
  le32(id, 516, c.discovery ? 0 : c.namespaceCountMax); // NN
  const oncs = ONCS_DATASET_MANAGEMENT | ONCS_WRITE_ZEROES | (c.compare === false ? 0 : ONCS_COMPARE);
  le16(id, 520, c.discovery ? 0 : oncs);
  le16(id, 522, 0); // FUSES: no fused compare-and-write
  id[525] = c.discovery ? 0 : VWC_PRESENT_NO_BROADCAST_FLUSH; // a write is durable at Flush or with FUA
  id[530] = 1; // NVSCC: vendor specific commands use the standard format (there are none)
  // MNAN: Linux refuses ANA without it ("Invalid MNAN value") and sizes the ANA log by it.
  if (ana) le32(id, 540, ANA_NAMESPACES_MAX);
  le32(id, 536, SGLS_SUPPORTED); // Linux tcp.c: "Mandatory sgls are not supported!" without bits 1:0
  nqnField(id, 768, 256, c.subnqn); // Linux uses SUBNQN as the subsystem's identity (VER >= 1.2.1)
  if (!c.discovery) {
    le32(id, 1792, c.ioccszBytes / 16); // IOCCSZ: Linux's in-capsule write size is IOCCSZ*16 - 64
    le32(id, 1796, 1); // IORCSZ: a response capsule is the 16-byte CQE alone
  }
  le16(id, 1800, 0); // ICDOFF: in-capsule data right after the SQE (Linux tcp.c refuses anything else)
  id[1802] = 0; // FCATT: dynamic controller model
  id[1803] = 1; // MSDBD: one SGL data block descriptor per command
  le16(id, 1804, OFCS_DISCONNECT);
  // 2048 PSD0: power state 0, all zero (no power figures to report).
  return id;
}

// Identify Namespace fields.
const NSFEAT_OPTIMAL_IO = 1 << 4; // NPWG/NPWA/NPDG/NPDA/NOWS are valid
const NSFEAT_UID_NEVER_REUSED = 1 << 3; // NGUID and EUI64 are never reused (engine ids are not)
const NMIC_SHARED = 1 << 0; // may be attached to several controllers (hosts) at once
const DLFEAT_READS_ZERO = 0x1; // a deallocated block reads as zeroes (an engine hole)
const DLFEAT_WRITE_ZEROES_DEALLOCATE = 1 << 3; // Write Zeroes with DEAC deallocates
const NSATTR_WRITE_PROTECTED = 1 << 0;

/** Identify Namespace (CNS 00h) for an active namespace; `identifyInactiveNamespace` for an inactive NSID. */
export function identifyNamespace(ns: NvmfNamespace): Buffer {
  const id = Buffer.alloc(IDENTIFY_BYTES);
  const blocks = BigInt(Math.floor(ns.sizeBytes / 2 ** LBA_SIZE_LOG2));
  le64(id, 0, blocks); // NSZE
  le64(id, 8, blocks); // NCAP: Linux treats 0 as "namespace not attached"
  le64(id, 16, blocks); // NUSE
  id[24] = NSFEAT_OPTIMAL_IO | NSFEAT_UID_NEVER_REUSED;
  id[25] = 0; // NLBAF: one LBA format (0-based)
  id[26] = 0; // FLBAS: format 0, no metadata
  id[30] = NMIC_SHARED; // Linux 6.x refuses a second controller's unshared namespace with the same NSID
  id[33] = DLFEAT_READS_ZERO | DLFEAT_WRITE_ZEROES_DEALLOCATE;
  id.writeBigUInt64LE(BigInt(ns.sizeBytes) & 0xffffffffffffffffn, 48); // NVMCAP, low 64 bits of 128
  // NPWG, NPWA, NPDG, NPDA, NOWS (0-based, in LBAs): one 4 KiB block, the engine's unit.
  for (let off = 64; off <= 72; off += 2) le16(id, off, 0);
  if (ns.anaGroupId !== undefined) le32(id, 92, ns.anaGroupId); // ANAGRPID: the group of this path's state
  id[99] = ns.readOnly ? NSATTR_WRITE_PROTECTED : 0; // Linux marks the disk read-only
  ns.nguid.copy(id, 104, 0, 16);
  // 120 EUI64: zero (none; NGUID and UUID identify the namespace).
  // LBA format 0 at 128: MS 0, LBADS, RP 0 (best).
  id[128 + 2] = LBA_SIZE_LOG2;
  return id;
}

/** What an allocated but inactive NSID answers (spec: a zero-filled data structure). */
export function identifyInactiveNamespace(): Buffer {
  return Buffer.alloc(IDENTIFY_BYTES);
}

/** Active Namespace ID list (CNS 02h): the NSIDs above `afterNsid`, ascending, at most 1024. */
export function activeNamespaceList(namespaces: readonly NvmfNamespace[], afterNsid: number): Buffer {
  const list = Buffer.alloc(IDENTIFY_BYTES);
  let count = 0;
  for (const ns of namespaces) {
    if (ns.nsid <= afterNsid) continue;
    if (count === ACTIVE_NAMESPACES_PER_LIST_MAX) break;
    list.writeUInt32LE(ns.nsid, count * 4);
    count += 1;
  }
  return list;
}

// Namespace Identification Descriptor types (base spec 2.0 figure 279).
export const NIDT_EUI64 = 0x1;
export const NIDT_NGUID = 0x2;
export const NIDT_UUID = 0x3;
export const NIDT_CSI = 0x4;
const CSI_NVM = 0x0;

/** Namespace Identification Descriptor list (CNS 03h): NGUID, UUID and command set (NVM). */
export function namespaceDescriptors(ns: NvmfNamespace): Buffer {
  const out = Buffer.alloc(IDENTIFY_BYTES);
  let off = 0;
  const put = (type: number, value: Buffer): void => {
    out[off] = type;
    out[off + 1] = value.length;
    value.copy(out, off + 4);
    off += 4 + value.length;
  };
  put(NIDT_NGUID, ns.nguid);
  put(NIDT_UUID, ns.uuid);
  put(NIDT_CSI, Buffer.from([CSI_NVM]));
  return out;
}
