// TcpTransport over loopback: 1000 concurrent requests with payloads checked both ways (data out of
// band, Buffers in replies), a peer that dies (TransportError, then a reconnect to its successor),
// timeouts, oversize frames refused on both sides, garbage and protocol violations closing only
// the offending connection, and the cluster secret keeping strangers out.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { TcpTransport } from '../src/cluster/tcp-transport.js';
import { TransportError } from '../src/cluster/transport.js';
import { encodeFrame, FrameDecoder, FrameError, FrameKind, FRAME_PAYLOAD_BYTES_MAX, FRAME_BYTES_MAX } from '../src/cluster/tcp-framing.js';
import type { ReplReply, ReplRequest } from '../src/cluster/messages.js';

const HOST = '127.0.0.1';
const addresses = new Map<string, string>();
const transports: TcpTransport[] = [];
after(async () => { for (const t of transports) await t.close(); });

async function node(name: string, options: { port?: number; secret?: string; encrypt?: boolean } = {}): Promise<TcpTransport> {
  const t = new TcpTransport({
    self: name,
    listen: { host: HOST, port: options.port ?? 0 },
    addressOf: (n) => addresses.get(n) ?? null,
    ...(options.secret === undefined ? {} : { clusterSecret: options.secret }),
    ...(options.encrypt === undefined ? {} : { encrypt: options.encrypt }),
  });
  const { port } = await t.start();
  addresses.set(name, `${HOST}:${port}`);
  transports.push(t);
  return t;
}

function write(seq: number, data: Buffer): ReplRequest {
  return { t: 'write', vol: 'v', epoch: 1, seq, incarnation: 'i', offsetBytes: seq * 4096, data, fua: false };
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Echoes a write: its digest and the data itself inside the result (a Buffer in a reply). */
function echoHandler(seen: string[]): (from: string, r: ReplRequest) => Promise<ReplReply> {
  return async (from, r) => {
    seen.push(from);
    if (r.t !== 'write') return { ok: true, result: { t: r.t } };
    await new Promise((res) => setImmediate(res));
    return { ok: true, result: { seq: r.seq, sha: sha(r.data), echo: r.data, isBuffer: Buffer.isBuffer(r.data) } };
  };
}

/** Opens a raw socket to `port`, sends `bytes`, resolves when the server closes it. */
async function rawClosedBy(port: number, bytes: Buffer[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = net.connect({ host: HOST, port }, () => { for (const b of bytes) s.write(b); });
    const timer = setTimeout(() => { s.destroy(); reject(new Error('the server kept a bad connection open')); }, 5000);
    s.on('error', () => undefined); // (a reset is a close too)
    s.on('close', () => { clearTimeout(timer); resolve(); });
    s.resume();
  });
}
const portOf = (name: string): number => Number(addresses.get(name)!.split(':')[1]);

test('framing: Buffers travel out of band, bounds checked before allocation', () => {
  const data = randomBytes(1000);
  const bytes = Buffer.concat(encodeFrame(FrameKind.request, 7, { a: 1, data, nested: { b: data.subarray(10, 20) }, list: [data.subarray(0, 3)] }));
  assert.ok(bytes.length < 1000 + 10 + 200, 'no base64 or number arrays');
  const decoder = new FrameDecoder();
  const frames = [];
  for (let i = 0; i < bytes.length; i += 7) frames.push(...decoder.push(bytes.subarray(i, i + 7)));
  assert.equal(frames.length, 1);
  const m = frames[0]!.message as { a: number; data: Buffer; nested: { b: Buffer }; list: Buffer[] };
  assert.equal(frames[0]!.requestId, 7);
  assert.ok(Buffer.isBuffer(m.data) && m.data.equals(data));
  assert.ok(m.nested.b.equals(data.subarray(10, 20)));
  assert.ok(m.list[0]!.equals(data.subarray(0, 3)));
  // Only an object whose one key is the reference becomes a Buffer; "__proto__" stays an own key.
  const raw = (header: string, payload: Buffer): Buffer => {
    const fixed = Buffer.alloc(13); fixed.writeUInt32BE(9 + Buffer.byteLength(header) + payload.length, 0); fixed.writeUInt8(FrameKind.request, 4);
    fixed.writeUInt32BE(1, 5); fixed.writeUInt32BE(Buffer.byteLength(header), 9);
    return Buffer.concat([fixed, Buffer.from(header), payload]);
  };
  const [odd] = new FrameDecoder().push(raw('{"x":{"$cairnBuf":[0,2],"y":1},"__proto__":{"$cairnBuf":[1,2]},"l":[[{"$cairnBuf":[0,3]}]]}', Buffer.from('abc')));
  const o = odd!.message as { x: unknown; l: Buffer[][] };
  assert.deepEqual(o.x, { $cairnBuf: [0, 2], y: 1 });
  assert.ok(Object.hasOwn(o, '__proto__') && Object.getPrototypeOf(o) === Object.prototype);
  assert.equal((Object.getOwnPropertyDescriptor(o, '__proto__')!.value as Buffer).toString(), 'bc');
  assert.equal(o.l[0]![0]!.toString(), 'abc');
  assert.throws(() => new FrameDecoder().push(raw('{"d":{"$cairnBuf":[2,4]}}', Buffer.from('abc'))), FrameError);
  assert.throws(() => new FrameDecoder().push(raw(`${'['.repeat(40)}1${']'.repeat(40)}`, Buffer.alloc(0))), /nested deeper/);
  assert.throws(() => encodeFrame(FrameKind.request, 1, JSON.parse(`${'['.repeat(40)}1${']'.repeat(40)}`)), /nested deeper/);
  const huge = Buffer.alloc(4); huge.writeUInt32BE(FRAME_BYTES_MAX + 1);
  assert.throws(() => new FrameDecoder().push(huge), /frame length/);
  assert.throws(() => encodeFrame(FrameKind.request, 1, { data: Buffer.alloc(FRAME_PAYLOAD_BYTES_MAX + 1) }), /payload/);
  assert.throws(() => encodeFrame(FrameKind.request, 1, { name: 'x'.repeat(70_000) }), /header/);
});

