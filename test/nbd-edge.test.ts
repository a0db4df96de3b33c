// Protocol edge cases driven by libnbd's python binding (python3-libnbd), with strict mode off where
// the client must be allowed to send what a careful client would not: structured replies with hole
// chunks, DF, block status (REQ_ONE), out-of-range and bad-flag errors, unaligned I/O, FAST_ZERO,
// CACHE, LIST, LIST_META_CONTEXT, multi-conn visibility, and a write larger than the maximum.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { startFixture, runPython, defer, MiB } from './nbd-harness.js';

const script = `
import nbd, sys, json
uri = sys.argv[1]; size = int(sys.argv[2])
r = {}
def connect(strict=True):
    h = nbd.NBD()
    if not strict: h.set_strict_mode(0)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    return h
def err(fn):
    try: fn(); return 0
    except nbd.Error as e: return e.errnum
h = connect()
r["size"] = h.get_size(); r["structured"] = h.get_structured_replies_negotiated()
r["flags"] = [h.can_flush(), h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero(), h.can_df(), h.can_multi_conn(), h.can_cache(), h.is_read_only()]
r["block_size"] = [h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM)]
h.pwrite(b"hello, unaligned world", 4097)
r["unaligned"] = h.pread(22, 4097).decode()
h.pwrite(b"\\xaa" * 4096, 1 << 20)
chunks = []
buf = h.pread_structured(256 * 1024, (1 << 20) - 128 * 1024, lambda sub, off, status, e: chunks.append([off, len(sub), status]) or 0)
r["sparse_chunks"] = chunks
r["sparse_data_ok"] = buf[128*1024:132*1024] == b"\\xaa" * 4096 and buf[:128*1024] == bytes(128*1024) and buf[132*1024:] == bytes(124*1024)
chunks = []
buf = h.pread_structured(128 * 1024, (1 << 20) - 64 * 1024, lambda sub, off, status, e: chunks.append([off, len(sub), status]) or 0, nbd.CMD_FLAG_DF)
r["df_chunks"] = chunks
r["df_data_ok"] = buf[64*1024:68*1024] == b"\\xaa" * 4096
ext = []
h.block_status(4 << 20, 0, lambda meta, off, entries, e: ext.append([meta, list(entries)]) or 0)
r["block_status"] = ext
one = []
h.block_status(4 << 20, 0, lambda meta, off, entries, e: one.append(list(entries)) or 0, nbd.CMD_FLAG_REQ_ONE)
r["req_one"] = one
r["read_past_end"] = err(lambda: h.pread(4096, size))
r["write_past_end"] = err(lambda: h.pwrite(b"x" * 4096, size - 1))
r["bs_past_end"] = err(lambda: h.block_status(8192, size - 4096, lambda *a: 0))
h.pwrite(b"\\x55" * 65536, 2 << 20)
r["zero"] = err(lambda: h.zero(65536, 2 << 20))
r["zeroed"] = h.pread(65536, 2 << 20) == bytes(65536)
h.pwrite(b"\\x55" * 65536, 2 << 20)
r["fast_zero"] = err(lambda: h.zero(65536, 2 << 20, nbd.CMD_FLAG_FAST_ZERO))
r["fast_zeroed"] = h.pread(65536, 2 << 20) == bytes(65536)
r["fast_zero_no_hole"] = err(lambda: h.zero(65536, 2 << 20, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE))
h.pwrite(b"\\x55" * 8192, 6 << 20)
r["zero_no_hole"] = err(lambda: h.zero(8192, 6 << 20, nbd.CMD_FLAG_NO_HOLE))
r["zero_no_hole_reads_zero"] = h.pread(8192, 6 << 20) == bytes(8192)
h.pwrite(b"\\x77" * 65536, 3 << 20)
r["trim"] = err(lambda: h.trim(65536, 3 << 20))
r["cache"] = err(lambda: h.cache(65536, 0))
r["flush"] = err(lambda: h.flush())
r["fua_write"] = err(lambda: h.pwrite(b"f" * 512, 0, nbd.CMD_FLAG_FUA))
h.shutdown()
h = connect(strict=False)
r["bad_flag"] = err(lambda: h.pread(4096, 0, nbd.CMD_FLAG_REQ_ONE))
r["zero_len_read"] = err(lambda: h.pread(0, 0))
r["oversize_read"] = err(lambda: h.pread(64 << 20, 0))
r["after_errors_ok"] = h.pread(5, 4097) == b"hello"
h.shutdown()
h = nbd.NBD(); h.set_opt_mode(True); h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append(name) or 0)
r["list"] = sorted(names)
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
r["list_meta"] = ctxs
h.opt_abort()
h = nbd.NBD(); h.set_opt_mode(True); h.set_export_name("no-such-volume"); h.connect_uri(uri.rsplit("/", 1)[0])
r["go_unknown"] = err(lambda: h.opt_go())
h.set_export_name(uri.rsplit("/", 1)[1]); h.opt_go()
r["go_after_unknown"] = h.pread(5, 4097) == b"hello"
h.shutdown()
a = connect(); b = connect()
a.pwrite(b"multi", 5 << 20); a.flush()
r["multi_conn_seen"] = b.pread(5, 5 << 20) == b"multi"
a.shutdown(); b.shutdown()
print(json.dumps(r))
`;

