// NBD on a cluster node (issue 22): any node accepts a client's connection to any volume. An export
// whose primary is another node is served by forwarding: the option haggling happens here (size from
// the local replica, else the record), and every data request is relayed over an NBD client connection
// to the primary's NBD port (one per forwarded export of a client connection). When the primary moves,
// the relay reconnects to the new one and resends what was in flight (a request the client has not
// seen answered may be applied again: NBD writes are idempotent by offset); when no primary answers
// within FORWARD_RECONNECT_MS_MAX, requests fail with EIO and the client connection is closed so the
// client reconnects. Tenancy: over plain NBD the primary serves the default tenant only, so another
// tenant's volume is relayed over TLS-PSK with one of that tenant's NBD keys (shared by every node of the
// cluster), which the primary's server maps to the same tenant view.
import { CairnError, type ByteRange, type Engine, type Extent, type Target, type VolumeInfo, type WriteData, type WriteOptions, type ZeroOptions } from '../engine/index.js';
import { ForwardingEngine } from '../decorators/forwarding-engine.js';
import { NbdClient, NbdClientError, type NbdClientPsk } from '../nbd/client.js';
import type { TargetLoss } from '../nbd/connection.js';
import * as nbd from '../nbd/constants.js';
import type { ClusterHandle } from '../cluster/handle.js';
import { DEFAULT_TENANT, qualify, splitQualified } from '../tenancy/names.js';

/** How long a forwarded request waits for a primary to answer (a failover takes ~5 s) before EIO. */
export const FORWARD_RECONNECT_MS_MAX = 15_000;
/** Pause between attempts to reach a primary that did not answer. */
export const FORWARD_RETRY_MS = 200;
/**
 * Appended to the export name a relay opens on the primary ('#' is in no volume name): the node that
 * receives it serves the export itself or refuses, never relays it again, so two nodes that briefly
 * disagree on the primary (or a node named primary before it serves) cannot bounce a connection
 * between them.
 */
export const RELAYED_EXPORT_SUFFIX = '#relayed';

type Log = (event: string, fields: Record<string, unknown>) => void;
/** A credential of `tenant` to open its exports on another node with (null: it has no NBD key). */
export type TenantPsk = (tenant: string) => NbdClientPsk | null;

function ioError(message: string): CairnError { return new CairnError('io_error', message, 'EIO'); }

/** An NBD error number from the primary as the engine error the local NBD server maps back to it. */
function engineErrorOf(error: NbdClientError): CairnError {
  switch (error.errorNumber) {
    case nbd.NBD_EPERM: return new CairnError('read_only', error.message, 'EPERM');
    case nbd.NBD_ENOSPC: return new CairnError('pool_full', error.message, 'ENOSPC');
    case nbd.NBD_EINVAL: return new CairnError('invalid_argument', error.message, 'EINVAL');
    case nbd.NBD_ESHUTDOWN: return new CairnError('pool_closed', error.message, 'ESHUTDOWN');
    default: return ioError(error.message);
  }
}

