// A FIFO async mutex: metadata mutations (tree edits, space map, catalog) and the first phase of a
// commit run one at a time; data I/O runs outside it.
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  /** The holder and the waiters. */
  private users = 0;

  /**
   * Whether nobody holds or waits for the lock: code that runs to completion without awaiting may
   * then change what the lock guards directly (PoolCore.mutateNow), as no holder can be between awaits.
   */
  get idle(): boolean { return this.users === 0; }

  async lock(): Promise<() => void> {
    this.users++;
    let resolveNext!: () => void;
    const next = new Promise<void>((resolve) => { resolveNext = resolve; });
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.users--;
      resolveNext();
    };
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock();
    try { return await fn(); } finally { release(); }
  }
}
