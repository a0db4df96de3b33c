// The `cairn` command line (commander). Exit codes: 0 ok, 1 error (one line on stderr, no stack
// trace), 2 usage error. Every command takes --json (the API's objects) and --api URL (CAIRN_API).
import { Command, CommanderError } from 'commander';
import { ApiClient, CliError, defaultApiUrl } from './client.js';
import { sizeArg, type CliContext } from './context.js';
import { registerVolumeCommands } from './commands-volume.js';
import { registerSnapshotCommands } from './commands-snapshot.js';
import { registerStreamCommands } from './commands-stream.js';
import { registerServeCommands } from './commands-serve.js';
import { registerTenantCommands } from './commands-tenant.js';
import { resolveCredentials } from './credentials.js';
import { addNbdKeyCommands } from './commands-nbd-keys.js';
import { addNvmeHostCommands } from './commands-nvme-hosts.js';
import { registerQosCommands } from './commands-qos.js';
import { registerClusterCommands } from './commands-cluster.js';

function apiUrl(value: string | undefined): string {
  const raw = value ?? process.env.CAIRN_API ?? defaultApiUrl;
  return /^[a-z]+:\/\//i.test(raw) ? raw : `http://${raw}`;
}

export function buildProgram(): Command {
  const program = new Command('cairn');
  program.description('Cairn: thin volumes with instant snapshots and zero-copy clones, served over NBD')
    .version('0.1.0')
    .option('--api <url>', `daemon API URL (env CAIRN_API, default ${defaultApiUrl}); for serve: the listen HOST:PORT`)
    .option('--json', 'machine-readable output: the API\'s JSON objects')
    .option('--token <token>', 'API token (env CAIRN_TOKEN, or a file named by CAIRN_TOKEN_FILE; default: the daemon\'s STATE_DIR/POOL.admin-token when readable)')
    .option('--ca <file>', 'CA certificate (PEM) that verifies an HTTPS daemon (env CAIRN_CA)')
    .option('--client-cert <file>', 'client certificate (PEM) for a daemon that requires one (env CAIRN_CLIENT_CERT)')
    .option('--client-key <file>', 'the client certificate\'s key (PEM; env CAIRN_CLIENT_KEY)')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const ctx: CliContext = {
    client: () => {
      const opts = program.opts() as { api?: string; token?: string; ca?: string; clientCert?: string; clientKey?: string };
      return new ApiClient(apiUrl(opts.api), resolveCredentials(opts, process.env));
    },
    json: () => (program.opts() as { json?: boolean }).json === true,
    sizeArg,
  };
  registerServeCommands(program, ctx);
  registerVolumeCommands(program, ctx);
  registerSnapshotCommands(program, ctx);
  registerStreamCommands(program, ctx);
  const tenant = registerTenantCommands(program, ctx);
  addNbdKeyCommands(tenant, ctx);
  addNvmeHostCommands(tenant, ctx);
  registerQosCommands(program, ctx);
  registerClusterCommands(program, ctx);
  // Listed for --help only: main() routes `cairn csi ...` to the CSI plugin's own parser.
  program.command('csi').description('run the Kubernetes CSI plugin (see: cairn csi --help)')
    .allowUnknownOption().allowExcessArguments().helpOption(false);
  return program;
}

/** The first command word of argv (skipping global options and --api's value), e.g. "volume". */
function commandWord(argv: string[]): string | undefined {
  for (let i = 2; i < argv.length; i += 1) {
    const arg = argv[i]!;
    if (['--api', '--token', '--ca', '--client-cert', '--client-key'].includes(arg)) { i += 1; continue; }
    if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

/**
 * `cairn csi ...`: the CSI plugin (src/csi) with its own flags (its --api must not be taken by the
 * global one), loaded only when asked for so the other commands do not pay for gRPC at start-up.
 */
async function runCsiCommand(argv: string[]): Promise<void> {
  const { addCsiCommand } = await import('../csi/main.js');
  const program = new Command('cairn').exitOverride();
  addCsiCommand(program).exitOverride();
  const at = argv.indexOf('csi');
  await program.parseAsync([...argv.slice(0, 2), ...argv.slice(at)]);
}

function fail(message: string, exitCode: number): void {
  process.stderr.write(`cairn: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exitCode = exitCode;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    if (argv.length <= 2) { program.outputHelp(); process.exitCode = 2; return; }
    if (commandWord(argv) === 'csi') return await runCsiCommand(argv);
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Asked-for help and version are not errors; everything else commander rejects (including help
      // shown because a subcommand is missing, 'commander.help') is a usage error.
      const benign = ['commander.helpDisplayed', 'commander.version'].includes(err.code);
      process.exitCode = benign ? 0 : 2;
      return;
    }
    if (err instanceof CliError) return fail(err.message, err.exitCode);
    if (err instanceof Error && (err.name === 'ConfigError' || err.name === 'PoolLocked')) return fail(err.message, 1);
    const e = err as { code?: unknown; message?: string };
    // Engine errors in serve/check carry a code; anything else is still one line, no stack.
    fail(typeof e.code === 'string' ? `${e.message ?? String(err)} (${e.code})` : e.message ?? String(err), 1);
  }
}

await main(process.argv);
