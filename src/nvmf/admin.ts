// Admin commands a controller answers from its state, without the transport: Identify, Get Log Page,
// Get/Set Features and Abort. Fabrics (7Fh), Asynchronous Event Request (0Ch) and Keep Alive (18h) are
// the transport's (they hold a command or touch timers); anything else gets Invalid Command Opcode
// with DNR, never silence. A discovery controller answers only what NVMe-oF 1.1 section 5 lets one
// do: Identify Controller, the discovery log, and the keep-alive and async event features.
import {
  ADMIN_ABORT, ADMIN_GET_FEATURES, ADMIN_GET_LOG_PAGE, ADMIN_IDENTIFY, ADMIN_SET_FEATURES, FEATURE_ASYNC_EVENT_CONFIG,
  FEATURE_KEEP_ALIVE_TIMER, LOG_ANA, LOG_CHANGED_NAMESPACES, LOG_COMMANDS_EFFECTS, LOG_DISCOVERY, LOG_ERROR, LOG_FIRMWARE_SLOT, LOG_SMART,
  SCT_COMMAND_SPECIFIC, SC_FEATURE_NOT_NAMESPACE_SPECIFIC, STATUS_INTERNAL, STATUS_INVALID_FIELD, STATUS_INVALID_LOG_PAGE,
  STATUS_INVALID_NAMESPACE, STATUS_INVALID_OPCODE, STATUS_SUCCESS, nvmeStatus,
} from './status.js';
import {
  IDENTIFY_BYTES, activeNamespaceList, identifyController, identifyInactiveNamespace, identifyNamespace, namespaceDescriptors,
  type ControllerIdentity,
} from './identify.js';
import {
  CHANGED_NAMESPACES_LOG_BYTES, changedNamespacesLog, commandsEffectsLog, discoveryLog, errorLog, firmwareSlotLog, smartLog,
  type DiscoveryEntry, type SmartCounters,
} from './log-pages.js';
import type { FeatureStore } from './features.js';
import type { NvmfNamespace } from './namespaces.js';

export type { ControllerIdentity } from './identify.js';
export type { DiscoveryEntry, SmartCounters } from './log-pages.js';

/** Controller-to-host data of one admin command at most, when MDTS sets no lower bound: 1 MiB + 1 KiB holds the largest discovery log. */
export const ADMIN_DATA_BYTES_MAX = 1024 * 1024 + 1024;
export const SQE_BYTES = 64;
const NSID_BROADCAST = 0xffffffff;
const CSI_NVM = 0;

export interface AdminContext {
  identity: ControllerIdentity;
  features: FeatureStore;
  /** The subsystem's namespaces by NSID; [] on a discovery controller. */
  namespaces(): NvmfNamespace[];
  /** The changed namespace list since it was last read (cleared unless `retain`, the command's RAE bit). */
  takeChangedNamespaces(retain: boolean): number[];
  smart(): SmartCounters;
  /** Only for discovery controllers: the subsystems this host may reach. */
  discoveryEntries(): DiscoveryEntry[];
  discoveryGeneration(): bigint;
  /** ANA log page (0Ch), on a cluster node's I/O controller only: NSIDs left out with `groupsOnly` (RGO). */
  anaLog?(groupsOnly: boolean, retain: boolean): Buffer;
}

export interface AdminResult {
  /** Status field without the phase bit (status.ts). */
  status: number;
  dw0: number;
  /** Controller-to-host data, already cut to the length the command asked; null when none. */
  data: Buffer | null;
}

/** The fields of an SQE this file reads (base spec 2.0 figure 88). */
interface Sqe { opcode: number; fuse: number; nsid: number; dw10: number; dw11: number; dw12: number; dw13: number; dw14: number }

function parseSqe(sqe: Buffer): Sqe {
  return {
    opcode: sqe[0]!, fuse: sqe[1]! & 0x3, nsid: sqe.readUInt32LE(4),
    dw10: sqe.readUInt32LE(40), dw11: sqe.readUInt32LE(44), dw12: sqe.readUInt32LE(48), dw13: sqe.readUInt32LE(52), dw14: sqe.readUInt32LE(56),
  };
}

const fail = (status: number): AdminResult => ({ status, dw0: 0, data: null });
const done = (data: Buffer | null, dw0 = 0): AdminResult => ({ status: STATUS_SUCCESS, dw0: dw0 >>> 0, data });

/** The most controller-to-host data a command may ask for (MDTS in 4 KiB pages, or ADMIN_DATA_BYTES_MAX). */
export function adminDataBytesMax(identity: ControllerIdentity): number {
  return identity.mdtsLog2Pages === 0 ? ADMIN_DATA_BYTES_MAX : Math.min(ADMIN_DATA_BYTES_MAX, 4096 * 2 ** identity.mdtsLog2Pages);
}

