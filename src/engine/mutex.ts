// A FIFO async mutex: metadata mutations (tree edits, space map, catalog) and the first phase of a
// commit run one at a time; data I/O runs outside it. It knows whether it is held and by which
// lock() call (a token), so code that changes metadata asserts the lock (LevelDB's AssertHeld), and a
// release by anyone but the holder, or a second release, is an engine bug that stops the pool.
import { fail } from './errors.js';

export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  /** The holder and the waiters. */
  private users = 0;
  /** Token of the lock() call (or runNow) that holds the lock; 0 when nobody does. */
  private holder = 0;
  private tokens = 0;

  /**
   * Whether nobody holds or waits for the lock: code that runs to completion without awaiting may
   * then change what the lock guards directly (PoolCore.mutateNow), as no holder can be between awaits.
   */
  get idle(): boolean { return this.users === 0; }

  /** Whether a lock() has resolved and not been released, or a runNow() is running. */
  get held(): boolean { return this.holder !== 0; }

  /**
   * Fails unless the lock is held. JavaScript runs one piece of code at a time, so "held" means held
   * by the code running now: a holder is between its awaits or running, and nothing else can run
   * metadata code in between except through the lock.
   */
  assertHeld(): void {
    if (this.holder === 0) fail('metadata changed without holding the metadata lock');
  }

  async lock(): Promise<() => void> {
    this.users++;
    let resolveNext!: () => void;
    const next = new Promise<void>((resolve) => { resolveNext = resolve; });
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    if (this.holder !== 0) fail(`metadata lock granted while held by #${this.holder}`);
    const token = ++this.tokens;
    this.holder = token;
    let released = false;
    return () => {
      if (released) fail(`metadata lock #${token} released twice`);
      if (this.holder !== token) fail(`metadata lock #${token} released by a non-holder (held by #${this.holder})`);
      released = true;
      this.holder = 0;
      this.users--;
      resolveNext();
    };
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.lock();
    try { return await fn(); } finally { release(); }
  }

  /**
   * Runs `fn`, which must not await, as the holder of an idle lock (PoolCore.mutateNow's lock-free
   * path): nothing else can run before it returns, so it holds the lock for exactly its duration.
   */
  runNow<T>(fn: () => T): T {
    if (this.users !== 0 || this.holder !== 0) fail('runNow on a lock that is held or awaited');
    const token = ++this.tokens;
    this.holder = token;
    try { return fn(); } finally {
      if (this.holder !== token) fail(`metadata lock #${token} taken over during runNow`);
      this.holder = 0;
    }
  }
}
