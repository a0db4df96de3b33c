// Controllers (NVMe over Fabrics dynamic controller model): the registry hands out CNTLIDs at an
// admin-queue Connect and joins I/O queues to them, answers the admin queue (properties with the
// CC.EN → CSTS.RDY and CC.SHN → CSTS.SHST handshakes, Keep Alive, Async Event Requests, and every
// other admin command through admin.ts), tears a controller down with all its queues when its admin
// connection goes or no command arrives for KATO + slack, and tracks namespace changes (engine target
// events, and a re-scan every NAMESPACE_RESCAN_MS while controllers live) to complete AERs.
import net from 'node:net';
import type { Engine, Target, TargetEvent } from '../engine/index.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import type { TenantStore } from '../tenancy/store.js';
import * as c from './constants.js';
import type { Command, NvmfConnection, QueueHandler } from './connection.js';
import { opcodeHostToController } from './connection.js';
import { CNTLID_DYNAMIC, CONNECT_DATA_CNTLID_OFFSET, CONNECT_DATA_HOSTNQN_OFFSET, CONNECT_DATA_SUBNQN_OFFSET, CONNECT_SQE_QID_OFFSET,
  CONNECT_SQE_SQSIZE_OFFSET, FCTYPE_DISCONNECT, FCTYPE_PROPERTY_GET, FCTYPE_PROPERTY_SET, OPCODE_FABRICS, PROP_CAP, PROP_CC, PROP_CSTS,
  PROP_VS, VERSION_1_3, fabricsHostToController, invalidParameters, type ConnectRequest } from './fabrics.js';
import { executeAdmin, type AdminContext, type ControllerIdentity, type DiscoveryEntry, type SmartCounters } from './admin.js';
import { FeatureStore } from './features.js';
import type { NamespaceView, NvmfNamespace } from './namespaces.js';
import { DISCOVERY_NQN, subsystemNqn, tenantOfSubsystemNqn, type NvmeHostAccess } from './host-access.js';
import { NSID_MAX, controllerSerial } from './namespaces.js';
import { ASYNC_EVENTS_MAX } from './identify.js';
import { nvmeStatus as status, SCT_COMMAND_SPECIFIC, SC_ASYNC_EVENT_LIMIT_EXCEEDED, SC_CONNECT_CONTROLLER_BUSY, SC_CONNECT_INVALID_HOST,
  SC_INVALID_FIELD } from './status.js';
import { IoQueue, type IoCounters } from './io.js';

const OPCODE_ASYNC_EVENT_REQUEST = 0x0c;
const OPCODE_KEEP_ALIVE = 0x18;
/** Async Event Requests held at most: identify.ts reports AERL = this - 1. */
export const AER_SLOTS = ASYNC_EVENTS_MAX;
/** Async Event Configuration bit of namespace attribute notices. */
const AEC_NAMESPACE_ATTRIBUTE_BIT = 8;
/** AER completion dword 0: type 2 (notice), info 0 (namespace attribute changed), log page 0x04. */
const AER_NAMESPACE_CHANGED = (0x04 << 16) | (0x00 << 8) | 0x02;
const CHANGED_NAMESPACES_MAX = 1024;
const CNTLID_MAX = 0xffef;
const CC_EN = 0x1;
const CC_SHN_SHIFT = 14;
const CSTS_RDY = 0x1;
const CSTS_SHST_OCCURRING = 0x1 << 2;
const CSTS_SHST_COMPLETE = 0x2 << 2;
const FIRMWARE = '0.1.0';

export interface RegistryOptions {
  nqnBase: string;
  tenancy: TenantStore;
  hostAccess: NvmeHostAccess;
  namespaces: NamespaceView;
  poolIdentity: Buffer;
  inCapsuleBytes: number;
  /** The address hosts are told in the discovery log page (the advertised one, else the listen one). */
  advertise: { host: string; port: number; discoveryPort: number };
  log(event: string, fields: Record<string, unknown>): void;
}

/** One controller: its admin queue, I/O queues, registers, keep-alive timer and async events. */
export class Controller {
  cc = 0;
  csts = 0;
  readonly ioQueues = new Map<number, NvmfConnection>();
  readonly features: FeatureStore;
  readonly identity: ControllerIdentity;
  private keepAliveArmedMs = 0;
  readonly counters: IoCounters = { readCommands: 0, writeCommands: 0, readBytes: 0, writtenBytes: 0 };
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private readonly aers: Command[] = [];
  private readonly changed = new Set<number>();
  private changedOverflow = false;
  /** An AER was completed for changes not yet read from log page 0x04 (further notices wait, spec "masked"). */
  private noticeOutstanding = false;
  private known = new Map<number, number>();
  private readonly targets = new Map<number, Target>();
  readonly engine: ScopedEngine | null;
  gone = false;

