// A small NVMe/TCP initiator for the target's protocol tests: ICReq, capsules with in-capsule data or
// R2T/H2CData, C2HData, digests, and a way to send raw bytes (hostile PDUs). The real kernel initiator
// is driven by the VM tests (test/vm/); this one reaches the edge cases a kernel never sends.
import net from 'node:net';
import { crc32c } from '@node-rs/crc32';

export const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';
export const HOST_NQN = 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001';

export interface Completion { status: number; dw0: number; dw1: number; data: Buffer; sqhd: number; viaSuccessFlag: boolean }
export interface TermReq { fes: number; fei: number }

interface Pending {
  resolve(completion: Completion): void;
  reject(error: Error): void;
  chunks: Buffer[];
  /** Write data for R2T. */
  hostData: Buffer | null;
}

export interface ClientOptions { headerDigest?: boolean; dataDigest?: boolean }

export class NvmfClient {
  private buffer = Buffer.alloc(0);
  private readonly pending = new Map<number, Pending>();
  private nextCid = 1;
  headerDigest = false;
  dataDigest = false;
  maxH2CDataBytes = 0;
  termReq: TermReq | null = null;
  readonly closed: Promise<void>;
  private icWaiter: ((pdu: Buffer) => void) | null = null;
  r2tCount = 0;
  /** Responses to commands sent raw (not through command()). */
  unsolicited = 0;

