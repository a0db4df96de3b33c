// A FIFO of requests in front of up to six token buckets (total, read and write IOPS; total, read and
// write bytes/s). Each bucket is kept as GCRA's "theoretical arrival time" (one number, no refill
// loop): a request may go once every bucket it draws on is within its burst, `tat - burst <= now`, and
// then pushes each `tat` on by cost / rate. A request larger than the burst still goes (the bucket runs
// into debt and the ones after it wait), so any size passes and the long-run rate is exact. Requests
// wait in arrival order, never fail; one timer at most, for the head's wait.
import type { QosClock } from './clock.js';
import { OpKind, PendingQueue, type Pending } from './pending.js';
import type { Rates } from './limits.js';

const enum Cell { iops = 0, readIops = 1, writeIops = 2, bps = 3, readBps = 4, writeBps = 5 }
const CELLS = 6;
/** Which buckets an operation draws on: [ops cells..., byte cells...]. */
const READ_CELLS = [Cell.iops, Cell.readIops, Cell.bps, Cell.readBps] as const;
const WRITE_CELLS = [Cell.iops, Cell.writeIops, Cell.bps, Cell.writeBps] as const;

function cellsOf(kind: OpKind): readonly Cell[] { return kind === OpKind.read ? READ_CELLS : WRITE_CELLS; }
function isByteCell(c: Cell): boolean { return c >= Cell.bps; }

export class Throttle {
  /** Units per ms of each bucket; 0 = no limit. */
  private readonly ratePerMs = new Float64Array(CELLS);
  /** GCRA theoretical arrival time of each bucket (clock ms). */
  private readonly tatMs = new Float64Array(CELLS);
  private burstMs = 1000;
  readonly queue = new PendingQueue();
  private timer: unknown = null;
  private released = false;

  constructor(private readonly clock: QosClock, private readonly onPass: (p: Pending) => void) {}

  /** Whether any rate is limited (otherwise requests need not come here at all). */
  get limited(): boolean {
    for (let c = 0; c < CELLS; c++) if (this.ratePerMs[c]! > 0) return true;
    return false;
  }

  /**
   * New rates, live: the tokens a bucket holds (or owes) are carried over as they are, so requests
   * already queued wait by the new rate from now on.
   */
  setRates(rates: Rates, burstSeconds: number): void {
    const now = this.clock.nowMs();
    const oldBurstMs = this.burstMs;
    this.burstMs = burstSeconds * 1000;
    const next = [rates.iopsMax, rates.readIopsMax, rates.writeIopsMax, rates.bpsMax, rates.readBpsMax, rates.writeBpsMax];
    for (let c = 0; c < CELLS; c++) {
      const newRate = (next[c] ?? 0) / 1000;
      const oldRate = this.ratePerMs[c]!;
      if (newRate > 0 && oldRate > 0) {
        // Tokens in the bucket (negative: debt) are `(now + burst - tat) * rate`, at most a full burst.
        const tokens = Math.min((now + oldBurstMs - this.tatMs[c]!) * oldRate, oldBurstMs * oldRate);
        this.tatMs[c] = Math.max(now, now + this.burstMs - tokens / newRate);
      } else if (newRate > 0) {
        this.tatMs[c] = now; // a new limit starts with its burst available, as a full bucket
      }
      this.ratePerMs[c] = newRate;
    }
    this.pump();
  }

  /** Lets every queued and future request through at once (shutdown). */
  releaseAll(): void {
    this.released = true;
    this.pump();
  }

  submit(p: Pending): void {
    if (this.queue.length === 0 && this.tryPass(p, this.clock.nowMs())) return;
    this.queue.push(p);
    if (this.queue.length === 1) this.pump();
  }

  /** How long `p` must still wait at `nowMs` (<= 0: it may go). */
  private waitMs(p: Pending, nowMs: number): number {
    if (this.released) return 0;
    let wait = -Infinity;
    for (const c of cellsOf(p.kind)) {
      if (this.ratePerMs[c] === 0 || (isByteCell(c) && p.costBytes === 0)) continue;
      const w = this.tatMs[c]! - this.burstMs - nowMs;
      if (w > wait) wait = w;
    }
    return wait;
  }

  private tryPass(p: Pending, nowMs: number): boolean {
    if (this.waitMs(p, nowMs) > 0) return false;
    for (const c of cellsOf(p.kind)) {
      const rate = this.ratePerMs[c]!;
      if (rate === 0) continue;
      const cost = isByteCell(c) ? p.costBytes : 1;
      this.tatMs[c] = Math.max(this.tatMs[c]!, nowMs) + cost / rate;
    }
    this.onPass(p);
    return true;
  }

  /** Passes queued requests in order while they conform; arms the timer for the first that does not. */
  private pump(): void {
    if (this.timer !== null) { this.clock.clearTimer(this.timer); this.timer = null; }
    const now = this.clock.nowMs();
    for (let head = this.queue.head; head !== null; head = this.queue.head) {
      const wait = this.waitMs(head, now);
      if (wait > 0) {
        this.timer = this.clock.setTimer(() => { this.timer = null; this.pump(); }, Math.ceil(wait));
        return;
      }
      this.queue.shift();
      this.tryPass(head, now);
    }
  }
}
