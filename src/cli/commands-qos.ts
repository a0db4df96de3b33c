// QoS on the command line: `cairn volume set NAME --iops-max N --bps-max SIZE ...`, the same options
// on `cairn volume create`, and `cairn tenant set T [limits] [--weight W]`. `0` or `none` removes a
// limit; options left out leave a limit as it is.
import { InvalidArgumentError, type Command } from 'commander';
import { seg } from './client.js';
import { keyValues, print, printJson } from './output.js';
import { formatSize, parseSize } from './sizes.js';
import type { CliContext } from './context.js';

/** A volume's or tenant's limits as the API shows them (null: no limit). */
export interface QosView {
  iopsMax: number | null; readIopsMax: number | null; writeIopsMax: number | null;
  bpsMax: number | null; readBpsMax: number | null; writeBpsMax: number | null;
  burstSeconds: number; weight?: number; tenant?: string;
}

type QosChange = Partial<Record<keyof QosView, number | null>>;

function removes(value: string): boolean { return value === '0' || value.toLowerCase() === 'none'; }

function iopsArg(value: string): number | null {
  if (removes(value)) return null;
  if (!/^\d+$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError(`invalid IOPS ${JSON.stringify(value)} (a whole number; 0 or none: no limit)`);
  return Number(value);
}

function bpsArg(value: string): number | null {
  if (removes(value)) return null;
  const bytes = parseSize(value.replace(/\/s$/i, ''));
  if (bytes === null || bytes <= 0) throw new InvalidArgumentError(`invalid rate ${JSON.stringify(value)} (bytes per second or a size with K, M, G or T; 0 or none: no limit)`);
  return bytes;
}

function secondsArg(value: string): number | null {
  if (removes(value)) return null;
  const n = Number(value.replace(/s$/, ''));
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`invalid seconds ${JSON.stringify(value)}`);
  return n;
}

function weightArg(value: string): number | null {
  if (removes(value)) return null;
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`invalid weight ${JSON.stringify(value)} (1 to 10000, default 100)`);
  return Number(value);
}

const options: Array<{ flag: string; field: keyof QosView; help: string; parse: (v: string) => number | null }> = [
  { flag: '--iops-max <n>', field: 'iopsMax', help: 'read and write operations per second', parse: iopsArg },
  { flag: '--read-iops-max <n>', field: 'readIopsMax', help: 'read operations per second', parse: iopsArg },
  { flag: '--write-iops-max <n>', field: 'writeIopsMax', help: 'write operations per second (trim and write-zeroes count)', parse: iopsArg },
  { flag: '--bps-max <size>', field: 'bpsMax', help: 'bytes read and written per second (K/M/G/T)', parse: bpsArg },
  { flag: '--read-bps-max <size>', field: 'readBpsMax', help: 'bytes read per second', parse: bpsArg },
  { flag: '--write-bps-max <size>', field: 'writeBpsMax', help: 'bytes written per second', parse: bpsArg },
  { flag: '--burst-seconds <s>', field: 'burstSeconds', help: 'seconds\' worth of each rate allowed at once after a quiet spell (default 1)', parse: secondsArg },
];
const weightOption = { flag: '--weight <w>', field: 'weight' as const, help: 'share of the pool when it is the bottleneck, 1..10000 (default 100)', parse: weightArg };

/** Adds the QoS options (0 or none removes a limit) to a command; `withWeight` for a tenant's. */
export function addQosOptions(cmd: Command, withWeight = false): Command {
  for (const o of withWeight ? [...options, weightOption] : options) cmd.option(o.flag, `${o.help}; 0 or none: no limit`, o.parse);
  return cmd;
}

/** The QoS change the parsed options ask for, or undefined when none was given. */
export function qosChange(opts: object): QosChange | undefined {
  const change: QosChange = {};
  for (const o of [...options, weightOption]) {
    const v = (opts as Record<string, unknown>)[camel(o.flag)];
    if (v !== undefined) change[o.field] = v as number | null;
  }
  return Object.keys(change).length === 0 ? undefined : change;
}

