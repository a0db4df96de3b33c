// `cairn tenant nvme-host add|list|remove TENANT [NQN]`: the host NQNs a tenant's NVMe/TCP subsystem
// admits at Connect. The default tenant admits any host while its list is empty; every other tenant
// admits none until one is added (docs/nvmf.md).
import type { Command } from 'commander';
import { seg } from './client.js';
import { print, printJson, table, when } from './output.js';
import type { CliContext } from './context.js';

interface NvmeHostView { nqn: string; tenant: string; createdMs: number }

export function addNvmeHostCommands(tenant: Command, ctx: CliContext): void {
  const host = tenant.command('nvme-host').description('a tenant\'s NVMe/TCP host allow-list: add, list, remove host NQNs');
  host.command('add <tenant> <nqn>').description('admit a host NQN (a Linux host\'s is in /etc/nvme/hostnqn) to the tenant\'s subsystem')
    .action(async (name: string, nqn: string) => {
      const r = await ctx.client().request<NvmeHostView>('POST', `/v1/tenants/${seg(name)}/nvme-hosts`, { nqn });
      if (ctx.json()) printJson(r.body); else print(`added NVMe host ${r.body.nqn} to tenant ${r.body.tenant}`);
    });
  host.command('list <tenant>').description('list the host NQNs the tenant\'s subsystem admits')
    .action(async (name: string) => {
      const rows = await ctx.client().get<NvmeHostView[]>(`/v1/tenants/${seg(name)}/nvme-hosts`);
      if (ctx.json()) return printJson(rows);
      if (rows.length === 0) {
        process.stderr.write(name === 'default'
          ? 'cairn: no NVMe hosts listed: the default tenant admits every host until one is added\n'
          : `cairn: no NVMe hosts listed: tenant ${name}'s subsystem admits no host\n`);
        return;
      }
      print(table(rows, [
        { header: 'NQN', value: (h) => h.nqn },
        { header: 'CREATED', value: (h) => when(h.createdMs) },
      ]));
    });
  host.command('remove <tenant> <nqn>').description('remove a host NQN: its next Connect is refused (connected controllers keep going)')
    .action(async (name: string, nqn: string) => {
      await ctx.client().request('DELETE', `/v1/tenants/${seg(name)}/nvme-hosts/${seg(nqn)}`);
      if (ctx.json()) printJson({ nqn, tenant: name, removed: true }); else print(`removed NVMe host ${nqn} from tenant ${name}`);
    });
}
