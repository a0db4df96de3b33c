// STAND-IN until nvmfadmin's admin.ts is merged: the few admin commands the transport's tests need.
import type { NvmfNamespace } from './namespaces.js';
import type { FeatureStore } from './features.js';
import { status, SCT_GENERIC, SC_INVALID_FIELD, SC_INVALID_OPCODE, SC_INVALID_NAMESPACE } from './status.js';

export interface ControllerIdentity { cntlid: number; subnqn: string; serial: string; model: string; firmware: string;
  discovery: boolean; ioccszBytes: number; ioQueuesMax: number; queueEntriesMax: number; mdtsLog2Pages: number;
  kasMs: number; namespaceCountMax: number }
export interface SmartCounters { dataUnitsRead: bigint; dataUnitsWritten: bigint; readCommands: bigint; writeCommands: bigint; poolUsedFraction: number; mediaErrors: bigint }
export interface DiscoveryEntry { trtype: 'tcp'; adrfam: 'ipv4' | 'ipv6'; subtype: 'nvme' | 'discovery'; portId: number; cntlid: number;
  asqsz: number; trsvcid: string; subnqn: string; traddr: string; secureChannel: boolean }
export interface AdminContext {
  identity: ControllerIdentity;
  features: FeatureStore;
  namespaces(): NvmfNamespace[];
  takeChangedNamespaces(retain: boolean): number[];
  smart(): SmartCounters;
  discoveryEntries(): DiscoveryEntry[];
  discoveryGeneration(): bigint;
}
export interface AdminResult { status: number; dw0: number; data: Buffer | null }

const ok = (data: Buffer | null, dw0 = 0): AdminResult => ({ status: 0, dw0, data });
const fail = (sc: number): AdminResult => ({ status: status(SCT_GENERIC, sc, true), dw0: 0, data: null });

export function executeAdmin(ctx: AdminContext, sqe: Buffer, hostData: Buffer | null): AdminResult {
  void hostData;
  const opcode = sqe[0]!;
  const nsid = sqe.readUInt32LE(4);
  const cdw10 = sqe.readUInt32LE(40);
  const cdw11 = sqe.readUInt32LE(44);
  switch (opcode) {
    case 0x06: return identify(ctx, cdw10 & 0xff, nsid);
    case 0x02: {
      const lid = cdw10 & 0xff;
      const numd = ((cdw10 >>> 16) | ((cdw11 & 0xffff) << 16)) + 1;
      const out = Buffer.alloc(numd * 4);
      if (lid === 0x04) {
        const list = ctx.takeChangedNamespaces(((cdw10 >>> 15) & 1) === 1);
        for (let i = 0; i < list.length && i * 4 < out.length; i++) out.writeUInt32LE(list[i]!, i * 4);
      } else if (lid === 0x70) {
        const entries = ctx.discoveryEntries();
        const page = Buffer.alloc(1024 + entries.length * 1024);
        page.writeBigUInt64LE(ctx.discoveryGeneration(), 0);
        page.writeBigUInt64LE(BigInt(entries.length), 8);
        entries.forEach((e, i) => {
          const at = 1024 + i * 1024;
          page[at] = 3; page[at + 1] = e.adrfam === 'ipv4' ? 1 : 2; page[at + 2] = e.subtype === 'nvme' ? 2 : 3; page[at + 3] = 0x04;
          page.writeUInt16LE(e.portId, at + 4); page.writeUInt16LE(e.cntlid, at + 6); page.writeUInt16LE(e.asqsz, at + 8);
          page.write(e.trsvcid.padEnd(32, ' '), at + 32, 32, 'ascii');
          page.write(e.subnqn, at + 256, 256, 'utf8');
          page.write(e.traddr.padEnd(256, ' '), at + 512, 256, 'ascii');
        });
        const lpo = Number(sqe.readBigUInt64LE(48));
        page.copy(out, 0, Math.min(lpo, page.length));
      }
      return ok(out);
    }
    case 0x09: case 0x0a: {
      const fid = cdw10 & 0xff;
      if (fid === 0x07) {
        const granted = Math.min(ctx.identity.ioQueuesMax, (cdw11 & 0xffff) + 1);
        ctx.features.ioQueuesGranted = granted;
        return ok(null, ((granted - 1) << 16) | (granted - 1));
      }
      if (fid === 0x0b) { if (opcode === 0x09) ctx.features.asyncEventConfig = cdw11; return ok(null, ctx.features.asyncEventConfig); }
      if (fid === 0x0f) { if (opcode === 0x09) ctx.features.keepAliveMs = cdw11; return ok(null, ctx.features.keepAliveMs); }
      return ok(null, 0);
    }
    default: return fail(SC_INVALID_OPCODE);
  }
}

function identify(ctx: AdminContext, cns: number, nsid: number): AdminResult {
  const out = Buffer.alloc(4096);
  const id = ctx.identity;
  if (cns === 0x01) {
    out.write(id.serial.padEnd(20, ' '), 4, 20, 'ascii');
    out.write(id.model.padEnd(40, ' '), 24, 40, 'ascii');
    out.write(id.firmware.padEnd(8, ' '), 64, 8, 'ascii');
    out[77] = id.mdtsLog2Pages;
    out.writeUInt16LE(id.cntlid, 78);
    out.writeUInt32LE(0x00010300, 80);
    out.writeUInt32LE(1 << 8, 92);
    out[111] = id.discovery ? 2 : 1;
    out[259] = 3; out[261] = 0x04;
    out.writeUInt16LE(id.kasMs / 100, 320);
    out[512] = 0x66; out[513] = 0x44;
    out.writeUInt16LE(id.queueEntriesMax, 514);
    out.writeUInt32LE(id.namespaceCountMax, 516);
    out.writeUInt16LE(0x0c | 0x01, 520);
    out[525] = 1;
    out.writeUInt32LE(1 | (1 << 20), 536);
    out.write(id.subnqn, 768, 256, 'utf8');
    out.writeUInt32LE(id.ioccszBytes / 16, 1792);
    out.writeUInt32LE(1, 1796);
    return ok(out);
  }
  const list = ctx.namespaces();
  if (cns === 0x02) {
    list.filter((n) => n.nsid > nsid).slice(0, 1024).forEach((n, i) => out.writeUInt32LE(n.nsid, i * 4));
    return ok(out);
  }
  const ns = list.find((n) => n.nsid === nsid);
  if (cns === 0x00) {
    if (!ns) return ok(out);
    const lbas = BigInt(Math.floor(ns.sizeBytes / 512));
    out.writeBigUInt64LE(lbas, 0); out.writeBigUInt64LE(lbas, 8); out.writeBigUInt64LE(lbas, 16);
    out[25] = 0; out[26] = 0; out[99] = ns.readOnly ? 1 : 0;
    ns.nguid.copy(out, 104);
    out.writeUInt32LE(9 << 16, 128);
    return ok(out);
  }
  if (cns === 0x03) {
    if (!ns) return fail(SC_INVALID_NAMESPACE);
    out[0] = 2; out[1] = 16; ns.nguid.copy(out, 4);
    out[20] = 3; out[21] = 16; ns.uuid.copy(out, 24);
    return ok(out);
  }
  return fail(SC_INVALID_FIELD);
}
