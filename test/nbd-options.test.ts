// Handshake and command rules of proto.md that the real clients here never exercise, driven over a raw
// socket: which SET_META_CONTEXT queries select nothing, a failed SET clearing the earlier selection,
// options whose data is over the limit answered as their option would be, CACHE reporting a failed
// read and its length bound, and NBD_REP_ERR_SHUTDOWN to a client still haggling at shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { startFixture, defer, MiB, HANG_BOUND_MS } from './nbd-harness.js';

const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const OPT = { EXPORT_NAME: 1, ABORT: 2, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
const REP = { ACK: 1, INFO: 3, META_CONTEXT: 4, ERR_UNSUP: 0x80000001, ERR_TLS_REQD: 0x80000005, ERR_UNKNOWN: 0x80000006, ERR_SHUTDOWN: 0x80000007, ERR_TOO_BIG: 0x80000009 } as const;
const CMD = { READ: 0, CACHE: 5, BLOCK_STATUS: 7 } as const;
const EINVAL = 22;

interface OptionReply { option: number; type: number; data: Buffer }

/** A fixed-newstyle client that speaks raw options and requests (NO_ZEROES negotiated). */
class RawClient {
  private buffered = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private ended = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => { this.buffered = Buffer.concat([this.buffered, d]); this.wake?.(); });
    socket.on('close', () => { this.ended = true; this.wake?.(); });
    socket.on('error', () => undefined);
  }

  static async connect(port: number): Promise<RawClient> {
    const client = new RawClient(net.connect(port, '127.0.0.1'));
    await client.next(18);
    client.socket.write(Buffer.from([0, 0, 0, 3])); // FIXED_NEWSTYLE | NO_ZEROES
    return client;
  }

  async next(n: number): Promise<Buffer> {
    while (this.buffered.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buffered.length} of ${n} bytes`);
      await new Promise<void>((resolve) => { this.wake = resolve; });
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection; false only if it is stuck open (HANG_BOUND_MS). */
  async closed(): Promise<boolean> {
    const deadline = Date.now() + HANG_BOUND_MS;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.ended;
  }

  option(option: number, data: Buffer | number = Buffer.alloc(0)): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(IHAVEOPT, 0);
    header.writeUInt32BE(option, 8);
    const length = typeof data === 'number' ? data : data.length;
    header.writeUInt32BE(length, 12);
    this.socket.write(header);
    if (typeof data === 'number') {
      for (let sent = 0; sent < data; sent += 16384) this.socket.write(Buffer.alloc(Math.min(16384, data - sent), 0x61));
    } else {
      this.socket.write(data);
    }
  }

  async reply(): Promise<OptionReply> {
    const header = await this.next(20);
    assert.equal(header.readBigUInt64BE(0), REPLY_MAGIC);
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await this.next(header.readUInt32BE(16)) };
  }

  /** Every reply to one option, up to its final one (ACK or an error). */
  async replies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.reply();
      out.push(r);
      if (r.type !== REP.INFO && r.type !== REP.META_CONTEXT) return out;
    }
  }

  async structured(): Promise<void> {
    this.option(OPT.STRUCTURED_REPLY);
    assert.equal((await this.reply()).type, REP.ACK);
  }

  async meta(option: number, exportName: string, queries: string[]): Promise<{ names: string[]; final: number }> {
    const parts = [u32(Buffer.byteLength(exportName)), Buffer.from(exportName), u32(queries.length)];
    for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
    this.option(option, Buffer.concat(parts));
    const all = await this.replies();
    const names = all.filter((r) => r.type === REP.META_CONTEXT).map((r) => r.data.subarray(4).toString());
    return { names, final: all[all.length - 1]!.type };
  }

  /** GO asking for the information items `infos` (3 = NBD_INFO_BLOCK_SIZE: the client is then held to the maximum). */
  async go(exportName: string, infos: number[] = []): Promise<number> {
    const requests = Buffer.alloc(2 + 2 * infos.length);
    requests.writeUInt16BE(infos.length, 0);
    infos.forEach((info, i) => requests.writeUInt16BE(info, 2 + 2 * i));
    this.option(OPT.GO, Buffer.concat([u32(Buffer.byteLength(exportName)), Buffer.from(exportName), requests]));
    const all = await this.replies();
    return all[all.length - 1]!.type;
  }

  request(type: number, offset: number, length: number, handle: number): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(0x25609513, 0);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(BigInt(handle), 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(length, 24);
    this.socket.write(header);
  }

  /** The error of a reply: a simple one's error field, or a structured reply's error chunk (0 without). */
  async replyError(): Promise<number> {
    for (;;) {
      const magic = (await this.next(4)).readUInt32BE(0);
      if (magic === 0x67446698) return (await this.next(12)).readUInt32BE(0);
      assert.equal(magic, 0x668e33ef, 'a simple reply or a structured reply chunk');
      const header = await this.next(16);
      const flags = header.readUInt16BE(0), type = header.readUInt16BE(2);
      const payload = await this.next(header.readUInt32BE(12));
      if (type >= 0x8000) return payload.readUInt32BE(0);
      if (flags & 1) return 0;
    }
  }

  close(): void { this.socket.destroy(); }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

test('SET_META_CONTEXT: namespace-only queries select nothing; LIST still expands them', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('m', 8 * MiB);
  await f.engine.createSnapshots(['m@a']);
  const client = await RawClient.connect(f.server.port as number);
  defer(t, () => client.close());
  await client.structured();
  assert.deepEqual((await client.meta(OPT.LIST_META_CONTEXT, 'm', ['base:'])).names, ['base:allocation']);
  assert.deepEqual((await client.meta(OPT.LIST_META_CONTEXT, 'm', ['qemu:'])).names, ['qemu:dirty-bitmap:since:a']);
  for (const query of ['base:', 'qemu:', 'qemu:dirty-bitmap:']) {
    const set = await client.meta(OPT.SET_META_CONTEXT, 'm', [query]);
    assert.deepEqual(set, { names: [], final: REP.ACK }, `SET ${query} selects nothing (proto.md: MUST ignore base:)`);
  }
  const exact = await client.meta(OPT.SET_META_CONTEXT, 'm', ['base:', 'base:allocation']);
  assert.deepEqual(exact.names, ['base:allocation']);
});

test('a failed SET_META_CONTEXT still replaces the earlier selection (BLOCK_STATUS then has no context)', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('m', 8 * MiB);
  for (const failing of ['unknown export', 'data over the limit']) {
    const client = await RawClient.connect(f.server.port as number);
    defer(t, () => client.close());
    await client.structured();
    assert.deepEqual((await client.meta(OPT.SET_META_CONTEXT, 'm', ['base:allocation'])).names, ['base:allocation']);
    if (failing === 'unknown export') {
      assert.equal((await client.meta(OPT.SET_META_CONTEXT, 'nope', ['base:allocation'])).final, REP.ERR_UNKNOWN);
    } else {
      client.option(OPT.SET_META_CONTEXT, 70_000);
      assert.equal((await client.reply()).type, REP.ERR_TOO_BIG);
    }
    assert.equal(await client.go('m'), REP.ACK);
    client.request(CMD.BLOCK_STATUS, 0, 4096, 9);
    assert.equal(await client.replyError(), EINVAL, `after a SET that failed (${failing}), no context is selected`);
  }
});

test('option data over the limit: ABORT is acknowledged, an unknown option unsupported, TLS still required first', async (t) => {
  const f = await startFixture(t);
  const client = await RawClient.connect(f.server.port as number);
  defer(t, () => client.close());
  client.option(99, 70_000);
  assert.equal((await client.reply()).type, REP.ERR_UNSUP);
  client.option(OPT.INFO, 70_000);
  assert.equal((await client.reply()).type, REP.ERR_TOO_BIG, 'a known option whose data was skipped');
  client.option(OPT.ABORT, 70_000);
  const abort = await client.reply();
  assert.deepEqual([abort.option, abort.type], [OPT.ABORT, REP.ACK]);
  assert.equal(await client.closed(), true, 'the session ends after ABORT');

  const pskFile = path.join(f.dir, 'keys.psk');
  await writeFile(pskFile, `alice:${randomBytes(32).toString('hex')}\n`);
  const tls = await startFixture(t, { tls: { pskFile, required: true } });
  const plain = await RawClient.connect(tls.server.port as number);
  defer(t, () => plain.close());
  for (const option of [99, OPT.INFO, OPT.GO]) {
    plain.option(option, 70_000);
    assert.equal((await plain.reply()).type, REP.ERR_TLS_REQD, `option ${option} before STARTTLS`);
  }
});

test('CACHE reports a failed read, and refuses a length past the maximum block size', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('c', 8 * MiB);
  const id = f.engine.resolve('c').id;
  const marker = Buffer.alloc(4096, 0);
  marker.write('cairn cache test block, one of a kind', 0);
  await f.engine.write(id, 4096, marker, { fua: true });
  // A small flushed write is durable in the intent log and reaches its home block at the next commit.
  await f.engine.checkpoint();
  // Flip a bit of that block in the pool file, in every copy (the log's page and the home block; user
  // data is allocated near the pool's start).
  const file = await open(path.join(f.dir, 'pool.cairn'), 'r+');
  const head = Buffer.alloc(64 * MiB);
  await file.read(head, 0, head.length, 0);
  let copies = 0;
  for (let at = head.indexOf(marker); at >= 0; at = head.indexOf(marker, at + 4096)) {
    assert.ok(at > 0 && at % 4096 === 0, 'the written block is found in the pool file');
    await file.write(Buffer.from([marker[100]! ^ 0x10]), 0, 1, at + 100);
    copies++;
  }
  assert.ok(copies >= 1, 'the written block is found in the pool file');
  await file.close();

  const client = await RawClient.connect(f.server.port as number);
  defer(t, () => client.close());
  await client.structured();
  assert.equal(await client.go('c'), REP.ACK);
  client.request(CMD.CACHE, 0, 64 * 1024, 1);
  assert.notEqual(await client.replyError(), 0, 'CACHE over a corrupt block fails (proto.md: MUST set the error)');
  client.request(CMD.CACHE, 0, 4096, 2);
  assert.equal(await client.replyError(), 0, 'CACHE of a sound block succeeds');
  client.request(CMD.CACHE, 0, 32 * MiB + 4096, 3);
  // 8 MiB export: the range check comes first, so use a bigger export for the length rule below.
  assert.equal(await client.replyError(), EINVAL);
  await f.engine.createVolume('big', 64 * MiB);
  const big = await RawClient.connect(f.server.port as number);
  defer(t, () => big.close());
  await big.structured();
  assert.equal(await big.go('big', [3]), REP.ACK);
  big.request(CMD.CACHE, 0, 32 * MiB + 4096, 4);
  assert.equal(await big.replyError(), EINVAL, 'CACHE past the advertised maximum block size');
  big.request(CMD.CACHE, 0, 32 * MiB, 5);
  assert.equal(await big.replyError(), 0, 'CACHE of exactly the maximum');
  // A client that did not ask for block sizes has proto.md's default maximum: no limit.
  const free = await RawClient.connect(f.server.port as number);
  defer(t, () => free.close());
  await free.structured();
  assert.equal(await free.go('big'), REP.ACK);
  free.request(CMD.CACHE, 0, 32 * MiB + 4096, 6);
  assert.equal(await free.replyError(), 0, 'CACHE past 32 MiB without agreed block sizes');
});

test('at shutdown, a client still haggling hears NBD_REP_ERR_SHUTDOWN and may ABORT', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('s', 8 * MiB);
  const client = await RawClient.connect(f.server.port as number);
  defer(t, () => client.close());
  await client.structured();
  const closing = f.server.close();
  assert.equal(await client.go('s'), REP.ERR_SHUTDOWN);
  client.option(OPT.ABORT);
  assert.equal((await client.reply()).type, REP.ACK);
  assert.equal(await client.closed(), true);
  await closing;

  // One that stays silent is hung up by the handshake's grace timer, not left to the drain's
  // final destroy.
  const g = await startFixture(t);
  const silent = await RawClient.connect(g.server.port as number);
  defer(t, () => silent.close());
  await silent.structured();
  await g.server.close();
  assert.equal(await silent.closed(), true);
  assert.ok(g.events.some((e) => e.event === 'nbd_hang_up' && e.fields.reason === 'shutting down'),
    'the silent client was hung up as shutting down');
});