  private constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
      resolve();
    }));
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => { this.buffer = Buffer.concat([this.buffer, chunk]); this.parse(); });
  }

  static async open(port: number, opts: ClientOptions = {}): Promise<NvmfClient> {
    const socket = net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    const client = new NvmfClient(socket);
    const ic = Buffer.alloc(128);
    ic[0] = 0x00; ic[2] = 128; ic.writeUInt32LE(128, 4);
    ic.writeUInt16LE(0, 8); ic[10] = 0; ic[11] = (opts.headerDigest ? 1 : 0) | (opts.dataDigest ? 2 : 0);
    const resp = await new Promise<Buffer>((resolve) => { client.icWaiter = resolve; socket.write(ic); });
    if (resp[0] !== 0x01) throw new Error(`expected ICResp, got PDU type ${resp[0]}`);
    client.headerDigest = (resp[11]! & 1) !== 0;
    client.dataDigest = (resp[11]! & 2) !== 0;
    client.maxH2CDataBytes = resp.readUInt32LE(12);
    return client;
  }

  close(): void { this.socket.destroy(); }

  sendRaw(data: Buffer): void { this.socket.write(data); }

  private parse(): void {
    while (this.buffer.length >= 8) {
      const plen = this.buffer.readUInt32LE(4);
      if (this.buffer.length < plen) return;
      const pdu = this.buffer.subarray(0, plen);
      this.buffer = this.buffer.subarray(plen);
      this.onPdu(pdu);
    }
  }

  private onPdu(pdu: Buffer): void {
    const type = pdu[0]!;
    const hlen = pdu[2]!;
    const pdo = pdu[3]!;
    if (type === 0x01) { this.icWaiter?.(pdu); return; }
    if (type === 0x03) { this.termReq = { fes: pdu.readUInt16LE(8), fei: pdu.readUInt32LE(10) }; return; }
    if (this.headerDigest && crc32c(pdu.subarray(0, hlen)) !== pdu.readUInt32LE(hlen)) throw new Error('bad header digest from target');
    if (type === 0x05) {
      const cid = pdu.readUInt16LE(20);
      const p = this.pending.get(cid);
      // A response to a raw (sendRaw) command: counted, for tests that send them.
      if (!p) { this.unsolicited++; return; }
      this.pending.delete(cid);
      p.resolve({ status: pdu.readUInt16LE(22) >>> 1, dw0: pdu.readUInt32LE(8), dw1: pdu.readUInt32LE(12), sqhd: pdu.readUInt16LE(16),
        data: Buffer.concat(p.chunks), viaSuccessFlag: false });
      return;
    }
    if (type === 0x07) {
      const cid = pdu.readUInt16LE(8);
      const datal = pdu.readUInt32LE(16);
      const data = pdu.subarray(pdo, pdo + datal);
      if (this.dataDigest && crc32c(data) !== pdu.readUInt32LE(pdo + datal)) throw new Error('bad data digest from target');
      const p = this.pending.get(cid);
      if (!p) { this.unsolicited++; return; }
      p.chunks.push(Buffer.from(data));
      if ((pdu[1]! & 0x08) !== 0) {
        this.pending.delete(cid);
        p.resolve({ status: 0, dw0: 0, dw1: 0, sqhd: 0, data: Buffer.concat(p.chunks), viaSuccessFlag: true });
      }
      return;
    }
    if (type === 0x09) {
      this.r2tCount++;
      const cid = pdu.readUInt16LE(8);
      const ttag = pdu.readUInt16LE(10);
      const r2to = pdu.readUInt32LE(12);
      const r2tl = pdu.readUInt32LE(16);
      const p = this.pending.get(cid);
      if (!p?.hostData) { this.unsolicited++; return; }
      const data = p.hostData.subarray(r2to, r2to + r2tl);
      for (let off = 0; off < data.length; off += this.maxH2CDataBytes) {
        const piece = data.subarray(off, Math.min(off + this.maxH2CDataBytes, data.length));
        const last = off + piece.length === data.length;
        this.socket.write(this.h2cData(cid, ttag, r2to + off, piece, last));
      }
      return;
    }
    throw new Error(`unexpected PDU type ${type}`);
  }

  h2cData(cid: number, ttag: number, offset: number, piece: Buffer, last: boolean): Buffer {
    const hd = this.headerDigest ? 4 : 0;
    const dd = this.dataDigest ? 4 : 0;
    const header = Buffer.alloc(24 + hd);
    header[0] = 0x06; header[1] = (last ? 0x04 : 0) | (hd ? 1 : 0) | (dd ? 2 : 0); header[2] = 24; header[3] = 24 + hd;
    header.writeUInt32LE(24 + hd + piece.length + dd, 4);
    header.writeUInt16LE(cid, 8); header.writeUInt16LE(ttag, 10); header.writeUInt32LE(offset, 12); header.writeUInt32LE(piece.length, 16);
    if (hd) header.writeUInt32LE(crc32c(header.subarray(0, 24)), 24);
    const parts: Buffer[] = [header, piece];
    if (dd) { const d = Buffer.alloc(4); d.writeUInt32LE(crc32c(piece), 0); parts.push(d); }
    return Buffer.concat(parts);
  }

  /** A CapsuleCmd PDU for `sqe` (its CID is set here) with `inCapsule` data. */
  capsule(sqe: Buffer, inCapsule: Buffer | null, opts: { corruptHeaderDigest?: boolean; corruptDataDigest?: boolean } = {}): Buffer {
    const hd = this.headerDigest ? 4 : 0;
    const dd = this.dataDigest && inCapsule ? 4 : 0;
    const dataBytes = inCapsule?.length ?? 0;
    const header = Buffer.alloc(72 + hd);
    header[0] = 0x04; header[1] = (hd ? 1 : 0) | (dd ? 2 : 0); header[2] = 72; header[3] = dataBytes > 0 ? 72 + hd : 0;
    header.writeUInt32LE(72 + hd + dataBytes + dd, 4);
    sqe.copy(header, 8);
    if (hd) header.writeUInt32LE((crc32c(header.subarray(0, 72)) ^ (opts.corruptHeaderDigest ? 1 : 0)) >>> 0, 72);
    const parts: Buffer[] = [header];
    if (inCapsule) parts.push(inCapsule);
    if (dd) { const d = Buffer.alloc(4); d.writeUInt32LE((crc32c(inCapsule!) ^ (opts.corruptDataDigest ? 1 : 0)) >>> 0, 0); parts.push(d); }
    return Buffer.concat(parts);
  }

  /**
   * Sends a command. `data` goes in the capsule when `inCapsule`, else by R2T; `readBytes` is the
   * most data the target may send back (the SGL length of a controller-to-host command).
   */
  command(sqe: Buffer, opts: { data?: Buffer; inCapsule?: boolean; readBytes?: number; corruptHeaderDigest?: boolean; corruptDataDigest?: boolean } = {}): Promise<Completion> {
    const cid = this.nextCid;
    this.nextCid = (this.nextCid % 0xfffe) + 1;
    sqe.writeUInt16LE(cid, 2);
    sqe[1] = 0x40; // PSDT: SGL
    const data = opts.data ?? null;
    // Like the Linux host: in the capsule when it fits the target's in-capsule size (8 KiB here).
    const inCapsule = data !== null && (opts.inCapsule ?? data.length <= 8192);
    const sglBytes = data?.length ?? opts.readBytes ?? 0;
    sqe.writeBigUInt64LE(0n, 24);
    sqe.writeUInt32LE(sglBytes, 32);
    sqe[39] = inCapsule ? 0x01 : 0x5a;
    return new Promise((resolve, reject) => {
      this.pending.set(cid, { resolve, reject, chunks: [], hostData: inCapsule ? null : data });
      this.socket.write(this.capsule(sqe, inCapsule ? data : null, opts));
    });
  }
}

