// The NVMe/TCP target's admin data, without sockets: Identify structures at the byte offsets the Linux
// host reads (drivers/nvme/host/core.c, fabrics.c, tcp.c), log pages cut at offsets and lengths,
// features, unsupported commands, the engine error → status mapping, namespace identities (unique,
// stable across reopen, a clone's differ from its source's, snapshots read-only) and the host allow-list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPoolFile } from '../src/engine/index.js';
import { OutOfRange, PoolFull, ReadOnly, VolumeLocked, VolumeNotFound, CairnError } from '../src/engine/index.js';
import { tempPool, MiB } from './engine-helpers.js';
import { executeAdmin, type AdminContext } from '../src/nvmf/admin.js';
import { FeatureStore } from '../src/nvmf/features.js';
import type { ControllerIdentity } from '../src/nvmf/identify.js';
import { IDENTIFY_BYTES, NIDT_CSI, NIDT_NGUID, NIDT_UUID } from '../src/nvmf/identify.js';
import { dataUnits, type DiscoveryEntry } from '../src/nvmf/log-pages.js';
import { LBA_SIZE_BYTES, NamespaceView, controllerSerial, ensurePoolIdentity, poolIdentity, type NvmfNamespace } from '../src/nvmf/namespaces.js';
import {
  DISCOVERY_NQN, NvmeHostAccess, NQN_BASE_DEFAULT, nqnBaseProblem, nqnProblem, subsystemNqn, tenantOfSubsystemNqn,
} from '../src/nvmf/host-access.js';
import {
  STATUS_DNR, STATUS_INVALID_FIELD, STATUS_INVALID_LOG_PAGE, STATUS_INVALID_NAMESPACE, STATUS_INVALID_OPCODE, STATUS_SUCCESS,
  STATUS_CONNECT_INVALID_HOST, statusCode, statusDnr, statusForEngineError, statusType,
} from '../src/nvmf/status.js';
import { TenantStore } from '../src/tenancy/store.js';
import { TenancyError } from '../src/tenancy/errors.js';

const HOST_A = 'nqn.2014-08.org.nvmexpress:uuid:0c8d7bb4-5c2c-4a1c-9d2b-8f1f0bdf3a11';
const HOST_B = 'nqn.2024-01.com.example:host-b';

function identity(over: Partial<ControllerIdentity> = {}): ControllerIdentity {
  return {
    cntlid: 7, subnqn: `${NQN_BASE_DEFAULT}:acme`, serial: 'a1b2c3d4e5f6a7b8c9d0', model: 'Cairn', firmware: '0.1.0',
    discovery: false, ioccszBytes: 64 + 8192, ioQueuesMax: 8, queueEntriesMax: 128, mdtsLog2Pages: 5, kasMs: 1000,
    namespaceCountMax: 0xfffffffe, ...over,
  };
}

function ns(nsid: number, readOnly = false): NvmfNamespace {
  return {
    nsid, targetId: nsid - 1, targetName: `v${nsid}`, sizeBytes: 64 * MiB, readOnly,
    nguid: Buffer.alloc(16, nsid), uuid: Buffer.alloc(16, 0x80 + nsid),
  };
}

function context(over: Partial<AdminContext> = {}, namespaces: NvmfNamespace[] = [ns(1), ns(3, true), ns(10)]): AdminContext & { changed: number[] } {
  const id = over.identity ?? identity();
  const changed = [3, 10];
  const ctx = {
    identity: id,
    features: new FeatureStore({ ioQueuesMax: id.ioQueuesMax, asyncEventsSupported: 1 << 8, keepAliveTimeoutMs: 5000 }),
    namespaces: () => namespaces,
    changed,
    takeChangedNamespaces: (retain: boolean) => { const out = [...changed]; if (!retain) changed.length = 0; return out; },
    smart: () => ({ dataUnitsRead: 3n, dataUnitsWritten: 5n, readCommands: 100n, writeCommands: 200n, poolUsedFraction: 0.25, mediaErrors: 0n }),
    discoveryEntries: (): DiscoveryEntry[] => [],
    discoveryGeneration: () => 1n,
    ...over,
  };
  return ctx;
}

/** A 64-byte SQE: opcode, nsid and dwords 10.. as given. */
function sqe(opcode: number, nsid: number, dw: Partial<Record<10 | 11 | 12 | 13 | 14, number>> = {}, flags = 0): Buffer {
  const b = Buffer.alloc(64);
  b[0] = opcode;
  b[1] = flags;
  b.writeUInt16LE(0x1234, 2);
  b.writeUInt32LE(nsid, 4);
  for (const [k, v] of Object.entries(dw)) b.writeUInt32LE(v >>> 0, 40 + (Number(k) - 10) * 4);
  return b;
}

