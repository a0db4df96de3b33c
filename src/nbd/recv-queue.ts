// A receive buffer made of the socket's chunks, parsed in place: headers are read from the chunk they
// sit in (copied into a reused scratch buffer only when split across chunks), and payloads are handed
// out as views of the chunks they arrived in (a gather list for the engine), so nothing is copied.
// A chunk read into a slab (recv-slabs.ts) holds a reference on it until every byte is consumed, and
// a payload taken from it holds another until its request is done.
import { assert } from '../engine/index.js';
import type { Slab } from './recv-slabs.js';

export class RecvQueue {
  private chunks: Buffer[] = [];
  /** The slab each chunk sits in (null for a chunk Node allocated). */
  private owners: (Slab | null)[] = [];
  /** Read position inside chunks[0]. */
  private headOffsetBytes = 0;
  private lengthBytes = 0;
  private readonly scratch: Buffer;

  constructor(scratchBytes: number) {
    this.scratch = Buffer.allocUnsafe(scratchBytes);
  }

  get length(): number { return this.lengthBytes; }

  push(chunk: Buffer, slab: Slab | null = null): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.owners.push(slab);
    slab?.ref();
    this.lengthBytes += chunk.length;
  }

  /**
   * The next `n` bytes without consuming them, as [buffer, offset]. Valid until the next push/take.
   * n must not exceed the scratch size.
   */
  peek(n: number): [Buffer, number] {
    assert(n <= this.lengthBytes && n <= this.scratch.length, 'peek within buffered bytes and scratch');
    const first = this.chunks[0]!;
    if (first.length - this.headOffsetBytes >= n) return [first, this.headOffsetBytes];
    this.copyOut(this.scratch, n);
    return [this.scratch, 0];
  }

  /** Consumes `n` bytes and returns a copy of them (the handshake keeps what it reads). */
  take(n: number): Buffer {
    assert(n <= this.lengthBytes, 'take within buffered bytes');
    if (n === 0) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, n);
    this.skip(n);
    return out;
  }

  /**
   * Consumes `n` bytes as views of the chunks holding them (no copy). Each slab they sit in gets a
   * reference, listed in `pins`, that the caller drops when done with the views.
   */
  takeViews(n: number, pins: Slab[]): Buffer[] {
    assert(n <= this.lengthBytes, 'take within buffered bytes');
    const views: Buffer[] = [];
    let remaining = n;
    while (remaining > 0) {
      const first = this.chunks[0]!;
      const owner = this.owners[0];
      const count = Math.min(first.length - this.headOffsetBytes, remaining);
      views.push(first.subarray(this.headOffsetBytes, this.headOffsetBytes + count));
      if (owner && pins[pins.length - 1] !== owner) { owner.ref(); pins.push(owner); }
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
      const first = this.chunks[0]!;
      const available = first.length - this.headOffsetBytes;
      if (available > remaining) {
        this.headOffsetBytes += remaining;
        remaining = 0;
      } else {
        remaining -= available;
        this.chunks.shift();
        this.owners.shift()?.unref();
        this.headOffsetBytes = 0;
      }
    }
    this.lengthBytes -= dropped;
    return dropped;
  }

  /** Drops everything buffered (the connection is gone), releasing the slabs it sat in. */
  clear(): void { this.skip(this.lengthBytes); }

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
