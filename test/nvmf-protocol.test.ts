// The NVMe/TCP target through its public socket, driven by test/nvmf-client.ts: ICReq and digests,
// Connect (admin, I/O, refusals), the property handshake, identify, I/O inline and by R2T, FUA,
// flush, write zeroes, DSM, compare, status codes with DNR, hostile PDUs (C2HTermReq, and the
// server keeps serving), keep-alive teardown, and AER on resize.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createPoolFile, type Engine } from '../src/engine/index.js';
import { TenantStore } from '../src/tenancy/store.js';
import { startNvmfServer, type NvmfServer } from '../src/nvmf/server.js';
import { NvmeHostAccess } from '../src/nvmf/host-access.js';
import { defer, MiB } from './nbd-harness.js';
import { NvmfClient, NvmfSession, connectData, connectSqe, ioSqe, sqe, SC, SCT, DNR, DISCOVERY_NQN, HOST_NQN } from './nvmf-client.js';

const NQN_BASE = 'nqn.2026-12.io.cairn';
const DEFAULT_NQN = `${NQN_BASE}:default`;
const LBA = 4096;

interface Fixture { engine: Engine; tenancy: TenantStore; server: NvmfServer; events: { event: string; fields: Record<string, unknown> }[] }

async function fixture(t: TestContext, inCapsuleBytes = 8192): Promise<Fixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-nvmf-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const engine = await createPoolFile(path.join(dir, 'pool.cairn'), 256 * MiB);
  defer(t, () => engine.close());
  const tenancy = new TenantStore(engine);
  const events: Fixture['events'] = [];
  const server = await startNvmfServer(engine, {
    host: '127.0.0.1', port: 0, discovery: { host: '127.0.0.1', port: 0 }, tenancy, inCapsuleBytes,
    log: (event, fields) => events.push({ event, fields }),
  });
  defer(t, () => server.close());
  return { engine, tenancy, server, events };
}

async function session(t: TestContext, f: Fixture, opts: Parameters<typeof NvmfSession.open>[2] = {}): Promise<NvmfSession> {
  const s = await NvmfSession.open(f.server.port, opts.hostnqn === undefined ? DEFAULT_NQN : DEFAULT_NQN, opts);
  defer(t, () => s.close());
  return s;
}

const nsidOf = (engine: Engine, name: string): number => engine.resolve(name).id + 1;

