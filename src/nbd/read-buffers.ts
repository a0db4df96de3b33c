// Buffers for READ replies, reused once the socket has taken the reply. A fresh 1 MiB buffer per read
// costs page faults and garbage collection (Node allocates it outside its small-buffer pool); a buffer
// that was filled and sent before is warm. Sizes are powers of two from 4 KiB, and the pool keeps at
// most `pooledBytesMax` bytes: beyond that, released buffers are left to the garbage collector.

import { READ_BUFFER_CLASS_BYTES_MIN as CLASS_BYTES_MIN } from './constants.js';

export class ReadBufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  constructor(private readonly pooledBytesMax: number) {}

  /** A buffer of at least `bytes` (its length is the size class). */
  acquire(bytes: number): Buffer {
    const size = classOf(bytes);
    const list = this.free.get(size);
    const buf = list?.pop();
    if (buf) { this.pooledBytes -= size; return buf; }
    return Buffer.allocUnsafeSlow(size);
  }

  /** Gives back a buffer from acquire() that nothing references any more. */
  release(buf: Buffer): void {
    if (buf.length !== classOf(buf.length) || this.pooledBytes + buf.length > this.pooledBytesMax) return;
    let list = this.free.get(buf.length);
    if (!list) this.free.set(buf.length, (list = []));
    list.push(buf);
    this.pooledBytes += buf.length;
  }

  get bytesPooled(): number { return this.pooledBytes; }
}

function classOf(bytes: number): number {
  let size = CLASS_BYTES_MIN;
  while (size < bytes) size *= 2;
  return size;
}