function camel(flag: string): string {
  return flag.replace(/^--/, '').replace(/ .*$/, '').replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** One line: "iops 500, write 2M/s, burst 1s", or "-" for no limits. */
export function formatQos(q: QosView | null | undefined): string {
  if (q === null || q === undefined) return '-';
  const parts: string[] = [];
  const iops = (label: string, v: number | null) => { if (v !== null) parts.push(`${label}${v} IOPS`); };
  const bps = (label: string, v: number | null) => { if (v !== null) parts.push(`${label}${formatSize(v)}/s`); };
  iops('', q.iopsMax); iops('read ', q.readIopsMax); iops('write ', q.writeIopsMax);
  bps('', q.bpsMax); bps('read ', q.readBpsMax); bps('write ', q.writeBpsMax);
  if (parts.length > 0) parts.push(`burst ${q.burstSeconds}s`);
  if (q.weight !== undefined) parts.push(`weight ${q.weight}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

/** A tenant's key-encryption key and the state of its encrypted volumes (GET /v1/tenants/T/encryption). */
export interface TenantEncryptionView {
  tenant: string; kek: string | null; state: string; error: string | null; rotatingTo: string | null; encryptedLineages: number; lockedLineages: number;
}

export function tenantEncryptionLines(e: TenantEncryptionView): string {
  return keyValues([
    ['kek', e.kek ?? '-'], ['kek state', e.error === null ? e.state : `${e.state} (${e.error})`],
    ...(e.rotatingTo !== null ? [['rotating to', e.rotatingTo] as [string, string]] : []),
    ['encrypted lineages', String(e.encryptedLineages)], ['locked lineages', String(e.lockedLineages)],
  ]);
}

function printQos(ctx: CliContext, what: string, q: QosView): void {
  if (ctx.json()) printJson(q); else print(keyValues([[what, formatQos(q)]]));
}

/** `cairn volume set NAME [limits]`. */
export function addVolumeSetCommand(volume: Command, ctx: CliContext): void {
  addQosOptions(volume.command('set <name>').description('change a volume\'s QoS limits, live (0 or none removes one)'))
    .action(async (name: string, opts: object, cmd: Command) => {
      const change = qosChange(opts);
      if (change === undefined) cmd.error('error: give at least one limit (e.g. --iops-max 1000)', { exitCode: 2 });
      const r = await ctx.client().request<QosView>('PUT', `/v1/volumes/${seg(name)}/qos`, change);
      printQos(ctx, name, r.body);
    });
}

/** `cairn tenant set T [limits] [--weight W] [--kek REF]`: the tenant command group calls this. */
export function addTenantSetCommand(tenant: Command, ctx: CliContext): void {
  addQosOptions(tenant.command('set <tenant>').description('change a tenant\'s QoS limits (all its volumes together) and weight, live; or set its key-encryption key (--kek)'), true)
    .option('--kek <ref>', 'the tenant\'s key-encryption key: file:/abs/path (32 bytes) or pkcs11:token=T;object=O?module-path=/lib.so&pin-source=file:/path (or env:NAME); the PIN never goes on the command line')
    .action(async (name: string, opts: { kek?: string }, cmd: Command) => {
      const change = qosChange(opts);
      if (change === undefined && opts.kek === undefined) cmd.error('error: give at least one limit, --weight or --kek', { exitCode: 2 });
      if (opts.kek !== undefined) {
        const r = await ctx.client().request<TenantEncryptionView>('PUT', `/v1/tenants/${encodeURIComponent(name)}/encryption`, { kek: opts.kek });
        if (ctx.json()) printJson(r.body); else print(tenantEncryptionLines(r.body));
      }
      if (change === undefined) return;
      const r = await ctx.client().request<QosView>('PUT', `/v1/tenants/${encodeURIComponent(name)}/qos`, change);
      printQos(ctx, name, r.body);
    });
}

/** Adds `volume set` and `tenant set` (making a `tenant` group if there is none yet). */
export function registerQosCommands(program: Command, ctx: CliContext): void {
  const volume = program.commands.find((c) => c.name() === 'volume');
  if (volume !== undefined) addVolumeSetCommand(volume, ctx);
  const tenant = program.commands.find((c) => c.name() === 'tenant') ?? program.command('tenant').description('tenants: set');
  addTenantSetCommand(tenant, ctx);
}
