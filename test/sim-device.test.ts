// Unit tests of the simulated device and its PRNG: durability across crash modes, torn writes,
// bit flips, injected EIO, no buffer aliasing, and determinism from the seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';

const B = BLOCK_SIZE_BYTES;

function filled(byte: number, blocks = 1): Buffer {
  return Buffer.alloc(blocks * B, byte);
}

async function readBlock(dev: SimDevice, blockNumber: number, blocks = 1): Promise<Buffer> {
  const into = Buffer.alloc(blocks * B);
  await dev.read(blockNumber, into);
  return into;
}

function errorCode(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

test('prng: same seed same sequence, different seeds differ, ranges hold', () => {
  const a = new Prng(42);
  const b = new Prng(42);
  const c = new Prng(43);
  const seqA = Array.from({ length: 100 }, () => a.nextU32());
  const seqB = Array.from({ length: 100 }, () => b.nextU32());
  const seqC = Array.from({ length: 100 }, () => c.nextU32());
  assert.deepEqual(seqA, seqB);
  assert.notDeepEqual(seqA, seqC);
  const p = new Prng(7);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const x = p.int(3, 9);
    assert.ok(x >= 3 && x <= 9 && Number.isInteger(x));
    seen.add(x);
    const f = p.float();
    assert.ok(f >= 0 && f < 1);
  }
  assert.equal(seen.size, 7);
  const big = p.int(0, 2 ** 40);
  assert.ok(big >= 0 && big <= 2 ** 40);
  assert.ok(['x', 'y'].includes(p.pick(['x', 'y'])));
  const f1 = new Prng(5).fork().nextU32();
  const f2 = new Prng(5).fork().nextU32();
  assert.equal(f1, f2);
  assert.throws(() => p.pick([]));
  assert.throws(() => p.int(5, 4));
});

test('read returns latest content; unwritten blocks read as zeroes; no aliasing', async () => {
  const dev = new SimDevice(16, new Prng(1));
  assert.deepEqual(await readBlock(dev, 3), filled(0));
  const data = filled(0xaa, 2);
  await dev.write(3, data);
  data.fill(0x11); // the caller reusing its buffer must not change what was stored
  assert.deepEqual(await readBlock(dev, 3, 2), filled(0xaa, 2));
  const out = await readBlock(dev, 3);
  out.fill(0x22); // nor may a read hand out the stored buffer
  assert.deepEqual(await readBlock(dev, 3), filled(0xaa));
  await dev.write(4, filled(0xbb));
  assert.deepEqual(await readBlock(dev, 3, 2), Buffer.concat([filled(0xaa), filled(0xbb)]));
  assert.equal(dev.counters.writes, 2);
  assert.equal(dev.counters.bytesWritten, 3 * B);
  assert.equal(dev.counters.reads, 5);
});

test('bounds and whole-block lengths are enforced', async () => {
  const dev = new SimDevice(4, new Prng(1));
  await assert.rejects(dev.write(3, filled(1, 2)), (e) => errorCode(e) === 'EINVAL');
  await assert.rejects(dev.write(0, Buffer.alloc(100)), (e) => errorCode(e) === 'EINVAL');
  await assert.rejects(dev.read(-1, Buffer.alloc(B)), (e) => errorCode(e) === 'EINVAL');
  await dev.resize(8);
  await dev.write(7, filled(9));
  assert.equal(dev.sizeBlocks, 8);
  await dev.resize(4);
  await dev.resize(8);
  assert.deepEqual(await readBlock(dev, 7), filled(0), 'shrink drops blocks past the end');
  await dev.close();
  await assert.rejects(dev.read(0, Buffer.alloc(B)), (e) => errorCode(e) === 'EBADF');
});

