// Weighted fair sharing of the pool between tenants when the pool itself is the bottleneck: at most
// `inflightMax` requests run in the engine at once; past that, requests wait in one FIFO per tenant and
// the next free slot goes to the tenant whose head request has the smallest start tag (start-time fair
// queuing, Goyal et al. 1996): tag = max(virtual time, the tenant's last finish tag), and the finish tag
// adds cost / weight. A tenant that was idle starts at the current virtual time, so a QD-1 client
// beside a QD-64 flood waits for about one slot, not for the flood's queue. The bound applies only
// while requests of more than one tenant come in (within the last MIXED_WINDOW_REQUESTS requests): a
// tenant alone on the pool has nobody to be fair to, and keeps all the parallelism it can use.
import { PendingQueue, type Pending } from './pending.js';

/** Fairness cost of a request: one operation plus its bytes, in units of 64 KiB. */
export const FAIR_COST_BYTES_PER_UNIT = 64 * 1024;
/**
 * How many requests after one of another tenant the in-flight bound stays on (about a third of a
 * second of a 30 000 IOPS flood): longer than a QD-1 client's pause between two requests.
 */
export const MIXED_WINDOW_REQUESTS = 10_000;

/** A tenant's place in the scheduler. */
export class Flow {
  readonly queue = new PendingQueue();
  lastFinishTag = 0;
  /** Index in the scheduler's list of flows with queued requests, or -1. */
  activeIndex = -1;
  constructor(public weight: number) {}
}

export class FairScheduler {
  inflight = 0;
  private virtualTime = 0;
  /** Flows with queued requests (at most one entry per tenant; a scan picks the smallest head tag). */
  private readonly active: Flow[] = [];
  private queuedCount = 0;
  private requests = 0;
  private lastFlow: Flow | null = null;
  /** The bound applies while `requests` is below this (requests of two tenants came in recently). */
  private mixedUntil = 0;

  /** `inflightMax` 0: no bound, every request runs at once (fair sharing off). */
  constructor(readonly inflightMax: number, private readonly start: (p: Pending) => void) {}

  /** Counts a request of `flow` arriving: two tenants in turn switch the in-flight bound on. */
  arrive(flow: Flow): void {
    this.requests += 1;
    if (flow === this.lastFlow) return;
    if (this.lastFlow !== null) this.mixedUntil = this.requests + MIXED_WINDOW_REQUESTS;
    this.lastFlow = flow;
  }

  private get bounded(): boolean { return this.inflightMax > 0 && this.requests < this.mixedUntil; }

  /** Whether a request may run now without queueing (the common, uncontended case). */
  get open(): boolean { return this.queuedCount === 0 && (!this.bounded || this.inflight < this.inflightMax); }

  get queued(): number { return this.queuedCount; }

  /** A request (already counted by arrive()) that runs now or waits its turn. */
  submit(p: Pending, flow: Flow): void {
    if (this.open) { this.inflight += 1; this.start(p); return; }
    const cost = 1 + p.costBytes / FAIR_COST_BYTES_PER_UNIT;
    p.tag = Math.max(this.virtualTime, flow.lastFinishTag);
    flow.lastFinishTag = p.tag + cost / flow.weight;
    flow.queue.push(p);
    this.queuedCount += 1;
    if (flow.activeIndex < 0) { flow.activeIndex = this.active.length; this.active.push(flow); }
  }

  /** A request that was started (through submit or directly after `open`) finished. */
  done(): void {
    this.inflight -= 1;
    while (this.queuedCount > 0 && (!this.bounded || this.inflight < this.inflightMax)) this.dispatchOne();
  }

  /** Runs every queued request now (shutdown, or fair sharing switched off). */
  releaseAll(): void {
    while (this.queuedCount > 0) this.dispatchOne();
  }

  private dispatchOne(): void {
    let best = 0;
    for (let i = 1; i < this.active.length; i++) if (this.active[i]!.queue.head!.tag < this.active[best]!.queue.head!.tag) best = i;
    const flow = this.active[best]!;
    const p = flow.queue.shift()!;
    this.queuedCount -= 1;
    if (flow.queue.length === 0) this.deactivate(flow);
    this.virtualTime = Math.max(this.virtualTime, p.tag);
    this.inflight += 1;
    this.start(p);
  }

  private deactivate(flow: Flow): void {
    const last = this.active.pop()!;
    if (last !== flow) { last.activeIndex = flow.activeIndex; this.active[flow.activeIndex] = last; }
    flow.activeIndex = -1;
  }
}
