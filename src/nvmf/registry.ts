// The controller registry: CNTLIDs handed out at an admin-queue Connect (dynamic model), I/O queues
// joined to their controller by CNTLID with matching host and subsystem NQNs, host allow-list and
// subsystem checks (Connect Invalid Host / Invalid Parameters with IATTR and IPO), teardown, namespace
// change tracking from engine target events and a re-scan every NAMESPACE_RESCAN_MS while controllers
// live, and the discovery log's entries for a host.
import net from 'node:net';
import type { Engine, TargetEvent } from '../engine/index.js';
import type { TenantStore } from '../tenancy/store.js';
import * as c from './constants.js';
import type { NvmfConnection } from './connection.js';
import { CNTLID_DYNAMIC, CONNECT_DATA_CNTLID_OFFSET, CONNECT_DATA_HOSTNQN_OFFSET, CONNECT_DATA_SUBNQN_OFFSET, CONNECT_SQE_QID_OFFSET,
  CONNECT_SQE_SQSIZE_OFFSET, invalidParameters, type ConnectRequest } from './fabrics.js';
import type { DiscoveryEntry } from './admin.js';
import { controllerSerial, type NamespaceView, type NvmfNamespace } from './namespaces.js';
import { DISCOVERY_NQN, subsystemNqn, tenantOfSubsystemNqn, type NvmeHostAccess } from './host-access.js';
import { nvmeStatus as status, SCT_COMMAND_SPECIFIC, SC_CONNECT_CONTROLLER_BUSY, SC_CONNECT_INVALID_HOST } from './status.js';
import { Controller } from './controller.js';
import { AdminQueue } from './admin-queue.js';
import { IoQueue } from './io.js';
import type { FairShare } from '../nbd/fair-share.js';
import type { AnaProvider } from './ana.js';

/** The largest CNTLID (FFF0h..FFFFh are reserved; FFFFh asks for a dynamic one). */
export const CNTLID_MAX = 0xffef;

export interface RegistryOptions {
  nqnBase: string;
  tenancy: TenantStore;
  hostAccess: NvmeHostAccess;
  namespaces: NamespaceView;
  poolIdentity: Buffer;
  inCapsuleBytes: number;
  /** The address hosts are told in the discovery log page (the advertised one, else the listen one). */
  advertise: { host: string; port: number; discoveryPort: number };
  /** Fair sharing of I/O between tenants (src/nbd/fair-share.ts); null: off. */
  fair: FairShare | null;
  log(event: string, fields: Record<string, unknown>): void;
  /** ANA reporting (a cluster node): path states per volume, and when they change. */
  ana?: AnaProvider | null;
  /**
   * The CNTLIDs this target hands out (default 1..0xFFEF). Nodes of a cluster expose one subsystem
   * between them, and Linux refuses a second controller with a CNTLID it already has in a subsystem
   * (nvme_validate_cntlid), so each node takes its own range.
   */
  cntlidRange?: { first: number; last: number };
}

/** One controller: its admin queue, I/O queues, registers, keep-alive timer and async events. */

export class ControllerRegistry {
  private readonly controllers = new Map<number, Controller>();
  private nextCntlid: number;
  private readonly cntlidFirst: number;
  private readonly cntlidLast: number;
  private readonly unsubscribeAna: () => void;
  private rescanTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribe: () => void;
  private readonly generations = new Map<string, { key: string; generation: bigint }>();

  constructor(readonly root: Engine, readonly opts: RegistryOptions) {
    this.unsubscribe = root.onTargetEvent((event) => this.onTargetEvent(event));
    this.cntlidFirst = opts.cntlidRange?.first ?? 1;
    this.cntlidLast = opts.cntlidRange?.last ?? CNTLID_MAX;
    if (!(this.cntlidFirst >= 1 && this.cntlidLast <= CNTLID_MAX && this.cntlidFirst <= this.cntlidLast)) {
      throw new RangeError(`CNTLID range ${this.cntlidFirst}..${this.cntlidLast} is not within 1..${CNTLID_MAX}`);
    }
    this.nextCntlid = this.cntlidFirst;
    // A path state change is announced to every I/O controller whose namespaces it touches.
    this.unsubscribeAna = opts.ana?.onChange(() => { for (const controller of this.controllers.values()) controller.anaCheck(); }) ?? (() => {});
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
    connection.connected(request.qid, request.sqEntries, new IoQueue(controller), this.opts.inCapsuleBytes,
      this.opts.fair?.share(controller.tenant!) ?? null);
    this.opts.log('nvmf_io_queue_connected', { peer: connection.peer, cntlid: controller.cntlid, qid: request.qid, entries: request.sqEntries });
    return { status: 0, dw0: controller.cntlid };
  }

  private allocateCntlid(): number | null {
    if (this.controllers.size >= Math.min(c.CONTROLLERS_MAX, this.cntlidLast - this.cntlidFirst + 1)) return null;
    const next = (id: number): number => (id >= this.cntlidLast ? this.cntlidFirst : id + 1);
    while (this.controllers.has(this.nextCntlid)) this.nextCntlid = next(this.nextCntlid);
    const cntlid = this.nextCntlid;
    this.nextCntlid = next(cntlid);
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
      if (controller.tenant === null) { controller.checkDiscoveryLog(); continue; }
      let current = byTenant.get(controller.tenant);
      if (current === undefined) byTenant.set(controller.tenant, (current = this.opts.namespaces.namespacesOf(controller.tenant)));
      const known = also.filter((nsid) => current.some((ns) => ns.nsid === nsid));
      controller.rescan(current, known);
    }
  }

  private onTargetEvent(event: TargetEvent): void {
    if (this.controllers.size === 0) return;
    const nsid = this.opts.namespaces.nsidOfTarget(event.id);
    // Every event drops the resolved target: the next command resolves it again (a resize: its new size).
    for (const controller of this.controllers.values()) controller.forget(nsid);
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
    this.unsubscribeAna();
    if (this.rescanTimer) { clearInterval(this.rescanTimer); this.rescanTimer = null; }
    for (const controller of [...this.controllers.values()]) this.teardown(controller, 'server closing');
  }
}
