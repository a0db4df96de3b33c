// Jobs (flatten, delete, export, import): running ones with their progress, finished ones with
// their outcome; refreshed every second.
import { useState } from 'preact/hooks';
import { get, type Job } from '../api';
import { ErrorLine, Progress, useInterval } from '../components';

export function JobsView() {
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useInterval(() => { get<Job[]>('/v1/jobs').then((j) => { setJobs(j); setError(null); }, setError); }, 1000);
  const sorted = [...(jobs ?? [])].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  return (
    <section aria-labelledby="jobs-h">
      <h1 id="jobs-h">Jobs</h1>
      <ErrorLine error={error} />
      {jobs !== null && jobs.length === 0 && <p>No jobs yet: a flatten, a long delete, an export or an import shows here.</p>}
      {sorted.length > 0 && (
        <div class="table-wrap">
          <table class="plain">
            <thead><tr><th scope="col">Kind</th><th scope="col">Target</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col" class="opt">Started</th><th scope="col" class="opt">Finished</th></tr></thead>
            <tbody>
              {sorted.map((j) => (
                <tr>
                  <td>{j.kind}</td><td>{j.target}</td>
                  <td class={`state-${j.state}`}>{j.state}{j.error !== null && <div class="error-inline">{j.error.message}</div>}</td>
                  <td><Progress value={j.state === 'succeeded' ? 1 : j.progress} label={`${j.kind} ${j.target}`} /></td>
                  <td class="opt">{j.createdAt.replace('T', ' ').slice(0, 19)}</td><td class="opt">{j.finishedAt?.replace('T', ' ').slice(0, 19) ?? ''}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