const identifyCmd = (cns: number, nsid = 0, dw11 = 0): Buffer => sqe(0x06, nsid, { 10: cns, 11: dw11 });
/** Get Log Page of `lid` for `bytes` at `offset`, RAE when `rae`. */
function logCmd(lid: number, bytes: number, offset = 0, rae = false, nsid = 0xffffffff): Buffer {
  const numd = bytes / 4 - 1;
  return sqe(0x02, nsid, { 10: lid | (rae ? 0x8000 : 0) | ((numd & 0xffff) << 16), 11: numd >>> 16, 12: offset % 2 ** 32, 13: Math.floor(offset / 2 ** 32) });
}
const trimmed = (buf: Buffer, off: number, len: number): string => buf.subarray(off, off + len).toString('latin1').replace(/[\0 ]+$/, '');

test('Identify Controller: the fields the Linux host checks, at their offsets', () => {
  const r = executeAdmin(context(), identifyCmd(0x01), null);
  assert.equal(r.status, STATUS_SUCCESS);
  const id = r.data!;
  assert.equal(id.length, IDENTIFY_BYTES);
  assert.equal(trimmed(id, 4, 20), 'a1b2c3d4e5f6a7b8c9d0', 'SN');
  assert.equal(id.toString('latin1', 24, 64), 'Cairn'.padEnd(40, ' '), 'MN space padded');
  assert.equal(id.toString('latin1', 64, 72), '0.1.0   ', 'FR space padded');
  assert.equal(id[76], 0x2, 'CMIC: multi-controller');
  assert.equal(id[77], 5, 'MDTS');
  assert.equal(id.readUInt16LE(78), 7, 'CNTLID matches the Connect response');
  assert.equal(id.readUInt32LE(80), 0x00010300, 'VER 1.3');
  assert.equal(id.readUInt32LE(92) & (1 << 8), 1 << 8, 'OAES: namespace attribute notices');
  assert.equal(id[111], 1, 'CNTRLTYPE: I/O controller');
  assert.equal(id[259], 3, 'AERL');
  assert.equal(id[261]! & 0x6, 0x6, 'LPA: effects log and extended data');
  assert.equal(id.readUInt16LE(320), 10, 'KAS in 100 ms units');
  assert.equal(id[512], 0x66, 'SQES');
  assert.equal(id[513], 0x44, 'CQES');
  assert.equal(id.readUInt16LE(514), 128, 'MAXCMD');
  assert.equal(id.readUInt32LE(516), 0xfffffffe, 'NN');
  assert.equal(id.readUInt16LE(520), 0x0d, 'ONCS: compare, DSM, write zeroes');
  assert.equal(id[525]! & 1, 1, 'VWC present');
  assert.equal(id.readUInt32LE(536) & 0x3, 0x1, 'SGLS supported (Linux tcp.c requires bits 1:0)');
  assert.equal(id.readUInt32LE(536) & (1 << 20), 1 << 20, 'SGL address as offset (in-capsule data)');
  assert.equal(trimmed(id, 768, 256), `${NQN_BASE_DEFAULT}:acme`, 'SUBNQN');
  assert.equal(id[768 + 255], 0, 'SUBNQN NUL terminated');
  assert.equal(id.readUInt32LE(1792), (64 + 8192) / 16, 'IOCCSZ in 16-byte units');
  assert.equal(id.readUInt32LE(1796), 1, 'IORCSZ');
  assert.equal(id.readUInt16LE(1800), 0, 'ICDOFF: Linux tcp.c refuses any other');
  assert.equal(id[1803], 1, 'MSDBD');
  assert.equal(id.readUInt16LE(1804) & 1, 1, 'OFCS: Disconnect');
});

test('Identify Controller: KAS is never 0 (Linux refuses a fabrics controller without keep-alive); features follow OAES', () => {
  const id = executeAdmin(context({ identity: identity({ kasMs: 0 }) }), identifyCmd(0x01), null).data!;
  assert.equal(id.readUInt16LE(320), 1);
  const io = FeatureStore.forController(identity(), 10_000);
  assert.equal(io.set(0x0b, false, 1 << 8).status, STATUS_SUCCESS, 'namespace notices on an I/O controller');
  assert.equal(io.set(0x0b, false, 1 << 31).status, STATUS_INVALID_FIELD, 'discovery notices are not');
  const disc = FeatureStore.forController(identity({ discovery: true }), 0);
  assert.equal(disc.set(0x0b, false, (1 << 31) >>> 0).status, STATUS_SUCCESS);
  assert.equal(disc.asyncEventEnabled(31), true);
  assert.equal(io.get(0x0f, 0, 0).dw0, 10_000);
});

