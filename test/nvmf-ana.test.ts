// NVMe/TCP ANA on a cluster node (src/nvmf/ana.ts, src/daemon/nvmf-ana.ts) through the TS initiator
// over a fake ClusterHandle: Identify Controller's CMIC/ANACAP/ANATT/ANAGRPMAX/NANAGRPID/MNAN, each
// namespace's ANAGRPID, the ANA log page (0Ch) with one group per state, I/O refused with ANA
// Inaccessible (SCT 3, SC 02h, no DNR) on a path that is not the primary's, and the ANA change AEN and
// new log content when the primary moves; the node's CNTLID range; a single node reports no ANA.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createPoolFile } from '../src/engine/index.js';
import { TenantStore } from '../src/tenancy/store.js';
import { startNvmfServer, type NvmfServerOptions } from '../src/nvmf/server.js';
import { defer, MiB } from './nbd-harness.js';
import { NvmfClient, NvmfSession, connectData, connectSqe, ioSqe, sqe, SC, SCT, DNR, HOST_NQN } from './nvmf-client.js';
import { FakeCluster } from './cluster-fake.js';
import { anaProvider, clusterNamespaceIdentities, cntlidRangeOf, CLUSTER_NSID_BASE } from '../src/daemon/nvmf-ana.js';

const NQN = 'nqn.2026-12.io.cairn:default';
const LBA = 4096;

async function node(t: TestContext, self: string, ana: boolean, shared = false) {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-ana-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const engine = await createPoolFile(path.join(dir, 'pool.cairn'), 256 * MiB);
  defer(t, () => engine.close());
  const cluster = new FakeCluster(self, engine, [{ name: 'n1' }, { name: 'n2' }]);
  const opts: NvmfServerOptions = { host: '127.0.0.1', port: 0, discovery: null, tenancy: new TenantStore(engine) };
  if (ana) { opts.ana = anaProvider(cluster); opts.cntlidRange = cntlidRangeOf(self); }
  if (shared) opts.namespaceIdentities = clusterNamespaceIdentities(cluster);
  const server = await startNvmfServer(engine, opts);
  defer(t, () => server.close());
  return { engine, cluster, server };
}

interface AnaGroup { id: number; state: number; nsids: number[] }

function parseAnaLog(log: Buffer): { changeCount: bigint; groups: AnaGroup[] } {
  const count = log.readUInt16LE(8);
  const groups: AnaGroup[] = [];
  let off = 16;
  for (let i = 0; i < count; i++) {
    const n = log.readUInt32LE(off + 4);
    const g: AnaGroup = { id: log.readUInt32LE(off), state: log[off + 16]!, nsids: [] };
    off += 32;
    for (let k = 0; k < n; k++) { g.nsids.push(log.readUInt32LE(off)); off += 4; }
    groups.push(g);
  }
  return { changeCount: log.readBigUInt64LE(0), groups };
}

