// Reading a small secret file (a KEK, a PIN) with a bound: a path that names a device or a huge file
// is refused after limitBytes + 1 bytes instead of being read whole. Failures are KekUnavailable.
import { open } from 'node:fs/promises';
import { KekUnavailable } from './errors.js';

/** The file's first limitBytes + 1 bytes at most (one more than allowed tells "too long"). */
export async function readBounded(path: string, limitBytes: number, what: string): Promise<Buffer> {
  const capacityBytes = limitBytes + 1;
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new KekUnavailable(`${what} ${path}: ${reasonOf(err)}`);
  }
  try {
    const buf = Buffer.alloc(capacityBytes);
    let filledBytes = 0;
    while (filledBytes < capacityBytes) {
      const { bytesRead } = await handle.read(buf, filledBytes, capacityBytes - filledBytes, null);
      if (bytesRead === 0) break;
      filledBytes += bytesRead;
    }
    return buf.subarray(0, filledBytes);
  } catch (err) {
    throw new KekUnavailable(`${what} ${path}: ${reasonOf(err)}`);
  } finally {
    await handle.close();
  }
}

function reasonOf(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'ENOENT') return 'missing';
  if (code === 'EACCES' || code === 'EPERM') return 'not readable (permission denied)';
  if (code === 'EISDIR') return 'is a directory';
  return err instanceof Error ? err.message : String(err);
}