test('Identify Controller of a discovery controller; it refuses namespace commands', () => {
  const ctx = context({ identity: identity({ discovery: true, subnqn: DISCOVERY_NQN }) });
  const id = executeAdmin(ctx, identifyCmd(0x01), null).data!;
  assert.equal(id[111], 2, 'CNTRLTYPE: discovery');
  assert.equal(id.readUInt32LE(516), 0, 'NN 0');
  assert.equal(trimmed(id, 768, 256), DISCOVERY_NQN);
  assert.equal((id.readUInt32LE(92) >>> 31) & 1, 1, 'OAES: discovery log change notices');
  assert.equal(executeAdmin(ctx, identifyCmd(0x00, 1), null).status, STATUS_INVALID_FIELD);
  assert.equal(executeAdmin(ctx, identifyCmd(0x02), null).status, STATUS_INVALID_FIELD);
  assert.equal(executeAdmin(ctx, logCmd(0x02, 512), null).status, STATUS_INVALID_LOG_PAGE);
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x07, 11: 0 }), null).status, STATUS_INVALID_FIELD, 'no queues feature on discovery');
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x0f, 11: 30000 }), null).status, STATUS_SUCCESS, 'keep-alive timer is');
});

test('Identify Namespace: size, LBA format, NGUID, write protection; inactive and invalid NSIDs', () => {
  const ctx = context();
  const id = executeAdmin(ctx, identifyCmd(0x00, 1), null).data!;
  const blocks = BigInt(64 * MiB / LBA_SIZE_BYTES);
  assert.equal(id.readBigUInt64LE(0), blocks, 'NSZE');
  assert.equal(id.readBigUInt64LE(8), blocks, 'NCAP (0 would mean not attached)');
  assert.equal(id.readBigUInt64LE(16), blocks, 'NUSE');
  assert.equal(id[25], 0, 'NLBAF: one format');
  assert.equal(id[26]! & 0xf, 0, 'FLBAS: format 0');
  assert.equal(id[30]! & 1, 1, 'NMIC shared');
  assert.equal(id[99], 0, 'NSATTR: writable');
  assert.deepEqual(id.subarray(104, 120), Buffer.alloc(16, 1), 'NGUID');
  assert.equal(id.readUInt16LE(128), 0, 'LBAF0 MS');
  assert.equal(1 << id[130]!, LBA_SIZE_BYTES, 'LBAF0 LBADS');
  const ro = executeAdmin(ctx, identifyCmd(0x00, 3), null).data!;
  assert.equal(ro[99]! & 1, 1, 'a snapshot is write protected');
  const inactive = executeAdmin(ctx, identifyCmd(0x00, 2), null);
  assert.equal(inactive.status, STATUS_SUCCESS);
  assert.ok(inactive.data!.every((b) => b === 0), 'an inactive NSID reads as zeroes');
  for (const nsid of [0, 0xffffffff]) assert.equal(executeAdmin(ctx, identifyCmd(0x00, nsid), null).status, STATUS_INVALID_NAMESPACE);
  const small = context({ identity: identity({ namespaceCountMax: 5 }) });
  assert.equal(executeAdmin(small, identifyCmd(0x00, 10), null).status, STATUS_INVALID_NAMESPACE, 'above NN');
  const indep = executeAdmin(ctx, identifyCmd(0x08, 3), null).data!;
  assert.equal(indep[8], 1, 'CNS 08h NSATTR');
  assert.equal(indep[14], 1, 'CNS 08h NSTAT ready');
  assert.equal(executeAdmin(ctx, identifyCmd(0x06, 0, 0), null).status, STATUS_SUCCESS, 'CNS 06h for the NVM command set');
  assert.equal(executeAdmin(ctx, identifyCmd(0x06, 0, 2 << 24), null).status, STATUS_INVALID_FIELD, 'CNS 06h for another command set');
  assert.equal(executeAdmin(ctx, identifyCmd(0x05, 1, 0), null).status, STATUS_SUCCESS);
});

