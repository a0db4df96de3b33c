// Encoding of the PDUs the target sends (ICResp, CapsuleResp, C2HData headers, R2T, C2HTermReq) and
// the CRC32C digests of both directions (NVMe/TCP 1.0 "Header and Data Digests": HDGST covers the
// header, DDGST the data, each placed right after what it covers, little endian).
import { crc32c } from '@node-rs/crc32';
import * as c from './constants.js';

/** CRC32C over a gather list (views of the receive queue), as the data digest covers them. */
export function crc32cOf(parts: readonly Buffer[]): number {
  let crc = 0;
  for (const part of parts) crc = crc32c(part, crc);
  return crc;
}

/** Writes the common header at 0 and, when digests are on, the header digest after `hlen`. */
function commonHeader(buf: Buffer, type: number, flags: number, hlen: number, pdo: number, plen: number): void {
  buf[0] = type;
  buf[1] = flags;
  buf[2] = hlen;
  buf[3] = pdo;
  buf.writeUInt32LE(plen, 4);
}

function sealHeader(buf: Buffer, hlen: number, headerDigest: boolean): void {
  if (headerDigest) buf.writeUInt32LE(crc32c(buf.subarray(0, hlen)), hlen);
}

export function icResp(digestFlags: number): Buffer {
  const buf = Buffer.alloc(c.IC_HEADER_BYTES);
  commonHeader(buf, c.PDU_IC_RESP, 0, c.IC_HEADER_BYTES, 0, c.IC_HEADER_BYTES);
  buf.writeUInt16LE(c.PFV, 8);
  buf[10] = 0; // CPDA: no padding before our data
  buf[11] = digestFlags;
  buf.writeUInt32LE(c.MAXH2CDATA_BYTES, 12);
  return buf;
}

// The small PDUs below are encoded in place, into a connection's send arena (connection.ts), so a
// response costs no allocation of its own and a round of them leaves in one socket write.

/** Bytes of a CapsuleResp, an R2T, or a C2HData header (each 24 bytes + the header digest). */
export function smallPduBytes(headerDigest: boolean): number { return 24 + (headerDigest ? c.DIGEST_BYTES : 0); }

/**
 * A CapsuleResp carrying one CQE, at `buf[at]`. `status` is the status field without the phase bit
 * ((DNR<<14)|(M<<13)|(SCT<<8)|SC, status.ts); it goes to CQE bytes 14..15 shifted left by one.
 */
export function capsuleRespInto(buf: Buffer, at: number, headerDigest: boolean, cid: number, sqid: number, sqhd: number, status: number, dw0: number, dw1: number): void {
  const hlen = c.CAPSULE_RESP_HEADER_BYTES;
  const pdu = buf.subarray(at, at + smallPduBytes(headerDigest));
  commonHeader(pdu, c.PDU_CAPSULE_RESP, headerDigest ? c.FLAG_HDGST : 0, hlen, 0, pdu.length);
  pdu.writeUInt32LE(dw0 >>> 0, 8);
  pdu.writeUInt32LE(dw1 >>> 0, 12);
  pdu.writeUInt16LE(sqhd, 16);
  pdu.writeUInt16LE(sqid, 18);
  pdu.writeUInt16LE(cid, 20);
  pdu.writeUInt16LE((status << 1) & 0xffff, 22);
  sealHeader(pdu, hlen, headerDigest);
}

/** The header (with its digest) of a C2HData PDU carrying `dataBytes` at `offsetBytes` of the command's data, at `buf[at]`. */
export function c2hDataHeaderInto(buf: Buffer, at: number, headerDigest: boolean, dataDigest: boolean, cid: number, offsetBytes: number, dataBytes: number, flags: number): void {
  const hlen = c.DATA_HEADER_BYTES;
  const pdo = smallPduBytes(headerDigest);
  const pdu = buf.subarray(at, at + pdo);
  commonHeader(pdu, c.PDU_C2H_DATA, flags | (headerDigest ? c.FLAG_HDGST : 0) | (dataDigest ? c.FLAG_DDGST : 0), hlen, pdo, pdo + dataBytes + (dataDigest ? c.DIGEST_BYTES : 0));
  pdu.writeUInt16LE(cid, 8);
  pdu.writeUInt16LE(0, 10);
  pdu.writeUInt32LE(offsetBytes, 12);
  pdu.writeUInt32LE(dataBytes, 16);
  pdu.writeUInt32LE(0, 20);
  sealHeader(pdu, hlen, headerDigest);
}

export function r2tInto(buf: Buffer, at: number, headerDigest: boolean, cid: number, ttag: number, offsetBytes: number, lengthBytes: number): void {
  const hlen = c.R2T_HEADER_BYTES;
  const pdu = buf.subarray(at, at + smallPduBytes(headerDigest));
  commonHeader(pdu, c.PDU_R2T, headerDigest ? c.FLAG_HDGST : 0, hlen, 0, pdu.length);
  pdu.writeUInt16LE(cid, 8);
  pdu.writeUInt16LE(ttag, 10);
  pdu.writeUInt32LE(offsetBytes, 12);
  pdu.writeUInt32LE(lengthBytes, 16);
  pdu.writeUInt32LE(0, 20);
  sealHeader(pdu, hlen, headerDigest);
}

/**
 * A C2HTermReq: the fatal error status, its field information (FEI: for an invalid header field, the
 * byte offset of the field; for a data limit, the limit), and the start of the offending header.
 * Sent without digests (the spec: a TermReq never carries them, whatever was negotiated).
 */
export function c2hTermReq(fes: number, fei: number, offending: Buffer): Buffer {
  const data = offending.subarray(0, c.TERM_REQ_DATA_BYTES_MAX);
  const plen = c.TERM_HEADER_BYTES + data.length;
  const buf = Buffer.alloc(plen);
  commonHeader(buf, c.PDU_C2H_TERM_REQ, 0, c.TERM_HEADER_BYTES, 0, plen);
  buf.writeUInt16LE(fes, 8);
  buf.writeUInt32LE(fei >>> 0, 10);
  data.copy(buf, c.TERM_HEADER_BYTES);
  return buf;
}

/** The expected header length of each PDU type a host may send, or null for a type it may not send. */
export function hostHeaderBytes(type: number): number | null {
  switch (type) {
    case c.PDU_IC_REQ: return c.IC_HEADER_BYTES;
    case c.PDU_CAPSULE_CMD: return c.CAPSULE_CMD_HEADER_BYTES;
    case c.PDU_H2C_DATA: return c.DATA_HEADER_BYTES;
    case c.PDU_H2C_TERM_REQ: return c.TERM_HEADER_BYTES;
    default: return null;
  }
}