test('libnbd: structured replies, block status, errors, zeroing, listing', async (t) => {
  const f = await startFixture(t);
  const sizeBytes = 64 * MiB;
  await f.engine.createVolume('edge', sizeBytes);
  await f.engine.createVolume('second', 4 * MiB);
  const r = await runPython(script, [f.uri('edge'), String(sizeBytes)]) as Record<string, unknown>;
  assert.equal(r.size, sizeBytes);
  assert.equal(r.structured, true);
  assert.deepEqual(r.flags, [true, true, true, true, true, true, true, true, false]);
  assert.deepEqual(r.block_size, [1, 4096, 32 * MiB]);
  assert.equal(r.unaligned, 'hello, unaligned world');
  // A 256 KiB read over a hole, 4 KiB of data, and a hole: hole/data/hole chunks (status 2 = hole, 1 = data).
  assert.deepEqual(r.sparse_chunks, [[MiB - 128 * 1024, 128 * 1024, 2], [MiB, 4096, 1], [MiB + 4096, 124 * 1024, 2]]);
  assert.equal(r.sparse_data_ok, true);
  assert.deepEqual(r.df_chunks, [[MiB - 64 * 1024, 128 * 1024, 1]], 'DF: one data chunk');
  assert.equal(r.df_data_ok, true);
  // Block 0 is a hole, block 1 holds the unaligned write at 4097, hole to 1 MiB, 4 KiB data, hole.
  assert.deepEqual(r.block_status, [['base:allocation', [4096, 3, 4096, 0, MiB - 8192, 3, 4096, 0, 3 * MiB - 4096, 3]]]);
  assert.deepEqual(r.req_one, [[4096, 3]]);
  assert.equal(r.read_past_end, 22);
  assert.equal(r.write_past_end, 28);
  assert.equal(r.bs_past_end, 22);
  assert.equal(r.zero, 0);
  assert.equal(r.zeroed, true);
  assert.equal(r.fast_zero, 0);
  assert.equal(r.fast_zeroed, true);
  assert.equal(r.fast_zero_no_hole, 95, 'FAST_ZERO with NO_HOLE is not fast: ENOTSUP');
  assert.equal(r.zero_no_hole, 0);
  assert.equal(r.zero_no_hole_reads_zero, true);
  assert.equal(r.trim, 0);
  assert.equal(r.cache, 0);
  assert.equal(r.flush, 0);
  assert.equal(r.fua_write, 0);
  assert.equal(r.bad_flag, 22);
  assert.equal(r.zero_len_read, 22);
  assert.equal(r.oversize_read, 22);
  assert.equal(r.after_errors_ok, true);
  assert.deepEqual(r.list, ['edge', 'second']);
  assert.deepEqual(r.list_meta, ['base:allocation']);
  assert.equal(r.go_unknown !== 0, true, 'GO on an unknown export fails and the session continues');
  assert.equal(r.go_after_unknown, true);
  assert.equal(r.multi_conn_seen, true);
});

/**
 * Minimal raw-socket handshake to reach transmission: fixed newstyle with NO_ZEROES, then EXPORT_NAME
 * (no block sizes agreed), or GO asking for NBD_INFO_BLOCK_SIZE (the client is held to the maximum).
 */
