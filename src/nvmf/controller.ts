// One controller (NVMe over Fabrics dynamic controller model): its admin connection and I/O queues,
// the CC/CSTS registers with the CC.EN → CSTS.RDY and CC.SHN → CSTS.SHST handshakes, the keep-alive
// timer (no command for KATO + slack tears it down with all its queues), Async Event Requests, and
// namespace change tracking (the registry feeds it the tenant's namespaces on engine events and on
// its periodic re-scan) for the changed namespace list.
import type { Target } from '../engine/index.js';
import { ScopedEngine } from '../tenancy/scoped-engine.js';
import * as c from './constants.js';
import type { Command, NvmfConnection } from './connection.js';
import { PROP_CAP, PROP_CC, PROP_CSTS, PROP_VS, VERSION_1_3 } from './fabrics.js';
import type { AdminContext, ControllerIdentity, SmartCounters } from './admin.js';
import { FeatureStore } from './features.js';
import { NSID_MAX, type NvmfNamespace } from './namespaces.js';
import { ASYNC_EVENTS_MAX } from './identify.js';
import { anaGroupOf, anaLog, type AnaState } from './ana.js';
import { qualify } from '../tenancy/names.js';
import { nvmeStatus as status, asyncEventDw0, AEN_INFO_ANA_CHANGE, AEN_INFO_DISCOVERY_LOG_CHANGED, AEN_TYPE_NOTICE, LOG_ANA, LOG_DISCOVERY, SCT_COMMAND_SPECIFIC,
  SCT_GENERIC, SC_ABORT_REQUESTED, SC_ASYNC_EVENT_LIMIT_EXCEEDED } from './status.js';
import type { IoCounters } from './io.js';
import type { ControllerRegistry } from './registry.js';

