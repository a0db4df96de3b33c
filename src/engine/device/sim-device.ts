// The simulated device: in memory, deterministic (driven by an injected Prng), fault-injecting.
// It keeps, per block, the durable content and the volatile (written, not yet flushed) content,
// and can "cut the power" (crash) keeping only what a real disk may keep, flip bits and fail I/O.
// Stored buffers are never mutated in place (a bit flip stores a new copy), so crash images share them.

import { BLOCK_SIZE_BYTES } from '../types.js';
import { assert, fail } from '../errors.js';
import type { Device } from './device.js';
import { Prng } from './prng.js';

export type CrashMode = 'clean' | 'some' | 'torn';

/** Sector size a torn block is cut at: disks tear writes at sector granularity. */
const tornSectorBytes = 512;
/** readRunsIfCheap: the chance that a run is "not cached" and ends the batch (both paths get exercised). */
const CHEAP_READ_MISS_PROBABILITY = 0.3;

export interface SimDeviceCounters {
  reads: number;
  writes: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  failedReads: number;
  failedWrites: number;
  failedFlushes: number;
}

export interface FaultProbability { read: number; write: number; flush: number }

export interface BitFlip { blockNumber: number; bitIndex: number }

/** What a crash kept, for failure messages. */
export interface CrashReport {
  mode: CrashMode;
  pendingWrites: number;
  appliedWrites: number;
  tornWrite: number | null;
  tornBlock: number | null;
}

/** One unflushed device write (a copy of the caller's buffer). */
interface PendingWrite { blockNumber: number; data: Buffer }

export class SimError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'SimError';
    assert(code.startsWith('E'), 'a simulated error has an errno-style code');
    this.code = code;
  }
}

const zeroBlock = Buffer.alloc(BLOCK_SIZE_BYTES);

export class SimDevice implements Device {
  private sizeBlocksNow: number;
  private readonly prng: Prng;
  private durable = new Map<number, Buffer>();
  /** Latest unflushed content per block; a view into the matching pending write's buffer. */
  private volatile = new Map<number, Buffer>();
  private pending: PendingWrite[] = [];
  private closed = false;
  private failReadsLeft = 0;
  private failWritesLeft = 0;
  private failFlushesLeft = 0;
  private faultProbability: FaultProbability = { read: 0, write: 0, flush: 0 };
  readonly counters: SimDeviceCounters = {
    reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0,
    failedReads: 0, failedWrites: 0, failedFlushes: 0,
  };
  lastCrash: CrashReport | null = null;
  /** Each op waits 0..this many microtask turns (seeded): concurrent ops complete out of order. */
  jitterTicksMax = 0;
  /** Device writes+flushes still to go before the armed power cut; -1: none armed. */
  private crashCountdown = -1;
  private crashModeArmed: CrashMode = 'clean';
  private armedImage: SimDevice | null = null;

  constructor(sizeBlocks: number, prng: Prng) {
    if (!Number.isInteger(sizeBlocks) || sizeBlocks < 0) throw new RangeError(`bad sizeBlocks ${sizeBlocks}`);
    this.sizeBlocksNow = sizeBlocks;
    this.prng = prng;
    assert(this.durable.size === 0 && this.pending.length === 0, 'a new device holds nothing');
  }

  get sizeBlocks(): number {
    assert(this.sizeBlocksNow >= 0, 'device size is non-negative');
    return this.sizeBlocksNow;
  }

  async read(blockNumber: number, into: Buffer): Promise<void> {
    await this.jitter();
    this.checkOpen();
    const countBlocks = this.checkRange(blockNumber, into.length);
    if (this.shouldFail('read')) {
      this.counters.failedReads++;
      throw new SimError('EIO', `simulated EIO reading block ${blockNumber}`);
    }
    for (let i = 0; i < countBlocks; i++) {
      // Copy out: the caller must never alias the stored content.
      this.latest(blockNumber + i).copy(into, i * BLOCK_SIZE_BYTES);
    }
    this.counters.reads++;
    this.counters.bytesRead += into.length;
    assert(countBlocks * BLOCK_SIZE_BYTES === into.length, 'a read covers whole blocks');
  }