async function rawTransmission(port: number, exportName: string, agreeBlockSizes = false): Promise<{ socket: net.Socket; next(n: number): Promise<Buffer> }> {
  const socket = net.connect(port, '127.0.0.1');
  // Chunks are joined only once a read has them all (a 40 MiB reply arrives in thousands).
  const chunks: Buffer[] = [];
  let bufferedBytes = 0;
  let wake: (() => void) | null = null;
  let fail: ((error: Error) => void) | null = null;
  socket.on('data', (d: Buffer) => { chunks.push(d); bufferedBytes += d.length; wake?.(); });
  socket.on('close', () => fail?.(new Error('closed')));
  const next = async (n: number): Promise<Buffer> => {
    while (bufferedBytes < n) await new Promise<void>((resolve, reject) => { wake = resolve; fail = reject; });
    const buffered = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const out = buffered.subarray(0, n);
    chunks.length = 0;
    if (buffered.length > n) chunks.push(buffered.subarray(n));
    bufferedBytes -= n;
    return out;
  };
  await next(18);
  const name = Buffer.from(exportName);
  const option = Buffer.alloc(16);
  option.writeBigUInt64BE(0x49484156454f5054n, 0);
  if (!agreeBlockSizes) {
    option.writeUInt32BE(1, 8); // NBD_OPT_EXPORT_NAME
    option.writeUInt32BE(name.length, 12);
    socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option, name]));
    await next(10);
    return { socket, next };
  }
  const data = Buffer.alloc(4 + name.length + 2 + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length);
  data.writeUInt16BE(3, 6 + name.length); // NBD_INFO_BLOCK_SIZE
  option.writeUInt32BE(7, 8); // NBD_OPT_GO
  option.writeUInt32BE(data.length, 12);
  socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option, data]));
  for (;;) {
    const reply = await next(20);
    const length = reply.readUInt32BE(16);
    const body = await next(length);
    if (reply.readUInt32BE(12) === 3 && body.readUInt16BE(0) === 3) assert.equal(body.readUInt32BE(10), 32 * MiB, 'GO with the request advertises 32 MiB');
    if (reply.readUInt32BE(12) === 1) return { socket, next }; // NBD_REP_ACK
    assert.equal(reply.readUInt32BE(12), 3, 'only NBD_REP_INFO before the ACK');
  }
}

/** A raw transmission request header. */
function requestHeader(type: number, handle: number, offsetBytes: number, lengthBytes: number, flags = 0): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(type, 6);
  header.writeUInt32BE(handle, 12);
  header.writeBigUInt64BE(BigInt(offsetBytes), 16);
  header.writeUInt32BE(lengthBytes, 24);
  return header;
}

test('a write larger than the agreed maximum is refused at once, without waiting for (or buffering) its payload', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('big', 64 * MiB);
  const { socket, next } = await rawTransmission(f.server.port as number, 'big', true);
  defer(t, () => socket.destroy());
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(1, 6); // NBD_CMD_WRITE
  header.writeUInt32BE(0xdead, 12);
  const payloadBytes = 32 * MiB + 4096; // just over the advertised maximum
  header.writeUInt32BE(payloadBytes, 24);
  socket.write(header);
  const reply = await next(16); // EINVAL arrives before any payload byte was sent
  assert.equal(reply.readUInt32BE(0), 0x67446698);
  assert.equal(reply.readUInt32BE(4), 22);
  assert.equal(reply.readUInt32BE(12), 0xdead);
  // The payload follows and is dropped as it streams in; the next request is parsed in sync.
  for (let sent = 0; sent < payloadBytes; sent += MiB) socket.write(Buffer.alloc(Math.min(MiB, payloadBytes - sent), 0x77));
  const read = Buffer.alloc(28);
  read.writeUInt32BE(0x25609513, 0);
  read.writeUInt32BE(0xbeef, 12);
  read.writeUInt32BE(4096, 24);
  socket.write(read);
  const readReply = await next(16 + 4096);
  assert.equal(readReply.readUInt32BE(4), 0);
  assert.equal(readReply.readUInt32BE(12), 0xbeef);
  assert.ok(readReply.subarray(16).equals(Buffer.alloc(4096)), 'nothing of the refused payload was written');
});

