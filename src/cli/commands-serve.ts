// `cairn serve` (the daemon in the foreground, until SIGTERM/SIGINT) and `cairn check` (offline
// consistency check of a pool file no daemon holds; exits non-zero on any problem).
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { ConfigLayer } from '../daemon/config.js';
import { CliError } from './client.js';
import { print, printJson, table } from './output.js';
import type { CliContext } from './context.js';

interface ServeFlags {
  config?: string; pool?: string; stateDir?: string; poolSize?: string; poolPreallocate?: string; api?: string; nbd?: string; nbdSocket?: string;
  logLevel?: string; logFormat?: string; cacheBytesMax?: string; commitIntervalMs?: string; nbdBusyPollUs?: string; kekRetryMs?: string; capacitySampleMs?: string;
  apiTlsCert?: string; apiTlsKey?: string; apiTlsClientCa?: string;
  nbdTls?: string; nbdTlsCert?: string; nbdTlsKey?: string; nbdTlsCa?: string; nbdTlsPsk?: string; nbdTlsRequired?: boolean; rewind?: boolean;
  nvmf?: string; nvmfDiscovery?: string; nvmfAdvertise?: string; nvmfNqnBase?: string; nvmfInCapsuleBytes?: string;
  cluster?: string; node?: string; advertise?: string; zone?: string; replPort?: string; replicasDefault?: string; clusterSecretFile?: string;
}

// The daemon and the engine are imported only by the commands that need them, so the client
// commands start fast (no fastify, pino or engine loading).
async function serve(flags: ServeFlags, apiFromGlobal: string | undefined): Promise<void> {
  const { loadConfig, tlsLayer } = await import('../daemon/config.js');
  const { createLogger } = await import('../daemon/logger.js');
  const { startDaemon } = await import('../daemon/serve.js');
  const layer: ConfigLayer = {
    pool: flags.pool, stateDir: flags.stateDir, poolSize: flags.poolSize, poolPreallocate: flags.poolPreallocate, api: flags.api ?? apiFromGlobal, nbd: flags.nbd,
    nbdSocketPath: flags.nbdSocket, logLevel: flags.logLevel, logFormat: flags.logFormat,
    cacheBytesMax: flags.cacheBytesMax, commitIntervalMs: flags.commitIntervalMs, nbdBusyPollMicros: flags.nbdBusyPollUs, kekRetryMs: flags.kekRetryMs, capacitySampleMs: flags.capacitySampleMs,
    rewind: flags.rewind === true ? true : undefined,
    nvmf: flags.nvmf, nvmfDiscovery: flags.nvmfDiscovery, nvmfAdvertise: flags.nvmfAdvertise, nvmfNqnBase: flags.nvmfNqnBase,
    nvmfInCapsuleBytes: flags.nvmfInCapsuleBytes,
    cluster: flags.cluster, node: flags.node, advertise: flags.advertise, zone: flags.zone, replPort: flags.replPort,
    replicasDefault: flags.replicasDefault, clusterSecretFile: flags.clusterSecretFile,
    apiTls: flags.apiTlsCert === undefined && flags.apiTlsKey === undefined ? undefined : {
      certFile: flags.apiTlsCert, keyFile: flags.apiTlsKey, clientCaFile: flags.apiTlsClientCa,
    },
    nbdTls: tlsLayer({
      mode: flags.nbdTls, certFile: flags.nbdTlsCert, keyFile: flags.nbdTlsKey, caFile: flags.nbdTlsCa, pskFile: flags.nbdTlsPsk,
      required: flags.nbdTlsRequired === true ? true : undefined,
    }),
  };
  const config = loadConfig(layer, process.env, flags.config);
  const logger = createLogger(config);
  // Signal handlers go in before the daemon starts (a SIGTERM right after the "ready" line must still
  // shut down cleanly); a signal during start-up stops the daemon as soon as it is up.
  // A start that waits (for etcd) ends at once instead.
  let signalled: ((signal: string) => void) | null = null;
  const pending: string[] = [];
  const startAbort = new AbortController();
  const onSignal = (signal: string) => {
    if (signalled !== null) signalled(signal);
    else { pending.push(signal); startAbort.abort(); }
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(config, logger, { startAbort: startAbort.signal });
  } catch (err) {
    const { StartAbandoned } = await import('../cluster/node.js');
    if (!(err instanceof StartAbandoned)) throw err;
    logger.info({ event: 'start_abandoned', signal: pending[0], reason: err.message }, `received ${pending[0]} while starting: ${err.message}`);
    logger.flush?.();
    return;
  }
  await new Promise<void>((resolveStop) => {
    signalled = (signal: string) => {
      logger.info({ event: 'signal', signal }, `received ${signal}`);
      daemon.close().then(() => resolveStop(), (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exitCode = 1;
        resolveStop();
      });
    };
    if (pending.length > 0) signalled(pending[0]!);
  });
  logger.flush?.();
}