export function sqe(opcode: number, nsid = 0): Buffer {
  const b = Buffer.alloc(64);
  b[0] = opcode;
  b.writeUInt32LE(nsid, 4);
  return b;
}

export function connectSqe(qid: number, sqsize: number, kato = 0): Buffer {
  const b = sqe(0x7f);
  b[4] = 0x01;
  b.writeUInt16LE(qid, 42);
  b.writeUInt16LE(sqsize - 1, 44);
  b.writeUInt32LE(kato, 48);
  return b;
}

export function connectData(subnqn: string, hostnqn: string, cntlid = 0xffff): Buffer {
  const d = Buffer.alloc(1024);
  d.fill(0x11, 0, 16);
  d.writeUInt16LE(cntlid, 16);
  d.write(subnqn, 256, 'utf8');
  d.write(hostnqn, 512, 'utf8');
  return d;
}

export function ioSqe(opcode: number, nsid: number, slba: number, nlb: number, cdw12Flags = 0): Buffer {
  const b = sqe(opcode, nsid);
  b.writeUInt32LE(slba % 0x100000000, 40);
  b.writeUInt32LE(Math.floor(slba / 0x100000000), 44);
  b.writeUInt32LE(((nlb - 1) & 0xffff) | cdw12Flags, 48);
  return b;
}

export const SC = (status: number): number => status & 0xff;
export const SCT = (status: number): number => (status >> 8) & 0x7;
export const DNR = (status: number): boolean => (status & 0x4000) !== 0;

/** An admin queue and `ioQueues` I/O queues of one controller, connected and enabled. */
export class NvmfSession {
  private constructor(readonly admin: NvmfClient, readonly io: NvmfClient[], readonly cntlid: number) {}

  static async open(port: number, subnqn: string, opts: ClientOptions & { ioQueues?: number; hostnqn?: string; kato?: number } = {}): Promise<NvmfSession> {
    const hostnqn = opts.hostnqn ?? HOST_NQN;
    const admin = await NvmfClient.open(port, opts);
    const c = await admin.command(connectSqe(0, 32, opts.kato ?? 0), { data: connectData(subnqn, hostnqn) });
    if (c.status !== 0) { admin.close(); throw Object.assign(new Error(`admin connect status 0x${c.status.toString(16)}`), { completion: c }); }
    const cntlid = c.dw0 & 0xffff;
    const session = new NvmfSession(admin, [], cntlid);
    await session.propertySet(0x14, 0x00460001);
    for (let q = 1; q <= (opts.ioQueues ?? 0); q++) {
      const io = await NvmfClient.open(port, opts);
      const r = await io.command(connectSqe(q, 128), { data: connectData(subnqn, hostnqn, cntlid) });
      if (r.status !== 0) throw new Error(`io connect ${q} status 0x${r.status.toString(16)}`);
      session.io.push(io);
    }
    return session;
  }

  async propertyGet(offset: number, eight = false): Promise<bigint> {
    const b = sqe(0x7f); b[4] = 0x04; b[40] = eight ? 1 : 0; b.writeUInt32LE(offset, 44);
    const c = await this.admin.command(b);
    if (c.status !== 0) throw new Error(`property get status ${c.status}`);
    return BigInt(c.dw0) | (BigInt(c.dw1) << 32n);
  }

  async propertySet(offset: number, value: number): Promise<void> {
    const b = sqe(0x7f); b[4] = 0x00; b.writeUInt32LE(offset, 44); b.writeUInt32LE(value, 48);
    const c = await this.admin.command(b);
    if (c.status !== 0) throw new Error(`property set status ${c.status}`);
  }

  async identify(cns: number, nsid = 0): Promise<Completion> {
    const b = sqe(0x06, nsid); b.writeUInt32LE(cns, 40);
    return this.admin.command(b, { readBytes: 4096 });
  }

  async getLogPage(lid: number, bytes: number, offset = 0): Promise<Completion> {
    const b = sqe(0x02, 0xffffffff);
    const numd = bytes / 4 - 1;
    b.writeUInt32LE(lid | ((numd & 0xffff) << 16), 40);
    b.writeUInt32LE(numd >>> 16, 44);
    b.writeBigUInt64LE(BigInt(offset), 48);
    return this.admin.command(b, { readBytes: bytes });
  }

  close(): void { for (const c of [this.admin, ...this.io]) c.close(); }
}