test('Identify active namespace list and descriptors; unknown CNS', () => {
  const ctx = context();
  const list = executeAdmin(ctx, identifyCmd(0x02, 0), null).data!;
  assert.deepEqual([0, 1, 2, 3].map((i) => list.readUInt32LE(i * 4)), [1, 3, 10, 0]);
  const after = executeAdmin(ctx, identifyCmd(0x02, 3), null).data!;
  assert.deepEqual([0, 1].map((i) => after.readUInt32LE(i * 4)), [10, 0], 'only NSIDs above the one given');
  assert.equal(executeAdmin(ctx, identifyCmd(0x02, 0xfffffffe), null).status, STATUS_INVALID_NAMESPACE);
  const many = context({}, Array.from({ length: 1500 }, (_, i) => ns(i + 1)));
  const full = executeAdmin(many, identifyCmd(0x02, 0), null).data!;
  assert.equal(full.readUInt32LE(1023 * 4), 1024, 'at most 1024 per list');
  const next = executeAdmin(many, identifyCmd(0x02, 1024), null).data!;
  assert.equal(next.readUInt32LE(0), 1025, 'the host pages on with the last NSID it got');

  const desc = executeAdmin(ctx, identifyCmd(0x03, 10), null).data!;
  assert.equal(desc[0], NIDT_NGUID); assert.equal(desc[1], 16);
  assert.deepEqual(desc.subarray(4, 20), Buffer.alloc(16, 10));
  assert.equal(desc[20], NIDT_UUID); assert.equal(desc[21], 16);
  assert.deepEqual(desc.subarray(24, 40), Buffer.alloc(16, 0x80 + 10));
  assert.equal(desc[40], NIDT_CSI); assert.equal(desc[41], 1); assert.equal(desc[44], 0);
  assert.equal(desc[45], 0, 'the list ends with a zero descriptor');
  assert.equal(executeAdmin(ctx, identifyCmd(0x03, 2), null).status, STATUS_INVALID_NAMESPACE);
  assert.equal(executeAdmin(ctx, identifyCmd(0x13), null).status, STATUS_INVALID_FIELD, 'controller list: not supported');
});

test('Get Log Page: SMART, firmware slot, error, effects; offsets and lengths; bounds', () => {
  const ctx = context();
  const smart = executeAdmin(ctx, logCmd(0x02, 512), null).data!;
  assert.equal(smart.length, 512);
  assert.equal(smart[5], 25, 'percentage used from pool use');
  assert.equal(smart.readBigUInt64LE(32), 3n, 'data units read');
  assert.equal(smart.readBigUInt64LE(48), 5n, 'data units written');
  assert.equal(smart.readBigUInt64LE(64), 100n, 'host read commands');
  assert.equal(smart.readBigUInt64LE(80), 200n, 'host write commands');
  // The same log read in two halves, the second at an offset (LPOL).
  const head = executeAdmin(ctx, logCmd(0x02, 256, 0), null).data!;
  const tail = executeAdmin(ctx, logCmd(0x02, 256, 256), null).data!;
  assert.deepEqual(Buffer.concat([head, tail]), smart);
  const over = executeAdmin(ctx, logCmd(0x02, 1024), null).data!;
  assert.equal(over.length, 1024, 'the length asked');
  assert.ok(over.subarray(512).every((b) => b === 0), 'past the end: zeroes');
  assert.equal(executeAdmin(ctx, logCmd(0x02, 4, 512), null).status, STATUS_INVALID_FIELD, 'offset past the end');
  assert.equal(executeAdmin(ctx, logCmd(0x02, 4, 2), null).status, STATUS_INVALID_FIELD, 'offset not dword aligned');
  assert.equal(executeAdmin(ctx, logCmd(0x02, 4, 2 ** 33), null).status, STATUS_INVALID_FIELD, 'LPOU: a 64-bit offset');
  assert.equal(executeAdmin(ctx, logCmd(0x02, 64 * MiB), null).status, STATUS_INVALID_FIELD, 'more than MDTS: refused before allocating');
  const fw = executeAdmin(ctx, logCmd(0x03, 512), null).data!;
  assert.equal(fw[0], 1, 'slot 1 active');
  assert.equal(fw.toString('latin1', 8, 16), '0.1.0   ');
  const err = executeAdmin(ctx, logCmd(0x01, 64), null);
  assert.equal(err.status, STATUS_SUCCESS);
  assert.ok(err.data!.every((b) => b === 0));
  const effects = executeAdmin(ctx, logCmd(0x05, 4096), null).data!;
  assert.equal(effects.readUInt32LE(0x06 * 4) & 1, 1, 'Identify supported');
  assert.equal(effects.readUInt32LE(0x80 * 4), 0, 'Format NVM not supported');
  assert.equal(effects.readUInt32LE(1024 + 0x01 * 4), 0x3, 'Write: supported, changes content');
  assert.equal(effects.readUInt32LE(1024 + 0x02 * 4), 0x1, 'Read: supported');
  assert.equal(executeAdmin(ctx, logCmd(0x70, 1024), null).status, STATUS_INVALID_LOG_PAGE, 'no discovery log on an I/O controller');
  assert.equal(executeAdmin(ctx, logCmd(0xc0, 512), null).status, STATUS_INVALID_LOG_PAGE);
  assert.ok(statusDnr(STATUS_INVALID_LOG_PAGE));
  assert.equal(dataUnits(512_001n), 2n, 'data units round up');
});

