// One operation per volume (or snapshot) id at a time. CSI spec "Concurrency": the CO should
// not send two calls for one volume at once, but may after it lost state; the plugin then
// answers the second call ABORTED so the CO retries with backoff.
import { aborted } from './errors.js';

export class OperationLocks {
  private readonly held = new Set<string>();

  /** Runs `fn` holding every key; ABORTED at once if another operation holds one of them. */
  async run<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const unique = [...new Set(keys.filter((key) => key !== ''))];
    const busy = unique.find((key) => this.held.has(key));
    if (busy !== undefined) throw aborted(`an operation on ${busy} is already in progress`);
    for (const key of unique) this.held.add(key);
    try {
      return await fn();
    } finally {
      for (const key of unique) this.held.delete(key);
    }
  }
}