  constructor(
    readonly registry: ControllerRegistry,
    readonly cntlid: number,
    readonly tenant: string | null,
    readonly subnqn: string,
    readonly hostnqn: string,
    readonly hostId: Buffer,
    readonly admin: NvmfConnection,
    keepAliveMs: number,
  ) {
    this.engine = tenant === null ? null : new ScopedEngine(registry.root, tenant);
    if (tenant !== null) for (const ns of registry.opts.namespaces.namespacesOf(tenant)) this.known.set(ns.nsid, ns.sizeBytes);
    this.identity = {
      cntlid, subnqn, serial: registry.serialOf(tenant), model: 'Cairn', firmware: FIRMWARE,
      discovery: tenant === null, ioccszBytes: c.SQE_BYTES + registry.opts.inCapsuleBytes, ioQueuesMax: c.IO_QUEUES_MAX,
      queueEntriesMax: c.QUEUE_ENTRIES_MAX, mdtsLog2Pages: c.MDTS_LOG2_PAGES, kasMs: c.KAS_MS, namespaceCountMax: NSID_MAX,
    };
    this.features = FeatureStore.forController(this.identity, keepAliveMs);
    this.features.hostId = hostId;
    this.armKeepAlive();
  }

  /** (Re)arms the keep-alive timer for the current Keep Alive Timeout (Connect's KATO, or Set Features 0Fh since). */
  private armKeepAlive(): void {
    const ms = this.features.keepAliveTimeoutMs;
    this.keepAliveArmedMs = ms;
    if (this.keepAliveTimer) { clearTimeout(this.keepAliveTimer); this.keepAliveTimer = null; }
    if (ms === 0) return;
    this.keepAliveTimer = setTimeout(() => this.registry.teardown(this, 'keep-alive timeout'), ms + c.KEEP_ALIVE_SLACK_MS);
    this.keepAliveTimer.unref();
  }

  get discovery(): boolean { return this.tenant === null; }

  /** Any command restarts the keep-alive timer (traffic-based keep-alive). */
  touch(): void {
    if (this.features.keepAliveTimeoutMs !== this.keepAliveArmedMs) this.armKeepAlive();
    else this.keepAliveTimer?.refresh();
  }

  /** The host turned the volatile write cache off (Set Features 06h): every write is then FUA. */
  get writeThrough(): boolean { return !this.features.writeCacheEnabled; }

  stopTimers(): void { if (this.keepAliveTimer) clearTimeout(this.keepAliveTimer); }

  /** The I/O target of a namespace, resolved once through the tenant's view; null: no such namespace. */
  target(nsid: number): Target | null {
    const cached = this.targets.get(nsid);
    if (cached !== undefined) return cached;
    if (this.engine === null || this.tenant === null) return null;
    const ns = this.registry.opts.namespaces.find(this.tenant, nsid);
    if (ns === null) return null;
    try {
      const target = this.engine.resolve(ns.targetName);
      this.targets.set(nsid, target);
      return target;
    } catch {
      // Deleted between the listing and the resolve: the namespace is gone (Invalid Namespace).
      return null;
    }
  }

  forget(nsid: number): void { this.targets.delete(nsid); }

  namespaces(): NvmfNamespace[] {
    return this.tenant === null ? [] : this.registry.opts.namespaces.namespacesOf(this.tenant);
  }

  /** Compares the namespace set and sizes with the last look; changes are noted and announced. */
  rescan(current: NvmfNamespace[], also: number[] = []): void {
    const seen = new Map<number, number>();
    for (const ns of current) {
      seen.set(ns.nsid, ns.sizeBytes);
      if (this.known.get(ns.nsid) !== ns.sizeBytes) this.noteChanged(ns.nsid);
    }
    for (const nsid of this.known.keys()) if (!seen.has(nsid)) { this.noteChanged(nsid); this.forget(nsid); }
    for (const nsid of also) this.noteChanged(nsid);
    this.known = seen;
    this.announce();
  }

  private noteChanged(nsid: number): void {
    if (this.changed.size >= CHANGED_NAMESPACES_MAX) this.changedOverflow = true;
    else this.changed.add(nsid);
  }

