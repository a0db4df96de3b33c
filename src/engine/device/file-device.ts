// Device on a regular (sparse) file or a raw block device, with positional I/O through libuv's
// thread pool (so checksums on the main thread overlap with disk work on the others).
import { open, type FileHandle } from 'node:fs/promises';
import { BLOCK_SIZE_BYTES } from '../types.js';
import type { Device } from './device.js';
import { IoError } from '../errors.js';

export class FileDevice implements Device {
  sizeBlocks: number;
  private constructor(private readonly handle: FileHandle, sizeBlocks: number, readonly path: string) {
    this.sizeBlocks = sizeBlocks;
  }

  static async create(path: string, sizeBlocks: number): Promise<FileDevice> {
    const handle = await open(path, 'wx+');
    await handle.truncate(sizeBlocks * BLOCK_SIZE_BYTES);
    return new FileDevice(handle, sizeBlocks, path);
  }

  static async open(path: string): Promise<FileDevice> {
    const handle = await open(path, 'r+');
    const stat = await handle.stat();
    let sizeBytes = stat.size;
    if (stat.isBlockDevice()) {
      // A raw device reports size 0 through stat; its end is found by seeking.
      const probe = Buffer.alloc(1);
      let lo = 0, hi = 2 ** 50;
      while (lo < hi) {
        const mid = Math.floor((lo + hi + 1) / 2);
        const { bytesRead } = await handle.read(probe, 0, 1, mid - 1);
        if (bytesRead === 1) lo = mid; else hi = mid - 1;
      }
      sizeBytes = lo;
    }
    return new FileDevice(handle, Math.floor(sizeBytes / BLOCK_SIZE_BYTES), path);
  }

  async read(blockNumber: number, into: Buffer): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.handle.read(into, done, into.length - done, blockNumber * BLOCK_SIZE_BYTES + done);
      if (bytesRead === 0) throw new IoError(`short read at block ${blockNumber} (device ends)`);
      done += bytesRead;
    }
  }

  async write(blockNumber: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, blockNumber * BLOCK_SIZE_BYTES + done);
      done += bytesWritten;
    }
  }

  /** Gathers several buffers into one positional write (pwritev). */
  async writev(blockNumber: number, buffers: Buffer[]): Promise<void> {
    let position = blockNumber * BLOCK_SIZE_BYTES;
    let rest = buffers;
    while (rest.length > 0) {
      const { bytesWritten } = await this.handle.writev(rest, position);
      position += bytesWritten;
      let skip = bytesWritten;
      const next: Buffer[] = [];
      for (const b of rest) {
        if (skip >= b.length) { skip -= b.length; continue; }
        next.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
      rest = next;
    }
  }

  async flush(): Promise<void> { await this.handle.datasync(); }

  async resize(sizeBlocks: number): Promise<void> {
    await this.handle.truncate(sizeBlocks * BLOCK_SIZE_BYTES);
    this.sizeBlocks = sizeBlocks;
  }

  async close(): Promise<void> { await this.handle.close(); }
}
