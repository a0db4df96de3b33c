// Runs the node's tools (losetup, mount, mkfs, blkid, ...) with a time bound, never through a
// shell, and turns a failure into an error that carries the tool's own stderr.
import { spawn } from 'node:child_process';
import { commandTimeoutMs } from './constants.js';

export interface RunResult { code: number; stdout: string; stderr: string }

export class CommandFailed extends Error {
  constructor(readonly command: string, readonly result: RunResult) {
    super(`${command} failed (exit ${result.code}): ${(result.stderr || result.stdout).trim().slice(0, 500)}`);
    this.name = 'CommandFailed';
  }
}

/** Runs `cmd args`; resolves with the exit code and output (never rejects on exit code). */
export function runRaw(cmd: string, args: string[], timeoutMs = commandTimeoutMs): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { if (stdout.length < 1 << 20) stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 1 << 20) stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
}

/** Runs `cmd args`; throws CommandFailed unless it exits 0. Returns stdout. */
export async function run(cmd: string, args: string[], timeoutMs = commandTimeoutMs): Promise<string> {
  const result = await runRaw(cmd, args, timeoutMs);
  if (result.code !== 0) throw new CommandFailed(`${cmd} ${args.join(' ')}`, result);
  return result.stdout;
}
