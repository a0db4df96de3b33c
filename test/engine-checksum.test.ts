// Block checksums: the native kernel (native/block-checksums.c) must give exactly the crc32c library's
// values, block by block, for any run length, output offset and memory alignment, and reject bad
// arguments; the library fallback must be what a process without the kernel uses. A checksum that
// disagreed with the one stored on disk would turn every read of existing data into an EIO.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { blockChecksums, blockChecksum, checksumKernel } from '../src/engine/checksum.js';
import { isOneBitApart, singleBitFlipOf } from '../src/engine/crc-syndrome.js';

const BLOCK = 4096;
type Kernel = (data: Uint8Array, out: Uint32Array, at: number) => void;
const native = (createRequire(import.meta.url)('../native/cairn-native.node') as { crc32cBlocks?: Kernel }).crc32cBlocks;

function reference(data: Buffer): number[] {
  const out: number[] = [];
  for (let o = 0; o < data.length; o += BLOCK) out.push(crc32c(data.subarray(o, o + BLOCK)));
  return out;
}

test('the native kernel is built and in use (npm run build compiles it; CAIRN_CHECKSUM=library opts out)', () => {
  if (process.env.CAIRN_CHECKSUM === 'library') {
    assert.equal(checksumKernel, 'library');
    return;
  }
  assert.ok(native, 'dist/native/cairn-native.node exports crc32cBlocks (x86-64 with SSE4.2)');
  assert.equal(checksumKernel, 'native');
});

test('block checksums equal the crc32c library for every run length, offset and alignment', () => {
  const pool = randomBytes(260 * BLOCK + 16);
  // Runs of 1..13 blocks cover each remainder of the six- and three-way interleaves; 64 and 256 are an extent and a 1 MiB write.
  for (const blocks of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 64, 256]) {
    for (const misalign of [0, 1, 7]) {
      const data = pool.subarray(misalign, misalign + blocks * BLOCK);
      const expected = reference(data);
      const out = new Uint32Array(blocks + 5).fill(0xdeadbeef);
      blockChecksums(data, out, 3);
      assert.deepEqual([...out.subarray(3, 3 + blocks)], expected, `${blocks} blocks at alignment ${misalign}`);
      assert.deepEqual([...out.subarray(0, 3), ...out.subarray(3 + blocks)], [0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0xdeadbeef, 0xdeadbeef], 'nothing written outside out[at, at + blocks)');
    }
  }
  const zero = Buffer.alloc(BLOCK);
  assert.equal(blockChecksum(zero), crc32c(zero));
  const flipped = Buffer.from(pool.subarray(0, BLOCK));
  const before = blockChecksum(flipped);
  flipped[BLOCK - 1]! ^= 1;
  assert.notEqual(blockChecksum(flipped), before, 'a flipped bit in the last byte changes the checksum');
});

test('bad arguments are refused, not read or written out of bounds', () => {
  assert.throws(() => blockChecksums(Buffer.alloc(BLOCK + 1), new Uint32Array(2)), /whole blocks/);
  assert.throws(() => blockChecksums(Buffer.alloc(2 * BLOCK), new Uint32Array(1)), /whole blocks/);
  if (!native) return;
  assert.throws(() => native(Buffer.alloc(BLOCK + 512), new Uint32Array(2), 0), RangeError);
  assert.throws(() => native(Buffer.alloc(2 * BLOCK), new Uint32Array(2), 1), RangeError);
  assert.throws(() => native(Buffer.alloc(BLOCK), new Uint32Array(1), 2), RangeError);
  assert.throws(() => native(Buffer.alloc(BLOCK), new Uint8Array(4) as unknown as Uint32Array, 0), RangeError);
  assert.throws(() => (native as unknown as (...a: unknown[]) => void)('text', new Uint32Array(1), 0), RangeError);
  assert.throws(() => (native as unknown as (...a: unknown[]) => void)(Buffer.alloc(BLOCK)), RangeError);
});

test('CAIRN_CHECKSUM=library selects the library, with the same values', () => {
  const data = randomBytes(5 * BLOCK);
  const script = `import { blockChecksums, checksumKernel } from ${JSON.stringify(new URL('../src/engine/checksum.js', import.meta.url).href)};
    const out = new Uint32Array(5); blockChecksums(Buffer.from(${JSON.stringify(data.toString('base64'))}, 'base64'), out);
    console.log(JSON.stringify({ checksumKernel, crcs: [...out] }));`;
  const result = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, CAIRN_CHECKSUM: 'library' } }).toString()) as { checksumKernel: string; crcs: number[] };
  assert.equal(result.checksumKernel, 'library');
  assert.deepEqual(result.crcs, reference(data));
});

// Fixed content, not random: any 4 KiB block has a 2^-17 chance of a checksum exactly one bit flip
// away from another's (32768 syndromes of 2^32), so random blocks would make this test fail about once
// in 500 runs for a property the code is right to have.
function fixedBytes(seed: string, length: number): Buffer {
  return createHash('shake256', { outputLength: length }).update(seed).digest();
}

test('a single flipped bit of a block is located from its crc32c syndrome; other content is not taken for one', () => {
  const block = fixedBytes('block', BLOCK);
  const wanted = blockChecksum(block);
  assert.equal(singleBitFlipOf(wanted, wanted), null, 'no flip');
  const picks = fixedBytes('bits', 64 * 8);
  const pick = (i: number): number => picks.readUInt32LE(i * 4) % (BLOCK * 8);
  for (const [i, bit] of [0, 7, 8, 12345, BLOCK * 8 - 1, ...Array.from({ length: 64 }, (_, j) => pick(j))].entries()) {
    const flipped = Buffer.from(block);
    flipped[bit >>> 3] = flipped[bit >>> 3]! ^ (1 << (bit & 7));
    assert.equal(singleBitFlipOf(wanted, blockChecksum(flipped)), bit, `bit ${bit}`);
    const two = Buffer.from(flipped);
    const other = (bit + 1 + (pick(64 + (i % 64)) % (BLOCK * 8 - 1))) % (BLOCK * 8);
    two[other >>> 3] = two[other >>> 3]! ^ (1 << (other & 7));
    assert.equal(singleBitFlipOf(wanted, blockChecksum(two)), null, `bits ${bit} and ${other}: detected, not taken for one`);
  }
  for (let i = 0; i < 256; i++) assert.equal(singleBitFlipOf(wanted, blockChecksum(fixedBytes(`other ${i}`, BLOCK))), null, `other content ${i}`);
  assert.ok(isOneBitApart(wanted, (wanted ^ (1 << 17)) >>> 0) && !isOneBitApart(wanted, wanted) && !isOneBitApart(wanted, (wanted ^ 3) >>> 0));
});