for (const digests of [false, true]) {
  test(`connect, handshake, identify and I/O inline and by R2T (digests ${digests ? 'on' : 'off'})`, async (t) => {
    const f = await fixture(t);
    t.after(() => { if (process.env.NVMF_DEBUG) console.log(f.events); });
    await f.engine.createVolume('vol', 16 * MiB);
    const nsid = nsidOf(f.engine, 'vol');
    const s = await session(t, f, { ioQueues: 2, headerDigest: digests, dataDigest: digests });
    assert.equal(s.admin.headerDigest, digests);
    assert.equal(s.admin.dataDigest, digests);
    assert.ok(s.admin.maxH2CDataBytes >= 4096 && s.admin.maxH2CDataBytes % 4 === 0);
    const cap = await s.propertyGet(0x00, true);
    assert.equal(Number(cap & 0xffffn) + 1, 128, 'MQES');
    assert.equal((cap >> 37n) & 1n, 1n, 'CSS NVM');
    assert.equal(Number(await s.propertyGet(0x1c)) & 1, 1, 'CSTS.RDY after CC.EN');
    assert.equal(Number(await s.propertyGet(0x08)), 0x00010300);
    const ctrl = await s.identify(0x01);
    assert.equal(ctrl.status, 0);
    assert.equal(ctrl.data.length, 4096);
    assert.equal(ctrl.data.readUInt16LE(78), s.cntlid);
    assert.equal(ctrl.data.subarray(768, 768 + DEFAULT_NQN.length).toString(), DEFAULT_NQN);
    const list = await s.identify(0x02);
    assert.equal(list.data.readUInt32LE(0), nsid);

    const [q1, q2] = s.io as [NvmfClient, NvmfClient];
    assert.equal(LBA, 1 << (await s.identify(0x00, nsid)).data[130]!, 'LBA format 0');
    // Inline (≤ in-capsule bytes) on queue 1, by R2T (larger, and split in H2CData PDUs) on queue 2.
    const small = randomBytes(LBA);
    const large = randomBytes(512 * 1024);
    const w1 = await q1.command(ioSqe(0x01, nsid, 2, 1), { data: small });
    assert.equal(w1.status, 0);
    const r2tBefore = q2.r2tCount;
    const w2 = await q2.command(ioSqe(0x01, nsid, 256, large.length / LBA, 1 << 30 /* FUA */), { data: large });
    assert.equal(w2.status, 0);
    assert.equal(q2.r2tCount, r2tBefore + 1, 'one R2T for the large write');
    // Forced R2T for a small one too (the host chooses).
    const w3 = await q1.command(ioSqe(0x01, nsid, 4, 1), { data: small, inCapsule: false });
    assert.equal(w3.status, 0);
    const r1 = await q2.command(ioSqe(0x02, nsid, 2, 1), { readBytes: LBA });
    assert.equal(r1.status, 0);
    assert.deepEqual(r1.data, small);
    const r2 = await q1.command(ioSqe(0x02, nsid, 256, large.length / LBA), { readBytes: large.length });
    assert.deepEqual(r2.data, large);
    assert.deepEqual((await q1.command(ioSqe(0x02, nsid, 4, 1), { readBytes: LBA })).data, small);
    assert.deepEqual(await f.engine.read(f.engine.resolve('vol').id, 256 * LBA, large.length), large, 'same bytes through the engine');

    assert.equal((await q1.command(ioSqe(0x00, nsid, 0, 1))).status, 0, 'flush');
    // Compare: equal, then different.
    assert.equal((await q1.command(ioSqe(0x05, nsid, 2, 1), { data: small })).status, 0);
    const cmp = await q1.command(ioSqe(0x05, nsid, 2, 1), { data: Buffer.alloc(LBA, 1) });
    assert.equal(SCT(cmp.status), 2);
    assert.equal(SC(cmp.status), 0x85);
    // Write zeroes with DEAC, then DSM deallocate of two parts of the large write.
    assert.equal((await q2.command(ioSqe(0x08, nsid, 2, 1, 1 << 25))).status, 0);
    assert.deepEqual((await q2.command(ioSqe(0x02, nsid, 2, 1), { readBytes: LBA })).data, Buffer.alloc(LBA));
    const ranges = Buffer.alloc(32);
    ranges.writeUInt32LE(32, 4); ranges.writeBigUInt64LE(256n, 8);
    ranges.writeUInt32LE(2, 20); ranges.writeBigUInt64LE(382n, 24);
    const dsm = sqe(0x09, nsid); dsm.writeUInt32LE(1, 40); dsm.writeUInt32LE(1 << 2, 44);
    assert.equal((await q1.command(dsm, { data: ranges })).status, 0);
    const after = (await q1.command(ioSqe(0x02, nsid, 256, large.length / LBA), { readBytes: large.length })).data;
    assert.deepEqual(after.subarray(0, 32 * LBA), Buffer.alloc(32 * LBA));
    assert.deepEqual(after.subarray(32 * LBA, 126 * LBA), large.subarray(32 * LBA, 126 * LBA));
    assert.deepEqual(after.subarray(126 * LBA), Buffer.alloc(2 * LBA));

    // Out of range: LBA Out of Range with DNR; an unknown namespace: Invalid Namespace with DNR.
    const oor = await q1.command(ioSqe(0x02, nsid, 16 * MiB / LBA - 1, 2), { readBytes: 2 * LBA });
    assert.equal(SC(oor.status), 0x80);
    assert.ok(DNR(oor.status));
    const wOor = await q1.command(ioSqe(0x01, nsid, 2 ** 40, 1), { data: small });
    assert.equal(SC(wOor.status), 0x80);
    const bad = await q1.command(ioSqe(0x02, nsid + 100, 0, 1), { readBytes: LBA });
    assert.equal(SC(bad.status), 0x0b);
    assert.ok(DNR(bad.status));
    const unknownOp = await q1.command(sqe(0x7e, nsid));
    assert.equal(SC(unknownOp.status), 0x01);
  });
}

