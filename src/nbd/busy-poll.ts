// Adaptive busy polling after activity, qemu's AioContext polling idea (poll-max-ns): for a short
// window after a request arrives, the event loop keeps an immediate queued, so libuv polls the sockets
// without sleeping. A thread that sleeps between requests pays for it on the next one: on this VM a
// 4 KiB engine write takes ~25 µs when the previous one ended 80 µs earlier with the CPU kept busy,
// and ~49 µs when the thread slept in between (measured). The window bounds the CPU spent: polling
// stops once no request has arrived for `windowMicros`.

/** What the poller did so far (the bench prints it beside each row: polling costs CPU). */
export interface BusyPollStats {
  /** Requests that (re)started the window. */
  kicks: number;
  /** Event-loop turns the poller kept going, and those in which no request had arrived since the turn before. */
  turns: number;
  idleTurns: number;
  /** Wall time of the idle turns (ms): the loop spun with nothing arriving. */
  idleMs: number;
}

export class BusyPoller {
  private lastActivityMs = 0;
  private spinning = false;
  private kickedSinceTurn = false;
  private lastTurnMs = 0;
  private readonly windowMs: number;
  private readonly counts: BusyPollStats = { kicks: 0, turns: 0, idleTurns: 0, idleMs: 0 };

  constructor(windowMicros: number, private readonly nowMs: () => number = () => performance.now()) {
    this.windowMs = windowMicros / 1000;
  }

  /** A request arrived: keep polling until the window has passed without another one. */
  kick(): void {
    if (this.windowMs <= 0) return;
    this.counts.kicks++;
    this.kickedSinceTurn = true;
    this.lastActivityMs = this.nowMs();
    if (!this.spinning) {
      this.spinning = true;
      this.lastTurnMs = this.lastActivityMs;
      setImmediate(this.spin);
    }
  }

  /** Whether the loop is polling now. */
  get active(): boolean { return this.spinning; }

  get stats(): BusyPollStats { return { ...this.counts }; }

  /** Ends polling at once (the server is closing). */
  stop(): void { this.lastActivityMs = -Infinity; }

  private readonly spin = (): void => {
    const now = this.nowMs();
    this.counts.turns++;
    if (!this.kickedSinceTurn) {
      this.counts.idleTurns++;
      this.counts.idleMs += now - this.lastTurnMs;
    }
    this.kickedSinceTurn = false;
    this.lastTurnMs = now;
    if (now - this.lastActivityMs < this.windowMs) setImmediate(this.spin);
    else this.spinning = false;
  };
}
