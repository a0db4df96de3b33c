// Fuzzing the NBD server with seeded random and mutated byte streams, in the handshake and in the
// transmission phase, many connections at once. Afterwards: no connection is left behind, a real
// client (qemu-io) still works, and the pool passes its consistency check. Replay a failure with
// CAIRN_FUZZ_SEED=<seed printed in the test name>. Also: stalled clients are cut off or harmless.
// Before the random part, every input kept in test/corpus/nbd/ (format: docs/testing.md) is replayed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFixture, runOk, waitUntil, defer, MiB } from './nbd-harness.js';

const seed = Number(process.env.CAIRN_FUZZ_SEED ?? 0x5eed1234);

/** mulberry32: a small deterministic PRNG, so one seed reproduces every byte sent. */
function prng(initial: number): () => number {
  let state = initial >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type Rng = () => number;
const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
const bytes = (rng: Rng, n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(rng, 256)));

function option(code: number, data: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(0x49484156454f5054n, 0);
  header.writeUInt32BE(code, 8);
  header.writeUInt32BE(data.length, 12);
  return Buffer.concat([header, data]);
}

function nameData(name: string, tail: Buffer): Buffer {
  const n = Buffer.from(name);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(n.length);
  return Buffer.concat([length, n, tail]);
}

/** A plausible option sequence, for mutation. */
function validOptions(rng: Rng, exportName: string): Buffer {
  const queries = Buffer.alloc(4 + 4 + 15);
  queries.writeUInt32BE(1, 0);
  queries.writeUInt32BE(15, 4);
  queries.write('base:allocation', 8);
  const choices = [
    () => option(8, Buffer.alloc(0)),
    () => option(3, Buffer.alloc(0)),
    () => option(10, nameData(exportName, queries)),
    () => option(9, nameData(exportName, queries)),
    () => option(6, nameData(exportName, Buffer.from([0, 2, 0, 3, 0, 1]))),
    () => option(int(rng, 64), bytes(rng, int(rng, 40))),
    () => option(5, Buffer.alloc(0)),
  ];
  const parts: Buffer[] = [Buffer.from([0, 0, 0, int(rng, 4)])];
  for (let i = int(rng, 6); i > 0; i--) parts.push(choices[int(rng, choices.length)]!());
  parts.push(option(7, nameData(exportName, Buffer.from([0, 0]))));
  return Buffer.concat(parts);
}

/** Requests (some with payloads), plausible enough to reach deep into the command code. */
function validRequests(rng: Rng, sizeBytes: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 1 + int(rng, 20); i > 0; i--) {
    const header = Buffer.alloc(28);
    const type = int(rng, 10);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(rng() < 0.8 ? 0 : int(rng, 64), 4);
    header.writeUInt16BE(type === 2 && rng() < 0.8 ? 0 : type, 6);
    header.writeUInt32BE(int(rng, 0xffffffff), 12);
    const offset = rng() < 0.9 ? int(rng, sizeBytes) : int(rng, 2 * sizeBytes);
    header.writeUInt32BE(Math.floor(offset / 0x100000000), 16);
    header.writeUInt32BE(offset >>> 0, 20);
    const length = rng() < 0.9 ? int(rng, 256 * 1024) : int(rng, 0xffffffff);
    header.writeUInt32BE(length, 24);
    parts.push(header);
    if (type === 1 && length <= 256 * 1024) parts.push(bytes(rng, Math.min(length, 4096)), Buffer.alloc(Math.max(0, length - 4096)));
  }
  return Buffer.concat(parts);
}

function mutate(rng: Rng, data: Buffer): Buffer {
  const out = Buffer.from(data);
  const kind = int(rng, 4);
  if (kind === 0) return out; // valid: exercises the normal paths in the fuzz mix
  if (kind === 1) { for (let i = 1 + int(rng, 8); i > 0 && out.length > 0; i--) out[int(rng, out.length)]! ^= 1 << int(rng, 8); return out; }
  if (kind === 2) return out.subarray(0, int(rng, out.length + 1));
  return Buffer.concat([out.subarray(0, int(rng, out.length + 1)), bytes(rng, int(rng, 64))]);
}

