// What every CLI command needs: the API client (from --api / CAIRN_API), whether --json was given,
// and the size argument parser (a bad size is a usage error, exit 2).
import { InvalidArgumentError } from 'commander';
import type { ApiClient } from './client.js';
import { parseSize } from './sizes.js';

export interface CliContext {
  client(): ApiClient;
  json(): boolean;
  sizeArg(value: string): number;
}

export function sizeArg(value: string): number {
  const bytes = parseSize(value);
  if (bytes === null) throw new InvalidArgumentError(`invalid size ${JSON.stringify(value)} (expected bytes or a number with K, M, G or T)`);
  return bytes;
}
