// A request that QoS holds back: what to run on the engine once it may go, and where it waits. One
// object per delayed request (requests that pass untouched never get one); it sits in at most one
// FIFO at a time, linked through `next`, so queues allocate nothing of their own.
import type { VolumeQos } from './qos-control.js';

export const enum OpKind { read = 0, write = 1, trim = 2, writeZeroes = 3 }

export interface Pending {
  kind: OpKind;
  /** Bytes counted against byte rates (0 for trim and write-zeroes: they move no data). */
  costBytes: number;
  /** When it arrived (clock ms): the wait is counted at dispatch. */
  arrivedMs: number;
  volume: VolumeQos;
  /** Start tag in the fair scheduler (virtual time). */
  tag: number;
  next: Pending | null;
  run(): Promise<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** A FIFO of pending requests linked through their `next` field. */
export class PendingQueue {
  head: Pending | null = null;
  private tail: Pending | null = null;
  length = 0;

  push(p: Pending): void {
    p.next = null;
    if (this.tail === null) this.head = p; else this.tail.next = p;
    this.tail = p;
    this.length += 1;
  }

  shift(): Pending | null {
    const p = this.head;
    if (p === null) return null;
    this.head = p.next;
    if (this.head === null) this.tail = null;
    p.next = null;
    this.length -= 1;
    return p;
  }
}
