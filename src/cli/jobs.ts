// Waiting for a daemon job (flatten, long delete) with a progress bar; a failed job is a CliError.
import type { ApiClient } from './client.js';
import { CliError } from './client.js';
import { progressBar } from './progress.js';

export interface JobView {
  id: string; kind: string; target: string; state: 'running' | 'succeeded' | 'failed' | 'interrupted'; progress: number;
  error: { code: string; message: string } | null;
}

/** Poll interval while a job runs. */
export const jobPollMs = 200;

export async function waitForJob(client: ApiClient, job: JobView, label: string, showBar: boolean): Promise<JobView> {
  const bar = progressBar(label, showBar);
  let current = job;
  try {
    while (current.state === 'running') {
      bar.update(current.progress);
      await new Promise((r) => setTimeout(r, jobPollMs));
      current = await client.get<JobView>(`/v1/jobs/${current.id}`);
    }
    bar.update(1);
  } finally {
    bar.stop();
  }
  if (current.state === 'failed' || current.state === 'interrupted') {
    throw new CliError(`${current.kind} of ${current.target} ${current.state}: ${current.error?.message ?? 'unknown'} (${current.error?.code ?? 'error'})`,
      current.error?.code ?? 'error');
  }
  return current;
}
