// `cairn tenant create|list|show|delete` and `cairn token create|list|revoke` (admin token needed).
// A token's secret is printed once, by `token create`; nothing else ever shows it.
import { InvalidArgumentError, type Command } from 'commander';
import { seg } from './client.js';
import { keyValues, print, printJson, table } from './output.js';
import type { CliContext } from './context.js';
import { tenantEncryptionLines, type TenantEncryptionView } from './commands-qos.js';

interface TenantView { name: string; createdAt: string | null; volumes: number }
interface TokenView { id: string; name: string; role: string; tenant: string | null; createdAt: string; expiresAt: string | null }

const durationUnits: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/** "90d", "12h", "30m", "45s", "2w", or an ISO date/time in the future: seconds from now. */
export function expiresArg(value: string, nowMs = Date.now()): number {
  const m = /^(\d+)([smhdw])$/.exec(value.trim());
  if (m !== null) {
    const seconds = Number(m[1]) * durationUnits[m[2]!]!;
    if (seconds >= 1) return seconds;
  }
  const at = Date.parse(value);
  if (m === null && Number.isFinite(at) && at > nowMs + 1000) return Math.ceil((at - nowMs) / 1000);
  throw new InvalidArgumentError(`invalid expiry ${JSON.stringify(value)} (expected a duration such as 90d, 12h, 30m, or a future ISO date)`);
}

function tokenTable(rows: TokenView[]): string {
  return table(rows, [
    { header: 'ID', value: (t) => t.id }, { header: 'NAME', value: (t) => t.name }, { header: 'ROLE', value: (t) => t.role },
    { header: 'TENANT', value: (t) => t.tenant ?? '*' }, { header: 'CREATED', value: (t) => t.createdAt },
    { header: 'EXPIRES', value: (t) => t.expiresAt ?? 'never' },
  ]);
}

/** Registers the groups; returns the `tenant` command so others can add subcommands (nbd-key, set). */
export function registerTenantCommands(program: Command, ctx: CliContext): Command {
  const tenant = program.command('tenant').description('tenants: create, list, show, delete (admin token)');
  tenant.command('create <name>').description('create a tenant (a-z, 0-9 and -, at most 32 characters)')
    .action(async (name: string) => {
      const r = await ctx.client().request<TenantView>('POST', '/v1/tenants', { name });
      if (ctx.json()) printJson(r.body); else print(`created tenant ${r.body.name}`);
    });
  tenant.command('list').description('list tenants with their volume counts')
    .action(async () => {
      const rows = await ctx.client().get<TenantView[]>('/v1/tenants');
      if (ctx.json()) return printJson(rows);
      print(table(rows, [
        { header: 'NAME', value: (t) => t.name }, { header: 'VOLUMES', value: (t) => String(t.volumes), right: true },
        { header: 'CREATED', value: (t) => t.createdAt ?? '-' },
      ]));
    });
  tenant.command('show <name>').description('show a tenant')
    .action(async (name: string) => {
      const t = await ctx.client().get<TenantView>(`/v1/tenants/${seg(name)}`);
      const e = await ctx.client().get<TenantEncryptionView>(`/v1/tenants/${seg(name)}/encryption`);
      if (ctx.json()) return printJson({ ...t, encryption: e });
      print(`${keyValues([['name', t.name], ['volumes', String(t.volumes)], ['created', t.createdAt ?? '-']])}\n${tenantEncryptionLines(e)}`);
    });
  tenant.command('unlock <name>').description('unlock the tenant\'s encrypted volumes now (its key-encryption key is back), without waiting for the periodic retry')
    .action(async (name: string) => {
      const r = await ctx.client().request<TenantEncryptionView>('POST', `/v1/tenants/${seg(name)}/encryption/unlock`);
      if (ctx.json()) return printJson(r.body);
      print(tenantEncryptionLines(r.body));
      if (r.body.lockedLineages > 0) process.exitCode = 1;
    });
  tenant.command('rotate-kek <name>').description('re-wrap every data key of the tenant under a new key-encryption key, online and crash-safe')
    .requiredOption('--kek <ref>', 'the new key-encryption key (file:/path or pkcs11:...), as for tenant set --kek')
    .action(async (name: string, opts: { kek: string }) => {
      const r = await ctx.client().request<TenantEncryptionView>('POST', `/v1/tenants/${seg(name)}/encryption/rotate`, { kek: opts.kek });
      if (ctx.json()) printJson(r.body); else print(tenantEncryptionLines(r.body));
    });
  tenant.command('delete <name>').description('delete a tenant, its tokens and NBD keys; refused while it owns volumes')
    .option('--force', 'also delete every volume and snapshot of the tenant')
    .action(async (name: string, opts: { force?: boolean }) => {
      await ctx.client().request('DELETE', `/v1/tenants/${seg(name)}${opts.force === true ? '?force=true' : ''}`);
      if (ctx.json()) printJson({ name, deleted: true }); else print(`deleted tenant ${name}`);
    });

  const token = program.command('token').description('API tokens: create (prints the secret once), list, revoke (admin token)');
  token.command('create').description('create a token and print it; only its salted hash is kept')
    .requiredOption('--role <role>', 'admin (every tenant), tenant (everything in one tenant) or reader (read-only in one tenant)')
    .option('--tenant <tenant>', 'the tenant of a tenant or reader token')
    .option('--name <name>', 'a name to list and revoke it by')
    .option('--expires <when>', 'lifetime (90d, 12h, 30m) or a future ISO date; default never', (v: string) => expiresArg(v))
    .action(async (opts: { role: string; tenant?: string; name?: string; expires?: number }) => {
      const body: Record<string, unknown> = { role: opts.role };
      if (opts.tenant !== undefined) body.tenant = opts.tenant;
      if (opts.name !== undefined) body.name = opts.name;
      if (opts.expires !== undefined) body.expiresInSeconds = opts.expires;
      const r = await ctx.client().request<TokenView & { token: string }>('POST', '/v1/tokens', body);
      if (ctx.json()) return printJson(r.body);
      print(r.body.token);
      process.stderr.write(`token ${r.body.name} (${r.body.role}${r.body.tenant === null ? '' : `, tenant ${r.body.tenant}`}) created; it is not shown again\n`);
    });
  token.command('list').description('list tokens (never their secrets)')
    .action(async () => {
      const rows = await ctx.client().get<TokenView[]>('/v1/tokens');
      if (ctx.json()) printJson(rows); else print(tokenTable(rows));
    });
  token.command('revoke <token>').description('revoke a token by id or name (effective on its next request)')
    .action(async (id: string) => {
      await ctx.client().request('DELETE', `/v1/tokens/${seg(id)}`);
      if (ctx.json()) printJson({ token: id, revoked: true }); else print(`revoked token ${id}`);
    });
  return tenant;
}
