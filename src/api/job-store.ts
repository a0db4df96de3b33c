// Job records beside the pool (`POOL.jobs.json` in the state directory), replaced atomically (write,
// fsync, rename, fsync the directory) on every start and end of a job, so a job id outlives a daemon
// restart. At the next start a job that was running is settled from what the pool says: a flatten
// goes on by itself (the engine resumes it from its catalog cursor) and its job follows the volume's
// progress; a delete that committed succeeded; anything else is `interrupted`, saying what to redo.
// The file is bookkeeping for clients, not pool state: if it is lost, only the job history is.
import { promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Engine, VolumeInfo } from '../engine/index.js';
import { VolumeNotFound } from '../engine/index.js';
import type { JobLog, JobManager, JobView } from './jobs.js';

/** How often a job resumed after a restart reads its volume's flatten progress. */
export const jobFollowIntervalMs = 250;
/** Version of the job file's layout. */
const jobFileVersion = 1;

/** Where the daemon keeps the job records of `poolPath`. */
export function jobFilePath(poolPath: string, stateDir = dirname(poolPath)): string {
  return join(stateDir, `${basename(poolPath)}.jobs.json`);
}

export class JobStore {
  private latest: JobView[] = [];
  private queued: Promise<void> | null = null;
  private tail: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {}

  /** The records in the file; [] when there is none. Throws on a file that is not one of ours. */
  async load(): Promise<JobView[]> {
    let text: string;
    try {
      text = await fsp.readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const parsed = JSON.parse(text) as { version?: unknown; jobs?: unknown };
    if (parsed.version !== jobFileVersion || !Array.isArray(parsed.jobs)) throw new Error(`not a version ${jobFileVersion} job file`);
    return (parsed.jobs as JobView[]).filter((j) => typeof j.id === 'string' && typeof j.state === 'string')
      .map((j) => ({ ...j, resumed: j.resumed === true }));
  }

  /**
   * Writes `views` (as they are when the write starts). Saves made while one is waiting share it,
   * so a burst of job events costs one write after the one in progress.
   */
  save(views: JobView[]): Promise<void> {
    this.latest = views;
    if (this.queued !== null) return this.queued;
    // The previous save's failure was logged by that save; this one writes the latest views regardless.
    const next = this.tail.catch(() => {}).then(() => {
      this.queued = null;
      return this.write(this.latest);
    });
    this.queued = next;
    this.tail = next;
    return next;
  }

  private async write(views: JobView[]): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const handle = await fsp.open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(JSON.stringify({ version: jobFileVersion, jobs: views }));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, this.path);
    const dir = await fsp.open(dirname(this.path), 'r');
    try { await dir.sync(); } finally { await dir.close(); }
  }
}

function volumeOrNull(engine: Engine, name: string): VolumeInfo | null {
  try {
    return engine.getVolume(name);
  } catch (err) {
    if (err instanceof VolumeNotFound) return null;
    throw err;
  }
}

function interrupted(view: JobView, message: string): void {
  view.state = 'interrupted';
  view.error = { code: 'job_interrupted', message: `the daemon restarted while this ${view.kind} ran: ${message}` };
  view.finishedAt = new Date().toISOString();
}

/** Settles a job found running in the file; true when its operation goes on (follow it). */
function settle(view: JobView, engine: Engine): boolean {
  const volume = view.kind === 'flatten' || view.kind === 'delete' ? volumeOrNull(engine, view.target) : null;
  switch (view.kind) {
    case 'flatten':
      if (volume === null) { interrupted(view, `volume ${view.target} no longer exists`); return false; }
      if (volume.flattenProgress !== null) {
        view.resumed = true; // the engine resumes it from its catalog cursor at open
        return true;
      }
      if (volume.origin === null) {
        // Its last commit made it before the restart, or the flatten resumed at open has ended already.
        view.resumed = engine.flattenWasUnderWayAtOpen(view.target);
        view.state = 'succeeded';
        view.progress = 1;
        view.finishedAt = new Date().toISOString();
        return false;
      }
      interrupted(view, 'it had not started; it does not resume on its own: flatten the volume again');
      return false;
    case 'delete':
      if (volume === null) {
        view.state = 'succeeded'; // deletes are one commit: it made it
        view.progress = 1;
        view.finishedAt = new Date().toISOString();
      } else {
        interrupted(view, `volume ${view.target} was not deleted; it does not resume on its own: delete it again`);
      }
      return false;
    case 'export':
      interrupted(view, 'the stream was cut; it does not resume on its own: export again');
      return false;
    case 'import':
      interrupted(view, `it does not resume on its own and must be retried; ${view.target} may hold part of the stream `
        + '(after a full stream, delete the volume; after an incremental one, revert it to its latest snapshot) before importing again');
      return false;
    case 'drain':
      // The draining mark lives in the cluster's records, so the move goes on; only this job stopped.
      interrupted(view, `the node stays marked draining and its replicas keep moving; run "cairn node drain ${view.target}" again to follow it`);
      return false;
    default:
      interrupted(view, 'it does not resume on its own: start it again');
      return false;
  }
}

/** Follows a flatten the engine resumed at open, until the volume's cursor is gone. */
async function followFlatten(engine: Engine, name: string, setProgress: (f: number) => void): Promise<void> {
  for (;;) {
    const volume = engine.getVolume(name); // VolumeNotFound (deleted meanwhile) fails the job
    if (volume.flattenProgress === null) return;
    setProgress(volume.flattenProgress);
    await new Promise((resolve) => setTimeout(resolve, jobFollowIntervalMs));
  }
}

/**
 * Loads the records of the previous run into `jobs`, settling the ones that were running, and saves
 * the result before the API serves. An unreadable file is logged and set aside (`.bad`), not fatal.
 */
export async function restoreJobs(jobs: JobManager, store: JobStore, engine: Engine, log: JobLog): Promise<void> {
  let views: JobView[];
  try {
    views = await store.load();
  } catch (err) {
    log('jobs_file_invalid', { path: store.path, error: err instanceof Error ? err.message : String(err), movedTo: `${store.path}.bad` });
    await fsp.rename(store.path, `${store.path}.bad`);
    views = [];
  }
  const wasRunning = views.filter((view) => view.state === 'running');
  const follow = wasRunning.filter((view) => settle(view, engine));
  jobs.adopt(views);
  for (const view of follow) jobs.run(view, (setProgress) => followFlatten(engine, view.target, setProgress));
  if (wasRunning.length > 0) {
    log('jobs_restored', { path: store.path, running: wasRunning.length, resumed: follow.length,
      interrupted: wasRunning.filter((v) => v.state === 'interrupted').map((v) => `${v.kind} ${v.target} (${v.id})`) });
  }
  await jobs.flush();
}