test('framing fuzz: random splits decode the same frames; random damage only ever raises FrameError', () => {
  let seed = 22;
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
  for (let round = 0; round < 200; round++) {
    const messages = Array.from({ length: 1 + rand(5) }, (_, i) => ({ t: 'write', seq: i, data: Buffer.alloc(rand(3000), i), extra: rand(2) ? [Buffer.alloc(rand(10), 9)] : null }));
    const stream = Buffer.concat(messages.flatMap((m, i) => encodeFrame(FrameKind.request, i, m)));
    const decoder = new FrameDecoder();
    const frames = [];
    for (let at = 0; at < stream.length;) {
      const n = 1 + rand(700);
      frames.push(...decoder.push(stream.subarray(at, at + n)));
      at += n;
    }
    assert.equal(frames.length, messages.length);
    frames.forEach((f, i) => {
      const m = f.message as { seq: number; data: Buffer };
      assert.equal(m.seq, i);
      assert.ok(m.data.equals(messages[i]!.data));
    });
    const damaged = Buffer.from(stream);
    for (let k = 0; k < 1 + rand(4); k++) damaged[rand(damaged.length)] = rand(256);
    try {
      new FrameDecoder().push(damaged);
    } catch (error) {
      assert.ok(error instanceof FrameError, `damage raised ${String(error)}`);
    }
  }
});

for (const secret of [undefined, 'bulk-s3cret']) test(`tcp: 1000 concurrent requests each way, payloads verified, from = the sender (${secret === undefined ? 'plain TCP' : 'TLS-PSK'})`, { timeout: 60_000 }, async () => {
  const suffix = secret === undefined ? '' : '-tls';
  const a = await node(`a${suffix}`, secret === undefined ? {} : { secret });
  const b = await node(`b${suffix}`, secret === undefined ? {} : { secret });
  const seenByB: string[] = [];
  const seenByA: string[] = [];
  b.serve(echoHandler(seenByB));
  a.serve(echoHandler(seenByA));
  const sizes = [0, 1, 4096, 65_536, 1 << 20];
  const run = async (from: TcpTransport, to: string, count: number): Promise<void> => {
    const payloads = Array.from({ length: count }, (_, i) => randomBytes(sizes[i % sizes.length]! === 1 << 20 && i % 50 !== 0 ? 512 : sizes[i % sizes.length]!));
    const replies = await Promise.all(payloads.map((p, i) => from.request(to, write(i, p), 20_000)));
    replies.forEach((r, i) => {
      assert.equal(r.ok, true);
      const result = (r as { result: { seq: number; sha: string; echo: Buffer; isBuffer: boolean } }).result;
      assert.equal(result.seq, i, 'replies matched to their request');
      assert.equal(result.sha, sha(payloads[i]!));
      assert.equal(result.isBuffer, true);
      assert.ok(Buffer.isBuffer(result.echo) && result.echo.equals(payloads[i]!), 'a Buffer in a reply arrives as bytes');
    });
  };
  await Promise.all([run(a, `b${suffix}`, 1000), run(b, `a${suffix}`, 1000)]);
  assert.equal(seenByB.length, 1000);
  assert.ok(seenByB.every((f) => f === `a${suffix}`));
  assert.ok(seenByA.every((f) => f === `b${suffix}`));
  const status = await a.request(`b${suffix}`, { t: 'status', vol: 'v' }, 1000);
  assert.deepEqual(status, { ok: true, result: { t: 'status' } });
});