test('ANA: identify, log page, Inaccessible I/O status, change AEN on a primary move', async (t) => {
  const { engine, cluster, server } = await node(t, 'n2', true);
  await engine.createVolume('db', 16 * MiB);
  await engine.createVolume('local', 4 * MiB);
  cluster.setRecord({ name: 'db', sizeBytes: 16 * MiB, replicas: 2, minInSync: 1, epoch: 1, primary: 'n1', createdMs: 1,
    members: [{ node: 'n1', state: 'in-sync', incarnation: 'i1' }, { node: 'n2', state: 'in-sync', incarnation: 'i2' }] });
  const db = engine.resolve('db').id + 1;
  const local = engine.resolve('local').id + 1;
  const s = await NvmfSession.open(server.port, NQN);
  defer(t, () => s.close());
  const range = cntlidRangeOf('n2');
  assert.ok(s.cntlid >= range.first && s.cntlid <= range.last, `cntlid ${s.cntlid} in the node's range ${range.first}..${range.last}`);

  const id = (await s.identify(0x01)).data;
  assert.equal(id[76]! & 0x0a, 0x0a, 'CMIC: multi-controller and ANA reporting');
  assert.equal(id.readUInt32LE(92) & (1 << 11), 1 << 11, 'OAES: ANA change notices');
  assert.ok(id[343]! > 0, 'ANATT');
  assert.equal(id[344]! & 0x05, 0x05, 'ANACAP: optimized and inaccessible reported');
  assert.equal(id.readUInt32LE(348), 2, 'ANAGRPMAX');
  assert.equal(id.readUInt32LE(352), 2, 'NANAGRPID');
  const mnan = id.readUInt32LE(540);
  assert.ok(mnan > 0 && 16 + 2 * 32 + 4 * mnan <= 4096 * 2 ** id[77]!, 'MNAN set and the ANA log fits MDTS (Linux nvme_mpath_init_identify)');
  assert.equal((await s.identify(0x00, db)).data.readUInt32LE(92), 2, 'db: ANAGRPID of the inaccessible group');
  assert.equal((await s.identify(0x00, local)).data.readUInt32LE(92), 1, 'a volume without a record: optimized');

  const before = parseAnaLog((await s.getLogPage(0x0c, 4096)).data);
  assert.deepEqual(before.groups, [{ id: 1, state: 0x01, nsids: [local] }, { id: 2, state: 0x03, nsids: [db] }]);

  const io = await NvmfClient.open(server.port);
  defer(t, () => io.close());
  assert.equal((await io.command(connectSqe(1, 128), { data: connectData(NQN, HOST_NQN, s.cntlid) })).status, 0);
  const refused = await io.command(ioSqe(0x01, db, 0, 1), { data: Buffer.alloc(LBA, 7) });
  assert.equal(SCT(refused.status), 3, 'path related status');
  assert.equal(SC(refused.status), 0x02, 'ANA Inaccessible');
  assert.equal(DNR(refused.status), false, 'no DNR: the host retries on another path');
  assert.equal(SC((await io.command(ioSqe(0x02, db, 0, 1), { readBytes: LBA })).status), 0x02, 'reads too');
  assert.equal((await io.command(ioSqe(0x01, local, 0, 1), { data: Buffer.alloc(LBA, 7) })).status, 0, 'an optimized namespace serves I/O');

  // Enable ANA change notices (Set Features 0Bh bit 11, as Linux does), hold an AER, move the primary here.
  const aec = sqe(0x09); aec.writeUInt32LE(0x0b, 40); aec.writeUInt32LE(1 << 11, 44);
  assert.equal((await s.admin.command(aec)).status, 0);
  const aer = s.admin.command(sqe(0x0c));
  cluster.movePrimary('db', 'n2');
  assert.equal((await aer).dw0, 0x000c0302, 'AER: notice, ANA change, log page 0Ch');
  const after = parseAnaLog((await s.getLogPage(0x0c, 4096)).data);
  assert.ok(after.changeCount > before.changeCount, 'the change count moved');
  assert.deepEqual(after.groups, [{ id: 1, state: 0x01, nsids: [Math.min(db, local), Math.max(db, local)] }, { id: 2, state: 0x03, nsids: [] }]);
  assert.equal((await s.identify(0x00, db)).data.readUInt32LE(92), 1, 'db moved to the optimized group');
  assert.equal((await io.command(ioSqe(0x01, db, 0, 1), { data: Buffer.alloc(LBA, 8) })).status, 0, 'I/O on the new primary path works');
  const groupsOnly = sqe(0x02, 0xffffffff); groupsOnly.writeUInt32LE(0x0c | (1 << 8) | ((4096 / 4 - 1) << 16), 40);
  const rgo = parseAnaLog((await s.admin.command(groupsOnly, { readBytes: 4096 })).data);
  assert.deepEqual(rgo.groups.map((g) => g.nsids.length), [0, 0], 'RGO: groups without NSIDs');

  // A move away again: the next AER reports it (the log read above re-armed the notice).
  const aer2 = s.admin.command(sqe(0x0c));
  cluster.movePrimary('db', 'n1');
  assert.equal((await aer2).dw0, 0x000c0302);
  assert.equal(SC((await io.command(ioSqe(0x01, db, 0, 1), { data: Buffer.alloc(LBA, 9) })).status), 0x02);
});