test('clean crash keeps exactly the flushed writes', async () => {
  const dev = new SimDevice(16, new Prng(2));
  await dev.write(0, filled(1));
  await dev.write(1, filled(2));
  await dev.flush();
  await dev.write(1, filled(3)); // unflushed overwrite
  await dev.write(2, filled(4)); // unflushed new block
  const after = dev.crash('clean');
  assert.deepEqual(await readBlock(after, 0), filled(1));
  assert.deepEqual(await readBlock(after, 1), filled(2));
  assert.deepEqual(await readBlock(after, 2), filled(0));
  assert.equal(after.unflushedWrites, 0);
  // The crashed-from device is unchanged.
  assert.deepEqual(await readBlock(dev, 1), filled(3));
});

test('some-crash keeps durable blocks and only ever content that was written', async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 60; seed++) {
    const dev = new SimDevice(8, new Prng(seed));
    await dev.write(0, filled(1));
    await dev.flush();
    for (let i = 1; i <= 5; i++) await dev.write(1, filled(10 + i));
    await dev.write(2, filled(20));
    const after = dev.crash('some');
    assert.deepEqual(await readBlock(after, 0), filled(1));
    const b1 = (await readBlock(after, 1))[0] ?? -1;
    assert.ok(b1 === 0 || (b1 >= 11 && b1 <= 15), `block 1 holds ${b1}`);
    assert.ok(Buffer.compare(await readBlock(after, 1), filled(b1)) === 0, 'never a mix in some-mode');
    const b2 = (await readBlock(after, 2))[0] ?? -1;
    assert.ok(b2 === 0 || b2 === 20);
    outcomes.add(`${b1}/${b2}`);
  }
  assert.ok(outcomes.size >= 4, `crash outcomes vary with the seed (${[...outcomes].join(' ')})`);
});

test('torn crash: a multi-block write lands partially or a block is half old, half new', async () => {
  let partialWrites = 0;
  let mixedBlocks = 0;
  for (let seed = 1; seed <= 80; seed++) {
    const dev = new SimDevice(8, new Prng(seed));
    await dev.write(0, filled(1, 4));
    await dev.flush();
    await dev.write(0, filled(2, 4));
    const after = dev.crash('torn');
    const image = await readBlock(after, 0, 4);
    const perBlock: string[] = [];
    for (let i = 0; i < 4; i++) {
      const block = image.subarray(i * B, (i + 1) * B);
      const bytes = new Set(block);
      if (bytes.size > 1) {
        mixedBlocks++;
        assert.deepEqual([...bytes].sort(), [1, 2], 'a torn block mixes only old and new');
        // Cut at a sector boundary.
        const cut = block.indexOf(block[0] === 1 ? 2 : 1);
        assert.equal(cut % 512, 0);
        perBlock.push('m');
      } else {
        perBlock.push(String(block[0]));
      }
    }
    const whole = perBlock.filter((x) => x !== 'm');
    if (new Set(whole).size > 1) partialWrites++;
  }
  assert.ok(partialWrites > 0, 'some crashes apply part of a multi-block write');
  assert.ok(mixedBlocks > 0, 'some crashes leave a half-written block');
});

test('crash is deterministic for a seed', async () => {
  const image = async (seed: number, mode: CrashMode): Promise<Buffer> => {
    const dev = new SimDevice(8, new Prng(seed));
    for (let i = 0; i < 8; i++) await dev.write(i, filled(i + 1));
    return readBlock(dev.crash(mode), 0, 8);
  };
  assert.deepEqual(await image(9, 'torn'), await image(9, 'torn'));
  assert.deepEqual(await image(9, 'some'), await image(9, 'some'));
});