/** Connects, sends `data` in random slices, waits briefly, then closes. */
async function throwBytes(rng: Rng, port: number, data: Buffer, afterHandshake: Buffer | null): Promise<void> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  await new Promise<void>((resolve) => { socket.once('connect', resolve); socket.once('close', resolve); });
  const stream = afterHandshake ? Buffer.concat([afterHandshake, data]) : data;
  for (let position = 0; position < stream.length && !socket.destroyed;) {
    const slice = 1 + int(rng, 8192);
    socket.write(stream.subarray(position, position + slice));
    position += slice;
    if (rng() < 0.1) await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await new Promise((resolve) => setTimeout(resolve, 20 + int(rng, 60)));
  if (rng() < 0.5) socket.end(); else socket.destroy();
}

/** test/corpus/nbd, from the source tree (the compiled test runs from dist/test). */
function corpusDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['..', '../..']) {
    const dir = path.resolve(here, up, 'test', 'corpus', 'nbd');
    try { if (readdirSync(dir).length > 0) return dir; } catch { /* not this layout: try the next */ }
  }
  throw new Error(`test/corpus/nbd not found from ${here}`);
}

export interface CorpusCase { name: string; phase: 'handshake' | 'transmission'; data: Buffer }

/** A corpus file: `#` comment lines (one `# phase: handshake|transmission`), hex bytes, `*COUNT:BYTE` runs. */
export function parseCorpusCase(name: string, text: string): CorpusCase {
  let phase: CorpusCase['phase'] | null = null;
  const parts: Buffer[] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    if (trimmed.startsWith('#')) {
      const m = /^#\s*phase:\s*(handshake|transmission)\s*$/.exec(trimmed);
      if (m) phase = m[1] as CorpusCase['phase'];
      continue;
    }
    for (const token of trimmed.split(/\s+/)) {
      const run = /^\*([0-9]+):([0-9a-f]{2})$/i.exec(token);
      if (run) { parts.push(Buffer.alloc(Number(run[1]), parseInt(run[2]!, 16))); continue; }
      assert.match(token, /^([0-9a-f]{2})+$/i, `${name}: bad token ${token}`);
      parts.push(Buffer.from(token, 'hex'));
    }
  }
  assert.ok(phase !== null, `${name}: no "# phase:" line`);
  return { name, phase, data: Buffer.concat(parts) };
}

/** The clean handshake that transmission-phase corpus inputs follow: fixed newstyle, structured replies, GO "fuzz". */
function cleanHandshake(): Buffer {
  return Buffer.concat([Buffer.from([0, 0, 0, 3]), option(8, Buffer.alloc(0)), option(7, nameData('fuzz', Buffer.from([0, 0])))]);
}

/** Sends one corpus input in one piece; resolves with what came back once the server closed or went quiet. */
async function replay(port: number, c: CorpusCase): Promise<Buffer> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => { socket.once('connect', resolve); socket.once('close', resolve); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(c.phase === 'transmission' ? Buffer.concat([cleanHandshake(), c.data]) : c.data);
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 300))]);
  socket.destroy();
  return Buffer.concat(chunks);
}