/** Async Event Requests held at most: identify.ts reports AERL = this - 1. */
export const AER_SLOTS = ASYNC_EVENTS_MAX;
/** Async Event Configuration bit of namespace attribute notices. */
const AEC_NAMESPACE_ATTRIBUTE_BIT = 8;
/** Async Event Configuration bit of ANA change notices. */
const AEC_ANA_CHANGE_BIT = 11;
/** Async Event Configuration bit of discovery log page change notices (discovery controllers). */
const AEC_DISCOVERY_LOG_CHANGE_BIT = 31;
/** AER completion dword 0: type 2 (notice), info 0 (namespace attribute changed), log page 0x04. */
const AER_NAMESPACE_CHANGED = (0x04 << 16) | (0x00 << 8) | 0x02;
const CHANGED_NAMESPACES_MAX = 1024;
const CC_EN = 0x1;
const CC_SHN_SHIFT = 14;
const CSTS_RDY = 0x1;
const CSTS_SHST_OCCURRING = 0x1 << 2;
const CSTS_SHST_COMPLETE = 0x2 << 2;
const FIRMWARE = '0.1.0';

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
  /** A discovery controller's log generation when it was last announced (or at Connect). */
  private discoveryGenerationSeen = 0n;
  private readonly targets = new Map<number, Target>();
  readonly engine: ScopedEngine | null;
  gone = false;
  /** ANA: the states last announced (nsid:state list), the change count, and the notice's progress. */
  private anaSignature = '';
  private anaChangeCount = 0n;
  private anaPending = false;
  private anaNoticeOutstanding = false;

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
    if (registry.opts.ana != null && tenant !== null) {
      this.identity.ana = true;
      this.anaSignature = this.anaSignatureNow();
    }
    this.features = FeatureStore.forController(this.identity, keepAliveMs);
    this.features.hostId = hostId;
    if (tenant === null) this.discoveryGenerationSeen = registry.discoveryGeneration(hostnqn, admin.localAddress);
    this.armKeepAlive();
  }

  /** (Re)arms the keep-alive timer for the current Keep Alive Timeout (Connect's KATO, or Set Features 0Fh since). */
  private armKeepAlive(): void {
    const ms = this.features.keepAliveTimeoutMs;
    this.keepAliveArmedMs = ms;
    if (this.keepAliveTimer) { clearTimeout(this.keepAliveTimer); this.keepAliveTimer = null; }
    if (ms === 0) return;
    // Slack for a host that sends Keep Alive every KATO (older Linux does) over a slow or loaded path.
    const slackMs = Math.max(c.KEEP_ALIVE_SLACK_MS, Math.floor(ms / 2));
    this.keepAliveTimer = setTimeout(() => this.registry.teardown(this, 'keep-alive timeout'), ms + slackMs);
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
    if (this.tenant === null) return [];
    const list = this.registry.opts.namespaces.namespacesOf(this.tenant);
    if (this.registry.opts.ana == null) return list;
    return list.map((ns) => ({ ...ns, anaGroupId: anaGroupOf(this.anaStateOf(ns.targetName)) }));
  }

  /** This path's ANA state for a namespace's target ("VOL" or "VOL@SNAP": a snapshot follows its volume). */
  anaStateOf(targetName: string): AnaState {
    const ana = this.registry.opts.ana;
    if (ana == null || this.tenant === null) return 'optimized';
    return ana.stateOf(qualify(this.tenant, targetName.split('@')[0]!));
  }

  private anaStates(): Array<{ nsid: number; state: AnaState }> {
    if (this.tenant === null) return [];
    return this.registry.opts.namespaces.namespacesOf(this.tenant).map((ns) => ({ nsid: ns.nsid, state: this.anaStateOf(ns.targetName) }));
  }

  private anaSignatureNow(): string { return this.anaStates().map((s) => `${s.nsid}:${s.state}`).join(','); }

  /** After a cluster change: when a path state of ours changed, the change count moves and an ANA notice goes out. */
  anaCheck(): void {
    if (this.registry.opts.ana == null || this.tenant === null) return;
    const now = this.anaSignatureNow();
    if (now === this.anaSignature) return;
    this.anaSignature = now;
    this.anaChangeCount += 1n;
    this.anaPending = true;
    this.announce();
  }

  /** The ANA log page (0Ch); reading it without RAE re-arms the ANA change notice. */
  anaLog(groupsOnly: boolean, retain: boolean): Buffer {
    const log = anaLog(this.anaChangeCount, this.anaStates(), groupsOnly);
    if (!retain) {
      this.anaNoticeOutstanding = false;
      this.announce();
    }
    return log;
  }

  /**
   * A discovery controller: when the host's discovery log changed (a tenant or an allowed host came or
   * went) and the host enabled the notice, a held AER completes with Discovery Log Page Change.
   */
  checkDiscoveryLog(): void {
    if (!this.features.asyncEventEnabled(AEC_DISCOVERY_LOG_CHANGE_BIT) || this.aers.length === 0) return;
    const generation = this.registry.discoveryGeneration(this.hostnqn, this.admin.localAddress);
    if (generation === this.discoveryGenerationSeen) return;
    this.discoveryGenerationSeen = generation;
    this.admin.complete(this.aers.shift()!, 0, asyncEventDw0(AEN_TYPE_NOTICE, AEN_INFO_DISCOVERY_LOG_CHANGED, LOG_DISCOVERY));
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
    // ANA change first (base spec 8.1.5: the host then reads log page 0Ch; Linux nvme_handle_aen_notice).
    if (this.anaPending && !this.anaNoticeOutstanding && this.features.asyncEventEnabled(AEC_ANA_CHANGE_BIT)) {
      const aer = this.aers.shift();
      if (aer === undefined) return;
      this.anaPending = false;
      this.anaNoticeOutstanding = true;
      this.admin.complete(aer, 0, asyncEventDw0(AEN_TYPE_NOTICE, AEN_INFO_ANA_CHANGE, LOG_ANA));
    }
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

  /** Shutdown: held AERs complete with Command Abort Requested, so draining waits only for real work. */
  abortAsyncEvents(): void {
    for (const aer of this.aers.splice(0)) this.admin.complete(aer, status(SCT_GENERIC, SC_ABORT_REQUESTED));
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
      ...(registry.opts.ana != null && this.tenant !== null ? { anaLog: (groupsOnly: boolean, retain: boolean) => this.anaLog(groupsOnly, retain) } : {}),
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
