// Device on a regular (sparse) file or a raw block device. Small I/O that the page cache serves runs
// inline on the event loop; large I/O, and small I/O while the page cache is missing, goes through
// libuv's thread pool (so checksums on the main thread overlap with disk work on the others). Every
// WRITEBACK_START_BYTES written, the kernel is asked to start writing the file's dirty pages back
// (native/writeback.c), so a commit's fdatasync does not meet hundreds of MiB at once.
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants, readSync, writeSync, writevSync } from 'node:fs';
import {
  BLOCK_SIZE_BYTES, INLINE_IO_BYTES_MAX, PREALLOCATE_CHUNK_BYTES as ZERO_CHUNK_BYTES, PREALLOCATE_WRITES_IN_FLIGHT_MAX as ZERO_WRITES_IN_FLIGHT, READ_SLOW_FIXED_NS,
  WRITE_SLOW_FIXED_NS, WRITEBACK_START_BYTES, DURABLE_WRITE_SLOW_FIXED_NS,
} from '../constants.js';
import type { Device, DeviceIoCounts } from './device.js';
import { InvalidArgument, IoError, assert, fail } from '../errors.js';
import { InlineIoPolicy } from './inline-io.js';
import { nativeAddon } from '../native.js';

export { WRITEBACK_START_BYTES };

/** The buffers left after the first `bytes` bytes were written. */
function dropBytes(buffers: Buffer[], bytes: number): Buffer[] {
  assert(bytes > 0, 'a write made progress'); // a zero-byte write would loop forever
  const out: Buffer[] = [];
  let skip = bytes;
  for (const b of buffers) {
    if (skip >= b.length) { skip -= b.length; continue; }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}


/** Writes zeros over [0, sizeBytes) of the file and flushes them. */
async function writeZeros(handle: FileHandle, sizeBytes: number): Promise<void> {
  assert(sizeBytes > 0 && sizeBytes % BLOCK_SIZE_BYTES === 0, 'a pool file of whole blocks');
  const zeros = Buffer.alloc(Math.min(ZERO_CHUNK_BYTES, sizeBytes));
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    try {
      while (next < sizeBytes && !failed) {
        const at = next;
        const length = Math.min(zeros.length, sizeBytes - at);
        next += length;
        let done = 0;
        while (done < length) done += (await handle.write(zeros, done, length - done, at + done)).bytesWritten;
      }
    } catch (err) {
      failed = true; // the other writers stop too: the caller closes the file only once all have
      throw err;
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: ZERO_WRITES_IN_FLIGHT }, worker));
  for (const s of settled) if (s.status === 'rejected') throw s.reason;
  await handle.datasync();
}

/** Size of an open file or raw device in bytes. */
async function sizeOf(handle: FileHandle): Promise<{ sizeBytes: number; isBlockDevice: boolean }> {
  const stat = await handle.stat();
  assert(stat.size >= 0, 'a file size is non-negative');
  if (!stat.isBlockDevice()) return { sizeBytes: stat.size, isBlockDevice: false };
  // A raw device reports size 0 through stat; its end is found by seeking.
  const probe = Buffer.alloc(1);
  let lo = 0, hi = 2 ** 50;
  while (lo < hi) {
    const mid = Math.floor((lo + hi + 1) / 2);
    const { bytesRead } = await handle.read(probe, 0, 1, mid - 1);
    if (bytesRead === 1) lo = mid; else hi = mid - 1;
  }
  return { sizeBytes: lo, isBlockDevice: true };
}

export class FileDevice implements Device {
  sizeBlocks: number;
  /** Reads and writes learn separately: a cold read and a throttled write are different stalls. */
  readonly inlineReads = new InlineIoPolicy(READ_SLOW_FIXED_NS);
  readonly inlineWrites = new InlineIoPolicy(WRITE_SLOW_FIXED_NS);
  /** Durable writes (a log round carrying its data inline): on the loop while they take < 3 ms. */
  readonly inlineDurableWrites = new InlineIoPolicy(DURABLE_WRITE_SLOW_FIXED_NS);
  /** The same file opened with O_DSYNC, on first use: a write through it is durable alone (false: none). */
  private dsync: FileHandle | false | null = null;
  private pooledDurableWrites = 0;
  /** Write-back starts requested so far (0 without the native addon, which has the call). */
  writebackStarts = 0;
  /** Reads and writes sent to libuv's thread pool (the inline ones are counted by their policies). */
  private pooledReads = 0;
  private pooledWrites = 0;
  /** Reads served by readCachedAll, which is used while the addon has it and the file accepts it. */
  private cachedReads = 0;
  private cachedOnlyReads = nativeAddon.preadNowait !== undefined;
  private bytesSinceWriteback = 0;
  private writebackRunning: Promise<void> | null = null;
  private constructor(private readonly handle: FileHandle, sizeBlocks: number, readonly path: string, readonly isBlockDevice = false) {
    assert(Number.isSafeInteger(sizeBlocks) && sizeBlocks >= 0, 'a device of whole blocks');
    this.sizeBlocks = sizeBlocks;
  }

