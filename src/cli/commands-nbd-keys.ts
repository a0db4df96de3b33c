// `cairn tenant nbd-key create|list|delete`: a tenant's TLS-PSK keys for NBD. `create` prints the one
// psk file line "IDENTITY:HEXKEY" (append it to the file qemu, nbdkit or nbd-client reads); the key
// is never shown again, and no other command or answer carries it.
import type { Command } from 'commander';
import { seg } from './client.js';
import { print, printJson, table, when } from './output.js';
import type { CliContext } from './context.js';

interface NbdKeyView { identity: string; tenant: string; createdMs: number }
interface NbdKeyCreatedView extends NbdKeyView { key: string; psk: string }

export function addNbdKeyCommands(tenant: Command, ctx: CliContext): void {
  const nbdKey = tenant.command('nbd-key').description('a tenant\'s NBD keys (TLS-PSK): create, list, delete');
  nbdKey.command('create <tenant>').description('create an NBD key; prints IDENTITY:HEXKEY once (psk file format)')
    .action(async (name: string) => {
      const r = await ctx.client().request<NbdKeyCreatedView>('POST', `/v1/tenants/${seg(name)}/nbd-keys`);
      if (ctx.json()) return printJson(r.body);
      print(r.body.psk);
      process.stderr.write(`cairn: NBD key ${r.body.identity} for tenant ${r.body.tenant}: keep the line above, the key is not shown again\n`);
    });
  nbdKey.command('list <tenant>').description('list a tenant\'s NBD key identities (never the keys)')
    .action(async (name: string) => {
      const rows = await ctx.client().get<NbdKeyView[]>(`/v1/tenants/${seg(name)}/nbd-keys`);
      if (ctx.json()) return printJson(rows);
      print(table(rows, [
        { header: 'IDENTITY', value: (k) => k.identity },
        { header: 'CREATED', value: (k) => when(k.createdMs) },
      ]));
    });
  nbdKey.command('delete <tenant> <identity>').description('delete an NBD key: new NBD connections with it are refused')
    .action(async (name: string, identity: string) => {
      await ctx.client().request('DELETE', `/v1/tenants/${seg(name)}/nbd-keys/${seg(identity)}`);
      if (ctx.json()) printJson({ identity, tenant: name, deleted: true }); else print(`deleted NBD key ${identity}`);
    });
}