test('Get Log Page: the changed namespace list is cleared by a read unless RAE', () => {
  const ctx = context();
  const kept = executeAdmin(ctx, logCmd(0x04, 4096, 0, true), null).data!;
  assert.deepEqual([kept.readUInt32LE(0), kept.readUInt32LE(4), kept.readUInt32LE(8)], [3, 10, 0]);
  assert.deepEqual(ctx.changed, [3, 10], 'RAE: retained');
  executeAdmin(ctx, logCmd(0x04, 4096), null);
  assert.equal(ctx.changed.length, 0, 'read: cleared');
  ctx.changed.push(4);
  assert.equal(executeAdmin(ctx, logCmd(0x04, 4, 4096), null).status, STATUS_INVALID_FIELD);
  assert.deepEqual(ctx.changed, [4], 'a refused read does not clear it');
  const overflow = context({ takeChangedNamespaces: () => Array.from({ length: 1025 }, (_, i) => i + 1) });
  assert.equal(executeAdmin(overflow, logCmd(0x04, 4096), null).data!.readUInt32LE(0), 0xffffffff, 'more than 1024: FFFFFFFFh');
});

test('Get Log Page: the discovery log, header then entries, read in pieces', () => {
  const entries: DiscoveryEntry[] = ['acme', 'beta'].map((t) => ({
    trtype: 'tcp', adrfam: 'ipv4', subtype: 'nvme', portId: 1, cntlid: 0xffff, asqsz: 32, trsvcid: '4420',
    subnqn: subsystemNqn(NQN_BASE_DEFAULT, t), traddr: '10.0.2.2', secureChannel: false,
  }));
  const ctx = context({ identity: identity({ discovery: true, subnqn: DISCOVERY_NQN }), discoveryEntries: () => entries, discoveryGeneration: () => 42n });
  const header = executeAdmin(ctx, logCmd(0x70, 1024), null).data!;
  assert.equal(header.readBigUInt64LE(0), 42n, 'GENCTR');
  assert.equal(header.readBigUInt64LE(8), 2n, 'NUMREC');
  const second = executeAdmin(ctx, logCmd(0x70, 1024, 2048), null).data!;
  assert.equal(second[0], 3, 'TRTYPE tcp');
  assert.equal(second[1], 1, 'ADRFAM ipv4');
  assert.equal(second[2], 2, 'SUBTYPE nvme');
  assert.equal(second[3], 2, 'TREQ: secure channel not required');
  assert.equal(second.readUInt16LE(4), 1, 'PORTID');
  assert.equal(second.readUInt16LE(6), 0xffff, 'CNTLID dynamic');
  assert.equal(second.readUInt16LE(8), 32, 'ASQSZ');
  assert.equal(second.toString('latin1', 32, 64), '4420'.padEnd(32, ' '), 'TRSVCID space padded');
  assert.equal(trimmed(second, 256, 256), `${NQN_BASE_DEFAULT}:beta`);
  assert.equal(second.toString('latin1', 512, 768), '10.0.2.2'.padEnd(256, ' '), 'TRADDR space padded');
  assert.equal(executeAdmin(ctx, logCmd(0x70, 1024, 3072), null).status, STATUS_INVALID_FIELD, 'past the last entry');
});