test('tcp: handler errors become replies; timeouts and dead peers are TransportError; reconnects', { timeout: 60_000 }, async () => {
  const a = await node('a2');
  let b = await node('b2');
  const hold: Array<() => void> = [];
  const handler = async (_from: string, r: ReplRequest): Promise<ReplReply> => {
    if (r.t === 'delete') throw Object.assign(new Error('no such volume'), { code: 'volume_not_found' });
    if (r.t === 'status' && r.vol === 'hang') await new Promise<void>((res) => hold.push(res));
    return { ok: true };
  };
  b.serve(handler);
  assert.deepEqual(await a.request('b2', { t: 'delete', vol: 'x', epoch: 1 }, 1000), { ok: false, code: 'volume_not_found', message: 'no such volume' });

  await assert.rejects(a.request('b2', { t: 'status', vol: 'hang' }, 200), (e: unknown) => e instanceof TransportError && /no reply within 200 ms/.test(e.message));
  assert.deepEqual(await a.request('b2', { t: 'status', vol: 'ok' }, 1000), { ok: true }, 'the connection still works after a timeout');

  // In flight when the peer dies: every one rejects.
  const inflight = Array.from({ length: 20 }, () => a.request('b2', { t: 'status', vol: 'hang' }, 10_000));
  await new Promise((r) => setTimeout(r, 100));
  const port = portOf('b2');
  await b.close();
  const results = await Promise.allSettled(inflight);
  assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof TransportError));
  await assert.rejects(a.request('b2', { t: 'status', vol: 'ok' }, 1000), TransportError);
  await assert.rejects(a.request('nobody', { t: 'status', vol: 'ok' }, 1000), /no replication address/);

  b = await node('b2', { port });
  b.serve(handler);
  assert.deepEqual(await a.request('b2', { t: 'status', vol: 'ok' }, 2000), { ok: true }, 'reconnected to the restarted peer');
  for (const release of hold) release();

  // A request of the wrong shape never reaches the handler: a bad_request reply.
  const bad = await a.request('b2', { t: 'write', vol: 'v', epoch: 1, seq: 1, incarnation: 'i', offsetBytes: -1, data: Buffer.alloc(1), fua: false }, 1000);
  assert.deepEqual(bad, { ok: false, code: 'bad_request', message: 'write: field offsetBytes must be uint' });
  const unknown = await a.request('b2', { t: 'launch' } as unknown as ReplRequest, 1000);
  assert.equal((unknown as { code: string }).code, 'bad_request');

  // An address that answers with another node's name is refused.
  addresses.set('c2', addresses.get('b2')!);
  await assert.rejects(a.request('c2', { t: 'status', vol: 'ok' }, 2000), /is "b2", not "c2"/);
});

test('tcp: oversize and garbage close only the offending connection', { timeout: 30_000 }, async () => {
  const a = await node('a3');
  const b = await node('b3');
  let handled = 0;
  b.serve(async () => { handled++; return { ok: true }; });
  await assert.rejects(a.request('b3', write(1, Buffer.alloc(FRAME_PAYLOAD_BYTES_MAX + 1)), 2000), (e: unknown) => e instanceof TransportError && /payload/.test(e.message));
  const port = portOf('b3');
  const oversize = Buffer.alloc(4); oversize.writeUInt32BE(0xffffffff);
  await rawClosedBy(port, [oversize]);
  await rawClosedBy(port, [randomBytes(4096)]);
  const badJson = Buffer.alloc(13 + 5); badJson.writeUInt32BE(9 + 5, 0); badJson.writeUInt8(FrameKind.hello, 4); badJson.writeUInt32BE(5, 9); badJson.write('{nope', 13);
  await rawClosedBy(port, [badJson]);
  await rawClosedBy(port, encodeFrame(FrameKind.request, 1, write(1, Buffer.alloc(8))));
  const nonce = 'ab'.repeat(32);
  await rawClosedBy(port, encodeFrame(FrameKind.hello, 0, { node: 'x', nonce, junk: { $cairnBuf: [0, 1 << 20] } }));
  await rawClosedBy(port, encodeFrame(FrameKind.hello, 0, { node: 'x'.repeat(300), nonce }));
  await rawClosedBy(port, []); // says nothing: dropped after HANDSHAKE_TIMEOUT_MS
  // A big reply that does not fit a frame comes back as an error reply.
  b.serve(async () => ({ ok: true, result: { blob: Buffer.alloc(FRAME_PAYLOAD_BYTES_MAX + 1) } }));
  const tooBig = await a.request('b3', write(3, Buffer.alloc(1)), 5000);
  assert.equal(tooBig.ok, false);
  assert.equal((tooBig as { code: string }).code, 'reply_unencodable');
  b.serve(async () => { handled++; return { ok: true }; });
  assert.equal(handled, 0, 'nothing reached the handler');
  assert.deepEqual(await a.request('b3', write(2, Buffer.alloc(16)), 2000), { ok: true }, 'the server still serves');
});

