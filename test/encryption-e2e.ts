// Helpers for the end-to-end encryption tests (cli-encryption*, hsm-encryption): KEK files, the API
// views those tests read, qemu-io against an export and its local mirror, bounded polling, and a
// search of a pool file for a byte pattern (the "no plaintext on disk" oracle).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { authHeaders, run, type RunResult } from './cli-helpers.js';

export const MiB = 1024 * 1024;

/** A fresh KEK: exactly 32 random bytes in a 0600 file; returns its file: reference. */
export async function writeKekFile(path: string): Promise<string> {
  await writeFile(path, randomBytes(32), { mode: 0o600 });
  return `file:${path}`;
}

export interface VolumeJson { name: string; encrypted: boolean; locked: boolean; origin: string | null; size: number }
export interface EncryptionJson {
  tenant: string; kek: string | null; state: 'none' | 'available' | 'unavailable'; error: string | null;
  rotatingTo: string | null; encryptedLineages: number; lockedLineages: number;
}

/** GET a JSON resource of the daemon at `api` as its admin; throws on a non-2xx answer. */
export async function apiGet<T>(api: string, path: string): Promise<T> {
  const r = await fetch(`${api}${path}`, { headers: authHeaders(api) });
  const text = await r.text();
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${text}`);
  return JSON.parse(text) as T;
}

/** A raw API call as the admin: status and parsed body (null when empty). */
export async function apiCall(api: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${api}${path}`, {
    method, headers: { ...authHeaders(api), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, body: text === '' ? null : JSON.parse(text) as unknown };
}

export const volumeJson = (api: string, name: string): Promise<VolumeJson> => apiGet<VolumeJson>(api, `/v1/volumes/${encodeURIComponent(name)}`);
export const encryptionJson = (api: string, tenant: string): Promise<EncryptionJson> => apiGet<EncryptionJson>(api, `/v1/tenants/${tenant}/encryption`);

/**
 * Polls `probe` until it returns a value other than undefined. The bound is a hang guard, not a speed
 * requirement: generous, so a loaded machine only makes the test slower.
 */
export async function pollUntil<T>(what: string, probe: () => Promise<T | undefined>, boundMs = 90_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting (${boundMs} ms) for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** qemu-io `commands` against `target`, an nbd:// URI or a local raw file. */
export function qemuIo(target: string, commands: string[]): Promise<RunResult> {
  const format = /^nbds?:\/\//.test(target) ? [] : ['-f', 'raw'];
  return run('qemu-io', [...format, ...commands.flatMap((c) => ['-c', c]), target]);
}

/** The same qemu-io writes on the export and on its local mirror file, both expected to succeed. */
export async function writeBoth(exportUri: string, mirror: string, commands: string[]): Promise<void> {
  for (const target of [exportUri, mirror]) {
    const r = await qemuIo(target, commands);
    assert.equal(r.code, 0, `qemu-io ${commands.join('; ')} on ${target}: ${r.stderr}${r.stdout}`);
    assert.doesNotMatch(r.stdout, /error|failed/i, `qemu-io on ${target}: ${r.stdout}`);
  }
}

/** `qemu-img compare` of an export with a local raw file: 0 identical, 1 different. */
export async function compareWith(exportUri: string, mirror: string): Promise<RunResult> {
  return run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', mirror, exportUri]);
}

export async function assertSameAs(exportUri: string, mirror: string, what: string): Promise<void> {
  const r = await compareWith(exportUri, mirror);
  assert.equal(r.code, 0, `${what}: qemu-img compare says ${r.stdout}${r.stderr}`);
}

/** A local raw file of `sizeBytes`, zeroed (sparse): the mirror of a new volume. */
export async function zeroFile(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(sizeBytes);
  await fh.close();
}

/** A block of `sizeBytes` filled with `text` repeated: a pattern that is recognisable in a raw file. */
export function markerBlock(text: string, sizeBytes: number): Buffer {
  const out = Buffer.alloc(sizeBytes);
  out.fill(text);
  return out;
}

/** How many times each of `needles` occurs in the file at `path`: one pass, in chunks overlapping by the longest needle. */
export async function countInFile(path: string, needles: Buffer[]): Promise<number[]> {
  const chunkBytes = 16 * MiB;
  const overlapBytes = Math.max(...needles.map((n) => n.length)) - 1;
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(chunkBytes + overlapBytes);
  const counts = needles.map(() => 0);
  let carry = 0;
  try {
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(buf, carry, chunkBytes, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      const end = carry + bytesRead;
      const window = buf.subarray(0, end);
      needles.forEach((needle, i) => {
        // A match that starts in the carried tail ends past the previous window: it was not counted there.
        for (let at = window.indexOf(needle); at >= 0; at = window.indexOf(needle, at + 1)) counts[i]!++;
      });
      carry = Math.min(overlapBytes, end);
      buf.copy(buf, 0, end - carry, end);
    }
  } finally {
    await fh.close();
  }
  return counts;
}

/**
 * Keeps writing through qemu-io, one process after another, to an export and then to its mirror:
 * write k puts pattern k at one of 32 places. stop() ends the loop after at least `moreWrites`
 * further writes, and returns how many were made; a failed write fails stop().
 */
export function startWriteLoop(exportUri: string, mirror: string): { stop(moreWrites?: number): Promise<number> } {
  let writes = 0;
  let stopAt = Number.POSITIVE_INFINITY;
  const done = (async () => {
    for (let k = 0; writes < stopAt; k++) {
      const command = `write -P ${(k % 250) + 1} ${(k % 32) * 128}k 128k`;
      await writeBoth(exportUri, mirror, [command]);
      writes++;
    }
  })();
  // A failure is reported by stop(); until then the rejection is held here.
  done.catch(() => undefined);
  return {
    async stop(moreWrites = 2) {
      stopAt = writes + moreWrites;
      await done;
      return writes;
    },
  };
}