test('Get/Set Features: queues granted up to the bound, keep-alive, async events, cache, errors', () => {
  const ctx = context();
  const setQ = executeAdmin(ctx, sqe(0x09, 0, { 10: 0x07, 11: (63 << 16) | 63 }), null);
  assert.equal(setQ.status, STATUS_SUCCESS);
  assert.equal(setQ.dw0, (7 << 16) | 7, 'granted 8 (0-based 7) of 64 asked');
  assert.equal(ctx.features.ioQueuesGranted, 8);
  assert.deepEqual(ctx.features.queuesAsked, { submission: 64, completion: 64 });
  executeAdmin(ctx, sqe(0x09, 0, { 10: 0x07, 11: (1 << 16) | 1 }), null);
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x07 }), null).dw0, (1 << 16) | 1, 'current: 2 granted');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x07 | (1 << 8) }), null).dw0, (7 << 16) | 7, 'default (SEL 1)');
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x07, 11: 0xffff }), null).status, STATUS_INVALID_FIELD, '65536 queues');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x0f }), null).dw0, 5000, 'KATO from Connect');
  executeAdmin(ctx, sqe(0x09, 0, { 10: 0x0f, 11: 15000 }), null);
  assert.equal(ctx.features.keepAliveTimeoutMs, 15000);
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x0b, 11: 1 << 8 }), null).status, STATUS_SUCCESS);
  assert.equal(ctx.features.asyncEventEnabled(8), true);
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x0b, 11: 1 << 11 }), null).status, STATUS_INVALID_FIELD, 'ANA notices: not advertised');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x06 }), null).dw0, 1, 'write cache on');
  executeAdmin(ctx, sqe(0x09, 0, { 10: 0x06, 11: 0 }), null);
  assert.equal(ctx.features.writeCacheEnabled, false);
  const saved = executeAdmin(ctx, sqe(0x09, 0, { 10: 0x06 | 0x80000000, 11: 1 }), null);
  assert.deepEqual([statusType(saved.status), statusCode(saved.status), statusDnr(saved.status)], [1, 0x0d, true], 'not saveable');
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0x02, 11: 1 }), null).status, STATUS_INVALID_FIELD, 'power state 1 does not exist');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x04 }), null).dw0, 343, 'temperature threshold');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x06 | (3 << 8) }), null).dw0 & 0x4, 0x4, 'capabilities: changeable');
  assert.equal(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x0c }), null).status, STATUS_INVALID_FIELD, 'APST: not supported');
  assert.equal(executeAdmin(ctx, sqe(0x09, 0, { 10: 0xfe }), null).status, STATUS_INVALID_FIELD, 'unknown feature');
  const nsScoped = executeAdmin(ctx, sqe(0x0a, 1, { 10: 0x06 }), null);
  assert.deepEqual([statusType(nsScoped.status), statusCode(nsScoped.status)], [1, 0x0f], 'not namespace specific');
  const hostIdSet = executeAdmin(ctx, sqe(0x09, 0, { 10: 0x81, 11: 1 }), null);
  assert.equal(statusCode(hostIdSet.status), 0x0c, 'host id comes with Connect: command sequence error');
  ctx.features.hostId = Buffer.alloc(16, 0xab);
  assert.deepEqual(executeAdmin(ctx, sqe(0x0a, 0, { 10: 0x81, 11: 1 }), null).data, Buffer.alloc(16, 0xab));
});

test('unsupported and transport-owned opcodes: Invalid Command Opcode with DNR; Abort: not aborted', () => {
  const ctx = context();
  for (const opcode of [0x00, 0x01, 0x04, 0x05, 0x0d, 0x10, 0x11, 0x80, 0x81, 0xc0, 0x0c, 0x18, 0x7f]) {
    const r = executeAdmin(ctx, sqe(opcode, 0), null);
    assert.equal(r.status, STATUS_INVALID_OPCODE, `opcode ${opcode}`);
    assert.ok(statusDnr(r.status));
  }
  assert.deepEqual(executeAdmin(ctx, sqe(0x08, 0, { 10: 0x1234 << 16 }), null), { status: 0, dw0: 1, data: null });
  assert.equal(executeAdmin(ctx, sqe(0x06, 0, { 10: 1 }, 0x1), null).status, STATUS_INVALID_FIELD, 'fused');
  assert.equal(executeAdmin(ctx, Buffer.alloc(10), null).status, STATUS_INVALID_FIELD, 'short SQE');
  const broken = context({ namespaces: () => { throw new Error('engine closed'); } });
  const r = executeAdmin(broken, identifyCmd(0x02), null);
  assert.equal(statusCode(r.status), 0x06, 'internal error');
  assert.equal(statusDnr(r.status), false, 'may be retried');
});

test('engine errors map to NVMe statuses, DNR where a retry cannot help', () => {
  const of = (err: unknown): [number, number, boolean] => { const s = statusForEngineError(err); return [statusType(s), statusCode(s), statusDnr(s)]; };
  assert.deepEqual(of(new OutOfRange('past the end')), [0, 0x80, true]);
  assert.deepEqual(of(new ReadOnly('v@s')), [0, 0x20, true]);
  assert.deepEqual(of(new PoolFull()), [0, 0x81, true]);
  assert.deepEqual(of(new VolumeLocked('v')), [2, 0x86, true]);
  assert.deepEqual(of(new VolumeNotFound('v')), [0, 0x0b, true]);
  assert.deepEqual(of(new CairnError('io_error', 'eio', 'EIO')), [0, 0x06, false]);
  assert.deepEqual(of(new Error('plain')), [0, 0x06, false]);
  assert.deepEqual(of(null), [0, 0x06, false]);
  assert.equal(STATUS_CONNECT_INVALID_HOST, STATUS_DNR | (1 << 8) | 0x84);
});