test('a client that agreed on no block sizes may write and read past 32 MiB: served in pieces (proto.md default maximum)', async (t) => {
  const f = await startFixture(t);
  const sizeBytes = 128 * MiB;
  await f.engine.createVolume('huge', sizeBytes);
  const { socket, next } = await rawTransmission(f.server.port as number, 'huge');
  defer(t, () => socket.destroy());
  // Unaligned at both ends, FUA, 40 MiB and a bit: the payload streams in 1 MiB socket writes.
  const offsetBytes = 3 * MiB + 12345, lengthBytes = 40 * MiB + 777;
  const payload = randomBytes(lengthBytes);
  socket.write(requestHeader(1, 0xa1, offsetBytes, lengthBytes, 1)); // WRITE + FUA
  for (let sent = 0; sent < lengthBytes; sent += MiB) socket.write(payload.subarray(sent, Math.min(sent + MiB, lengthBytes)));
  const writeReply = await next(16);
  assert.equal(writeReply.readUInt32BE(4), 0, 'the large write succeeds');
  assert.equal(writeReply.readUInt32BE(12), 0xa1);
  // Read it back with one simple-reply READ covering a little more on each side. Small READs sent
  // once its header is here complete while it is still being read: their replies must wait until
  // its data is out, never land inside it.
  socket.write(requestHeader(0, 0xa2, offsetBytes - 100, lengthBytes + 200));
  const header = await next(16);
  assert.equal(header.readUInt32BE(4), 0);
  assert.equal(header.readUInt32BE(12), 0xa2);
  socket.write(Buffer.concat([requestHeader(0, 0xb1, offsetBytes, 4096), requestHeader(0, 0xb2, offsetBytes + 20 * MiB, 4096)]));
  const data = await next(lengthBytes + 200);
  for (let replies = 0; replies < 2; replies++) {
    const small = await next(16 + 4096);
    assert.equal(small.readUInt32BE(0), 0x67446698, 'a simple reply header where one must be');
    const handle = small.readUInt32BE(12);
    const at = handle === 0xb1 ? 0 : 20 * MiB;
    assert.ok(small.subarray(16).equals(payload.subarray(at, at + 4096)), `small read ${handle.toString(16)}`);
  }
  assert.ok(data.subarray(0, 100).equals(Buffer.alloc(100)), 'zeros before the write');
  assert.ok(data.subarray(100, 100 + lengthBytes).equals(payload), 'the large write reads back exactly');
  assert.ok(data.subarray(100 + lengthBytes).equals(Buffer.alloc(100)), 'zeros after the write');
  // A large write past the end is refused (ENOSPC) and its payload dropped; the stream stays in sync.
  const pastBytes = 33 * MiB;
  socket.write(requestHeader(1, 0xa3, sizeBytes - MiB, pastBytes));
  for (let sent = 0; sent < pastBytes; sent += MiB) socket.write(Buffer.alloc(MiB, 0x66));
  const pastReply = await next(16);
  assert.equal(pastReply.readUInt32BE(4), 28);
  assert.equal(pastReply.readUInt32BE(12), 0xa3);
  socket.write(requestHeader(0, 0xa4, sizeBytes - MiB, 4096));
  const tail = await next(16 + 4096);
  assert.equal(tail.readUInt32BE(4), 0);
  assert.ok(tail.subarray(16).equals(Buffer.alloc(4096)), 'nothing of the refused write landed');
  // The data survived in the engine, not only in what the connection saw.
  const id = f.engine.resolve('huge').id, half = 20 * MiB;
  const back = Buffer.concat([await f.engine.read(id, offsetBytes, half), await f.engine.read(id, offsetBytes + half, lengthBytes - half)]);
  assert.ok(back.equals(payload));
});

const unagreedScript = `
import nbd, sys, json
uri = sys.argv[1]
r = {}
h = nbd.NBD()
h.set_request_block_size(False)
h.set_strict_mode(0)
h.add_meta_context("base:allocation")
h.connect_uri(uri)
r["max"] = h.get_block_size(nbd.SIZE_MAXIMUM)
h.pwrite(b"\\x5a" * 65536, 40 << 20)
chunks = []
buf = h.pread_structured(48 << 20, 1 << 20, lambda sub, off, status, e: chunks.append([off, len(sub), status]) or 0)
r["covered"] = sorted(chunks) == chunks and chunks[0][0] == 1 << 20 and all(a[0] + a[1] == b[0] for a, b in zip(chunks, chunks[1:])) and chunks[-1][0] + chunks[-1][1] == 49 << 20
r["holes"] = sum(c[1] for c in chunks if c[2] == 2)
r["data_ok"] = buf[(39 << 20):(39 << 20) + 65536] == b"\\x5a" * 65536 and buf[:1 << 20] == bytes(1 << 20)
def err(fn):
    try: fn(); return 0
    except nbd.Error as e: return e.errnum
r["df_large"] = err(lambda: h.pread_structured(48 << 20, 0, lambda *a: 0, nbd.CMD_FLAG_DF))
r["after_ok"] = h.pread(4, 40 << 20) == b"\\x5a" * 4
h.shutdown()
print(json.dumps(r))
`;

test('libnbd without block sizes agreed: maximum 0xffffffff, a 48 MiB structured read in pieces with holes, DF past one piece gets EOVERFLOW', async (t) => {
  const f = await startFixture(t);
  await f.engine.createVolume('wide', 128 * MiB);
  const r = await runPython(unagreedScript, [f.uri('wide')]) as Record<string, unknown>;
  assert.equal(r.max, 0xffffffff);
  assert.equal(r.covered, true, 'the chunks cover the 48 MiB exactly, in order');
  assert.equal(r.holes, 48 * MiB - 65536, 'everything but the written 64 KiB came as holes');
  assert.equal(r.data_ok, true);
  assert.equal(r.df_large, 75);
  assert.equal(r.after_ok, true);
});
