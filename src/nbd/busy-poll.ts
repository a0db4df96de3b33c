// Adaptive busy polling after activity, qemu's AioContext polling idea (poll-max-ns): for a short
// window after a request arrives, the event loop keeps an immediate queued, so libuv polls the sockets
// without sleeping. A thread that sleeps between requests pays for it on the next one: on this VM a
// 4 KiB engine write takes ~25 µs when the previous one ended 80 µs earlier with the CPU kept busy,
// and ~49 µs when the thread slept in between (measured). The window bounds the CPU spent: polling
// stops once no request has arrived for `windowMicros`.

export class BusyPoller {
  private lastActivityMs = 0;
  private spinning = false;
  private readonly windowMs: number;

  constructor(windowMicros: number, private readonly nowMs: () => number = () => performance.now()) {
    this.windowMs = windowMicros / 1000;
  }

  /** A request arrived: keep polling until the window has passed without another one. */
  kick(): void {
    if (this.windowMs <= 0) return;
    this.lastActivityMs = this.nowMs();
    if (!this.spinning) {
      this.spinning = true;
      setImmediate(this.spin);
    }
  }

  /** Whether the loop is polling now. */
  get active(): boolean { return this.spinning; }

  /** Ends polling at once (the server is closing). */
  stop(): void { this.lastActivityMs = -Infinity; }

  private readonly spin = (): void => {
    if (this.nowMs() - this.lastActivityMs < this.windowMs) setImmediate(this.spin);
    else this.spinning = false;
  };
}
