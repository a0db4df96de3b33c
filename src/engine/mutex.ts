// A FIFO async mutex: metadata mutations (tree edits, space map, catalog) and the first phase of a
// commit run one at a time; data I/O runs outside it.
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((resolve) => { release = resolve; });
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock();
    try { return await fn(); } finally { release(); }
  }
}
