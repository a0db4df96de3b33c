// What a cluster node tells the others (its node record): HOST:PORT of its API, NBD, NVMe/TCP and
// replication ports on the advertised host. The record is written before the servers listen, so an
// ephemeral port (0, as tests ask for) is picked here first and then used as a fixed one.
import net from 'node:net';
import type { NodeAddresses } from '../cluster/records.js';
import type { ClusterConfig, DaemonConfig } from './config.js';

function hostPort(host: string, port: number): string { return `${host.includes(':') ? `[${host}]` : host}:${port}`; }

/** A port free on `host` now (the kernel's pick); it stays free unless another process takes it first. */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** The config with every ephemeral (0) listen port replaced by a free one, so the record can name it. */
export async function reservePorts(config: DaemonConfig): Promise<DaemonConfig> {
  const out = { ...config };
  if (out.api.port === 0) out.api = { ...out.api, port: await freePort(out.api.host) };
  if (out.nbd !== null && out.nbd.port === 0) out.nbd = { ...out.nbd, port: await freePort(out.nbd.host) };
  if (out.nvmf !== null && out.nvmf.port === 0) out.nvmf = { ...out.nvmf, port: await freePort(out.nvmf.host) };
  return out;
}

export function clusterAddresses(config: ClusterConfig): NodeAddresses {
  const host = config.advertise;
  return {
    api: hostPort(host, config.api.port),
    nbd: config.nbd === null ? null : hostPort(host, config.nbd.port),
    nvmf: config.nvmf === null ? null : hostPort(config.nvmfAdvertise?.host ?? host, config.nvmfAdvertise?.port ?? config.nvmf.port),
    repl: hostPort(host, config.replPort),
  };
}

/** Where the replication transport listens: the advertised address when it is an IP, else every address. */
export function replListenHost(config: ClusterConfig): string {
  return net.isIP(config.advertise) !== 0 ? config.advertise : '0.0.0.0';
}