  /**
   * A new file of `sizeBlocks`: sparse, or with `preallocate` every byte written (zeros) before the
   * pool is formatted on it, so the filesystem has allocated all of it (no ENOSPC from the host later)
   * and no data write is the first into its part of the file (see docs/performance.md, "Pool files and first writes").
   */
  static async create(path: string, sizeBlocks: number, preallocate = false): Promise<FileDevice> {
    assert(Number.isSafeInteger(sizeBlocks) && sizeBlocks > 0, 'a new pool file has blocks');
    const handle = await open(path, 'wx+');
    try {
      await handle.truncate(sizeBlocks * BLOCK_SIZE_BYTES);
      if (preallocate) await writeZeros(handle, sizeBlocks * BLOCK_SIZE_BYTES);
    } catch (err) {
      // A half-written new file is no pool: remove it, so that a retry does not open it as one.
      await handle.close();
      // Best effort: the IoError below names the cause; a file that cannot be removed either is the
      // same failure of the host filesystem, and a retry reports it again.
      await unlink(path).catch(() => undefined);
      throw new IoError(`cannot lay down the pool file ${path} (${sizeBlocks * BLOCK_SIZE_BYTES} bytes${preallocate ? ', preallocated' : ''}): ${(err as Error).message}`);
    }
    return new FileDevice(handle, sizeBlocks, path);
  }