test('a snapshot namespace is read-only; Connect refusals: unknown subsystem, host not allowed, bad queue', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  await f.engine.createSnapshots(['vol@s1']);
  await f.tenancy.createTenant('acme');
  const s = await session(t, f, { ioQueues: 1 });
  const snapNsid = f.engine.getSnapshot('vol@s1').id + 1;
  const ns = await s.identify(0x00, snapNsid);
  assert.equal(ns.data[99]! & 1, 1, 'NSATTR write protected');
  const w = await s.io[0]!.command(ioSqe(0x01, snapNsid, 0, 1), { data: Buffer.alloc(LBA, 7) });
  assert.equal(SC(w.status), 0x20);
  assert.ok(DNR(w.status));
  const r = await s.io[0]!.command(ioSqe(0x02, snapNsid, 0, 1), { readBytes: LBA });
  assert.equal(r.status, 0);

  const refusal = async (subnqn: string, qid = 0, cntlid = 0xffff, hostnqn = HOST_NQN): Promise<{ status: number; dw0: number }> => {
    const c = await NvmfClient.open(f.server.port);
    defer(t, () => c.close());
    return c.command(connectSqe(qid, qid === 0 ? 32 : 128), { data: connectData(subnqn, hostnqn, cntlid) });
  };
  const unknown = await refusal(`${NQN_BASE}:nobody`);
  assert.equal(SCT(unknown.status), 1);
  assert.equal(SC(unknown.status), 0x82);
  assert.equal(unknown.dw0, (1 << 16) | 256, 'IATTR data, IPO subnqn');
  const host = await refusal(`${NQN_BASE}:acme`);
  assert.equal(SC(host.status), 0x84);
  assert.ok(DNR(host.status));
  const wrongCtrl = await refusal(DEFAULT_NQN, 3, 999);
  assert.equal(SC(wrongCtrl.status), 0x82);
  const otherHost = await refusal(DEFAULT_NQN, 3, s.cntlid, 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000099');
  assert.equal(otherHost.dw0, (1 << 16) | 512, 'IPO hostnqn');
  const sameQid = await refusal(DEFAULT_NQN, 1, s.cntlid);
  assert.equal(sameQid.dw0, 42, 'IATTR SQE, IPO qid');
  assert.ok(f.events.some((e) => e.event === 'nvmf_connect_refused' && e.fields.reason === 'host not allowed'));
});

test('Connect whose data arrives by R2T, and the discovery log page', async (t) => {
  const f = await fixture(t);
  await f.tenancy.createTenant('acme');
  const admin = await NvmfClient.open(f.server.discoveryPort!);
  defer(t, () => admin.close());
  const c = await admin.command(connectSqe(0, 32), { data: connectData(DISCOVERY_NQN, HOST_NQN), inCapsule: false });
  assert.equal(c.status, 0);
  assert.equal(admin.r2tCount, 1);
  const b = sqe(0x02);
  b.writeUInt32LE(0x70 | ((4096 / 4 - 1) << 16), 40);
  const log = await admin.command(b, { readBytes: 4096 });
  assert.equal(log.status, 0);
  const records = Number(log.data.readBigUInt64LE(8));
  const nqns = Array.from({ length: records }, (_, i) => log.data.subarray(1024 * (i + 1) + 256, 1024 * (i + 1) + 512).toString('utf8').replace(/\0+$/, ''));
  assert.ok(nqns.includes(DEFAULT_NQN), 'the default tenant is open to any host');
  assert.ok(!nqns.includes(`${NQN_BASE}:acme`), 'acme allows no host yet');
  const entry = nqns.indexOf(DEFAULT_NQN);
  const at = 1024 * (entry + 1);
  assert.equal(log.data.subarray(at + 32, at + 64).toString('ascii').trim(), String(f.server.port));
  assert.equal(log.data.subarray(at + 512, at + 768).toString('ascii').replace(/[\0 ]+$/, ''), '127.0.0.1');
  // Discovery log change notices: enabled (AEC bit 31), an AER held, then acme admits this host.
  const aec = sqe(0x09); aec.writeUInt32LE(0x0b, 40); aec.writeUInt32LE(0x80000000, 44);
  assert.equal((await admin.command(aec)).status, 0);
  const aer = admin.command(sqe(0x0c));
  await new NvmeHostAccess(f.tenancy).add('acme', HOST_NQN);
  assert.equal((await aer).dw0, 0x0070f002);
  const again = await admin.command(b, { readBytes: 4096 });
  assert.equal(Number(again.data.readBigUInt64LE(8)), records + 1, 'acme is listed now');
  assert.ok(again.data.readBigUInt64LE(0) > log.data.readBigUInt64LE(0), 'GENCTR moved');
  // The discovery port serves only the discovery subsystem.
  const io = await NvmfClient.open(f.server.discoveryPort!);
  defer(t, () => io.close());
  const refused = await io.command(connectSqe(0, 32), { data: connectData(DEFAULT_NQN, HOST_NQN) });
  assert.equal(SC(refused.status), 0x82);
});

