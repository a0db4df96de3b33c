// A FIFO of requests in front of up to six token buckets (total, read and write IOPS; total, read and
// write bytes/s). Each bucket is kept as GCRA's "theoretical arrival time" (one number, no refill
// loop): a request may go once every bucket it draws on is within its burst, `tat - burst <= now`, and
// then pushes each `tat` on by cost / rate. A request larger than the burst still goes (the bucket runs
// into debt and the ones after it wait), so any size passes and the long-run rate is exact. Requests
// wait in arrival order, never fail; one timer at most, for the head's wait.
//
// A burst lasts at most `burstSeconds` (as QEMU's `iops-total-max-length` and Ceph's burst seconds do):
// a client only a little faster than the limit would otherwise spend a full bucket over many seconds,
// above the limit all the while. A cell's burst window opens when a request takes it into its bucket
// by more than the slack; when the window closes, whatever the bucket still holds beyond the slack
// expires; a new window needs the bucket full again (within the slack), which takes a quiet spell.
// Tokens earned by a partial pause are still spent freely: they keep the long-run rate exact.
import type { QosClock } from './clock.js';
import { OpKind, PendingQueue, type Pending } from './pending.js';
import type { Rates } from './limits.js';

const enum Cell { iops = 0, readIops = 1, writeIops = 2, bps = 3, readBps = 4, writeBps = 5 }
const CELLS = 6;
/** What a bucket may hold once its burst window has closed: timer lateness, not a burst. */
const SLACK_MS = 25;
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
  /** When each cell's burst window closes (clock ms); NaN while none is open. */
  private readonly windowEndMs = new Float64Array(CELLS).fill(Number.NaN);
  /** Whether each cell's bucket has been full (within the slack) since its last window opened. */
  private readonly armed = new Uint8Array(CELLS).fill(1);
  /** When each cell's bucket was last seen full: a window runs from there, where its burst began. */
  private readonly fullAtMs = new Float64Array(CELLS);
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
    for (let c = 0; c < CELLS; c++) this.closeElapsedWindow(c, now);
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
        this.windowEndMs[c] = Number.NaN;
        this.armed[c] = 1;
        this.fullAtMs[c] = now;
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
      const w = this.effectiveTat(c, nowMs) - this.burstMs - nowMs;
      if (w > wait) wait = w;
    }
    return wait;
  }

  private tryPass(p: Pending, nowMs: number): boolean {
    if (this.waitMs(p, nowMs) > 0) return false;
    for (const c of cellsOf(p.kind)) {
      const rate = this.ratePerMs[c]!;
      if (rate === 0) continue;
      const costMs = (isByteCell(c) ? p.costBytes : 1) / rate;
      this.chargeCell(c, nowMs, costMs);
    }
    this.onPass(p);
    return true;
  }

  private get slackMs(): number { return Math.min(this.burstMs, SLACK_MS); }

  /** The cell's arrival time with an elapsed burst window's unspent tokens expired (as of its close). */
  private effectiveTat(c: Cell, nowMs: number): number {
    const end = this.windowEndMs[c]!;
    if (!(nowMs >= end)) return this.tatMs[c]!; // no window, or still open
    return Math.max(this.tatMs[c]!, end + this.burstMs - this.slackMs);
  }

  private closeElapsedWindow(c: Cell, nowMs: number): void {
    this.tatMs[c] = this.effectiveTat(c, nowMs);
    if (nowMs >= this.windowEndMs[c]!) this.windowEndMs[c] = Number.NaN;
  }

  private chargeCell(c: Cell, nowMs: number, costMs: number): void {
    const slack = this.slackMs;
    this.closeElapsedWindow(c, nowMs);
    let tat = this.tatMs[c]!;
    if (tat - nowMs <= slack) this.armed[c] = 1; // full again: a quiet spell earned a new burst
    if (tat <= nowMs) this.fullAtMs[c] = nowMs;
    tat = Math.max(tat, nowMs) + costMs;
    // Bursts shorter than the slack need no window: the bucket never holds more than the slack.
    if (this.armed[c] === 1 && this.burstMs > slack && tat - nowMs > slack + costMs) {
      this.windowEndMs[c] = this.fullAtMs[c]! + this.burstMs;
      this.armed[c] = 0;
    }
    this.tatMs[c] = tat;
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
