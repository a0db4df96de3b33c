// Joins the cluster (issue 22) when the daemon runs with --cluster: the etcd control plane (EtcdKv),
// the replication transport (TcpTransport on --repl-port) and this node's ClusterNode over the local
// engine. The handle it returns reports etcd's own health (every endpoint) in status(), and its close
// leaves the cluster, then stops the transport and the etcd client.
import type { Engine, VolumeCreateOptions } from '../engine/index.js';
import type { ClusterHandle, ClusterStatus } from '../cluster/handle.js';
import type { NodeAddresses } from '../cluster/records.js';
import { readFileSync } from 'node:fs';
import { ConfigError, type ClusterConfig } from './config.js';
import { EtcdKv } from '../cluster/kv-etcd.js';
import { TcpTransport } from '../cluster/tcp-transport.js';
import { startClusterNode, type ClusterDataKeys, type ClusterNode } from '../cluster/node.js';
import { realClock } from '../cluster/clock.js';
import { replListenHost } from './cluster-addresses.js';
import { SharedSettings } from '../cluster/shared-settings.js';
import { ForwardingEngine } from '../decorators/forwarding-engine.js';
import type { SettingChange } from '../engine/index.js';

/** The cluster's engine with settings written through SharedSettings (tenants and tokens reach every node). */
class SharedSettingsEngine extends ForwardingEngine {
  constructor(inner: Engine, private readonly shared: SharedSettings) { super(inner); }
  override putSettings(changes: SettingChange[]): Promise<void> { return this.shared.put(changes); }
}

export interface ClusterStartOptions {
  config: ClusterConfig;
  /** The local pool as the replica side uses it (decorated by metrics only). */
  engine: Engine;
  addresses: NodeAddresses;
  /** Data keys for this node's copies of encrypted volumes (the daemon's key manager). */
  dataKeys?: ClusterDataKeys;
  log: (event: string, fields: Record<string, unknown>) => void;
  /** Aborted when the daemon is told to stop while it starts: the wait for etcd ends. */
  startAbort?: AbortSignal;
}

export type ClusterStarter = (opts: ClusterStartOptions) => Promise<ClusterHandle>;

/** ClusterNode as the daemon serves it: status() with etcd's per-endpoint health; close() ends everything it started. */
class DaemonCluster implements ClusterHandle {
  readonly engine: Engine;
  constructor(private readonly node: ClusterNode, private readonly kv: EtcdKv, private readonly transport: TcpTransport,
    private readonly shared: SharedSettings) {
    this.engine = new SharedSettingsEngine(node.engine, shared);
  }
  get self(): string { return this.node.self; }
  createVolume(name: string, sizeBytes: number, replicas: number | null, opts?: VolumeCreateOptions) { return this.node.createVolume(name, sizeBytes, replicas, opts); }
  volume(name: string) { return this.node.volume(name); }
  volumes() { return this.node.volumes(); }
  replicas(name: string) { return this.node.replicas(name); }
  primaryOf(name: string) { return this.node.primaryOf(name); }
  nodes() { return this.node.nodes(); }
  async status(): Promise<ClusterStatus> {
    const [status, health] = await Promise.all([this.node.status(), this.kv.health()]);
    const endpoints = health.endpoints.map((e) => `${e.endpoint}${e.healthy ? '' : ` (down: ${e.error ?? 'no leader'})`}`);
    return { ...status, controlPlane: { healthy: health.healthy && status.controlPlane.healthy, endpoints, error: health.error ?? status.controlPlane.error } };
  }
  drain(node: string, timeoutMs: number) { return this.node.drain(node, timeoutMs); }
  counters() { return this.node.counters(); }
  onChange(listener: (volume: string | null) => void) { return this.node.onChange(listener); }
  setVolumeQos(name: string, encoded: string | null) { return this.node.setVolumeQos(name, encoded); }
  onSettingChange(listener: (key: string) => void) { return this.shared.onApplied(listener); }
  async close(): Promise<void> {
    this.shared.close();
    await this.node.close();
    await this.transport.close();
    await this.kv.close();
  }
}

/** The shared replication secret: the file's first line (it must not be empty). */
function readSecret(path: string): string {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (err) {
    throw new ConfigError(`cannot read the cluster secret file ${path}: ${(err as Error).message}`);
  }
  const secret = text.split('\n')[0]!.trim();
  if (secret === '') throw new ConfigError(`the cluster secret file ${path} is empty`);
  return secret;
}

export const startCluster: ClusterStarter = async ({ config, engine, addresses, dataKeys, log, startAbort }) => {
  const kv = new EtcdKv({ hosts: config.cluster, log });
  let node: ClusterNode | null = null;
  const transport = new TcpTransport({
    self: config.node, listen: { host: replListenHost(config), port: config.replPort },
    addressOf: (name) => node?.addressOf(name) ?? null,
    ...(config.clusterSecretFile !== null ? { clusterSecret: readSecret(config.clusterSecretFile) } : {}),
    log,
  });
  try {
    await transport.start();
    node = await startClusterNode({
      name: config.node, zone: config.zone, addresses, engine, kv, transport, clock: realClock, log,
      ...(config.replicasDefault !== null ? { defaultReplicas: config.replicasDefault } : {}),
      ...(dataKeys !== undefined ? { dataKeys } : {}),
      ...(startAbort !== undefined ? { startAbort } : {}),
    });
    const shared = new SharedSettings(kv, node.engine, log);
    try {
      await shared.start();
    } catch (err) {
      shared.close();
      await node.close().catch(() => undefined); // reported: the settings failure below
      throw err;
    }
    return new DaemonCluster(node, kv, transport, shared);
  } catch (err) {
    // The start failed with `err`, which the caller reports; undoing is best effort.
    await transport.close().catch(() => undefined);
    await kv.close().catch(() => undefined);
    throw err;
  }
};