  /**
   * Reads runs synchronously, as a page cache that holds some of them: each run is "cached" by a coin
   * flip, and the first that is not ends the batch (the engine reads it and the rest with read()).
   * Faults as read() has them.
   */
  readRunsIfCheap(plan: Float64Array, count: number, into: Buffer): number {
    this.checkOpen();
    for (let i = 0; i < count; i++) {
      if (this.prng.chance(CHEAP_READ_MISS_PROBABILITY)) return i;
      const blockNumber = plan[3 * i]!, at = plan[3 * i + 2]!;
      const countBlocks = this.checkRange(blockNumber, plan[3 * i + 1]! * BLOCK_SIZE_BYTES);
      if ((at + countBlocks) * BLOCK_SIZE_BYTES > into.length) throw new SimError('EINVAL', `run ${i} lies past the buffer`);
      if (this.shouldFail('read')) {
        this.counters.failedReads++;
        throw new SimError('EIO', `simulated EIO reading block ${blockNumber}`);
      }
      for (let b = 0; b < countBlocks; b++) this.latest(blockNumber + b).copy(into, (at + b) * BLOCK_SIZE_BYTES);
      this.counters.reads++;
      this.counters.bytesRead += countBlocks * BLOCK_SIZE_BYTES;
    }
    return count;
  }

  async write(blockNumber: number, data: Buffer): Promise<void> {
    await this.jitter();
    this.writeNow(blockNumber, data);
  }