  private announce(): void {
    if (this.noticeOutstanding || (this.changed.size === 0 && !this.changedOverflow)) return;
    // Masked until the host enables namespace attribute notices (Linux does at start: Set Features 0Bh).
    if (!this.features.asyncEventEnabled(AEC_NAMESPACE_ATTRIBUTE_BIT)) return;
    const aer = this.aers.shift();
    if (aer === undefined) return;
    this.noticeOutstanding = true;
    this.admin.complete(aer, 0, AER_NAMESPACE_CHANGED);
  }

  takeChangedNamespaces(retain: boolean): number[] {
    const list = this.changedOverflow ? [0xffffffff] : [...this.changed].sort((a, b) => a - b);
    if (!retain) {
      this.changed.clear();
      this.changedOverflow = false;
      this.noticeOutstanding = false;
      // Changes that came after the ones just read are announced by the next AER.
    }
    return list;
  }

  holdAsyncEvent(command: Command): void {
    if (this.aers.length >= AER_SLOTS) {
      this.admin.complete(command, status(SCT_COMMAND_SPECIFIC, SC_ASYNC_EVENT_LIMIT_EXCEEDED));
      return;
    }
    this.aers.push(command);
    this.announce();
  }

  private context: AdminContext | null = null;

  /** What admin.ts reads of this controller (made once). */
  adminContext(): AdminContext {
    const registry = this.registry;
    return this.context ??= {
      identity: this.identity,
      features: this.features,
      namespaces: () => this.namespaces(),
      takeChangedNamespaces: (retain) => this.takeChangedNamespaces(retain),
      smart: () => this.smart(),
      discoveryEntries: () => registry.discoveryEntriesFor(this.hostnqn, this.admin.localAddress),
      discoveryGeneration: () => registry.discoveryGeneration(this.hostnqn, this.admin.localAddress),
    };
  }

  private smart(): SmartCounters {
    const stats = this.registry.root.stats();
    // SMART data units are thousands of 512-byte units.
    return {
      dataUnitsRead: BigInt(Math.ceil(this.counters.readBytes / 512_000)), dataUnitsWritten: BigInt(Math.ceil(this.counters.writtenBytes / 512_000)),
      readCommands: BigInt(this.counters.readCommands), writeCommands: BigInt(this.counters.writeCommands),
      poolUsedFraction: stats.sizeBytes > 0 ? stats.allocatedBytes / stats.sizeBytes : 0, mediaErrors: BigInt(stats.checksumErrors),
    };
  }

  /** Property Get: value for CAP (8 bytes), VS, CC, CSTS; null for an unknown offset. */
  property(offset: number): bigint | null {
    switch (offset) {
      case PROP_CAP:
        // MQES (0-based), CQR, TO in 500 ms units, DSTRD 0, CSS bit 37 (NVM command set), MPSMIN/MAX 0 (4 KiB).
        return BigInt(c.QUEUE_ENTRIES_MAX - 1) | (1n << 16n) | (BigInt(c.CAP_TIMEOUT_500MS_UNITS) << 24n) | (1n << 37n);
      case PROP_VS: return BigInt(VERSION_1_3);
      case PROP_CC: return BigInt(this.cc);
      case PROP_CSTS: return BigInt(this.csts);
      default: return null;
    }
  }

  /** Property Set of CC: enable → ready at once; a shutdown notice flushes the pool, then reports it complete. */
  setCc(value: number): void {
    const was = this.cc;
    this.cc = value;
    if ((value & CC_EN) !== 0) this.csts |= CSTS_RDY;
    else if ((was & CC_EN) !== 0) this.csts &= ~CSTS_RDY;
    if (((value >>> CC_SHN_SHIFT) & 3) !== 0 && ((was >>> CC_SHN_SHIFT) & 3) === 0) {
      this.csts = (this.csts & ~(3 << 2)) | CSTS_SHST_OCCURRING;
      const done = (): void => { this.csts = (this.csts & ~(3 << 2)) | CSTS_SHST_COMPLETE; };
      // A failed flush still ends the shutdown: the host is told it is complete either way, as the
      // data it wrote is as durable as the pool can make it; the error is logged.
      void this.registry.root.flush().then(done, (error: unknown) => {
        this.registry.opts.log('nvmf_shutdown_flush_failed', { cntlid: this.cntlid, error: error instanceof Error ? error.message : String(error) });
        done();
      });
    }
  }
}

/** The admin queue's handler. */
class AdminQueue implements QueueHandler {
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

export class ControllerRegistry {
  private readonly controllers = new Map<number, Controller>();
  private nextCntlid = 1;
  private rescanTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribe: () => void;
  private readonly generations = new Map<string, { key: string; generation: bigint }>();