test('tcp: the cluster secret keeps out nodes that do not hold it, both ways', { timeout: 30_000 }, async () => {
  const a = await node('a4', { secret: 's3cret' });
  const b = await node('b4', { secret: 's3cret' });
  const stranger = await node('x4', { secret: 'guess' });
  const open = await node('o4');
  const from: string[] = [];
  for (const t of [a, b, stranger, open]) t.serve(async (f) => { from.push(f); return { ok: true }; });
  assert.deepEqual(await a.request('b4', { t: 'status', vol: 'v' }, 2000), { ok: true });
  // A wrong secret fails the TLS handshake (its key is derived from the secret) before any frame.
  await assert.rejects(stranger.request('b4', { t: 'status', vol: 'v' }, 2000), (e: unknown) => e instanceof TransportError && /secret/.test(e.message));
  await assert.rejects(a.request('x4', { t: 'status', vol: 'v' }, 2000), /secret/);
  await assert.rejects(open.request('b4', { t: 'status', vol: 'v' }, 2000), TransportError);
  await assert.rejects(a.request('o4', { t: 'status', vol: 'v' }, 2000), /secret/);
  assert.deepEqual(from, ['a4'], 'only the node holding the secret was served');
});

/** A TCP relay to `target`'s replication port that keeps every byte it passes, both ways (what a network tap sees). */
async function tap(target: string): Promise<{ port: number; seen: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets: net.Socket[] = [];
  const targetPort = portOf(target);
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: HOST, port: targetPort });
    sockets.push(inbound, outbound);
    for (const [from, to] of [[inbound, outbound], [outbound, inbound]] as const) {
      from.on('data', (b: Buffer) => { chunks.push(Buffer.from(b)); to.write(b); });
      from.on('close', () => to.destroy());
      from.on('error', () => undefined);
    }
  });
  await new Promise<void>((r) => server.listen(0, HOST, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    seen: () => Buffer.concat(chunks),
    close: async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); },
  };
}

test('tcp: with a cluster secret the link runs in TLS-PSK: a tap sees no plaintext (encrypt: false, the control, shows it)', { timeout: 30_000 }, async () => {
  const marker = Buffer.from('cairn-replication-plaintext-marker|'.repeat(100));
  for (const encrypt of [true, false]) {
    const a = await node(`a6${encrypt}`, { secret: 'link-s3cret', encrypt });
    const b = await node(`b6${encrypt}`, { secret: 'link-s3cret', encrypt });
    const seen: string[] = [];
    b.serve(echoHandler(seen));
    const relay = await tap(`b6${encrypt}`);
    addresses.set(`b6${encrypt}`, `${HOST}:${relay.port}`);
    try {
      const reply = await a.request(`b6${encrypt}`, write(1, marker), 5000);
      assert.equal(reply.ok, true);
      assert.equal((reply as { result: { sha: string } }).result.sha, sha(marker), 'the data arrived whole');
      assert.deepEqual(seen, [`a6${encrypt}`]);
      assert.equal(relay.seen().includes(marker.subarray(0, 64)), !encrypt, encrypt ? 'no plaintext on the wire' : 'plain TCP carries the plaintext');
    } finally {
      await relay.close();
    }
  }
});

test('tcp: a peer that accepts and never answers: TransportError, and the silent connection is redialled', { timeout: 30_000 }, async () => {
  const a = await node('a5');
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => { sockets.push(s); s.on('error', () => undefined); }); // (a reset is expected)
  await new Promise<void>((r) => silent.listen(0, HOST, r));
  addresses.set('z5', `${HOST}:${(silent.address() as net.AddressInfo).port}`);
  try {
    await assert.rejects(a.request('z5', { t: 'status', vol: 'v' }, 300), (e: unknown) => e instanceof TransportError && /no reply within 300 ms/.test(e.message));
    await assert.rejects(a.request('z5', { t: 'status', vol: 'v' }, 300), TransportError);
    assert.equal(sockets.length, 2, 'a connection that stayed silent past a timeout is not reused');
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
  }
});
