// The fault sweep's device: a SimDevice behind a countdown (SQLite's countdown I/O errors and crash
// tests). Once armed, it counts the device calls of one operation and, at the N-th, either fails
// that call with EIO (once, or that call and every later one) or captures the crash image a power cut at that instant would leave
// (before the N-th write or the N-th flush lands); the operation itself goes on on the live device.

import type { Device } from '../src/engine/device/device.js';
import { SimError, type CrashMode, type SimDevice } from '../src/engine/device/sim-device.js';

/** Which device call of the operation the fault lands on, and what it does. */
export type Fault =
  | { kind: 'eio'; n: number }
  /** The N-th call and every later one of the operation fail (a device that went away). */
  | { kind: 'eioPersistent'; n: number }
  | { kind: 'crashWrite'; n: number; mode: CrashMode }
  | { kind: 'crashFlush'; n: number; mode: CrashMode };

export class FaultDevice implements Device {
  private fault: Fault | null = null;
  /** After an 'eioPersistent' fault fired: every call fails until disarm(). */
  private failing = false;
  /** Calls counted since arm(): every call for 'eio', writes or flushes for the crashes. */
  private counted = 0;
  /** Whether the armed fault fired (false: the operation finished before its N-th call). */
  reached = false;
  /**
   * The images captured by a crash fault: for 'some' and 'torn' several draws of what the disk kept
   * (one random draw rarely hits the one write order that exposes a missing flush).
   */
  images: SimDevice[] = [];

  constructor(readonly inner: SimDevice, private readonly imagesPerCut = 1) {}

  get sizeBlocks(): number { return this.inner.sizeBlocks; }

  arm(fault: Fault): void {
    this.fault = fault;
    this.counted = 0;
    this.reached = false;
    this.failing = false;
    this.images = [];
  }

  disarm(): void {
    this.fault = null;
    this.failing = false;
  }

  async read(blockNumber: number, into: Buffer): Promise<void> {
    this.tick('read');
    return this.inner.read(blockNumber, into);
  }

  async write(blockNumber: number, data: Buffer): Promise<void> {
    this.tick('write');
    return this.inner.write(blockNumber, data);
  }

  async flush(): Promise<void> {
    this.tick('flush');
    return this.inner.flush();
  }

  resize(sizeBlocks: number): Promise<void> { return this.inner.resize(sizeBlocks); }
  /** Not an I/O call: learning the size is never a fault point. */
  refreshSize(): Promise<number> { return this.inner.refreshSize(); }
  close(): Promise<void> { return this.inner.close(); }

  /** Counts a call; fails it or captures the crash image when it is the armed one. */
  private tick(call: 'read' | 'write' | 'flush'): void {
    if (this.failing) throw new SimError('EIO', `sweep: EIO on every device call (${call})`);
    const f = this.fault;
    if (f === null) return;
    if (f.kind === 'crashWrite' && call !== 'write') return;
    if (f.kind === 'crashFlush' && call !== 'flush') return;
    this.counted++;
    if (this.counted !== f.n) return;
    this.reached = true;
    this.fault = null;
    if (f.kind === 'eio' || f.kind === 'eioPersistent') {
      this.failing = f.kind === 'eioPersistent';
      throw new SimError('EIO', `sweep: EIO on device call ${f.n} (${call})`);
    }
    // The power cut lands just before this call: what the device keeps is the image; the live
    // device goes on (the engine that used it is abandoned, like a dead process).
    const draws = f.mode === 'clean' ? 1 : this.imagesPerCut;
    for (let i = 0; i < draws; i++) this.images.push(this.inner.crash(f.mode));
  }
}
