// A receive buffer made of the socket's chunks, parsed in place: headers are read from the chunk they
// sit in (copied into a reused scratch buffer only when split across chunks), and payloads are handed
// out as views of the chunks they arrived in (a gather list for the engine), so nothing is copied.
import { assert } from '../engine/errors.js';

export class RecvQueue {
  private chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private headOffsetBytes = 0;
  private lengthBytes = 0;
  private readonly scratch: Buffer;

  constructor(scratchBytes: number) {
    this.scratch = Buffer.allocUnsafe(scratchBytes);
  }

  get length(): number { return this.lengthBytes; }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.lengthBytes += chunk.length;
  }

  /**
   * The next `n` bytes without consuming them, as [buffer, offset]. Valid until the next push/take.
   * n must not exceed the scratch size.
   */
  peek(n: number): [Buffer, number] {
    assert(n <= this.lengthBytes && n <= this.scratch.length, 'peek within buffered bytes and scratch');
    const first = this.chunks[0];
    if (first.length - this.headOffsetBytes >= n) return [first, this.headOffsetBytes];
    this.copyOut(this.scratch, n);
    return [this.scratch, 0];
  }

  /** Consumes `n` bytes and returns them; a view when they sit in one chunk, else one copy. */
  take(n: number): Buffer {
    assert(n <= this.lengthBytes, 'take within buffered bytes');
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length - this.headOffsetBytes >= n) {
      const view = first.subarray(this.headOffsetBytes, this.headOffsetBytes + n);
      this.skip(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, n);
    this.skip(n);
    return out;
  }

  /** Consumes `n` bytes as views of the chunks holding them (no copy). */
  takeViews(n: number): Buffer[] {
    assert(n <= this.lengthBytes, 'take within buffered bytes');
    const views: Buffer[] = [];
    let remaining = n;
    while (remaining > 0) {
      const first = this.chunks[0];
      const count = Math.min(first.length - this.headOffsetBytes, remaining);
      views.push(first.subarray(this.headOffsetBytes, this.headOffsetBytes + count));
      this.skip(count);
      remaining -= count;
    }
    return views;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let remaining = Math.min(n, this.lengthBytes);
    const dropped = remaining;
    while (remaining > 0) {
      const first = this.chunks[0];
      const available = first.length - this.headOffsetBytes;
      if (available > remaining) {
        this.headOffsetBytes += remaining;
        remaining = 0;
      } else {
        remaining -= available;
        this.chunks.shift();
        this.headOffsetBytes = 0;
      }
    }
    this.lengthBytes -= dropped;
    return dropped;
  }

  /** Removes and returns everything buffered (used to hand bytes back before a TLS upgrade). */
  drain(): Buffer {
    const out = this.take(this.lengthBytes);
    return Buffer.from(out);
  }

  private copyOut(target: Buffer, n: number): void {
    let copied = 0;
    let offset = this.headOffsetBytes;
    for (const chunk of this.chunks) {
      const count = Math.min(chunk.length - offset, n - copied);
      chunk.copy(target, copied, offset, offset + count);
      copied += count;
      offset = 0;
      if (copied === n) return;
    }
  }
}
