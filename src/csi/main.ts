// Entry point of the CSI plugin: runCsi() starts the gRPC server for a mode (controller, node
// or all) on a unix socket; run directly (`node dist/src/csi/main.js --endpoint ...`) it parses
// its own argv, so it works without the `cairn` CLI (which wires `cairn csi` to runCsi).
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { pino, type Logger } from 'pino';
import { driverName, stateDirDefault } from './constants.js';
import { ControllerService } from './controller.js';
import { IdentityService, type CsiMode } from './identity.js';
import { OperationLocks } from './locks.js';
import { NodeService } from './node.js';
import { nbdSource } from './nbd-address.js';
import { startServer } from './server.js';
import { Sessions } from './sessions.js';
import { GroupControllerService } from './group-controller.js';

export interface CsiOptions {
  endpoint: string;
  api: string;
  nodeId: string;
  mode: CsiMode;
  stateDir: string;
  /** HOST:PORT of the NBD server to attach from; absent: each volume's nbdUri from the API. */
  nbd?: string | null;
  driverName?: string;
  logger?: Logger;
  /** The API token the plugin presents (a tenant or admin token); null: none. */
  token?: string | null;
}

export interface CsiHandle { socketPath: string; close(): Promise<void> }

export async function runCsi(opts: CsiOptions): Promise<CsiHandle> {
  if (opts.mode !== 'controller' && opts.mode !== 'node' && opts.mode !== 'all') {
    throw new Error(`--mode must be controller, node or all (got ${String(opts.mode)})`);
  }
  if ((opts.mode !== 'controller') && opts.nodeId === '') throw new Error('--node-id is required for the node service');
  const log = opts.logger ?? pino({ name: 'cairn-csi', base: { driver: opts.driverName ?? driverName, mode: opts.mode } });
  const locks = new OperationLocks();
  const sessions = new Sessions(opts.api, opts.token ?? null);
  const controller = opts.mode === 'node' ? undefined : new ControllerService(sessions, locks);
  const groupController = opts.mode === 'node' ? undefined : new GroupControllerService(sessions, locks);
  const nbd = nbdSource(opts.nbd, sessions, opts.api);
  const node = opts.mode === 'controller' ? undefined : new NodeService(opts.nodeId, opts.stateDir, nbd, locks,
    (fields, message) => log.warn(fields, message));
  const identity = new IdentityService(opts.mode, opts.driverName ?? driverName);
  const server = await startServer(opts.endpoint, log, { identity, controller, groupController, node });
  log.info({ endpoint: opts.endpoint, api: opts.api, nbd: nbd.kind === 'fixed' ? nbd.address : 'from the API', nodeId: opts.nodeId }, 'csi plugin listening');
  return server;
}

/** Parses argv of the standalone entry (same flags as `cairn csi`). */
export function csiCommand(): Command {
  return new Command('csi')
    .description('Kubernetes CSI driver for Cairn (gRPC on a unix socket)')
    .requiredOption('--endpoint <endpoint>', 'unix:///PATH/csi.sock (env CSI_ENDPOINT, as the CSI spec has the CO set it)', process.env.CSI_ENDPOINT)
    .option('--api <url>', 'Cairn REST API', process.env.CAIRN_API ?? 'http://127.0.0.1:10880')
    .option('--node-id <name>', 'this node\'s name (NodeGetInfo)', process.env.NODE_NAME ?? '')
    .addOption(new Option('--mode <mode>', 'which services to serve').choices(['controller', 'node', 'all']).default('all'))
    .option('--state-dir <dir>', 'where the node keeps its attachment state', stateDirDefault)
    .option('--nbd <host:port>', 'Cairn NBD server the node attaches from (default: the address the daemon reports for each volume)')
    .option('--driver-name <name>', 'CSI driver name', driverName)
    .option('--token-file <file>', 'file holding the Cairn API token the plugin presents (env CAIRN_TOKEN_FILE; or the token itself in CAIRN_TOKEN)', process.env.CAIRN_TOKEN_FILE);
}

type CsiFlags = { endpoint: string; api: string; nodeId: string; mode: CsiMode; stateDir: string; nbd?: string; driverName: string; tokenFile?: string };

function tokenOf(flags: CsiFlags): string | null {
  if (flags.tokenFile !== undefined && flags.tokenFile !== '') return readFileSync(flags.tokenFile, 'utf8').trim();
  const env = process.env.CAIRN_TOKEN;
  return env === undefined || env === '' ? null : env;
}

/** Runs the plugin until SIGTERM/SIGINT, then closes the socket and exits 0. */
async function serveUntilSignal(flags: CsiFlags): Promise<void> {
  const handle = await runCsi({ ...flags, token: tokenOf(flags) });
  const stop = (): void => { void handle.close().then(() => process.exit(0)); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/** Adds `csi` (flags and action) to a commander program: how `cairn csi` is wired. */
export function addCsiCommand(program: Command): Command {
  const command = csiCommand().action((flags: CsiFlags) => serveUntilSignal(flags));
  program.addCommand(command);
  return command;
}

async function main(argv: string[]): Promise<void> {
  await csiCommand().action((flags: CsiFlags) => serveUntilSignal(flags)).parseAsync(argv);
}

const isEntry = process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (isEntry) {
  main(process.argv).catch((err: unknown) => {
    process.stderr.write(`cairn csi: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