test('hostile PDUs get a C2HTermReq and the server keeps serving', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');

  // A CapsuleCmd claiming 4 GiB: refused from its first 8 bytes, nothing waited for.
  const a = await NvmfClient.open(f.server.port);
  const huge = Buffer.alloc(8);
  huge[0] = 0x04; huge[2] = 72; huge[3] = 72; huge.writeUInt32LE(0xffffffff, 4);
  a.sendRaw(huge);
  await a.closed;
  assert.equal(a.termReq?.fes, 0x05);

  // An unknown PDU type.
  const b = await NvmfClient.open(f.server.port);
  const bogus = Buffer.alloc(24); bogus[0] = 0x42; bogus[2] = 24; bogus.writeUInt32LE(24, 4);
  b.sendRaw(bogus);
  await b.closed;
  assert.equal(b.termReq?.fes, 0x01);

  // A bad header digest.
  const c = await NvmfClient.open(f.server.port, { headerDigest: true });
  c.sendRaw(c.capsule(connectSqe(0, 32), null, { corruptHeaderDigest: true }));
  await c.closed;
  assert.equal(c.termReq?.fes, 0x03);

  // An in-capsule SGL that does not match the capsule.
  const s = await session(t, f, { ioQueues: 1, dataDigest: true });
  const q = s.io[0]!;
  const cmd = ioSqe(0x01, nsid, 0, 1);
  cmd.writeUInt16LE(77, 2); cmd.writeUInt32LE(1 << 30, 32); cmd[39] = 0x01;
  q.sendRaw(q.capsule(cmd, Buffer.alloc(LBA)));
  await q.closed;
  assert.equal(q.termReq?.fes, 0x01);

  // A transport SGL past the transfer bound: a status, no R2T, no allocation; the queue goes on.
  const s2 = await session(t, f, { ioQueues: 1, dataDigest: true });
  const q2 = s2.io[0]!;
  const big = ioSqe(0x02, nsid, 0, 1);
  const r = await q2.command(big, { readBytes: 0x80000000 });
  assert.equal(SC(r.status), 0x0f);
  assert.ok(DNR(r.status));
  // A bad data digest: Transient Transport Error (retryable), the queue goes on.
  const bad = await q2.command(ioSqe(0x01, nsid, 0, 1), { data: Buffer.alloc(LBA, 1), corruptDataDigest: true });
  assert.equal(SC(bad.status), 0x22);
  assert.ok(!DNR(bad.status));
  const ok = await q2.command(ioSqe(0x01, nsid, 0, 1), { data: Buffer.alloc(LBA, 1) });
  assert.equal(ok.status, 0);
  assert.ok(f.events.filter((e) => e.event === 'nvmf_protocol_error').length >= 4);
});

test('keep-alive timeout tears the controller down with its I/O queues', async (t) => {
  const f = await fixture(t);
  const s = await session(t, f, { ioQueues: 1, kato: 200 });
  // Keep alive a while: still there.
  const ka = sqe(0x18);
  assert.equal((await s.admin.command(ka)).status, 0);
  assert.equal(f.server.registry.size, 1);
  await Promise.all([s.admin.closed, s.io[0]!.closed]);
  assert.equal(f.server.registry.size, 0);
  assert.ok(f.events.some((e) => e.event === 'nvmf_controller_gone' && e.fields.reason === 'keep-alive timeout'));
});