test('namespaces: NSID = id + 1, unique NGUID/UUID, stable across reopen; clone differs; snapshot read-only', async () => {
  const pool = await tempPool(64 * MiB);
  try {
    const tenancy = new TenantStore(pool.engine);
    await tenancy.createTenant('acme');
    const src = await pool.engine.createVolume('acme/db', 8 * MiB);
    await pool.engine.createSnapshots(['acme/db@s1']);
    const clone = await pool.engine.cloneVolume('acme/db2', 'acme/db@s1');
    await pool.engine.createVolume('other', 4 * MiB);
    const identityBytes = await ensurePoolIdentity(pool.engine);
    assert.equal(identityBytes.length, 16);
    assert.deepEqual(poolIdentity(pool.engine), identityBytes, 'one identity');
    const view = new NamespaceView(pool.engine, identityBytes);
    const list = view.namespacesOf('acme');
    assert.deepEqual(list.map((n) => n.targetName), ['db', 'db@s1', 'db2']);
    assert.equal(list[0]!.nsid, src.id + 1);
    assert.equal(list[2]!.nsid, clone.id + 1);
    assert.deepEqual(list.map((n) => n.readOnly), [false, true, false]);
    assert.equal(list[1]!.sizeBytes, 8 * MiB);
    const nguids = new Set(list.map((n) => n.nguid.toString('hex')));
    const uuids = new Set(list.map((n) => n.uuid.toString('hex')));
    assert.equal(nguids.size, 3, 'NGUIDs unique: a clone does not share its source\'s');
    assert.equal(uuids.size, 3);
    for (const n of list) {
      assert.equal(n.uuid[6]! >> 4, 8, 'UUID version 8');
      assert.equal(n.uuid[8]! >> 6, 2, 'UUID variant');
    }
    assert.deepEqual(view.namespacesOf('default').map((n) => n.targetName), ['other']);
    assert.equal(view.find('acme', src.id + 1)?.targetName, 'db');
    assert.equal(view.find('default', src.id + 1), null, 'another tenant\'s NSID is not found');
    assert.equal(view.find('acme', 0), null);
    // The view follows the pool: a resize (by find, at once), a new volume, a deletion.
    await pool.engine.resizeVolume('acme/db', 16 * MiB);
    assert.equal(view.find('acme', src.id + 1)?.sizeBytes, 16 * MiB);
    assert.equal(view.find('acme', list[1]!.nsid)?.sizeBytes, 8 * MiB, 'the snapshot keeps its size');
    assert.equal(view.find('acme', list[1]!.nsid)?.readOnly, true);
    const added = await pool.engine.createVolume('acme/new', 4 * MiB);
    assert.deepEqual(view.namespacesOf('acme').map((n) => n.nsid), [src.id + 1, src.id + 2, clone.id + 1, added.id + 1]);
    await pool.engine.deleteVolume('acme/new');
    assert.equal(view.find('acme', added.id + 1), null);
    assert.deepEqual(view.namespacesOf('acme').map((n) => n.targetName), ['db', 'db@s1', 'db2']);
    const serial = controllerSerial(identityBytes, 'acme');
    assert.match(serial, /^[0-9a-f]{20}$/);
    assert.notEqual(serial, controllerSerial(identityBytes, 'default'));

    await pool.engine.close();
    const reopened = await openPoolFile(pool.path, { commitIntervalMs: 0 });
    try {
      const again = new NamespaceView(reopened, poolIdentity(reopened)).namespacesOf('acme');
      assert.deepEqual(again.map((n) => [n.nsid, n.nguid.toString('hex'), n.uuid.toString('hex')]),
        list.map((n) => [n.nsid, n.nguid.toString('hex'), n.uuid.toString('hex')]), 'stable across reopen');
    } finally {
      await reopened.close();
    }
  } finally {
    await pool.cleanup();
  }
});

