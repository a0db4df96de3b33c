// Joins the cluster (issue 22) when the daemon runs with --cluster: the etcd control plane (EtcdKv),
// the replication transport (TcpTransport on --repl-port) and this node's ClusterNode over the local
// engine. Placeholder until src/cluster's node, etcd and TCP pieces land in this branch.
import type { Engine } from '../engine/index.js';
import type { ClusterHandle } from '../cluster/handle.js';
import type { NodeAddresses } from '../cluster/records.js';
import type { ClusterConfig } from './config.js';

export interface ClusterStartOptions {
  config: ClusterConfig;
  /** The local pool as the replica side uses it (decorated by metrics only). */
  engine: Engine;
  addresses: NodeAddresses;
  log: (event: string, fields: Record<string, unknown>) => void;
}

export type ClusterStarter = (opts: ClusterStartOptions) => Promise<ClusterHandle>;

export const startCluster: ClusterStarter = async () => {
  throw new Error('this build has no cluster support yet');
};