function parseHostPort(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
  if (m === null) throw ioError(`bad NBD address in the node record: ${address}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/** The relay of one forwarded export to its volume's primary, reconnecting as the primary moves. */
class Relay {
  private client: NbdClient | null = null;
  /** node name + incarnation the client is connected to. */
  private connectedTo: string | null = null;
  private connecting: Promise<NbdClient> | null = null;
  private readonly lostListeners = new Set<() => void>();
  private closed = false;
  /** Asked to relay at least once (a relay made by an INFO only never connects). */
  used = false;

  constructor(
    private readonly cluster: ClusterHandle, private readonly volume: string, private readonly exportName: string,
    private readonly log: Log, private readonly reconnectMsMax: number,
    /** Asked at each connect (a key may have been revoked meanwhile); null: plain NBD (the default tenant). */
    private readonly psk: (() => NbdClientPsk | null) | null,
  ) {}

  onLost(listener: () => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = null;
  }

  private primaryKey(): string | null {
    const p = this.cluster.primaryOf(this.volume);
    return p === null ? null : `${p.node.name}/${p.node.incarnation}`;
  }

  /** Runs `fn` on a connection to the current primary; retries on a lost connection or a moved primary. */
  async call<T>(fn: (client: NbdClient) => Promise<T>): Promise<T> {
    const deadlineMs = Date.now() + this.reconnectMsMax;
    this.used = true;
    for (;;) {
      const client = await this.connection(deadlineMs);
      try {
        return await fn(client);
      } catch (error) {
        if (!(error instanceof NbdClientError)) throw error;
        // The primary answered an error: a deposed primary refuses (NotPrimary → EIO); if the record
        // names another primary now, the request goes there, else the error is the answer.
        const answered = error.errorNumber !== 0;
        const moved = this.primaryKey() !== this.connectedTo;
        if (answered && !moved) throw engineErrorOf(error);
        this.drop(client);
        if (Date.now() >= deadlineMs) throw this.giveUp(`the primary of ${this.volume} did not answer: ${error.message}`);
        if (!moved) await sleep(FORWARD_RETRY_MS);
      }
    }
  }

  private drop(client: NbdClient): void {
    if (this.client === client) { this.client = null; this.connectedTo = null; }
    client.close();
  }

  private giveUp(message: string): CairnError {
    this.log('nbd_forward_lost', { volume: this.volume, reason: message });
    // The connection drains and closes after this request fails: the client reconnects.
    for (const listener of [...this.lostListeners]) listener();
    return ioError(message);
  }

  private async connection(deadlineMs: number): Promise<NbdClient> {
    const key = this.primaryKey();
    if (this.client !== null && !this.client.failed && key === this.connectedTo) return this.client;
    if (this.client !== null) { this.client.close(); this.client = null; this.connectedTo = null; }
    this.connecting ??= this.connect(deadlineMs).finally(() => { this.connecting = null; });
    return this.connecting;
  }

  private async connect(deadlineMs: number): Promise<NbdClient> {
    let last = 'no primary is known';
    while (!this.closed) {
      const primary = this.cluster.primaryOf(this.volume);
      const address = primary?.node.addresses.nbd ?? null;
      if (primary !== null && address === null) last = `the primary ${primary.node.name} serves no NBD`;
      // Named primary here but not serving yet (a takeover under way): wait. Once it serves, the relay
      // connects to this node's own port, where the relayed name is served locally (never relayed on).
      const notYet = primary !== null && primary.node.name === this.cluster.self && !primary.local;
      if (notYet) last = `this node (${primary.node.name}) is named primary of ${this.volume} but does not serve it yet`;
      if (primary !== null && address !== null && !notYet) {
        const { host, port } = parseHostPort(address);
        try {
          const psk = this.psk === null ? null : this.psk();
          if (this.psk !== null && psk === null) throw new NbdClientError(`the tenant of ${this.volume} has no NBD key left to reach its primary with`);
          const client = await NbdClient.open(host, port, this.exportName, Math.max(1, Math.min(deadlineMs - Date.now(), 5000)), psk);
          this.client = client;
          this.connectedTo = `${primary.node.name}/${primary.node.incarnation}`;
          this.log('nbd_forward_connected', { volume: this.volume, primary: primary.node.name, address });
          return client;
        } catch (error) {
          last = `${primary.node.name} (${address}): ${error instanceof Error ? error.message : String(error)}`;
        }
      }
      if (Date.now() >= deadlineMs) break;
      await sleep(FORWARD_RETRY_MS);
    }
    throw this.giveUp(`cannot reach the primary of ${this.volume}: ${last}`);
  }
}

function sleep(ms: number): Promise<void> { return new Promise((resolve) => setTimeout(resolve, ms).unref()); }

/**
 * A client connection's view of the exports on a cluster node: the local view (`inner`) for volumes
 * this node is primary of (or that have no record), a relay to the primary for the others. Forwarded
 * targets get negative ids, which never collide with the engine's.
 */
export class ForwardingExports extends ForwardingEngine implements TargetLoss {
  private readonly forwarded = new Map<number, { target: Target; relay: Relay }>();
  /** Targets served here because this node is their volume's primary: engine volume name by target id. */
  private readonly localPrimaries = new Map<number, string>();
  private nextId = -1;

  /** `tenant`: whose names `inner` takes (null: engine names, the whole engine). */
  constructor(
    inner: Engine, private readonly cluster: ClusterHandle, private readonly tenant: string | null, private readonly log: Log,
    private readonly pskFor: TenantPsk = () => null, private readonly reconnectMsMax = FORWARD_RECONNECT_MS_MAX,
  ) {
    super(inner);
  }

  override resolve(requested: string): Target {
    const relayed = requested.endsWith(RELAYED_EXPORT_SUFFIX);
    const name = relayed ? requested.slice(0, -RELAYED_EXPORT_SUFFIX.length) : requested;
    const volume = name.split('@')[0]!;
    const engineVolume = this.tenant === null ? volume : qualify(this.tenant, volume);
    if (this.cluster.volume(engineVolume) === null) return this.inner.resolve(name);
    const primary = this.cluster.primaryOf(engineVolume);
    // Served here when this node is (or is named) the primary: until it serves, I/O fails with EIO and
    // the client retries; relaying to ourselves would loop.
    if (relayed && primary !== null && primary.node.name === this.cluster.self && !primary.local) {
      // The relay retries its open until this node serves (a takeover under way) or another is named.
      throw ioError(`${volume}: this node is named its primary but does not serve it yet`);
    }
    if (primary?.local === true || primary?.node.name === this.cluster.self) {
      const target = this.inner.resolve(name);
      this.localPrimaries.set(target.id, engineVolume);
      return target;
    }
    if (relayed) {
      throw ioError(`${volume}: relayed here, but this node is not its primary (${primary?.node.name ?? 'none known'}); a relayed connection is not relayed again`);
    }
    const owner = splitQualified(engineVolume).tenant;
    if (owner !== DEFAULT_TENANT && this.pskFor(owner) === null) {
      throw new CairnError('invalid_argument', `${volume} lives on node ${primary?.node.name ?? '?'} and tenant ${owner} has no NBD key to forward with (connect to that node, or create one: cairn tenant nbd-key create ${owner})`, 'EINVAL');
    }
    let sizeBytes = this.cluster.volume(engineVolume)!.sizeBytes;
    // The local replica knows a snapshot's size; the record only the volume's.
    try { sizeBytes = this.inner.resolve(name).sizeBytes; } catch (error) {
      // No replica here (or no such snapshot here): the record's size stands; the primary decides.
      if (!(error instanceof CairnError)) throw error;
    }
    const id = this.nextId--;
    const target: Target = { id, name, readOnly: name.includes('@'), sizeBytes };
    // The primary's server shows the owner's view (plain NBD: the default tenant; TLS-PSK: the key's tenant).
    const upstreamName = splitQualified(this.tenant === null ? name : qualify(this.tenant, name)).name + RELAYED_EXPORT_SUFFIX;
    const psk = owner === DEFAULT_TENANT ? null : () => this.pskFor(owner);
    this.forwarded.set(id, { target, relay: new Relay(this.cluster, engineVolume, upstreamName, this.log, this.reconnectMsMax, psk) });
    return target;
  }

  /** NBD LIST: this node's volumes, and the cluster's volumes held only elsewhere (reached by forwarding). */
  override listVolumes(): VolumeInfo[] {
    const local = this.inner.listVolumes();
    const names = new Set(local.map((v) => v.name));
    const remote: VolumeInfo[] = [];
    for (const record of this.cluster.volumes()) {
      const split = splitQualified(record.name);
      // This view's tenant only (an unscoped view lists the default tenant's), when a relay can reach it.
      if (split.tenant !== (this.tenant ?? DEFAULT_TENANT)) continue;
      if (split.tenant !== DEFAULT_TENANT && this.pskFor(split.tenant) === null) continue;
      const name = this.tenant === null ? record.name : split.name;
      if (names.has(name)) continue;
      remote.push({ kind: 'volume', id: 0, name, sizeBytes: record.sizeBytes, mappedBytes: 0, createdMs: record.createdMs,
        origin: null, snapshotCount: 0, snapshots: [], flattenProgress: null, encryption: null });
    }
    return remote.length === 0 ? local : [...local, ...remote].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private relay(id: number): Relay | null { return this.forwarded.get(id)?.relay ?? null; }

  /**
   * A forwarded target is lost when its relay gives up; a local one when the primary moves to another
   * node (this node's engine then refuses its I/O): the client reconnects and is forwarded there.
   */
  onTargetLost(id: number, listener: () => void): () => void {
    const relay = this.relay(id);
    if (relay !== null) return relay.onLost(listener);
    const volume = this.localPrimaries.get(id);
    if (volume === undefined) return () => {};
    return this.cluster.onChange((changed) => {
      if (changed !== null && changed !== volume) return;
      const primary = this.cluster.primaryOf(volume);
      // No primary known (a takeover under way): wait for the next change instead of closing early.
      if (primary !== null && !primary.local) listener();
    });
  }

  override targetSizeBytes(id: number): number {
    return this.forwarded.get(id)?.target.sizeBytes ?? this.inner.targetSizeBytes(id);
  }
  override read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    const relay = this.relay(id);
    if (relay === null) return this.inner.read(id, offsetBytes, lengthBytes, into);
    return relay.call(async (c) => {
      const data = await c.read(offsetBytes, lengthBytes);
      if (into === undefined) return data;
      data.copy(into);
      return into.subarray(0, lengthBytes);
    });
  }
  override write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    const relay = this.relay(id);
    if (relay === null) return this.inner.write(id, offsetBytes, data, opts);
    // The payload may be socket slabs the NBD server reuses after this call: copied once, so a
    // resend after a reconnect sends the same bytes.
    const copy = Buffer.concat(Buffer.isBuffer(data) ? [data] : [...data]);
    return relay.call((c) => c.write(offsetBytes, copy, opts?.fua === true));
  }
  override trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    const relay = this.relay(id);
    if (relay === null) return this.inner.trim(id, offsetBytes, lengthBytes, opts);
    return relay.call((c) => c.trim(offsetBytes, lengthBytes, opts?.fua === true));
  }
  override writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    const relay = this.relay(id);
    if (relay === null) return this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts);
    return relay.call((c) => c.writeZeroes(offsetBytes, lengthBytes, opts?.fua === true, opts?.noHole === true));
  }
  override async flush(): Promise<void> {
    // A forwarded export's flush is its primary's (which flushes every in-sync replica); the local
    // flush covers a local export (and costs little when nothing was written here).
    const relays = [...this.forwarded.values()].map((f) => f.relay).filter((r) => r.used);
    await Promise.all([this.inner.flush(), ...relays.map((relay) => relay.call((c) => c.flush()))]);
  }
  /** Block status of a forwarded export: all data (proto.md lets a server report data for any extent). */
  override async extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    if (this.relay(id) === null) return this.inner.extents(id, offsetBytes, lengthBytes);
    return [{ offsetBytes, lengthBytes, hole: false }];
  }
  /** A dirty bitmap of a forwarded export: everything changed (a backup copies more, never less). */
  override async changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    if (this.relay(id) === null) return this.inner.changedSince(id, sinceFullName, offsetBytes, lengthBytes);
    return [{ offsetBytes, lengthBytes }];
  }

  /** The client connection ended: its relays close. */
  release(): void {
    for (const { relay } of this.forwarded.values()) relay.close();
    this.forwarded.clear();
  }
}
