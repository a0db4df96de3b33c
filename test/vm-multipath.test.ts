// Issue 22's NVMe/TCP failover with the real kernel's native multipath (test/vm/guest/multipath.sh):
// etcd and two `cairn serve --cluster` nodes on the host, a 2-replica volume, a qemu guest connected to
// both nodes' NVMe/TCP ports. The kernel makes one head disk of the two paths (one NSID and NGUID on
// both nodes), Optimized through the primary and Inaccessible through the other; the host SIGKILLs the
// primary mid-run and the guest's next write, through the same head disk, completes on the survivor
// once that node has taken the volume over and told the kernel (ANA change notice). The host then reads
// both writes from the survivor over NBD.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { assertBuilt, cairn, cairnJson, qemuIo, startServePickingPorts, tempDir, until, type DaemonProcess } from './cli-helpers.js';
import { etcdAvailable, freePort, startEtcd } from './etcd-harness.js';
import { bootGuest, keepLogOnFailure, vmUnavailable } from './vm/qemu.js';

const MiB = 1 << 20;
/** TCG is slow and a loaded CI machine slower: a hang bound, not a speed. */
const BOOT_TIMEOUT_MS = 600_000;
const VOL_BYTES = 40 * MiB;
const SUBNQN = 'nqn.2026-12.io.cairn:default';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:0b7c52f1-8d0e-4f6a-9c3b-5e2d1a4f7c11';
const HOSTID = '0b7c52f1-8d0e-4f6a-9c3b-5e2d1a4f7c11';

interface VolumeView { replicas?: Array<{ node: string; primary: boolean; state: string }> }

const skip = vmUnavailable() ?? (etcdAvailable() ? null : '/usr/bin/etcd is missing (apt-get install etcd-server)');

test('kernel native multipath over ANA: one head disk on two nodes, I/O moves by itself when the primary is killed', { skip: skip ?? false, timeout: 900_000 }, async (t) => {
  assertBuilt();
  const etcd = await startEtcd();
  t.after(() => etcd.close());
  const dir = await tempDir(t, 'cairn-vm-multipath-');
  const ports = { n1: 0, n2: 0 };
  const nodes = new Map<string, DaemonProcess>();
  for (const name of ['n1', 'n2'] as const) {
    // The guest reaches the host's loopback as 10.0.2.2.
    nodes.set(name, await startServePickingPorts(t, join(dir, `${name}.pool`), async () => {
      ports[name] = await freePort();
      return [
        '--pool-size', '512M', '--cluster', etcd.endpoints.join(','), '--node', name, '--advertise', '127.0.0.1',
        '--repl-port', String(await freePort()), '--nvmf', `127.0.0.1:${ports[name]}`, '--nvmf-discovery', 'off',
        '--nvmf-advertise', `10.0.2.2:${ports[name]}`,
      ];
    }));
  }
  const n1 = nodes.get('n1')!;
  await until('both nodes registered', async () => {
    const list = await cairnJson<Array<{ alive: boolean }>>(n1.api, ['node', 'list']);
    return list.filter((n) => n.alive).length === 2 ? true : null;
  });
  const created = await cairn(n1.api, ['volume', 'create', 'mp', '--size', String(VOL_BYTES), '--replicas', '2']);
  assert.equal(created.code, 0, created.stderr);
  const primary = await until('both replicas in sync', async () => {
    const v = await cairnJson<VolumeView>(n1.api, ['volume', 'show', 'mp']);
    const replicas = v.replicas ?? [];
    return replicas.length === 2 && replicas.every((r) => r.state === 'in-sync') ? replicas.find((r) => r.primary)?.node ?? null : null;
  });
  const survivorName = primary === 'n1' ? 'n2' : 'n1';
  const survivor = nodes.get(survivorName)!;
  t.diagnostic(`primary ${primary}, survivor ${survivorName}`);

  let killedAt = 0;
  const guest = await bootGuest(t, {
    script: 'multipath',
    env: { PORT1: ports.n1, PORT2: ports.n2, SUBNQN, HOSTNQN, HOSTID, VOL_BYTES },
    timeoutMs: BOOT_TIMEOUT_MS,
    onResult: (r) => {
      if (r.name === 'mp-write-after' && killedAt > 0) t.diagnostic(`the write after the kill completed ${((Date.now() - killedAt) / 1000).toFixed(1)} s after it`);
      t.diagnostic(`guest ${r.name} ${r.pass ? 'PASS' : `FAIL ${r.detail}`}`);
    },
    onAsk: async ([what]) => {
      if (what !== 'kill') return `unknown ${what}`;
      await nodes.get(primary)!.stop('SIGKILL');
      killedAt = Date.now();
      return 'ok';
    },
  });
  keepLogOnFailure(t, guest);
  assert.deepEqual(guest.results.filter((r) => !r.pass), [], `guest checks failed (serial log ${guest.logPath})`);
  for (const name of ['mp-one-head', 'mp-ana-before', 'mp-host-killed', 'mp-write-after', 'mp-ana-after', 'mp-read-before']) {
    assert.ok(guest.results.some((r) => r.name === name), `guest check ${name} did not run (serial log ${guest.logPath})`);
  }
  assert.equal(guest.done, 0, `guest script did not finish cleanly (serial log ${guest.logPath})`);
  // The survivor is the primary now and holds both writes: the one before the kill and the one after.
  const view = await cairnJson<VolumeView>(survivor.api, ['volume', 'show', 'mp']);
  assert.equal(view.replicas?.find((r) => r.primary)?.node, survivorName);
  await qemuIo(`${survivor.nbd}/mp`, `read -P ${0o141} 0 ${MiB}`);
  await qemuIo(`${survivor.nbd}/mp`, `read -P ${0o142} ${MiB} ${MiB}`);
});