  constructor(readonly root: Engine, readonly opts: RegistryOptions) {
    this.unsubscribe = root.onTargetEvent((event) => this.onTargetEvent(event));
  }

  get size(): number { return this.controllers.size; }

  all(): Controller[] { return [...this.controllers.values()]; }

  serialOf(tenant: string | null): string {
    return controllerSerial(this.opts.poolIdentity, tenant ?? DISCOVERY_NQN);
  }

  connect(connection: NvmfConnection, request: ConnectRequest, discoveryOnly: boolean): { status: number; dw0: number } {
    const refused = (reason: string, result: { status: number; dw0: number }): { status: number; dw0: number } => {
      this.opts.log('nvmf_connect_refused', { peer: connection.peer, hostnqn: request.hostnqn, subnqn: request.subnqn, qid: request.qid, reason });
      return result;
    };
    const discovery = request.subnqn === DISCOVERY_NQN;
    let tenant: string | null = null;
    if (!discovery) {
      tenant = discoveryOnly ? null : tenantOfSubsystemNqn(this.opts.nqnBase, request.subnqn);
      if (tenant === null || !this.opts.tenancy.tenantExists(tenant)) return refused('unknown subsystem', invalidParameters(true, CONNECT_DATA_SUBNQN_OFFSET));
      if (!this.opts.hostAccess.allowed(tenant, request.hostnqn)) {
        return refused('host not allowed', { status: status(SCT_COMMAND_SPECIFIC, SC_CONNECT_INVALID_HOST, true), dw0: 0 });
      }
    }
    if (request.qid === 0) {
      if (request.sqEntries < 2 || request.sqEntries > c.ADMIN_QUEUE_ENTRIES_MAX) return refused('admin SQSIZE', invalidParameters(false, CONNECT_SQE_SQSIZE_OFFSET));
      if (request.cntlid !== CNTLID_DYNAMIC && request.cntlid !== 0) return refused('static CNTLID', invalidParameters(true, CONNECT_DATA_CNTLID_OFFSET));
      const cntlid = this.allocateCntlid();
      if (cntlid === null) return refused('too many controllers', { status: status(SCT_COMMAND_SPECIFIC, SC_CONNECT_CONTROLLER_BUSY), dw0: 0 });
      const controller = new Controller(this, cntlid, tenant, request.subnqn, request.hostnqn, request.hostId, connection, request.keepAliveMs);
      this.controllers.set(cntlid, controller);
      connection.sqFlowDisabled = request.sqFlowDisabled;
      connection.connected(0, request.sqEntries, new AdminQueue(controller), c.ADMIN_IN_CAPSULE_BYTES);
      this.ensureRescan();
      this.opts.log('nvmf_controller_created', { peer: connection.peer, cntlid, hostnqn: request.hostnqn, subnqn: request.subnqn, kato: request.keepAliveMs });
      return { status: 0, dw0: cntlid };
    }
    const controller = this.controllers.get(request.cntlid);
    if (controller === undefined || controller.gone) return refused('no such controller', invalidParameters(true, CONNECT_DATA_CNTLID_OFFSET));
    if (controller.hostnqn !== request.hostnqn) return refused('host NQN differs', invalidParameters(true, CONNECT_DATA_HOSTNQN_OFFSET));
    if (controller.subnqn !== request.subnqn) return refused('subsystem NQN differs', invalidParameters(true, CONNECT_DATA_SUBNQN_OFFSET));
    if (controller.discovery || request.qid > controller.features.ioQueuesGranted || controller.ioQueues.has(request.qid)) {
      return refused('queue id', invalidParameters(false, CONNECT_SQE_QID_OFFSET));
    }
    if (request.sqEntries < 2 || request.sqEntries > c.QUEUE_ENTRIES_MAX) return refused('SQSIZE', invalidParameters(false, CONNECT_SQE_SQSIZE_OFFSET));
    controller.ioQueues.set(request.qid, connection);
    controller.touch();
    connection.sqFlowDisabled = request.sqFlowDisabled;
    connection.connected(request.qid, request.sqEntries, new IoQueue(controller), this.opts.inCapsuleBytes);
    this.opts.log('nvmf_io_queue_connected', { peer: connection.peer, cntlid: controller.cntlid, qid: request.qid, entries: request.sqEntries });
    return { status: 0, dw0: controller.cntlid };
  }