test('host NQNs: validation, subsystem NQNs, allow-list per tenant, default open while empty, tenant delete forgets', async () => {
  assert.equal(nqnProblem(HOST_A), null);
  assert.equal(nqnProblem(HOST_B), null);
  assert.equal(nqnProblem(DISCOVERY_NQN), null);
  for (const bad of ['', 'iqn.2024-01.com.example:x', 'nqn.2024-13.com.example:x', 'nqn.2014-08.org.nvmexpress:uuid:not-a-uuid',
    'nqn.2024-01.com.example:has space', `nqn.2024-01.com.example:${'x'.repeat(220)}`, 'nqn.2024-01.-bad.com']) {
    assert.notEqual(nqnProblem(bad), null, bad);
  }
  assert.equal(nqnProblem(`nqn.2024-01.com.example:${'x'.repeat(223 - 24)}`), null, '223 bytes');
  assert.equal(subsystemNqn(NQN_BASE_DEFAULT, 'acme'), 'nqn.2026-12.io.cairn:acme');
  assert.equal(tenantOfSubsystemNqn(NQN_BASE_DEFAULT, 'nqn.2026-12.io.cairn:acme'), 'acme');
  assert.equal(tenantOfSubsystemNqn(NQN_BASE_DEFAULT, 'nqn.2026-12.io.cairnx:acme'), null);
  assert.equal(tenantOfSubsystemNqn(NQN_BASE_DEFAULT, 'nqn.2026-12.io.cairn:Bad/Name'), null);
  assert.equal(nqnBaseProblem(NQN_BASE_DEFAULT), null);
  assert.notEqual(nqnBaseProblem('nqn.2026-12.io.cairn:x'), null);

  const pool = await tempPool(64 * MiB);
  try {
    const tenancy = new TenantStore(pool.engine);
    const access = new NvmeHostAccess(tenancy);
    await tenancy.createTenant('acme');
    await tenancy.createTenant('beta');
    assert.equal(access.allowed('default', HOST_A), true, 'default tenant, empty list: any host');
    assert.equal(access.allowed('acme', HOST_A), false, 'another tenant: none until added');
    assert.equal(access.allowed('nope', HOST_A), false, 'no such tenant');
    await access.add('acme', HOST_A);
    const long = `nqn.2024-01.com.example:${'y'.repeat(223 - 24)}`;
    await access.add('acme', long);
    assert.equal(access.allowed('acme', HOST_A), true);
    assert.equal(access.allowed('acme', long), true, 'a 223-byte NQN is stored in two settings');
    assert.equal(access.allowed('beta', HOST_A), false, 'per tenant');
    assert.deepEqual(access.list('acme'), [HOST_A, long].sort());
    const fail = async (p: Promise<unknown>): Promise<string> => { try { await p; return 'ok'; } catch (e) { return (e as TenancyError).code; } };
    assert.equal(await fail(access.add('acme', HOST_A)), 'name_taken');
    assert.equal(await fail(access.add('acme', 'bogus')), 'invalid_argument');
    assert.equal(await fail(access.add('nope', HOST_A)), 'tenant_not_found');
    assert.equal(await fail(access.remove('acme', HOST_B)), 'nvme_host_not_found');
    assert.equal(await fail(access.remove('nope', HOST_B)), 'tenant_not_found');
    await access.add('default', HOST_B);
    assert.equal(access.allowed('default', HOST_A), false, 'default tenant with a list: only its hosts');
    assert.equal(access.allowed('default', HOST_B), true);
    await access.remove('acme', long);
    assert.deepEqual(access.list('acme'), [HOST_A]);
    assert.equal(pool.engine.listSettings('nvmehost/').length, 2, 'the long NQN\'s second setting went with it');
    await tenancy.deleteTenant('acme');
    assert.deepEqual(tenancy.listNvmeHosts('acme'), [], 'deleting a tenant forgets its hosts');
    await tenancy.createTenant('acme');
    assert.equal(access.allowed('acme', HOST_A), false, 'a re-created tenant starts closed');
  } finally {
    await pool.cleanup();
  }
});

test('executeAdmin with random SQEs: never throws, never allocates past the bound, data only on success', () => {
  let x = 0x9e3779b9;
  const next = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  const opcodes = [0x02, 0x06, 0x09, 0x0a, 0x08];
  for (const discovery of [false, true]) {
    const ctx = context({ identity: identity({ discovery, subnqn: discovery ? DISCOVERY_NQN : `${NQN_BASE_DEFAULT}:acme` }) });
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.alloc(64);
      for (let off = 0; off < 64; off += 4) b.writeUInt32LE(next(), off);
      b[0] = next() % 4 === 0 ? next() & 0xff : opcodes[next() % opcodes.length]!;
      if (next() % 2 === 0) b[1] = 0;
      // Small lengths and offsets half the time, so the success paths run too.
      if (next() % 2 === 0) { b.writeUInt32LE((next() & 0xff) | ((next() % 1024) << 16), 40); b.writeUInt32LE(0, 44); b.writeUInt32LE((next() % 64) * 4, 48); b.writeUInt32LE(0, 52); }
      const r = executeAdmin(ctx, b, null);
      assert.ok(Number.isInteger(r.status) && r.status >= 0 && r.status < 0x8000, `status ${r.status}`);
      assert.ok(Number.isInteger(r.dw0) && r.dw0 >= 0 && r.dw0 <= 0xffffffff);
      if (r.status !== STATUS_SUCCESS) assert.equal(r.data, null);
      if (r.data !== null) assert.ok(r.data.length <= 4096 * 2 ** 5, `data ${r.data.length} within MDTS`);
    }
  }
});