/** Every admin command except Fabrics (7Fh), Asynchronous Event Request (0Ch) and Keep Alive (18h). */
export function executeAdmin(ctx: AdminContext, sqe: Buffer, hostData: Buffer | null): AdminResult {
  if (sqe.length < SQE_BYTES) return fail(STATUS_INVALID_FIELD);
  const cmd = parseSqe(sqe);
  // No fused admin commands (FUSES is 0).
  if (cmd.fuse !== 0) return fail(STATUS_INVALID_FIELD);
  void hostData; // no admin command handled here takes data from the host
  try {
    switch (cmd.opcode) {
      case ADMIN_IDENTIFY: return identify(ctx, cmd);
      case ADMIN_GET_LOG_PAGE: return getLogPage(ctx, cmd);
      case ADMIN_GET_FEATURES: return getFeatures(ctx, cmd);
      case ADMIN_SET_FEATURES: return setFeatures(ctx, cmd);
      // Commands complete too fast to abort: dword 0 bit 0 set says "not aborted" (base spec 5.1).
      case ADMIN_ABORT: return ctx.identity.discovery ? fail(STATUS_INVALID_OPCODE) : done(null, 1);
      default: return fail(STATUS_INVALID_OPCODE);
    }
  } catch {
    // A context callback failed (the engine listing namespaces): the host may retry, so no DNR.
    return fail(STATUS_INTERNAL);
  }
}

// ---- Identify ----

const CNS_NAMESPACE = 0x00;
const CNS_CONTROLLER = 0x01;
const CNS_ACTIVE_NAMESPACES = 0x02;
const CNS_NAMESPACE_DESCRIPTORS = 0x03;
const CNS_CS_NAMESPACE = 0x05;
const CNS_CS_CONTROLLER = 0x06;
const CNS_CS_ACTIVE_NAMESPACES = 0x07;
const CNS_CS_INDEPENDENT_NAMESPACE = 0x08;

function identify(ctx: AdminContext, cmd: Sqe): AdminResult {
  const cns = cmd.dw10 & 0xff;
  const csi = (cmd.dw11 >>> 24) & 0xff;
  if (cns === CNS_CONTROLLER) return done(identifyController(ctx.identity));
  if (ctx.identity.discovery) return fail(STATUS_INVALID_FIELD);
  switch (cns) {
    case CNS_NAMESPACE: {
      const found = activeNamespace(ctx, cmd.nsid);
      if (found === 'invalid') return fail(STATUS_INVALID_NAMESPACE);
      return done(found === null ? identifyInactiveNamespace() : identifyNamespace(found));
    }
    case CNS_CS_ACTIVE_NAMESPACES:
      if (csi !== CSI_NVM) return fail(STATUS_INVALID_FIELD);
      return activeList(ctx, cmd);
    case CNS_ACTIVE_NAMESPACES: return activeList(ctx, cmd);
    case CNS_NAMESPACE_DESCRIPTORS: {
      const found = activeNamespace(ctx, cmd.nsid);
      return found === 'invalid' || found === null ? fail(STATUS_INVALID_NAMESPACE) : done(namespaceDescriptors(found));
    }
    case CNS_CS_NAMESPACE: {
      // The NVM command set's own namespace fields (figure 97 of the NVM command set spec): none we use, all zero.
      if (csi !== CSI_NVM) return fail(STATUS_INVALID_FIELD);
      const found = activeNamespace(ctx, cmd.nsid);
      if (found === 'invalid') return fail(STATUS_INVALID_NAMESPACE);
      return done(Buffer.alloc(IDENTIFY_BYTES));
    }
    // The NVM command set's controller limits (VSL, WZSL, DMRL, ...): zero means "no limit beyond MDTS".
    case CNS_CS_CONTROLLER: return csi === CSI_NVM ? done(Buffer.alloc(IDENTIFY_BYTES)) : fail(STATUS_INVALID_FIELD);
    case CNS_CS_INDEPENDENT_NAMESPACE: {
      const found = activeNamespace(ctx, cmd.nsid);
      if (found === 'invalid') return fail(STATUS_INVALID_NAMESPACE);
      return done(independentNamespace(found));
    }
    default: return fail(STATUS_INVALID_FIELD);
  }
}

/** The namespace an NSID names: 'invalid' outside 1..NN, null for an inactive NSID. */
function activeNamespace(ctx: AdminContext, nsid: number): NvmfNamespace | null | 'invalid' {
  if (nsid === 0 || nsid === NSID_BROADCAST || nsid > ctx.identity.namespaceCountMax) return 'invalid';
  return ctx.namespaces().find((ns) => ns.nsid === nsid) ?? null;
}

function activeList(ctx: AdminContext, cmd: Sqe): AdminResult {
  // NSIDs FFFFFFFEh and FFFFFFFFh cannot be followed by any NSID (base spec 2.0 figure 273).
  if (cmd.nsid >= 0xfffffffe) return fail(STATUS_INVALID_NAMESPACE);
  return done(activeNamespaceList(ctx.namespaces(), cmd.nsid));
}

