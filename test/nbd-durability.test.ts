// End to end: a write acknowledged after NBD_CMD_FLUSH (or sent with FUA) survives kill -9 of the
// server process; the pool reopens clean. Also: server.close() lets running requests finish and
// ends connections (new requests get ESHUTDOWN).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { openPoolFile } from '../src/engine/index.js';
import { startFixture, runOk, defer, PythonSession, waitUntil, MiB } from './nbd-harness.js';

/** Starts test/nbd-server-child (the .ts source under tsx, the compiled .js from dist/). */
async function startChild(poolPath: string): Promise<{ port: number; kill(): Promise<void> }> {
  const here = fileURLToPath(import.meta.url);
  const underTsx = here.endsWith('.ts');
  const script = path.join(path.dirname(here), underTsx ? 'nbd-server-child.ts' : 'nbd-server-child.js');
  const child = spawn(process.execPath, [...(underTsx ? ['--import', 'tsx'] : []), script, poolPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (): Promise<void> => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } };
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => { if (line.startsWith('port ')) resolve(Number(line.slice(5))); });
    child.once('exit', (code) => reject(new Error(`server child exited ${code}: ${stderr}`)));
  });
  return { port, kill };
}

test('flushed and FUA writes survive kill -9 of the server; the pool reopens clean', { timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-nbd-durable-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const poolPath = path.join(dir, 'pool.cairn');
  const first = await startChild(poolPath);
  defer(t, () => first.kill());
  const uri = `nbd://127.0.0.1:${first.port}/d`;
  // Flushed writes, then a FUA write (qemu-io write -f sets NBD_CMD_FLAG_FUA).
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5d 0 8M', '-c', 'write -P 0x6e 40M 512k', '-c', 'flush',
    '-c', 'write -f -P 0x7f 20M 64k', uri]);
  await first.kill();
  const engine = await openPoolFile(poolPath);
  try {
    const id = engine.resolve('d').id;
    assert.ok((await engine.read(id, 0, 8 * MiB)).equals(Buffer.alloc(8 * MiB, 0x5d)), 'flushed write survived');
    assert.ok((await engine.read(id, 40 * MiB, 512 * 1024)).equals(Buffer.alloc(512 * 1024, 0x6e)), 'flushed write survived');
    assert.ok((await engine.read(id, 20 * MiB, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0x7f)), 'FUA write survived');
    const report = await engine.check();
    assert.equal(report.ok, true, JSON.stringify(report.problems.slice(0, 5)));
  } finally {
    await engine.close();
  }
  // And the server serves the recovered pool again.
  const second = await startChild(poolPath);
  defer(t, () => second.kill());
  await runOk('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5d 0 8M', '-c', 'read -P 0x7f 20M 64k', `nbd://127.0.0.1:${second.port}/d`]);
});

test('server close(): open connections are told ESHUTDOWN or closed, and close() resolves', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('c', 8 * MiB);
  const session = new PythonSession(t, `
import nbd, sys, json
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for line in sys.stdin:
    try:
        h.pread(4096, 0); print(json.dumps({"err": 0}))
    except nbd.Error as e:
        print(json.dumps({"err": e.errnum if e.errnum is not None else -1}))
`, [f.uri('c')]);
  assert.deepEqual(await session.call('read'), { err: 0 });
  assert.equal(f.server.connections(), 1);
  await f.server.close();
  assert.equal(f.server.connections(), 0);
  const after = await session.call('read');
  assert.notEqual(after.err, 0, 'no request is served after close()');
  await waitUntil(() => f.events.some((e) => e.event === 'nbd_closed'), 'nbd_closed event');
});