test('ANA: a single node reports none (no CMIC bit 3, log page 0Ch refused)', async (t) => {
  const { server } = await node(t, 'solo', false);
  const s = await NvmfSession.open(server.port, NQN);
  defer(t, () => s.close());
  const id = (await s.identify(0x01)).data;
  assert.equal(id[76]! & 0x08, 0);
  assert.equal(id.readUInt32LE(540), 0);
  const log = await s.getLogPage(0x0c, 4096);
  assert.equal(SC(log.status), 0x09, 'Invalid Log Page');
});

test('ANA: a replicated volume is the same namespace (NSID, NGUID, UUID) on every node, whatever its local id', async (t) => {
  const a = await node(t, 'n1', true, true);
  const b = await node(t, 'n2', true, true);
  await a.engine.createVolume('db', 16 * MiB);
  await b.engine.createVolume('other', 4 * MiB); // b's engine ids are shifted by one
  await b.engine.createVolume('db', 16 * MiB);
  assert.notEqual(a.engine.resolve('db').id, b.engine.resolve('db').id);
  const record = { name: 'db', sizeBytes: 16 * MiB, replicas: 2, minInSync: 1, epoch: 1, primary: 'n1', createdMs: 5,
    members: [{ node: 'n1', state: 'in-sync' as const, incarnation: 'i1' }, { node: 'n2', state: 'in-sync' as const, incarnation: 'i2' }] };
  a.cluster.setRecord(record);
  b.cluster.setRecord(record);
  const views = [];
  for (const n of [a, b]) {
    const s = await NvmfSession.open(n.server.port, NQN);
    defer(t, () => s.close());
    const list = (await s.identify(0x02)).data;
    const nsids: number[] = [];
    for (let i = 0; i < 1024 && list.readUInt32LE(i * 4) !== 0; i++) nsids.push(list.readUInt32LE(i * 4));
    const shared = nsids.filter((x) => x >= CLUSTER_NSID_BASE);
    assert.equal(shared.length, 1, `one cluster namespace on ${n.cluster.self}: ${nsids.join(',')}`);
    const nsid = shared[0]!;
    const id = (await s.identify(0x00, nsid)).data;
    const desc = (await s.identify(0x03, nsid)).data;
    views.push({ nsid, nguid: id.subarray(104, 120).toString('hex'), descriptors: desc.subarray(0, 44).toString('hex'), group: id.readUInt32LE(92), cntlid: s.cntlid });
    const io = await NvmfClient.open(n.server.port);
    defer(t, () => io.close());
    assert.equal((await io.command(connectSqe(1, 128), { data: connectData(NQN, HOST_NQN, s.cntlid) })).status, 0);
    const w = await io.command(ioSqe(0x01, nsid, 0, 1), { data: Buffer.alloc(LBA, 3) });
    assert.equal(w.status === 0 ? 'served' : SC(w.status) === 0x02 && SCT(w.status) === 3 ? 'inaccessible' : `status ${w.status}`,
      n.cluster.self === 'n1' ? 'served' : 'inaccessible');
  }
  assert.equal(views[0]!.nsid, views[1]!.nsid, 'same NSID');
  assert.equal(views[0]!.nguid, views[1]!.nguid, 'same NGUID');
  assert.equal(views[0]!.descriptors, views[1]!.descriptors, 'same NGUID and UUID descriptors');
  assert.deepEqual([views[0]!.group, views[1]!.group], [1, 2], 'optimized on the primary, inaccessible on the other');
});