test('bit flip changes exactly one bit in durable and volatile copies; a second flip undoes it', async () => {
  const dev = new SimDevice(8, new Prng(3));
  await dev.write(5, filled(0x0f));
  await dev.flush();
  await dev.write(5, filled(0xf0));
  const flip = dev.injectBitFlip(5);
  assert.ok(flip);
  const differing = (a: Buffer, b: Buffer): number => {
    let bits = 0;
    for (let i = 0; i < a.length; i++) {
      let x = (a[i] ?? 0) ^ (b[i] ?? 0);
      while (x) { bits += x & 1; x >>= 1; }
    }
    return bits;
  };
  assert.equal(differing(await readBlock(dev, 5), filled(0xf0)), 1);
  assert.equal(differing(await readBlock(dev.crash('clean'), 5), filled(0x0f)), 1);
  dev.injectBitFlip(flip.blockNumber, flip.bitIndex);
  assert.deepEqual(await readBlock(dev, 5), filled(0xf0));
  assert.deepEqual(dev.findBlocks(filled(0xf0)), [5]);
  const empty = new SimDevice(4, new Prng(1));
  assert.equal(empty.injectBitFlip(), null);
  const random = dev.injectBitFlip();
  assert.ok(random && random.blockNumber === 5);
});

test('injected EIO: reads, writes and flushes fail with code EIO, then recover', async () => {
  const dev = new SimDevice(8, new Prng(4));
  await dev.write(0, filled(1));
  dev.failNextReads(2);
  await assert.rejects(readBlock(dev, 0), (e) => errorCode(e) === 'EIO');
  await assert.rejects(readBlock(dev, 0), (e) => errorCode(e) === 'EIO');
  assert.deepEqual(await readBlock(dev, 0), filled(1));
  dev.failNextWrites(1);
  await assert.rejects(dev.write(1, filled(2)), (e) => errorCode(e) === 'EIO');
  assert.deepEqual(await readBlock(dev, 1), filled(0), 'a failed write stores nothing');
  dev.failFlush(1);
  await assert.rejects(dev.flush(), (e) => errorCode(e) === 'EIO');
  assert.deepEqual(await readBlock(dev.crash('clean'), 0), filled(0), 'a failed flush makes nothing durable');
  await dev.flush();
  assert.deepEqual(await readBlock(dev.crash('clean'), 0), filled(1));
  dev.setFaultProbability({ write: 1 });
  await assert.rejects(dev.write(2, filled(3)), (e) => errorCode(e) === 'EIO');
  dev.clearFaults();
  await dev.write(2, filled(3));
  assert.equal(dev.counters.failedReads, 2);
  assert.equal(dev.counters.failedWrites, 2);
  assert.equal(dev.counters.failedFlushes, 1);
});

test('armed crash captures the image just before the n-th following write or flush', async () => {
  const dev = new SimDevice(8, new Prng(5));
  await dev.write(0, filled(1));
  await dev.flush();
  dev.armCrash(2, 'clean');
  await dev.write(1, filled(2)); // op 0
  await dev.flush(); // op 1: block 1 durable
  await dev.write(2, filled(3)); // op 2: image taken before it
  await dev.flush();
  const image = dev.takeArmedImage();
  assert.ok(image);
  assert.deepEqual(await readBlock(image, 1), filled(2));
  assert.deepEqual(await readBlock(image, 2), filled(0));
  assert.deepEqual(await readBlock(dev, 2), filled(3), 'the device itself went on');
  assert.equal(dev.takeArmedImage(), null, 'taking disarms');
  dev.armCrash(10, 'clean');
  await dev.write(3, filled(4));
  assert.equal(dev.takeArmedImage(), null, 'no image when the countdown did not run out');
});

test('jitter makes concurrent ops complete out of issue order, deterministically per seed', async () => {
  const order = async (seed: number): Promise<string> => {
    const dev = new SimDevice(64, new Prng(seed));
    dev.jitterTicksMax = 8;
    const done: number[] = [];
    await Promise.all(Array.from({ length: 16 }, (_, i) => dev.write(i, filled(i + 1)).then(() => done.push(i))));
    return done.join(',');
  };
  const a = await order(11);
  assert.equal(a, await order(11));
  assert.notEqual(a, Array.from({ length: 16 }, (_, i) => i).join(','), 'some op overtook another');
});
