// Long-running operations (flatten, large deletes, export, import) as jobs: an id, a state, progress
// 0..1 and an error code. Finished jobs are kept (bounded, oldest dropped first) so a client can
// poll for the outcome after the fact.
import { randomUUID } from 'node:crypto';
import { toProblem } from './problem.js';

/** Finished jobs remembered for polling. */
export const jobsFinishedMax = 1000;

export type JobState = 'running' | 'succeeded' | 'failed';

export interface JobView {
  id: string;
  kind: string;
  target: string;
  state: JobState;
  progress: number;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface JobHandle { view: JobView; done: Promise<void>; setProgress(fraction: number): void }

export class JobManager {
  private readonly jobs = new Map<string, JobView>();
  private readonly running = new Set<Promise<void>>();

  get(id: string): JobView | undefined { return this.jobs.get(id); }
  list(): JobView[] { return [...this.jobs.values()]; }

  /** Starts `work`; the returned `done` never rejects (the error is in the job). */
  start(kind: string, target: string, work: (setProgress: (f: number) => void) => Promise<void>): JobHandle {
    const view: JobView = {
      id: randomUUID(), kind, target, state: 'running', progress: 0, error: null,
      createdAt: new Date().toISOString(), finishedAt: null,
    };
    this.jobs.set(view.id, view);
    const setProgress = (f: number): void => {
      if (view.state === 'running') view.progress = Math.max(view.progress, Math.min(1, Math.max(0, f)));
    };
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
    })();
    this.running.add(done);
    void done.then(() => this.running.delete(done));
    return { view, done, setProgress };
  }

  /** Waits for every running job (shutdown). */
  async drain(): Promise<void> { await Promise.all([...this.running]); }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.state !== 'running');
    for (const job of finished.slice(0, Math.max(0, finished.length - jobsFinishedMax))) this.jobs.delete(job.id);
  }
}