  private allocateCntlid(): number | null {
    if (this.controllers.size >= c.CONTROLLERS_MAX) return null;
    while (this.controllers.has(this.nextCntlid)) this.nextCntlid = this.nextCntlid >= CNTLID_MAX ? 1 : this.nextCntlid + 1;
    const cntlid = this.nextCntlid;
    this.nextCntlid = cntlid >= CNTLID_MAX ? 1 : cntlid + 1;
    return cntlid;
  }

  /** Ends a controller and every queue of it. */
  teardown(controller: Controller, reason: string): void {
    if (controller.gone) return;
    controller.gone = true;
    controller.stopTimers();
    this.controllers.delete(controller.cntlid);
    this.opts.log('nvmf_controller_gone', { cntlid: controller.cntlid, hostnqn: controller.hostnqn, reason });
    controller.admin.destroy();
    for (const queue of controller.ioQueues.values()) queue.destroy();
    if (this.controllers.size === 0 && this.rescanTimer) { clearInterval(this.rescanTimer); this.rescanTimer = null; }
  }

  /** The I/O queue closed by itself: the controller lives on without it. */
  ioQueueClosed(controller: Controller, connection: NvmfConnection): void {
    if (controller.ioQueues.get(connection.qid) === connection) controller.ioQueues.delete(connection.qid);
  }

  private ensureRescan(): void {
    if (this.rescanTimer !== null) return;
    this.rescanTimer = setInterval(() => this.rescanAll([]), c.NAMESPACE_RESCAN_MS);
    this.rescanTimer.unref();
  }

  private rescanAll(also: number[]): void {
    const byTenant = new Map<string, NvmfNamespace[]>();
    for (const controller of this.controllers.values()) {
      if (controller.tenant === null) continue;
      let current = byTenant.get(controller.tenant);
      if (current === undefined) byTenant.set(controller.tenant, (current = this.opts.namespaces.namespacesOf(controller.tenant)));
      const known = also.filter((nsid) => current.some((ns) => ns.nsid === nsid));
      controller.rescan(current, known);
    }
  }

  private onTargetEvent(event: TargetEvent): void {
    if (this.controllers.size === 0) return;
    const nsid = event.id + 1;
    for (const controller of this.controllers.values()) if (event.type !== 'resized') controller.forget(nsid);
    // A revert changes the namespace's content under the host: it is announced like a resize.
    this.rescanAll(event.type === 'reverted' ? [nsid] : []);
  }

  /**
   * The subsystems `hostnqn` may connect to, at the advertised address; a wildcard listener without
   * one advertises the address this host reached us at.
   */
  discoveryEntriesFor(hostnqn: string, localAddress: string): DiscoveryEntry[] {
    const { port, discoveryPort } = this.opts.advertise;
    const wildcard = ['0.0.0.0', '::', ''].includes(this.opts.advertise.host);
    const host = wildcard ? localAddress.replace(/^::ffff:/, '') : this.opts.advertise.host;
    const adrfam = net.isIPv6(host) ? 'ipv6' : 'ipv4';
    const entry = (subtype: 'nvme' | 'discovery', subnqn: string, trsvcid: number): DiscoveryEntry => ({
      trtype: 'tcp', adrfam, subtype, portId: 1, cntlid: CNTLID_DYNAMIC, asqsz: c.ADMIN_QUEUE_ENTRIES_MAX, trsvcid: String(trsvcid),
      subnqn, traddr: host, secureChannel: false,
    });
    const entries = [entry('discovery', DISCOVERY_NQN, discoveryPort)];
    for (const tenant of this.opts.tenancy.listTenants()) {
      if (this.opts.hostAccess.allowed(tenant.name, hostnqn)) entries.push(entry('nvme', subsystemNqn(this.opts.nqnBase, tenant.name), port));
    }
    return entries;
  }

  /** The discovery log's GENCTR for a host: changes whenever its entries do. */
  discoveryGeneration(hostnqn: string, localAddress: string): bigint {
    const key = JSON.stringify(this.discoveryEntriesFor(hostnqn, localAddress));
    const last = this.generations.get(hostnqn);
    if (last !== undefined && last.key === key) return last.generation;
    const generation = last === undefined ? 1n : last.generation + 1n;
    if (this.generations.size >= c.CONTROLLERS_MAX) this.generations.clear();
    this.generations.set(hostnqn, { key, generation });
    return generation;
  }

  close(): void {
    this.unsubscribe();
    if (this.rescanTimer) { clearInterval(this.rescanTimer); this.rescanTimer = null; }
    for (const controller of [...this.controllers.values()]) this.teardown(controller, 'server closing');
  }
}