/** I/O Command Set Independent Identify Namespace (CNS 08h, base spec 2.0 figure 280). */
function independentNamespace(ns: NvmfNamespace | null): Buffer {
  const id = Buffer.alloc(IDENTIFY_BYTES);
  if (ns === null) return id;
  id[0] = 1 << 3; // NSFEAT: UIDREUSE, NGUID never reused
  id[1] = 1; // NMIC: shared
  id[8] = ns.readOnly ? 1 : 0; // NSATTR: write protected
  id[14] = 1; // NSTAT: namespace ready
  return id;
}

// ---- Get Log Page ----

function getLogPage(ctx: AdminContext, cmd: Sqe): AdminResult {
  const lid = cmd.dw10 & 0xff;
  const retain = (cmd.dw10 & 0x8000) !== 0; // RAE
  const numd = ((cmd.dw11 & 0xffff) * 0x10000 + (cmd.dw10 >>> 16)) + 1;
  const lengthBytes = numd * 4;
  const offsetBytes = cmd.dw13 * 2 ** 32 + cmd.dw12;
  if (lengthBytes > adminDataBytesMax(ctx.identity)) return fail(STATUS_INVALID_FIELD);
  // The log page offset is in bytes and must be dword aligned (base spec 2.0 5.16).
  if (offsetBytes % 4 !== 0) return fail(STATUS_INVALID_FIELD);
  const discovery = ctx.identity.discovery;
  let log: Buffer;
  switch (lid) {
    case LOG_DISCOVERY:
      if (!discovery) return fail(STATUS_INVALID_LOG_PAGE);
      log = discoveryLog(ctx.discoveryGeneration(), ctx.discoveryEntries());
      break;
    case LOG_ERROR: log = errorLog(1); break;
    case LOG_SMART: if (discovery) return fail(STATUS_INVALID_LOG_PAGE); log = smartLog(ctx.smart()); break;
    case LOG_FIRMWARE_SLOT: if (discovery) return fail(STATUS_INVALID_LOG_PAGE); log = firmwareSlotLog(ctx.identity.firmware); break;
    case LOG_CHANGED_NAMESPACES:
      if (discovery) return fail(STATUS_INVALID_LOG_PAGE);
      // Checked before reading: reading clears the list, and a refused read must not lose it.
      if (offsetBytes >= CHANGED_NAMESPACES_LOG_BYTES) return fail(STATUS_INVALID_FIELD);
      log = changedNamespacesLog(ctx.takeChangedNamespaces(retain));
      break;
    case LOG_ANA:
      if (discovery || ctx.anaLog === undefined) return fail(STATUS_INVALID_LOG_PAGE);
      // LSP bit 0: Return Groups Only.
      log = ctx.anaLog(((cmd.dw10 >>> 8) & 0x1) !== 0, retain);
      break;
    case LOG_COMMANDS_EFFECTS:
      if (discovery) return fail(STATUS_INVALID_LOG_PAGE);
      log = commandsEffectsLog({ compare: ctx.identity.compare !== false });
      break;
    default: return fail(STATUS_INVALID_LOG_PAGE);
  }
  if (offsetBytes >= log.length) return fail(STATUS_INVALID_FIELD);
  // Past the log's end the host reads zeroes (a host may ask for a round size).
  const out = Buffer.alloc(lengthBytes);
  log.copy(out, 0, offsetBytes, Math.min(log.length, offsetBytes + lengthBytes));
  return done(out);
}

// ---- Features ----

/** Features are per controller: an NSID other than none or all names nothing they apply to. */
function featureNsidProblem(nsid: number): number | null {
  return nsid === 0 || nsid === NSID_BROADCAST ? null : nvmeStatus(SCT_COMMAND_SPECIFIC, SC_FEATURE_NOT_NAMESPACE_SPECIFIC, true);
}

function discoveryFeature(fid: number): boolean {
  return fid === FEATURE_KEEP_ALIVE_TIMER || fid === FEATURE_ASYNC_EVENT_CONFIG;
}

function getFeatures(ctx: AdminContext, cmd: Sqe): AdminResult {
  const fid = cmd.dw10 & 0xff;
  const sel = (cmd.dw10 >>> 8) & 0x7;
  const nsidProblem = featureNsidProblem(cmd.nsid);
  if (nsidProblem !== null) return fail(nsidProblem);
  if (ctx.identity.discovery && !discoveryFeature(fid)) return fail(STATUS_INVALID_FIELD);
  const r = ctx.features.get(fid, sel, cmd.dw11);
  return { status: r.status, dw0: r.dw0, data: r.data ?? null };
}

function setFeatures(ctx: AdminContext, cmd: Sqe): AdminResult {
  const fid = cmd.dw10 & 0xff;
  const save = (cmd.dw10 & 0x80000000) !== 0;
  const nsidProblem = featureNsidProblem(cmd.nsid);
  if (nsidProblem !== null) return fail(nsidProblem);
  if (ctx.identity.discovery && !discoveryFeature(fid)) return fail(STATUS_INVALID_FIELD);
  const r = ctx.features.set(fid, save, cmd.dw11);
  return { status: r.status, dw0: r.dw0, data: null };
}