  static async open(path: string): Promise<FileDevice> {
    const handle = await open(path, 'r+');
    const { sizeBytes, isBlockDevice } = await sizeOf(handle);
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, 'a device size in bytes');
    return new FileDevice(handle, Math.floor(sizeBytes / BLOCK_SIZE_BYTES), path, isBlockDevice);
  }

  async refreshSize(): Promise<number> {
    this.sizeBlocks = Math.floor((await sizeOf(this.handle)).sizeBytes / BLOCK_SIZE_BYTES);
    assert(Number.isSafeInteger(this.sizeBlocks) && this.sizeBlocks >= 0, 'a device of whole blocks');
    return this.sizeBlocks;
  }

  /**
   * The device boundary: the engine reads and writes whole blocks inside the device, never past its
   * end (a write there would grow a pool file silently; a read would come back short).
   */
  private assertSpan(blockNumber: number, bytes: number): void {
    if (!(blockNumber >= 0 && bytes % BLOCK_SIZE_BYTES === 0 && blockNumber + bytes / BLOCK_SIZE_BYTES <= this.sizeBlocks)) {
      fail(`device I/O of ${bytes} bytes at block ${blockNumber} outside the device's ${this.sizeBlocks} blocks`);
    }
  }

  readIfCheap(blockNumber: number, into: Buffer): boolean {
    this.assertSpan(blockNumber, into.length);
    if (this.cachedOnlyReads && into.length <= INLINE_IO_BYTES_MAX) {
      const cached = this.readCachedAll(blockNumber, into);
      if (cached !== null) return cached;
    }
    if (!this.inlineReads.allows(into.length)) return false;
    this.inlineReads.run(into.length, () => this.readSyncAll(blockNumber, into));
    return true;
  }

  readRunsIfCheap(plan: Float64Array, count: number, into: Buffer): number {
    const preadRuns = nativeAddon.preadRunsNowait;
    if (!this.cachedOnlyReads || preadRuns === undefined) return 0;
    let batch = 0;
    for (; batch < count; batch++) {
      const bytes = plan[3 * batch + 1]! * BLOCK_SIZE_BYTES;
      // A long run is read alone (readIfCheap), under the same bound as any cached-only read.
      if (bytes > INLINE_IO_BYTES_MAX) break;
      this.assertSpan(plan[3 * batch]!, bytes);
    }
    if (batch === 0) return 0;
    const read = preadRuns(this.handle.fd, into, plan, batch);
    if (read === -2) { this.cachedOnlyReads = false; return 0; }
    assert(Number.isInteger(read) && read >= 0 && read <= batch, 'a batch reads a prefix of its runs');
    this.cachedReads += read;
    return read;
  }

  /**
   * Reads `into` from the page cache alone (native/nowait-read.c): true when it did, false when some
   * of it is not cached (the caller reads it through the thread pool), null when the file refuses
   * such reads (from then on reads are timed instead). No timing: a read the scheduler preempted is
   * still a cached one.
   */
  private readCachedAll(blockNumber: number, into: Buffer): boolean | null {
    const preadNowait = nativeAddon.preadNowait;
    assert(preadNowait !== undefined && into.length > 0, 'a cached-only read of some bytes, with the addon');
    const position = blockNumber * BLOCK_SIZE_BYTES;
    let done = 0;
    while (done < into.length) {
      const n = preadNowait(this.handle.fd, done === 0 ? into : into.subarray(done), position + done);
      if (n === -2) { this.cachedOnlyReads = false; return null; }
      if (n === -1) return false;
      if (n === 0) throw new IoError(`short read at block ${blockNumber} (device ends)`);
      done += n;
    }
    this.cachedReads++;
    return true;
  }

  async read(blockNumber: number, into: Buffer): Promise<void> {
    this.assertSpan(blockNumber, into.length);
    if (this.readIfCheap(blockNumber, into)) return;
    this.pooledReads++;
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.handle.read(into, done, into.length - done, blockNumber * BLOCK_SIZE_BYTES + done);
      if (bytesRead === 0) throw new IoError(`short read at block ${blockNumber} (device ends)`);
      done += bytesRead;
    }
    assert(done === into.length, 'a read fills its buffer, no more');
  }

  private readSyncAll(blockNumber: number, into: Buffer): void {
    assert(into.length > 0, 'a read of some bytes');
    let done = 0;
    while (done < into.length) {
      const n = readSync(this.handle.fd, into, done, into.length - done, blockNumber * BLOCK_SIZE_BYTES + done);
      if (n === 0) throw new IoError(`short read at block ${blockNumber} (device ends)`);
      done += n;
    }
  }

  async write(blockNumber: number, data: Buffer): Promise<void> {
    this.assertSpan(blockNumber, data.length);
    this.wrote(data.length);
    if (this.inlineWrites.allows(data.length)) return this.inlineWrites.run(data.length, () => this.writeSyncAll(blockNumber * BLOCK_SIZE_BYTES, [data]));
    this.pooledWrites++;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, blockNumber * BLOCK_SIZE_BYTES + done);
      done += bytesWritten;
    }
    assert(done === data.length, 'a write writes its buffer, no more');
  }

  /** Positional write on the event loop thread (see inline-io.ts). Durability comes only from flush(). */
  private writeSyncAll(position: number, buffers: Buffer[]): void {
    assert(position >= 0 && buffers.length > 0, 'a positional write of some buffers');
    let rest = buffers;
    while (rest.length > 0) {
      const written = rest.length === 1 ? writeSync(this.handle.fd, rest[0]!, 0, rest[0]!.length, position) : writevSync(this.handle.fd, rest, position);
      position += written;
      rest = dropBytes(rest, written);
    }
  }

  /** Gathers several buffers into one positional write (pwritev). */
  async writev(blockNumber: number, buffers: Buffer[]): Promise<void> {
    const total = buffers.reduce((n, b) => n + b.length, 0);
    this.assertSpan(blockNumber, total);
    this.wrote(total);
    if (this.inlineWrites.allows(total)) return this.inlineWrites.run(total, () => this.writeSyncAll(blockNumber * BLOCK_SIZE_BYTES, buffers));
    this.pooledWrites++;
    let position = blockNumber * BLOCK_SIZE_BYTES;
    let rest = buffers;
    while (rest.length > 0) {
      const { bytesWritten } = await this.handle.writev(rest, position);
      position += bytesWritten;
      rest = dropBytes(rest, bytesWritten);
    }
    assert(position === (blockNumber * BLOCK_SIZE_BYTES) + total, 'a gathered write writes its buffers, no more');
  }

  /** Starts write-back once enough was written; one request at a time, never awaited by a write. */
  private wrote(bytes: number): void {
    assert(bytes > 0, 'a write of some bytes');
    this.bytesSinceWriteback += bytes;
    const start = nativeAddon.startWriteback;
    if (this.bytesSinceWriteback < WRITEBACK_START_BYTES || this.writebackRunning || !start) return;
    this.bytesSinceWriteback = 0;
    this.writebackStarts++;
    // A failed start loses nothing: the dirty pages stay, and the commit's fdatasync writes them and
    // reports any I/O error.
    this.writebackRunning = start(this.handle.fd).catch(() => undefined).finally(() => { this.writebackRunning = null; });
  }

  ioCounts(): DeviceIoCounts {
    assert(this.pooledReads >= 0 && this.pooledWrites >= 0, 'I/O counts only grow');
    return {
      inlineReads: this.inlineReads.calls + this.cachedReads, pooledReads: this.pooledReads, slowInlineReads: this.inlineReads.slowCalls,
      inlineWrites: this.inlineWrites.calls + this.inlineDurableWrites.calls, pooledWrites: this.pooledWrites + this.pooledDurableWrites,
      slowInlineWrites: this.inlineWrites.slowCalls + this.inlineDurableWrites.slowCalls,
    };
  }

  async flush(): Promise<void> { await this.handle.datasync(); }

  /**
   * The open file itself again, through /proc (its path may name another file by now: a pool file is
   * laid down under a temporary name, and a path can be replaced), checked to be the same inode. False
   * where that fails: durable writes then write and sync.
   */
  private async openDsync(): Promise<FileHandle | false> {
    assert(this.dsync === null, 'the O_DSYNC descriptor is opened once');
    const handle = await open(`/proc/self/fd/${this.handle.fd}`, fsConstants.O_WRONLY | fsConstants.O_DSYNC).catch(() => null);
    if (handle === null) return false;
    const [a, b] = await Promise.all([this.handle.stat(), handle.stat()]);
    if (a.dev === b.dev && a.ino === b.ino) return handle;
    await handle.close();
    return false;
  }

  /**
   * Writes `data` through the O_DSYNC descriptor: durable when it returns, without waiting for the
   * other dirty pages of the file the way fdatasync does. A thread-pool round trip costs ~100 µs of
   * latency on the VMs measured (docs/performance.md), as much as the sync itself: while such writes
   * finish within 3 ms they run on the loop (inline-io.ts backs off when one does not).
   */
  async writeDurable(blockNumber: number, data: Buffer): Promise<void> {
    this.assertSpan(blockNumber, data.length);
    const dsync = this.dsync ??= await this.openDsync();
    if (dsync === false) {
      await this.write(blockNumber, data);
      return this.flush();
    }
    const position = blockNumber * BLOCK_SIZE_BYTES;
    if (this.inlineDurableWrites.allows(data.length)) {
      return this.inlineDurableWrites.run(data.length, () => {
        let done = 0;
        while (done < data.length) done += writeSync(dsync.fd, data, done, data.length - done, position + done);
        assert(done === data.length, 'a durable write is written whole');
      });
    }
    this.pooledDurableWrites++;
    let done = 0;
    while (done < data.length) done += (await dsync.write(data, done, data.length - done, position + done)).bytesWritten;
    assert(done === data.length, 'a durable write is written whole');
  }

  async resize(sizeBlocks: number): Promise<void> {
    assert(Number.isSafeInteger(sizeBlocks) && sizeBlocks > 0, 'a device of whole blocks');
    // A raw device's size belongs to its owner (LVM, the partition table): enlarge it there.
    if (this.isBlockDevice) throw new InvalidArgument(`${this.path} is a block device: enlarge it with its own tools (e.g. lvextend), then grow without a size`);
    await this.handle.truncate(sizeBlocks * BLOCK_SIZE_BYTES);
    this.sizeBlocks = sizeBlocks;
  }

  async close(): Promise<void> {
    assert(this.bytesSinceWriteback >= 0, 'write-back bytes are counted');
    await this.writebackRunning; // it holds the descriptor's number
    if (this.dsync) await this.dsync.close();
    await this.handle.close();
  }
}
