// `--limit N` and `--page-token T` of the list commands. Without them a list fetches every page
// (what a user typing `cairn snapshot list` expects); with them it prints one page and, when more
// follow, the token for the next on stderr, so scripts can walk a list of 100 000 snapshots in steps.
import { InvalidArgumentError, type Command } from 'commander';
import type { ApiClient, ListPaging } from './client.js';

/** The API's largest page (src/api/paging.ts pageItemsMax). */
const pageItemsMax = 1000;

function limitArg(value: string): number {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > pageItemsMax) {
    throw new InvalidArgumentError(`invalid limit ${JSON.stringify(value)} (expected 1..${pageItemsMax})`);
  }
  return n;
}

export function withPagingOptions(cmd: Command): Command {
  return cmd
    .option('--limit <n>', `one page of at most n items (1..${pageItemsMax}) instead of the whole list`, limitArg)
    .option('--page-token <token>', 'continue a paged list from the token a previous --limit printed');
}

/** Fetches the list (all of it, or the one page asked for) and reports a next token on stderr. */
export async function fetchList<T>(client: ApiClient, path: string, opts: ListPaging): Promise<T[]> {
  const { items, nextPageToken } = await client.list<T>(path, { limit: opts.limit, pageToken: opts.pageToken });
  if (nextPageToken !== null) process.stderr.write(`more: continue with --page-token ${nextPageToken}\n`);
  return items;
}
