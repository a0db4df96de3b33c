// Bounds-checked reading of option data: every field read past the end marks the reader not ok
// instead of throwing, so malformed options get NBD_REP_ERR_INVALID and the session continues.
import { STRING_BYTES_MAX } from './constants.js';

export class OptionReader {
  private positionBytes = 0;
  ok = true;

  constructor(private readonly data: Buffer) {}

  u16(): number | null {
    if (!this.has(2)) return null;
    const value = this.data.readUInt16BE(this.positionBytes);
    this.positionBytes += 2;
    return value;
  }

  u32(): number | null {
    if (!this.has(4)) return null;
    const value = this.data.readUInt32BE(this.positionBytes);
    this.positionBytes += 4;
    return value;
  }

  /** A string preceded by its 32-bit length; at most STRING_BYTES_MAX bytes, no NUL (proto.md). */
  string32(): string | null {
    const lengthBytes = this.u32();
    if (lengthBytes === null) return null;
    if (lengthBytes > STRING_BYTES_MAX || !this.has(lengthBytes)) { this.ok = false; return null; }
    const bytes = this.data.subarray(this.positionBytes, this.positionBytes + lengthBytes);
    this.positionBytes += lengthBytes;
    if (bytes.includes(0)) { this.ok = false; return null; }
    return bytes.toString('utf8');
  }

  atEnd(): boolean { return this.positionBytes === this.data.length; }

  private has(n: number): boolean {
    if (this.ok && this.positionBytes + n <= this.data.length) return true;
    this.ok = false;
    return false;
  }
}
