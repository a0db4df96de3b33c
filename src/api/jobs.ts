// Long-running operations (flatten, large deletes, export, import) as jobs: an id, a state, progress
// 0..1 and an error code. Finished jobs are kept (bounded, oldest dropped first) so a client can
// poll for the outcome after the fact. With a store (job-store.ts) the records outlive the daemon: a
// job running at a restart comes back resumed (flatten) or plainly `interrupted`, never a 404.
import { randomUUID } from 'node:crypto';
import { toProblem } from './problem.js';
import type { JobStore } from './job-store.js';

/** Finished jobs remembered for polling. */
export const jobsFinishedMax = 1000;

/** `interrupted`: the daemon restarted while it ran and the operation did not go on (error says why). */
export type JobState = 'running' | 'succeeded' | 'failed' | 'interrupted';

export interface JobView {
  id: string;
  kind: string;
  target: string;
  state: JobState;
  progress: number;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
  /** The job was running at a daemon restart and its operation went on by itself (a flatten). */
  resumed: boolean;
}

export interface JobHandle {
  view: JobView;
  done: Promise<void>;
  setProgress(fraction: number): void;
  /**
   * Resolves once the new job's record is in the store (at once without one; never rejects, a failed
   * save is logged): await it before handing the id out, so the id outlives a crash.
   */
  recorded: Promise<void>;
}

/** Called with structured events (a failed save of the job records) for logging. */
export type JobLog = (event: string, fields: Record<string, unknown>) => void;

export class JobManager {
  private readonly jobs = new Map<string, JobView>();
  private readonly running = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly store: JobStore | null = null, private readonly log: JobLog = () => {}) {}

  get(id: string): JobView | undefined { return this.jobs.get(id); }
  list(): JobView[] { return [...this.jobs.values()]; }

  /** Takes over records loaded from the store (restart handling is the store's: job-store.ts). */
  adopt(views: JobView[]): void {
    for (const view of views) this.jobs.set(view.id, view);
    this.prune();
  }

  /** Starts `work`; the returned `done` never rejects (the error is in the job). */
  start(kind: string, target: string, work: (setProgress: (f: number) => void) => Promise<void>): JobHandle {
    const view: JobView = {
      id: randomUUID(), kind, target, state: 'running', progress: 0, error: null,
      createdAt: new Date().toISOString(), finishedAt: null, resumed: false,
    };
    this.jobs.set(view.id, view);
    return this.run(view, work);
  }

  /** Runs `work` for a view already listed (a new job, or one resumed after a restart). */
  run(view: JobView, work: (setProgress: (f: number) => void) => Promise<void>): JobHandle {
    const setProgress = (f: number): void => {
      if (view.state === 'running') view.progress = Math.max(view.progress, Math.min(1, Math.max(0, f)));
    };
    const recorded = this.save();
    const done = (async () => {
      try {
        await work(setProgress);
        view.state = 'succeeded';
        view.progress = 1;
      } catch (err) {
        const problem = toProblem(err);
        view.state = 'failed';
        view.error = { code: problem.code, message: problem.detail };
      }
      view.finishedAt = new Date().toISOString();
      this.prune();
      this.save();
    })();
    this.running.add(done);
    void done.then(() => this.running.delete(done));
    return { view, done, setProgress, recorded };
  }

  /** Waits for every running job (shutdown). */
  async drain(): Promise<void> { await Promise.all([...this.running]); }

  /** Waits until the records as they are now are in the store. */
  async flush(): Promise<void> { if (this.store !== null && !this.closed) await this.store.save(this.list()); }

  /**
   * Shutdown: the records as they are now are the last ones written. A job still running stays
   * `running` in the store (the next start settles it) instead of recording the pool_closed failure
   * that closing the pool under it causes.
   */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }

  private save(): Promise<void> {
    if (this.store === null || this.closed) return Promise.resolve();
    // A lost save costs only the job's record after a restart, not the operation: log it, go on.
    return this.store.save(this.list()).catch((err: unknown) =>
      this.log('jobs_save_failed', { path: this.store?.path, error: err instanceof Error ? err.message : String(err) }));
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.state !== 'running');
    for (const job of finished.slice(0, Math.max(0, finished.length - jobsFinishedMax))) this.jobs.delete(job.id);
  }
}