async function check(poolPath: string, ctx: CliContext): Promise<void> {
  const { checkPoolFile } = await import('../engine/index.js');
  const { lockPool } = await import('../daemon/lock.js');
  const path = resolve(poolPath);
  if (!existsSync(path)) throw new CliError(`pool not found: ${path}`);
  const lock = await lockPool(path); // refuses a pool a daemon holds
  try {
    const report = await checkPoolFile(path);
    if (ctx.json()) printJson(report);
    else {
      if (report.problems.length > 0) {
        print(table(report.problems, [
          { header: 'KIND', value: (p) => p.kind }, { header: 'BLOCK', value: (p) => String(p.physicalBlock), right: true },
          { header: 'PROBLEM', value: (p) => p.message },
        ]));
      }
      for (const note of report.notes) print(`note: ${note}`);
      print(`${report.ok ? 'ok' : 'FAILED'}: ${report.problems.length} problems, ${report.nodesChecked} nodes and ${report.blocksChecked} blocks checked`);
    }
    if (!report.ok || report.problems.length > 0) process.exitCode = 1;
  } finally {
    await lock.release();
  }
}

export function registerServeCommands(program: Command, ctx: CliContext): void {
  program.command('serve').description('run the daemon: REST API + NBD server on one pool (until SIGTERM/SIGINT)')
    .option('--config <file>', 'config file (YAML or JSON); env CAIRN_CONFIG')
    .option('--pool <path>', 'pool file, created sparse when missing (default ./data/cairn.pool); env CAIRN_POOL')
    .option('--state-dir <dir>', 'job records, import spool and the bootstrap admin token file POOL.admin-token (default: the pool\'s directory); env CAIRN_STATE_DIR')
    .option('--pool-size <size>', 'size of a new pool (default 64G); env CAIRN_POOL_SIZE')
    .option('--pool-preallocate <mode>', 'a new pool file: off (sparse, default) or full (written with zeros first); env CAIRN_POOL_PREALLOCATE')
    .option('--api-tls-cert <file>', 'serve the API over HTTPS with this certificate (PEM; with --api-tls-key); env CAIRN_API_TLS_CERT')
    .option('--api-tls-key <file>', 'the API certificate\'s private key (PEM); env CAIRN_API_TLS_KEY')
    .option('--api-tls-client-ca <file>', 'require API clients to present a certificate this CA signed (mutual TLS); env CAIRN_API_TLS_CLIENT_CA')
    .option('--nbd <host:port>', 'NBD listen address, or "off" (default 127.0.0.1:10809); env CAIRN_NBD')
    .option('--nbd-socket <path>', 'also serve NBD on a Unix socket; env CAIRN_NBD_SOCKET')
    .option('--nbd-tls <mode>', 'psk: offer NBD TLS-PSK with the tenants\' NBD keys (cairn tenant nbd-key create; no file needed); off: no NBD TLS; env CAIRN_NBD_TLS')
    .option('--nbd-tls-cert <file>', 'NBD TLS certificate (PEM; with --nbd-tls-key); env CAIRN_NBD_TLS_CERT')
    .option('--nbd-tls-key <file>', 'NBD TLS private key (PEM); env CAIRN_NBD_TLS_KEY')
    .option('--nbd-tls-ca <file>', 'CA for client certificates (required of clients; a SAN URI cairn:tenant:NAME names the tenant); env CAIRN_NBD_TLS_CA')
    .option('--nbd-tls-psk <file>', 'NBD TLS-PSK key file (identity:hexkey lines; the default tenant\'s); env CAIRN_NBD_TLS_PSK')
    .option('--nbd-tls-required', 'refuse NBD clients that do not upgrade to TLS (with one of the above); env CAIRN_NBD_TLS_REQUIRED')
    .option('--nvmf <host:port>', 'serve NVMe/TCP here (usually port 4420; default off); env CAIRN_NVMF')
    .option('--nvmf-discovery <host:port>', 'NVMe/TCP discovery service (default: the --nvmf host, port 8009; "off": none, the --nvmf port serves discovery too); env CAIRN_NVMF_DISCOVERY')
    .option('--nvmf-advertise <host[:port]>', 'address the discovery log gives hosts (NAT, forwarded port; default the --nvmf address); env CAIRN_NVMF_ADVERTISE')
    .option('--nvmf-nqn-base <nqn>', 'subsystem NQNs are NQN:TENANT (default nqn.2026-12.io.cairn); env CAIRN_NVMF_NQN_BASE')
    .option('--nvmf-in-capsule-bytes <n>', 'write data carried in the command capsule on I/O queues (default 8192, a multiple of 16, at most 128 KiB); env CAIRN_NVMF_IN_CAPSULE_BYTES')
    .option('--cluster <urls>', 'run as a storage node of the cluster whose etcd is at URL[,URL…] (volumes replicated across nodes; needs --node and --advertise); env CAIRN_CLUSTER')
    .option('--node <name>', 'this node\'s name in the cluster; env CAIRN_NODE')
    .option('--advertise <host>', 'the host other nodes and clients reach this node by (its API, NBD, NVMe/TCP and replication ports); env CAIRN_ADVERTISE')
    .option('--zone <zone>', 'failure domain label: replicas of a volume go to distinct zones when there are enough; env CAIRN_ZONE')
    .option('--repl-port <port>', 'replication port (default 10811); env CAIRN_REPL_PORT')
    .option('--replicas-default <n>', 'replicas of a volume created without --replicas (1..3, default 1); env CAIRN_REPLICAS_DEFAULT')
    .option('--cluster-secret-file <file>', 'a secret every node shares (first line of the file): replication connections prove it, so a stranger cannot inject replication traffic; env CAIRN_CLUSTER_SECRET_FILE')
    .option('--log-level <level>', 'trace|debug|info|warn|error (default info); env CAIRN_LOG_LEVEL')
    .option('--log-format <format>', 'json|pretty|auto (default auto: pretty on a terminal); env CAIRN_LOG_FORMAT')
    .option('--cache-bytes-max <size>', 'engine metadata cache bound; env CAIRN_CACHE_BYTES_MAX')
    .option('--commit-interval-ms <ms>', 'commit at least this often; env CAIRN_COMMIT_INTERVAL_MS')
    .option('--rewind', 'if the newest generation of the pool was lost (both superblock copies damaged), open the newest valid older one, discarding the lost one; if an intent log block is damaged before a later flush, replay the log up to the damage (both logged); without it such a pool is refused')
    .option('--capacity-sample-ms <ms>', 'sample the pool\'s capacity this often for GET /v1/pool/history and the dashboard (default 60000, a day kept); env CAIRN_CAPACITY_SAMPLE_MS')
    .option('--kek-retry-ms <ms>', 'retry tenants whose key-encryption key is unavailable this often (default 5000); env CAIRN_KEK_RETRY_MS')
    .option('--nbd-busy-poll-us <us>', 'after an NBD request, poll instead of sleeping this long (default 200, 0 = off); env CAIRN_NBD_BUSY_POLL_US')
    .addHelpText('after', '\nThe API listen address is the global --api HOST:PORT (default 127.0.0.1:10880; env CAIRN_API).')
    .action((flags: ServeFlags, cmd: Command) => serve(flags, (cmd.optsWithGlobals() as { api?: string }).api));
  program.command('check').description('offline consistency check of a pool file that no daemon holds')
    .requiredOption('--pool <path>', 'pool file')
    .action((opts: { pool: string }) => check(opts.pool, ctx));
}