test('a resize, a new volume and a deletion complete an AER and fill the changed namespace list', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');
  const s = await session(t, f);
  // Namespace attribute notices are masked until enabled (Set Features 0Bh bit 8), as Linux does.
  const aec = sqe(0x09); aec.writeUInt32LE(0x0b, 40); aec.writeUInt32LE(1 << 8, 44);
  assert.equal((await s.admin.command(aec)).status, 0);
  const io = await NvmfClient.open(f.server.port);
  defer(t, () => io.close());
  assert.equal((await io.command(connectSqe(1, 128), { data: connectData(DEFAULT_NQN, HOST_NQN, s.cntlid) })).status, 0);
  // The target is resolved (at 4 MiB) before the resize.
  assert.equal(SC((await io.command(ioSqe(0x01, nsid, 6 * MiB / LBA, 1), { data: Buffer.alloc(LBA, 9) })).status), 0x80);
  const aer = s.admin.command(sqe(0x0c));
  await f.engine.resizeVolume('vol', 8 * MiB);
  const done = await aer;
  assert.equal(done.dw0, 0x00040002);
  const changed = await s.getLogPage(0x04, 4096);
  assert.equal(changed.data.readUInt32LE(0), nsid);
  assert.equal(changed.data.readUInt32LE(4), 0);
  const ns = await s.identify(0x00, nsid);
  assert.equal(Number(ns.data.readBigUInt64LE(0)), 8 * MiB / LBA);
  // I/O follows the new size: past the old end works, past the new one does not.
  assert.equal((await io.command(ioSqe(0x01, nsid, 6 * MiB / LBA, 1), { data: Buffer.alloc(LBA, 9) })).status, 0);
  assert.equal(SC((await io.command(ioSqe(0x01, nsid, 8 * MiB / LBA, 1), { data: Buffer.alloc(LBA, 9) })).status), 0x80);
  // A created volume is found by the periodic re-scan.
  const aer2 = s.admin.command(sqe(0x0c));
  const created = await f.engine.createVolume('new', 1 * MiB);
  assert.equal((await aer2).dw0, 0x00040002);
  assert.equal((await s.getLogPage(0x04, 4096)).data.readUInt32LE(0), created.id + 1);
  const aer3 = s.admin.command(sqe(0x0c));
  await f.engine.deleteVolume('new');
  await aer3;
  assert.equal((await s.getLogPage(0x04, 4096)).data.readUInt32LE(0), created.id + 1);
});

test('shutdown handshake, AER limit, I/O queue Disconnect, bad ICReq and H2CData out of range', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');
  const s = await session(t, f, { ioQueues: 2 });
  // AERL + 1 requests are held; one more is refused with Async Event Request Limit Exceeded.
  const held = [1, 2, 3, 4].map(() => s.admin.command(sqe(0x0c)));
  void Promise.allSettled(held);
  const extra = await s.admin.command(sqe(0x0c));
  assert.equal(SCT(extra.status), 1);
  assert.equal(SC(extra.status), 0x05);
  // Disconnect on an I/O queue ends that queue only.
  const disc = sqe(0x7f); disc[4] = 0x08;
  assert.equal((await s.io[1]!.command(disc)).status, 0);
  await s.io[1]!.closed;
  assert.equal((await s.io[0]!.command(ioSqe(0x02, nsid, 0, 1), { readBytes: LBA })).status, 0);
  // CC.SHN: the pool is flushed, then CSTS.SHST reads complete (2).
  await s.propertySet(0x14, 0x00460001 | (1 << 14));
  let shst = 0;
  for (let i = 0; i < 100 && shst !== 2; i++) {
    shst = (Number(await s.propertyGet(0x1c)) >> 2) & 3;
    if (shst !== 2) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(shst, 2);

  // ICReq with a PFV we do not speak, and one asking for data padding: C2HTermReq.
  for (const [at, value] of [[8, 1], [10, 3]] as const) {
    const c = await NvmfClient.open(f.server.port).catch(() => null);
    assert.ok(c);
    c.close();
    const raw = await import('node:net');
    const sock = raw.connect({ host: '127.0.0.1', port: f.server.port });
    const got: Buffer[] = [];
    sock.on('data', (b: Buffer) => got.push(b));
    const ended = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('error', () => {});
    const ic = Buffer.alloc(128); ic[2] = 128; ic.writeUInt32LE(128, 4); ic[at] = value;
    sock.write(ic);
    await ended;
    const reply = Buffer.concat(got);
    assert.equal(reply[0], 0x03, 'C2HTermReq');
    assert.equal(reply.readUInt16LE(8), 0x01);
    assert.equal(reply.readUInt32LE(10), at, 'FEI names the field');
    assert.ok(reply.readUInt32LE(4) <= 152);
  }

  // H2CData for a transfer that is not outstanding.
  const q = s.io[0]!;
  q.sendRaw(q.h2cData(9, 0, 0, Buffer.alloc(LBA), true));
  await q.closed;
  assert.equal(q.termReq?.fes, 0x01);
  assert.ok(f.server.connections() >= 1, 'the admin queue is still there');
});