test(`fuzz: random and mutated handshakes and requests (seed ${seed})`, { timeout: 600_000 }, async (t) => {
  const f = await startFixture(t, { handshakeIdleMs: 2_000 });
  const sizeBytes = 16 * MiB;
  await f.engine.createVolume('fuzz', sizeBytes);
  await f.engine.createVolume('witness', 4 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 0 1M', f.uri('witness')]);
  await f.engine.createSnapshots(['fuzz@s']);
  const port = f.server.port as number;
  // The corpus first: each kept input, alone, then a check that the server still serves.
  const dir = corpusDir();
  const files = readdirSync(dir).filter((n) => n.endsWith('.hex')).sort();
  assert.ok(files.length >= 30, `corpus has ${files.length} inputs`);
  for (const file of files) {
    const c = parseCorpusCase(file, readFileSync(path.join(dir, file), 'utf8'));
    const answer = await replay(port, c);
    // Every connection is greeted (18 bytes) before the server reads a byte.
    assert.ok(answer.length >= 18, `${file}: no greeting (${answer.length} bytes)`);
  }
  await waitUntil(() => f.server.connections() === 0, 'all corpus connections to close');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x6b 0 1M', f.uri('witness')]);
  const rng = prng(seed);
  const rounds = 1200;
  const parallel = 8;
  for (let round = 0; round < rounds; round += parallel) {
    const batch: Promise<void>[] = [];
    for (let i = 0; i < parallel; i++) {
      const phase = int(rng, 3);
      const exportName = rng() < 0.7 ? 'fuzz' : rng() < 0.5 ? 'fuzz@s' : 'nope';
      if (phase === 0) batch.push(throwBytes(rng, port, bytes(rng, int(rng, 300)), null));
      else if (phase === 1) batch.push(throwBytes(rng, port, mutate(rng, validOptions(rng, exportName)), null));
      else {
        // A clean handshake (fixed newstyle, structured replies, GO), then mutated requests.
        const handshake = Buffer.concat([Buffer.from([0, 0, 0, 3]), option(8, Buffer.alloc(0)), option(7, nameData('fuzz', Buffer.from([0, 0])))]);
        const garbage = rng() < 0.2 ? bytes(rng, int(rng, 2000)) : mutate(rng, validRequests(rng, sizeBytes));
        batch.push(throwBytes(rng, port, garbage, handshake));
      }
    }
    await Promise.all(batch);
  }
  await waitUntil(() => f.server.connections() === 0, 'all fuzz connections to close');
  // The mix must reach both phases and both outcomes, or it tests nothing.
  const count = (event: string): number => f.events.filter((e) => e.event === event).length;
  assert.ok(count('nbd_connected') > rounds / 10, `transmission reached ${count('nbd_connected')} times`);
  assert.ok(count('nbd_hang_up') > rounds / 10, `hang-ups ${count('nbd_hang_up')}`);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x6b 0 1M', '-c', 'write -P 0x6c 1M 64k', '-c', 'read -P 0x6c 1M 64k', f.uri('witness')]);
  await runOk('nbdinfo', ['--map', f.uri('fuzz')]);
  const report = await f.engine.check();
  assert.equal(report.ok, true, JSON.stringify(report.problems.slice(0, 5)));
});

test('a client that stalls in the handshake is disconnected; one stalled mid-request blocks nobody', async (t) => {
  const f = await startFixture(t, { handshakeIdleMs: 500 });
  await f.engine.createVolume('v', 8 * MiB);
  // Stalled in the handshake: connects, reads the greeting, never answers.
  const silent = net.connect(f.server.port as number, '127.0.0.1');
  defer(t, () => silent.destroy());
  silent.on('data', () => undefined);
  const closedAt = new Promise<number>((resolve) => silent.once('close', () => resolve(Date.now())));
  const startedAt = Date.now();
  // Stalled mid-request: a WRITE header and half of its payload, then nothing.
  const stalled = net.connect(f.server.port as number, '127.0.0.1');
  defer(t, () => stalled.destroy());
  stalled.on('data', () => undefined);
  const name = Buffer.from('v');
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(1, 6);
  header.writeUInt32BE(1 * MiB, 24);
  stalled.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option(1, name), header, Buffer.alloc(MiB / 2)]));
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 0 1M', '-c', 'read -P 0x21 0 1M', f.uri('v')]);
  const elapsedMs = (await closedAt) - startedAt;
  // What is guaranteed: the timer never fires early (its 500 ms start after the connect began), and
  // it was the handshake timer that hung up. How late it fires depends on the machine's load.
  assert.ok(elapsedMs >= 400, `the silent client was closed after ${elapsedMs} ms, before its handshake timeout`);
  assert.ok(f.events.some((e) => e.event === 'nbd_hang_up' && e.fields['reason'] === 'handshake idle'),
    'the server hung up on the silent client for its handshake idle timeout');
  // qemu-io's connection is gone; the mid-request client stays connected (it may still resume).
  await waitUntil(() => f.server.connections() === 1, 'only the stalled client to remain');
  assert.equal(stalled.destroyed, false);
});