  /** A write's effect, once its jitter is over; returns what it made pending. */
  private writeNow(blockNumber: number, data: Buffer): PendingWrite {
    this.checkOpen();
    this.tickArmedCrash();
    const countBlocks = this.checkRange(blockNumber, data.length);
    if (this.shouldFail('write')) {
      // A failed write applies nothing here; the engine must not assume anything either way.
      this.counters.failedWrites++;
      throw new SimError('EIO', `simulated EIO writing block ${blockNumber}`);
    }
    const copy = Buffer.from(data);
    this.pending.push({ blockNumber, data: copy });
    for (let i = 0; i < countBlocks; i++) {
      this.volatile.set(blockNumber + i, copy.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES));
    }
    this.counters.writes++;
    this.counters.bytesWritten += data.length;
    assert(copy.length === countBlocks * BLOCK_SIZE_BYTES, 'a pending write is whole blocks');
    return this.pending[this.pending.length - 1]!;
  }

  /**
   * A write that is durable when it resolves, alone (O_DSYNC): other unflushed writes stay as they
   * were. Earlier unflushed writes of the same blocks take its content, as the page cache merges them,
   * so a power cut can never bring their older content back over it.
   */
  async writeDurable(blockNumber: number, data: Buffer): Promise<void> {
    await this.jitter();
    const w = this.writeNow(blockNumber, data);
    // A power cut while it is being made durable: the image may hold any part of it, as of any
    // unflushed write (torn included).
    this.tickArmedCrash();
    assert(this.pending[this.pending.length - 1] === w, 'the durable write is the newest pending one');
    this.pending.pop();
    const countBlocks = data.length / BLOCK_SIZE_BYTES, end = blockNumber + countBlocks;
    for (const older of this.pending) {
      const olderEnd = older.blockNumber + older.data.length / BLOCK_SIZE_BYTES;
      if (older.blockNumber >= end || olderEnd <= blockNumber) continue;
      const merged = Buffer.from(older.data);
      for (let b = Math.max(older.blockNumber, blockNumber); b < Math.min(olderEnd, end); b++) {
        w.data.copy(merged, (b - older.blockNumber) * BLOCK_SIZE_BYTES, (b - blockNumber) * BLOCK_SIZE_BYTES, (b - blockNumber + 1) * BLOCK_SIZE_BYTES);
      }
      older.data = merged;
    }
    for (let i = 0; i < countBlocks; i++) {
      this.volatile.delete(blockNumber + i);
      this.durable.set(blockNumber + i, w.data.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES));
    }
  }

  async flush(): Promise<void> {
    await this.jitter();
    this.checkOpen();
    this.tickArmedCrash();
    if (this.shouldFail('flush')) {
      // A failed flush makes nothing durable: the pending writes stay at the mercy of a crash.
      this.counters.failedFlushes++;
      throw new SimError('EIO', 'simulated EIO on flush');
    }
    for (const [blockNumber, content] of this.volatile) {
      if (content.length !== BLOCK_SIZE_BYTES) fail(`volatile block ${blockNumber} is ${content.length} bytes`);
      this.durable.set(blockNumber, content);
    }
    this.volatile.clear();
    this.pending = [];
    this.counters.flushes++;
  }

  async resize(sizeBlocks: number): Promise<void> {
    await Promise.resolve();
    this.checkOpen();
    if (!Number.isInteger(sizeBlocks) || sizeBlocks < 0) throw new SimError('EINVAL', `bad size ${sizeBlocks}`);
    if (sizeBlocks < this.sizeBlocksNow) {
      for (const map of [this.durable, this.volatile]) {
        for (const blockNumber of [...map.keys()]) if (blockNumber >= sizeBlocks) map.delete(blockNumber);
      }
      this.pending = this.pending.filter((w) => w.blockNumber < sizeBlocks);
    }
    this.sizeBlocksNow = sizeBlocks;
    assert(this.pending.length <= this.counters.writes, 'every pending write was counted');
  }

  /** The size set by resize() (a test's stand-in for a device enlarged from outside). */
  async refreshSize(): Promise<number> {
    await Promise.resolve();
    this.checkOpen();
    assert(this.sizeBlocksNow >= 0, 'device size is non-negative');
    return this.sizeBlocksNow;
  }

  async close(): Promise<void> {
    await Promise.resolve();
    this.closed = true;
    assert(this.counters.reads >= 0 && this.counters.writes >= 0 && this.counters.flushes >= 0, 'counters are non-negative');
  }

  /**
   * The device after a power cut at this instant (this one is left as it was).
   * 'clean': only flushed writes. 'some': plus a random prefix or subset of the unflushed writes
   * (disks reorder writes between flushes). 'torn': like 'some', and one unflushed multi-block
   * write lands partially and/or one block ends up half old, half new (cut at a sector).
   */
  crash(mode: CrashMode): SimDevice {
    const next = new SimDevice(this.sizeBlocksNow, this.prng.fork());
    next.jitterTicksMax = this.jitterTicksMax;
    next.durable = new Map(this.durable);
    const report: CrashReport = {
      mode, pendingWrites: this.pending.length, appliedWrites: 0, tornWrite: null, tornBlock: null,
    };
    if (mode !== 'clean' && this.pending.length > 0) {
      const applied = this.chooseApplied();
      const tornWrite = mode === 'torn' ? this.chooseTornWrite(applied) : null;
      report.tornWrite = tornWrite;
      this.pending.forEach((w, index) => {
        if (applied[index]) {
          report.appliedWrites++;
          next.applyBlocks(w, () => true);
        } else if (index === tornWrite) {
          next.applyBlocks(w, () => this.prng.chance(0.5));
        }
      });
      if (mode === 'torn' && (tornWrite === null || this.prng.chance(0.5))) {
        report.tornBlock = this.tearOneBlock(next);
      }
    }
    assert(next.sizeBlocksNow === this.sizeBlocksNow, 'a crash image is the same size as the device');
    assert(report.appliedWrites <= report.pendingWrites, 'a crash applies only pending writes');
    next.lastCrash = report;
    return next;
  }

  /**
   * Arms a power cut in the middle of whatever runs next: just before the `afterOps`-th following
   * write or flush, the crash image (`crash(mode)`) is captured; the device itself goes on working,
   * so the operation completes and the caller then switches to `takeArmedImage()`.
   */
  armCrash(afterOps: number, mode: CrashMode): void {
    assert(Number.isInteger(afterOps), 'a crash is armed after a whole number of operations');
    this.crashCountdown = afterOps;
    this.crashModeArmed = mode;
    this.armedImage = null;
  }

  /** The image captured by an armed crash (null if the countdown never ran out); disarms. */
  takeArmedImage(): SimDevice | null {
    const image = this.armedImage;
    this.armedImage = null;
    this.crashCountdown = -1;
    assert(image === null || image.lastCrash !== null, 'an armed image is a crash image');
    return image;
  }

  private tickArmedCrash(): void {
    if (this.crashCountdown < 0) return;
    if (this.crashCountdown === 0) this.armedImage = this.crash(this.crashModeArmed);
    this.crashCountdown--;
    assert(this.crashCountdown >= -1, 'the crash countdown stops at -1');
  }

  /** Flips one bit of a stored block (both durable and volatile copies). Returns null if none stored. */
  injectBitFlip(blockNumber?: number, bitIndex?: number): BitFlip | null {
    const stored = this.storedBlocks();
    if (blockNumber === undefined) {
      if (stored.length === 0) return null;
      blockNumber = this.prng.pick(stored);
    }
    const bit = bitIndex ?? this.prng.int(0, BLOCK_SIZE_BYTES * 8 - 1);
    assert(bit >= 0 && bit < BLOCK_SIZE_BYTES * 8, 'a flipped bit lies inside the block');
    const flip = (content: Buffer): Buffer => {
      const copy = Buffer.from(content);
      copy[bit >>> 3] = (copy[bit >>> 3] ?? 0) ^ (1 << (bit & 7));
      return copy;
    };
    this.durable.set(blockNumber, flip(this.durable.get(blockNumber) ?? zeroBlock));
    const unflushed = this.volatile.get(blockNumber);
    if (unflushed !== undefined) this.volatile.set(blockNumber, flip(unflushed));
    return { blockNumber, bitIndex: bit };
  }

  failNextReads(n: number): void {
    assert(Number.isSafeInteger(n) && n >= 0, 'a count of reads to fail');
    this.failReadsLeft = n;
  }
  failNextWrites(n: number): void {
    assert(Number.isSafeInteger(n) && n >= 0, 'a count of writes to fail');
    this.failWritesLeft = n;
  }
  failFlush(n: number): void {
    assert(Number.isSafeInteger(n) && n >= 0, 'a count of flushes to fail');
    this.failFlushesLeft = n;
  }
  /** Each op fails with this probability (drawn from the device's Prng); 0 turns it off. */
  setFaultProbability(p: Partial<FaultProbability>): void {
    this.faultProbability = { ...this.faultProbability, ...p };
    for (const v of Object.values(this.faultProbability)) assert(v >= 0 && v <= 1, `a fault probability of ${v}`);
  }
  clearFaults(): void {
    this.failReadsLeft = 0;
    this.failWritesLeft = 0;
    this.failFlushesLeft = 0;
    this.faultProbability = { read: 0, write: 0, flush: 0 };
  }

  /** Latest content of a block (a copy), for tests and the simulator. */
  peek(blockNumber: number): Buffer {
    return Buffer.from(this.latest(blockNumber));
  }

  /** Durable content of a block (a copy). */
  peekDurable(blockNumber: number): Buffer {
    return Buffer.from(this.durable.get(blockNumber) ?? zeroBlock);
  }

  /** Block numbers that hold written content (durable or volatile), ascending. */
  storedBlocks(): number[] {
    const all = new Set<number>([...this.durable.keys(), ...this.volatile.keys()]);
    return [...all].sort((x, y) => x - y);
  }

  /** Blocks whose latest content equals `content` (one block); used to aim bit flips at data. */
  findBlocks(content: Buffer): number[] {
    const found: number[] = [];
    assert(content.length > 0, 'blocks are looked up by content');
    for (const blockNumber of this.storedBlocks()) {
      if (this.latest(blockNumber).equals(content)) found.push(blockNumber);
    }
    return found;
  }

  get unflushedWrites(): number {
    assert(this.pending.length <= this.counters.writes, 'every pending write was counted');
    return this.pending.length;
  }

  private latest(blockNumber: number): Buffer {
    const content = this.volatile.get(blockNumber) ?? this.durable.get(blockNumber) ?? zeroBlock;
    if (content.length !== BLOCK_SIZE_BYTES) fail(`stored block ${blockNumber} is ${content.length} bytes`);
    return content;
  }

  private applyBlocks(w: PendingWrite, keep: (i: number) => boolean): void {
    const countBlocks = w.data.length / BLOCK_SIZE_BYTES;
    assert(Number.isInteger(countBlocks), 'a pending write is whole blocks');
    for (let i = 0; i < countBlocks; i++) {
      if (keep(i)) this.durable.set(w.blockNumber + i, w.data.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES));
    }
  }

  /** A random prefix of the pending writes (in-order disk) or a random subset (reordering disk). */
  private chooseApplied(): boolean[] {
    const n = this.pending.length;
    assert(n > 0, 'a crash chooses among pending writes');
    if (this.prng.chance(0.5)) {
      const prefix = this.prng.int(0, n);
      return this.pending.map((_, i) => i < prefix);
    }
    const p = this.prng.float();
    return this.pending.map(() => this.prng.chance(p));
  }

  private chooseTornWrite(applied: boolean[]): number | null {
    assert(applied.length === this.pending.length, 'one choice per pending write');
    const candidates: number[] = [];
    this.pending.forEach((w, i) => {
      if (!applied[i] && w.data.length > BLOCK_SIZE_BYTES) candidates.push(i);
    });
    return candidates.length > 0 ? this.prng.pick(candidates) : null;
  }

  /** Makes one block touched by a pending write half its crash content, half its latest content. */
  private tearOneBlock(next: SimDevice): number | null {
    const w = this.prng.pick(this.pending);
    const blockNumber = w.blockNumber + this.prng.int(0, w.data.length / BLOCK_SIZE_BYTES - 1);
    const newer = this.latest(blockNumber);
    let older = next.durable.get(blockNumber) ?? zeroBlock;
    if (older.equals(newer)) older = this.durable.get(blockNumber) ?? zeroBlock;
    const cutBytes = tornSectorBytes * this.prng.int(1, BLOCK_SIZE_BYTES / tornSectorBytes - 1);
    const [head, tail] = this.prng.chance(0.5) ? [newer, older] : [older, newer];
    const mixed = Buffer.concat([head.subarray(0, cutBytes), tail.subarray(cutBytes)]);
    assert(mixed.length === BLOCK_SIZE_BYTES, 'a torn block is one block');
    next.durable.set(blockNumber, mixed);
    return blockNumber;
  }

  private async jitter(): Promise<void> {
    const ticks = this.jitterTicksMax > 0 ? this.prng.int(0, this.jitterTicksMax) : 0;
    assert(ticks >= 0, 'jitter waits a non-negative number of turns');
    for (let i = 0; i <= ticks; i++) await Promise.resolve();
  }

  private shouldFail(op: 'read' | 'write' | 'flush'): boolean {
    if (op === 'read' && this.failReadsLeft > 0) { this.failReadsLeft--; return true; }
    if (op === 'write' && this.failWritesLeft > 0) { this.failWritesLeft--; return true; }
    if (op === 'flush' && this.failFlushesLeft > 0) { this.failFlushesLeft--; return true; }
    const p = this.faultProbability[op];
    assert(this.counters.failedReads >= 0 && this.counters.failedWrites >= 0 && this.counters.failedFlushes >= 0, 'fault counters are non-negative');
    return p > 0 && this.prng.chance(p);
  }

  private checkOpen(): void {
    if (this.closed) throw new SimError('EBADF', 'simulated device is closed');
  }

  /** Validates a whole-block range and returns its length in blocks. */
  private checkRange(blockNumber: number, lengthBytes: number): number {
    if (!Number.isInteger(blockNumber) || blockNumber < 0) {
      throw new SimError('EINVAL', `bad block number ${blockNumber}`);
    }
    if (lengthBytes % BLOCK_SIZE_BYTES !== 0) {
      throw new SimError('EINVAL', `length ${lengthBytes} is not a multiple of ${BLOCK_SIZE_BYTES}`);
    }
    const countBlocks = lengthBytes / BLOCK_SIZE_BYTES;
    assert(Number.isInteger(countBlocks) && countBlocks >= 0, 'a checked range is whole blocks');
    if (blockNumber + countBlocks > this.sizeBlocksNow) {
      throw new SimError('EINVAL', `blocks [${blockNumber}, ${blockNumber + countBlocks}) past device end ${this.sizeBlocksNow}`);
    }
    return countBlocks;
  }
}