test('server close with commands in flight finishes them, then closes every queue', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');
  const s = await session(t, f, { ioQueues: 1 });
  // A held AER does not hold the close up: it completes with Command Abort Requested.
  const aer = s.admin.command(sqe(0x0c));
  assert.equal((await s.admin.command(sqe(0x18))).status, 0, 'keep alive answered: the AER before it is held');
  const writes = Array.from({ length: 16 }, (_, i) => s.io[0]!.command(ioSqe(0x01, nsid, i * 16, 16), { data: Buffer.alloc(16 * LBA, i) }));
  const closing = f.server.close();
  assert.equal(SC((await aer).status), 0x07);
  const results = await Promise.allSettled(writes);
  await closing;
  await Promise.all([s.admin.closed, s.io[0]!.closed]);
  // Every write that was answered succeeded, and its data is in the pool.
  const id = f.engine.resolve('vol').id;
  for (const [i, r] of results.entries()) {
    if (r.status !== 'fulfilled') continue;
    assert.equal(r.value.status, 0);
    assert.deepEqual(await f.engine.read(id, i * 16 * LBA, 16 * LBA), Buffer.alloc(16 * LBA, i));
  }
  assert.equal(f.server.connections(), 0);
});

test('many commands at once over two queues (R2T data and reads past their in-flight bounds wait their turn) match a model', async (t) => {
  const f = await fixture(t);
  const sizeBytes = 32 * MiB;
  await f.engine.createVolume('vol', sizeBytes);
  const nsid = nsidOf(f.engine, 'vol');
  const s = await session(t, f, { ioQueues: 2, dataDigest: true });
  const model = Buffer.alloc(sizeBytes);
  let seed = 7;
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  for (let round = 0; round < 4; round++) {
    // Non-overlapping extents per round, so the order of completion does not matter.
    const slots = Array.from({ length: 24 }, (_, i) => i);
    const writes = slots.map((i) => {
      const blocks = 1 + rand(256);
      const slba = i * 256 + rand(256 - Math.min(blocks, 255));
      const lengthBlocks = Math.min(blocks, 256 - (slba - i * 256));
      const data = Buffer.alloc(lengthBlocks * LBA, (round * 31 + i) % 251 + 1);
      data.copy(model, slba * LBA);
      return s.io[i % 2]!.command(ioSqe(0x01, nsid, slba, lengthBlocks), { data });
    });
    for (const w of await Promise.all(writes)) assert.equal(w.status, 0);
  }
  // 24 MiB of reads on one queue: past READ_BYTES_IN_FLIGHT_MAX, later ones wait for earlier ones' data to go.
  const reads = Array.from({ length: 24 }, (_, i) => s.io[0]!.command(ioSqe(0x02, nsid, i * 256, 256), { readBytes: MiB }));
  for (const [i, r] of (await Promise.all(reads)).entries()) {
    assert.equal(r.status, 0);
    assert.ok(r.data.equals(model.subarray(i * 256 * LBA, (i + 1) * 256 * LBA)), `extent ${i}`);
  }
  // Thousands of small responses, 64 at a time: past one send arena (SEND_ARENA_BYTES), every byte in order.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < 4000) {
      const lba = (next++ * 7) % (24 * 256);
      const r = await s.io[1]!.command(ioSqe(0x02, nsid, lba, 1), { readBytes: LBA });
      assert.equal(r.status, 0);
      assert.ok(r.data.equals(model.subarray(lba * LBA, (lba + 1) * LBA)), `block ${lba}`);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
});

test('C2HData carries SUCCESS (no CapsuleResp) only on a queue whose host disabled SQ flow control', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');
  const s = await session(t, f, { ioQueues: 1 });
  const plain = await s.io[0]!.command(ioSqe(0x02, nsid, 0, 1), { readBytes: LBA });
  assert.equal(plain.viaSuccessFlag, false);
  const q = await NvmfClient.open(f.server.port);
  defer(t, () => q.close());
  const connect = connectSqe(2, 128);
  connect[46] = 0x04; // CATTR: SQ flow control disabled
  assert.equal((await q.command(connect, { data: connectData(DEFAULT_NQN, HOST_NQN, s.cntlid) })).status, 0);
  const fast = await q.command(ioSqe(0x02, nsid, 0, 1), { readBytes: LBA });
  assert.equal(fast.viaSuccessFlag, true);
  assert.equal(fast.data.length, LBA);
  // An error still gets a CapsuleResp with its status.
  const oor = await q.command(ioSqe(0x02, nsid, 4 * MiB / LBA, 1), { readBytes: LBA });
  assert.equal(SC(oor.status), 0x80);
});

