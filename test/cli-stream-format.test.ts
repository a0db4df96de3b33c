// The export stream format against every single-bit flip and every truncation (SQLite-style input
// fuzzing): the verifying reader must reject each damaged stream and accept the intact one, whose
// records must equal what the engine holds. Streams come from the real writer over a real pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile } from '../src/engine/index.js';
import { coalesce, planExport } from '../src/stream/writer.js';
import { readStream } from '../src/stream/reader.js';
import { StreamCorrupt, encodeHeader, encodeRecordHeader, encodeTrailer } from '../src/stream/format.js';
import { crc32c } from '@node-rs/crc32';
import { identify as identifyIn } from '../src/stream/identity.js';

async function parseAll(bytes: Buffer, chunkBytes: number) {
  async function* chunks() { for (let at = 0; at < bytes.length; at += chunkBytes) yield bytes.subarray(at, at + chunkBytes); }
  const items = [];
  for await (const item of readStream(chunks())) items.push(item);
  return items;
}

test('stream format: every bit flip and every truncation is rejected', { timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-fmt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const engine = await createPoolFile(join(dir, 'pool'), 256 * 1024 * 1024);
  t.after(() => engine.close());
  await engine.createVolume('v', 4 * 1024 * 1024);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, Buffer.alloc(4096, 1));
  await engine.write(id, 1024 * 1024, Buffer.alloc(8192, 2));
  await engine.createSnapshots(['v@a']);
  await engine.write(id, 3 * 1024 * 1024, Buffer.alloc(4096, 3));
  await engine.trim(id, 1024 * 1024, 8192);
  await engine.createSnapshots(['v@b']);
  const identify = (n: string) => identifyIn(engine, n);

  for (const [label, base] of [['full', null], ['incremental', 'v@a']] as const) {
    const plan = await planExport(engine, 'v@b', base, identify);
    const parts: Buffer[] = [];
    for await (const c of plan.chunks()) parts.push(c);
    const bytes = Buffer.concat(parts);
    assert.equal(bytes.length, plan.streamBytes, `${label}: the planned length is exact`);

    const items = await parseAll(bytes, 7);
    assert.equal(items[0]!.type, 'header');
    assert.equal(items[items.length - 1]!.type, 'trailer');
    const records = items.flatMap((i) => (i.type === 'record' ? [i.record] : []));
    for (const r of records) {
      const want = await engine.read(engine.resolve('v@b').id, r.offsetBytes, r.lengthBytes);
      assert.deepEqual(r.data ?? Buffer.alloc(r.lengthBytes), want, `${label}: record at ${r.offsetBytes}`);
    }
    if (base === null) {
      assert.deepEqual(records.map((r) => [r.kind, r.offsetBytes, r.lengthBytes]), [['data', 0, 4096], ['data', 3 * 1024 * 1024, 4096]]);
    } else {
      assert.deepEqual(records.map((r) => [r.kind, r.offsetBytes, r.lengthBytes]).sort(),
        [['data', 3 * 1024 * 1024, 4096], ['zero', 1024 * 1024, 8192]].sort());
    }

    const rejects = async (damaged: Buffer, what: string) => {
      await assert.rejects(parseAll(damaged, 4096), (err: unknown) => err instanceof StreamCorrupt, `${label}: ${what}`);
    };
    for (let at = 0; at < bytes.length; at += 1) {
      const damaged = Buffer.from(bytes);
      damaged[at]! ^= 1 << (at % 8);
      await rejects(damaged, `bit flip at byte ${at}`);
    }
    for (let length = 0; length < bytes.length; length += 1) await rejects(bytes.subarray(0, length), `truncated to ${length}`);
    await rejects(Buffer.concat([bytes, Buffer.from([0])]), 'a byte after the trailer');
  }
});

test('stream format: records out of order or overlapping are rejected even with valid checksums', async () => {
  const identity = { fullName: 'v@s', id: 1, createdMs: 1, guid: '0'.repeat(32) };
  const build = (offsets: number[]) => {
    const parts = [encodeHeader({ version: 1, sizeBytes: 1 << 20, blockSizeBytes: 4096, snapshot: identity, base: null })];
    for (const offset of offsets) {
      const data = Buffer.alloc(8192, 7);
      parts.push(encodeRecordHeader('data', offset, data.length, data), data);
    }
    const body = Buffer.concat(parts);
    return Buffer.concat([body, encodeTrailer({ records: offsets.length, dataBytes: offsets.length * 8192 }, crc32c(body))]);
  };
  assert.equal((await parseAll(build([0, 8192, 65536]), 1000)).length, 5, 'ascending, touching records are fine');
  await assert.rejects(parseAll(build([8192, 0]), 1000), StreamCorrupt);
  await assert.rejects(parseAll(build([0, 4096]), 1000), StreamCorrupt);
  await assert.rejects(parseAll(build([(1 << 20) - 4096]), 1000), StreamCorrupt, 'beyond the volume size');
  assert.deepEqual(coalesce([{ offsetBytes: 8192, lengthBytes: 4096 }, { offsetBytes: 0, lengthBytes: 4096 },
    { offsetBytes: 4096, lengthBytes: 4096 }, { offsetBytes: 10000, lengthBytes: 100 }]), [{ offsetBytes: 0, lengthBytes: 12288 }]);
});