test('without a discovery listener the I/O port serves the discovery subsystem', async (t) => {
  const f = await fixture(t);
  const server = await startNvmfServer(f.engine, { host: '127.0.0.1', port: 0, discovery: null, tenancy: f.tenancy });
  defer(t, () => server.close());
  assert.equal(server.discoveryPort, null);
  const admin = await NvmfClient.open(server.port);
  defer(t, () => admin.close());
  assert.equal((await admin.command(connectSqe(0, 32), { data: connectData(DISCOVERY_NQN, HOST_NQN) })).status, 0);
  const b = sqe(0x02);
  b.writeUInt32LE(0x70 | ((4096 / 4 - 1) << 16), 40);
  const log = await admin.command(b, { readBytes: 4096 });
  const trsvcids = Array.from({ length: Number(log.data.readBigUInt64LE(8)) }, (_, i) => log.data.subarray(1024 * (i + 1) + 32, 1024 * (i + 1) + 64).toString('ascii').trim());
  assert.ok(trsvcids.length >= 2 && trsvcids.every((p) => p === String(server.port)));
});

test('fuzz: mutated PDUs after a good ICReq and Connect never crash the target, which keeps serving', async (t) => {
  const f = await fixture(t);
  await f.engine.createVolume('vol', 4 * MiB);
  const nsid = nsidOf(f.engine, 'vol');
  let seed = 12345;
  // The high bits of the LCG: its low bits repeat with short periods.
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return Math.floor((seed / 2 ** 31) * n); };
  let answered = 0;
  let terminated = 0;
  for (let i = 0; i < 120; i++) {
    const s = await NvmfSession.open(f.server.port, DEFAULT_NQN, { ioQueues: 1, headerDigest: rand(2) === 1, dataDigest: rand(2) === 1 });
    const q = s.io[0]!;
    const cmd = ioSqe([0x01, 0x02, 0x05, 0x08, 0x09, 0x00, 0x7f, rand(256)][rand(8)]!, rand(3) === 0 ? rand(1000) : nsid, rand(2048), 1 + rand(16));
    cmd.writeUInt16LE(rand(65536), 2);
    cmd.writeUInt32LE(rand(3) === 0 ? rand(2 ** 31) : LBA * (1 + rand(4)), 32);
    cmd[39] = [0x01, 0x5a, rand(256)][rand(3)]!;
    const pdu = q.capsule(cmd, rand(2) === 1 ? Buffer.alloc(LBA * (1 + rand(2)), rand(256)) : null);
    // Mutate a few bytes, in the header mostly.
    for (let m = rand(4); m >= 0; m--) pdu[rand(Math.min(pdu.length, 96))] = rand(256);
    q.sendRaw(rand(4) === 0 ? pdu.subarray(0, rand(pdu.length)) : pdu);
    await Promise.race([q.closed, new Promise((resolve) => setTimeout(resolve, 20))]);
    if (q.unsolicited > 0) answered++;
    if (q.termReq !== null) terminated++;
    s.close();
  }
  // The fuzz reaches both the framing (C2HTermReq) and the command layer (a status for the command).
  assert.ok(answered > 0 && terminated > 0, `answered ${answered}, terminated ${terminated}`);
  const ok = await session(t, f, { ioQueues: 1 });
  const w = await ok.io[0]!.command(ioSqe(0x01, nsid, 0, 1), { data: Buffer.alloc(LBA, 5) });
  assert.equal(w.status, 0);
  assert.deepEqual((await ok.io[0]!.command(ioSqe(0x02, nsid, 0, 1), { readBytes: LBA })).data, Buffer.alloc(LBA, 5));
  await waitUntilQuiet(f);
});

/** Every fuzzed connection is gone (none left half-open in the server). */
async function waitUntilQuiet(f: Fixture): Promise<void> {
  for (let i = 0; i < 600 && f.server.connections() > 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(f.server.connections(), 2, 'only the last session (admin + one I/O queue) is connected');
}
