// AES-256-XTS of data blocks (src/engine/xts.ts, native/xts.c): the native kernel and Node's crypto
// fallback give the same bytes for any key, run, block number and domain, sync or async; decryption
// inverts encryption, in place too; the tweak separates block numbers and domains; a pinned
// known answer guards the on-disk format against a silent change; bad arguments are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createCipheriv, randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AssertionError, InvalidArgument } from '../src/engine/errors.js';
import { nativeAddon } from '../src/engine/native.js';
import { blockChecksums } from '../src/engine/checksum.js';
import {
  XTS_ASYNC_BLOCKS_MIN, XTS_DOMAIN_DISK, XTS_DOMAIN_STREAM, XTS_KEY_BYTES, XtsCipher, xtsDefaultImplementation, xtsKernel,
  type XtsImplementation,
} from '../src/engine/xts.js';

const BLOCK = 4096;
const native = nativeAddon.xtsBlocks;
const noNative = native === undefined ? 'the addon has no xtsBlocks (npm run build compiles native/xts.c)' : false;
const implementations: XtsImplementation[] = native ? ['native', 'node'] : ['node'];
// Runs of 1..3 blocks, one below, at and above the async threshold, and 1 MiB.
const LENGTHS_BLOCKS = [1, 2, 3, XTS_ASYNC_BLOCKS_MIN - 1, XTS_ASYNC_BLOCKS_MIN, XTS_ASYNC_BLOCKS_MIN + 1, 256];

function randomKey(): Buffer {
  for (;;) {
    const key = randomBytes(XTS_KEY_BYTES);
    if (!key.subarray(0, 32).equals(key.subarray(32))) return key;
  }
}

/** A block number anywhere in [0, 2^53 - blocks], often near the ends. */
function randomFirstBlock(blocks: number): number {
  const last = Number.MAX_SAFE_INTEGER - blocks + 1;
  const pick = randomInt(3);
  if (pick === 0) return randomInt(1000);
  if (pick === 1) return last - randomInt(1000);
  return Math.floor(Math.random() * last);
}

function ciphers(key: Buffer): Map<XtsImplementation, XtsCipher> {
  return new Map(implementations.map((impl) => [impl, new XtsCipher(key, { implementation: impl })]));
}

test('the native kernel is built and chosen by default', { skip: noNative }, () => {
  assert.equal(xtsDefaultImplementation, 'native');
  assert.equal(new XtsCipher(randomKey()).implementation, 'native');
});

test('native and Node crypto give identical bytes, sync and async, both domains', { skip: noNative }, async () => {
  for (const blocks of LENGTHS_BLOCKS) {
    for (const domain of [XTS_DOMAIN_DISK, XTS_DOMAIN_STREAM]) {
      const key = randomKey();
      const both = ciphers(key);
      const plain = randomBytes(blocks * BLOCK);
      const first = randomFirstBlock(blocks);
      const outs: Buffer[] = [];
      for (const cipher of both.values()) {
        const sync = Buffer.alloc(plain.length);
        cipher.encryptBlocks(plain, sync, first, domain);
        const viaAsync = Buffer.alloc(plain.length);
        await cipher.encryptBlocksAsync(plain, viaAsync, first, domain);
        assert.ok(sync.equals(viaAsync), `${cipher.implementation}: async gives the sync bytes (${blocks} blocks)`);
        outs.push(sync);
        const back = Buffer.alloc(plain.length);
        await cipher.decryptBlocksAsync(sync, back, first, domain);
        assert.ok(back.equals(plain), `${cipher.implementation}: async decryption inverts (${blocks} blocks)`);
      }
      assert.ok(outs[0]!.equals(outs[1]!), `native = node for ${blocks} blocks from ${first}, domain ${domain}`);
    }
  }
});

test('the fallback is Node crypto per block with tweak (u64 LE block, u64 LE domain)', () => {
  const key = randomKey();
  const plain = randomBytes(3 * BLOCK);
  const first = 2 ** 40 + 7;
  const out = Buffer.alloc(plain.length);
  new XtsCipher(key, { implementation: 'node' }).encryptBlocks(plain, out, first, XTS_DOMAIN_STREAM);
  for (let i = 0; i < 3; i++) {
    const tweak = Buffer.alloc(16);
    tweak.writeBigUInt64LE(BigInt(first + i), 0);
    tweak.writeBigUInt64LE(BigInt(XTS_DOMAIN_STREAM), 8);
    const c = createCipheriv('aes-256-xts', key, tweak);
    const expected = Buffer.concat([c.update(plain.subarray(i * BLOCK, (i + 1) * BLOCK)), c.final()]);
    assert.ok(out.subarray(i * BLOCK, (i + 1) * BLOCK).equals(expected), `block ${i}`);
  }
});

test('known answer: the format of an encrypted block does not change', () => {
  const key = Buffer.from(Array.from({ length: XTS_KEY_BYTES }, (_, i) => i));
  const plain = Buffer.from(Array.from({ length: BLOCK }, (_, i) => i & 0xff));
  // Computed once with Node's createCipheriv('aes-256-xts', key, tweak(0x12345, domain 1)).
  const expected = 'f64ca968c7cd516555e50d95aa86febd59bcc81d8c8174a6c50635936d2b1d06';
  for (const cipher of ciphers(key).values()) {
    const out = Buffer.alloc(BLOCK);
    cipher.encryptBlocks(plain, out, 0x12345, XTS_DOMAIN_STREAM);
    assert.equal(out.subarray(0, 32).toString('hex'), expected, cipher.implementation);
  }
});

test('decryption inverts encryption, also in place', async () => {
  for (const cipher of ciphers(randomKey()).values()) {
    for (const blocks of LENGTHS_BLOCKS) {
      const plain = randomBytes(blocks * BLOCK);
      const first = randomFirstBlock(blocks);
      const enc = Buffer.alloc(plain.length);
      cipher.encryptBlocks(plain, enc, first);
      assert.ok(!enc.equals(plain));
      const dec = Buffer.alloc(plain.length);
      cipher.decryptBlocks(enc, dec, first);
      assert.ok(dec.equals(plain), `${cipher.implementation}, ${blocks} blocks`);

      const inPlace = Buffer.from(plain);
      cipher.encryptBlocks(inPlace, inPlace, first);
      assert.ok(inPlace.equals(enc), `${cipher.implementation}: in place encrypts alike`);
      cipher.decryptBlocks(inPlace, inPlace, first);
      assert.ok(inPlace.equals(plain), `${cipher.implementation}: in place decrypts`);
      await cipher.encryptBlocksAsync(inPlace, inPlace, first);
      assert.ok(inPlace.equals(enc), `${cipher.implementation}: async in place encrypts alike`);
      await cipher.decryptBlocksAsync(inPlace, inPlace, first);
      assert.ok(inPlace.equals(plain), `${cipher.implementation}: async in place decrypts`);
    }
  }
});

test('the tweak separates block numbers and domains; a wrong key or tweak decrypts to something else', () => {
  const key = randomKey();
  for (const cipher of ciphers(key).values()) {
    const block = randomBytes(BLOCK);
    const twice = Buffer.concat([block, block]);
    const enc = Buffer.alloc(2 * BLOCK);
    cipher.encryptBlocks(twice, enc, 41);
    assert.ok(!enc.subarray(0, BLOCK).equals(enc.subarray(BLOCK)), 'equal plaintext at blocks 41 and 42');
    const stream = Buffer.alloc(BLOCK);
    cipher.encryptBlocks(block, stream, 41, XTS_DOMAIN_STREAM);
    assert.ok(!stream.equals(enc.subarray(0, BLOCK)), 'equal plaintext at block 41 on disk and in a stream');

    const other = new XtsCipher(randomKey(), { implementation: cipher.implementation });
    const wrong = Buffer.alloc(BLOCK);
    other.decryptBlocks(enc.subarray(0, BLOCK), wrong, 41);
    assert.ok(!wrong.equals(block), 'another key');
    cipher.decryptBlocks(enc.subarray(0, BLOCK), wrong, 42);
    assert.ok(!wrong.equals(block), 'another block number');
    cipher.decryptBlocks(enc.subarray(0, BLOCK), wrong, 41, XTS_DOMAIN_STREAM);
    assert.ok(!wrong.equals(block), 'another domain');
  }
});

test('many async runs at once each get their own bytes', { skip: noNative }, async () => {
  const cipher = new XtsCipher(randomKey(), { implementation: 'native' });
  const runs = Array.from({ length: 12 }, (_, i) => ({ plain: randomBytes((XTS_ASYNC_BLOCKS_MIN + i) * BLOCK), first: i * 1000 }));
  const outs = runs.map((r) => Buffer.alloc(r.plain.length));
  await Promise.all(runs.map((r, i) => cipher.encryptBlocksAsync(r.plain, outs[i]!, r.first)));
  runs.forEach((r, i) => {
    const expected = Buffer.alloc(r.plain.length);
    cipher.encryptBlocks(r.plain, expected, r.first);
    assert.ok(outs[i]!.equals(expected), `run ${i}`);
  });
});

test('bad keys and bad runs are refused', async () => {
  assert.throws(() => new XtsCipher(randomBytes(32)), InvalidArgument);
  assert.throws(() => new XtsCipher(randomBytes(65)), InvalidArgument);
  const half = randomBytes(32);
  assert.throws(() => new XtsCipher(Buffer.concat([half, half])), InvalidArgument, 'equal halves');
  if (!native) assert.throws(() => new XtsCipher(randomKey(), { implementation: 'native' }), InvalidArgument);

  for (const cipher of ciphers(randomKey()).values()) {
    const two = Buffer.alloc(2 * BLOCK);
    assert.throws(() => cipher.encryptBlocks(Buffer.alloc(0), Buffer.alloc(0), 0), AssertionError, 'empty');
    assert.throws(() => cipher.encryptBlocks(Buffer.alloc(BLOCK + 1), Buffer.alloc(BLOCK + 1), 0), AssertionError, 'partial block');
    assert.throws(() => cipher.encryptBlocks(two, Buffer.alloc(BLOCK), 0), AssertionError, 'short dst');
    const shared = Buffer.alloc(3 * BLOCK);
    assert.throws(() => cipher.encryptBlocks(shared.subarray(0, 2 * BLOCK), shared.subarray(BLOCK), 0), AssertionError, 'overlap');
    assert.throws(() => cipher.encryptBlocks(two, two, -1), AssertionError, 'negative block');
    assert.throws(() => cipher.encryptBlocks(two, two, 1.5), AssertionError, 'fractional block');
    assert.throws(() => cipher.encryptBlocks(two, two, Number.MAX_SAFE_INTEGER), AssertionError, 'last block past 2^53 - 1');
    assert.throws(() => cipher.decryptBlocks(two, two, 0, -1), AssertionError, 'negative domain');
    await assert.rejects(cipher.encryptBlocksAsync(Buffer.alloc(100), Buffer.alloc(100), 0), AssertionError);
    cipher.encryptBlocks(two, two, Number.MAX_SAFE_INTEGER - 1); // the last block is 2^53 - 1: allowed
    cipher.destroy();
    assert.throws(() => cipher.encryptBlocks(two, two, 0), AssertionError, 'used after destroy()');
  }
});

test('the native functions refuse bad arguments with RangeError, never crash', { skip: noNative }, async () => {
  const xts = nativeAddon.xtsBlocks!;
  const xtsAsync = nativeAddon.xtsBlocksAsync!;
  const key = randomKey();
  const src = randomBytes(2 * BLOCK);
  const dst = Buffer.alloc(2 * BLOCK);
  const half = randomBytes(32);
  const shared = Buffer.alloc(3 * BLOCK);
  const bad: Array<[string, unknown[]]> = [
    ['no arguments', []],
    ['short key', [key.subarray(1), src, dst, 0, 0, true]],
    ['key not bytes', ['k'.repeat(64), src, dst, 0, 0, true]],
    ['equal halves', [Buffer.concat([half, half]), src, dst, 0, 0, true]],
    ['empty', [key, Buffer.alloc(0), Buffer.alloc(0), 0, 0, true]],
    ['partial block', [key, src.subarray(1), dst.subarray(1), 0, 0, true]],
    ['short dst', [key, src, dst.subarray(BLOCK), 0, 0, true]],
    ['dst a Uint32Array', [key, src, new Uint32Array(2 * BLOCK / 4), 0, 0, true]],
    ['overlap', [key, shared.subarray(0, 2 * BLOCK), shared.subarray(BLOCK), 0, 0, true]],
    ['negative block', [key, src, dst, -1, 0, true]],
    ['fractional block', [key, src, dst, 0.5, 0, true]],
    ['NaN block', [key, src, dst, NaN, 0, true]],
    ['block as string', [key, src, dst, '0', 0, true]],
    ['last block past 2^53 - 1', [key, src, dst, Number.MAX_SAFE_INTEGER, 0, true]],
    ['domain 2^53', [key, src, dst, 0, 2 ** 53, true]],
    ['encrypt not a boolean', [key, src, dst, 0, 0, 1]],
  ];
  type Call = (...args: unknown[]) => unknown;
  for (const [why, args] of bad) {
    assert.throws(() => (xts as Call)(...args), RangeError, why);
    assert.throws(() => (xtsAsync as Call)(...args), RangeError, `async: ${why}`);
  }
  const viaSync = Buffer.alloc(2 * BLOCK);
  xts(key, src, viaSync, Number.MAX_SAFE_INTEGER - 1, 2 ** 53 - 1, true);
  await xtsAsync(key, src, dst, Number.MAX_SAFE_INTEGER - 1, 2 ** 53 - 1, true);
  assert.ok(dst.equals(viaSync), 'the largest block number and domain');
});

test('xts: sealing pieces in one job equals encrypting each with its own first block, and sums the ciphertext', { skip: nativeAddon.xtsSealPiecesAsync === undefined ? 'the addon has no xtsSealPiecesAsync (npm run build; x86-64 with SSE4.2)' : false }, async () => {
  const key = randomKey();
  const cipher = new XtsCipher(key, { implementation: 'node' });
  const sealer = new XtsCipher(key, { implementation: 'native' });
  assert.ok(sealer.checksumsInJob && !cipher.checksumsInJob, 'only the native kernel seals pieces');
  for (let round = 0; round < 20; round++) {
    const lengths = Array.from({ length: 1 + randomInt(12) }, () => 1 + randomInt(40));
    const pieces = lengths.map((n) => randomBytes(n * BLOCK));
    const firstBlocks = lengths.map((n) => randomFirstBlock(n));
    const total = lengths.reduce((a, b) => a + b, 0);
    const dst = Buffer.alloc(total * BLOCK), crcs = new Uint32Array(total);
    const before = pieces.map((p) => Buffer.from(p));
    await sealer.sealPiecesAsync(pieces, firstBlocks, dst, crcs, round % 2 === 0 ? XTS_DOMAIN_DISK : XTS_DOMAIN_STREAM);
    const want = Buffer.alloc(total * BLOCK);
    let at = 0;
    for (let i = 0; i < pieces.length; i++) {
      cipher.encryptBlocks(pieces[i]!, want.subarray(at, at + pieces[i]!.length), firstBlocks[i]!, round % 2 === 0 ? XTS_DOMAIN_DISK : XTS_DOMAIN_STREAM);
      at += pieces[i]!.length;
    }
    assert.ok(dst.equals(want), `round ${round}: pieces ${lengths.join(',')} sealed as one by one`);
    const sums = new Uint32Array(total);
    blockChecksums(want, sums);
    assert.deepEqual([...crcs], [...sums], `round ${round}: the checksums of the ciphertext`);
    pieces.forEach((p, i) => assert.ok(p.equals(before[i]!), 'the plaintext is left as it was'));
  }
});

test('xts: sealing pieces refuses bad arguments with RangeError', { skip: nativeAddon.xtsSealPiecesAsync === undefined ? 'no xtsSealPiecesAsync' : false }, () => {
  const seal = nativeAddon.xtsSealPiecesAsync!;
  const key = randomKey(), a = randomBytes(2 * BLOCK), b = randomBytes(BLOCK);
  const dst = Buffer.alloc(3 * BLOCK), crcs = new Uint32Array(3), firsts = new Float64Array([0, 9]);
  const bad: Array<[string, unknown[]]> = [
    ['no arguments', []],
    ['no pieces', [key, [], new Float64Array(0), dst, 0, crcs]],
    ['pieces not an array', [key, a, firsts, dst, 0, crcs]],
    ['a first block short', [key, [a, b], new Float64Array([0]), dst, 0, crcs]],
    ['first blocks as numbers', [key, [a, b], [0, 9], dst, 0, crcs]],
    ['a partial piece', [key, [a.subarray(1), b], firsts, dst, 0, crcs]],
    ['dst too short', [key, [a, b], firsts, dst.subarray(BLOCK), 0, new Uint32Array(2)]],
    ['dst overlapping a piece', [key, [a.subarray(0, BLOCK), a.subarray(BLOCK)], firsts, Buffer.from(a.buffer, a.byteOffset, 2 * BLOCK), 0, new Uint32Array(2)]],
    ['crcs short', [key, [a, b], firsts, dst, 0, new Uint32Array(2)]],
    ['crcs of bytes', [key, [a, b], firsts, dst, 0, new Uint8Array(3)]],
    ['fractional first block', [key, [a, b], new Float64Array([0.5, 9]), dst, 0, crcs]],
    ['last block past 2^53 - 1', [key, [a, b], new Float64Array([Number.MAX_SAFE_INTEGER, 9]), dst, 0, crcs]],
    ['equal key halves', [Buffer.concat([key.subarray(0, 32), key.subarray(0, 32)]), [a, b], firsts, dst, 0, crcs]],
  ];
  type Call = (...args: unknown[]) => unknown;
  for (const [why, args] of bad) assert.throws(() => (seal as Call)(...args), RangeError, why);
});

test('xts: opening blocks sums the ciphertext, then decrypts it in place; a bad checksum slot array is refused', { skip: nativeAddon.xtsSealPiecesAsync === undefined ? 'no checksums in the job here' : false }, async () => {
  const key = randomKey();
  const cipher = new XtsCipher(key, { implementation: 'native' });
  assert.ok(cipher.checksumsInJob);
  for (const blocks of LENGTHS_BLOCKS) {
    const plain = randomBytes(blocks * BLOCK), first = randomFirstBlock(blocks);
    const sealed = Buffer.alloc(plain.length);
    cipher.encryptBlocks(plain, sealed, first);
    const want = new Uint32Array(blocks);
    blockChecksums(sealed, want);
    const crcs = new Uint32Array(blocks);
    await cipher.openBlocksAsync(sealed, first, crcs);
    assert.ok(sealed.equals(plain), `${blocks} blocks decrypted in place`);
    assert.deepEqual([...crcs], [...want], `${blocks} blocks: the checksums are of the ciphertext`);
    // Encrypting with checksums sums what it wrote.
    const again = Buffer.alloc(plain.length), sums = new Uint32Array(blocks);
    await nativeAddon.xtsBlocksAsync!(key, plain, again, first, XTS_DOMAIN_DISK, true, sums);
    assert.deepEqual([...sums], [...want], `${blocks} blocks: the checksums of the encryption`);
  }
  const src = randomBytes(2 * BLOCK), dst = Buffer.alloc(2 * BLOCK);
  type Call = (...args: unknown[]) => unknown;
  assert.throws(() => (nativeAddon.xtsBlocksAsync as Call)(key, src, dst, 0, 0, true, new Uint32Array(1)), RangeError, 'a slot short');
  assert.throws(() => (nativeAddon.xtsBlocksAsync as Call)(key, src, dst, 0, 0, true, new Uint8Array(2)), RangeError, 'not a Uint32Array');
  assert.throws(() => (nativeAddon.xtsBlocksAsync as Call)(key, src, dst, 0, 0, true, undefined), RangeError, 'undefined');
  assert.throws(() => (nativeAddon.xtsBlocks as Call)(key, src, dst, 0, 0, true, new Uint32Array(1)), RangeError, 'a slot short, sync');
  assert.throws(() => (nativeAddon.xtsBlocks as Call)(key, src, dst, 0, 0, true, new Float64Array(2)), RangeError, 'not a Uint32Array, sync');
});

test('xts: a key handle gives the raw key\'s bytes, sums in the sync call, and is refused once wiped', { skip: nativeAddon.xtsKey === undefined || nativeAddon.xtsSealPiecesAsync === undefined ? 'no key handles or no checksums in the call here' : false }, () => {
  type Call = (...args: unknown[]) => unknown;
  for (const blocks of [1, 2, 3, XTS_ASYNC_BLOCKS_MIN - 1, 64]) {
    const key = randomKey(), handle = nativeAddon.xtsKey!(key);
    const plain = randomBytes(blocks * BLOCK), first = randomFirstBlock(blocks);
    const domain = blocks % 2 === 0 ? XTS_DOMAIN_STREAM : Number.MAX_SAFE_INTEGER - randomInt(1000);
    const byKey = Buffer.alloc(plain.length), byHandle = Buffer.alloc(plain.length);
    native!(key, plain, byKey, first, domain, true);
    native!(handle, plain, byHandle, first, domain, true);
    assert.ok(byHandle.equals(byKey), `${blocks} blocks: the handle encrypts as the key`);
    // A checksum array longer than the run: the slots past it are left alone.
    const want = new Uint32Array(blocks);
    blockChecksums(byKey, want);
    const crcs = new Uint32Array(blocks + 3).fill(0xdeadbeef);
    native!(handle, byHandle, byHandle, first, domain, false, crcs);
    assert.ok(byHandle.equals(plain), `${blocks} blocks decrypted in place through the handle`);
    assert.deepEqual([...crcs.subarray(0, blocks)], [...want], `${blocks} blocks: the sync call sums the ciphertext`);
    assert.deepEqual([...crcs.subarray(blocks)], [0xdeadbeef, 0xdeadbeef, 0xdeadbeef], 'no slot past the run is written');
    nativeAddon.xtsKeyWipe!(handle);
    assert.throws(() => native!(handle, plain, byHandle, first, domain, true), /wiped/, 'a wiped handle is refused');
    assert.ok(key.some((b) => b !== 0), 'wiping a handle leaves the caller\'s key alone');
  }
  const key = randomKey();
  assert.throws(() => (nativeAddon.xtsKey as Call)(key.subarray(0, 63)), RangeError, 'a short key');
  assert.throws(() => (nativeAddon.xtsKey as Call)(Buffer.concat([key.subarray(0, 32), key.subarray(0, 32)])), RangeError, 'equal halves');
  assert.throws(() => (nativeAddon.xtsKeyWipe as Call)(key), RangeError, 'wiping something else');
  const src = randomBytes(BLOCK), dst = Buffer.alloc(BLOCK);
  assert.throws(() => (nativeAddon.xtsBlocksAsync as Call)(nativeAddon.xtsKey!(key), src, dst, 0, 0, true), RangeError, 'async jobs take raw keys only');
  // XtsCipher.openBlocks: the same through the engine's class.
  const cipher = new XtsCipher(key, { implementation: 'native' });
  const sealed = Buffer.alloc(2 * BLOCK), plain = randomBytes(2 * BLOCK);
  cipher.encryptBlocks(plain, sealed, 77);
  const want = new Uint32Array(2), crcs = new Uint32Array(8);
  blockChecksums(sealed, want);
  cipher.openBlocks(sealed, 77, crcs);
  assert.ok(sealed.equals(plain), 'openBlocks decrypts in place');
  assert.deepEqual([...crcs.subarray(0, 2)], [...want], 'openBlocks sums the ciphertext');
  cipher.destroy();
  assert.throws(() => cipher.openBlocks(sealed, 77, crcs), AssertionError, 'a destroyed cipher is not used');
});

const cpuFlags = new Set((readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1] ?? '').trim().split(/\s+/));
const cpuHasVaes = ['aes', 'avx512f', 'avx512bw', 'vaes'].every((flag) => cpuFlags.has(flag));

test('xts: the VAES kernel is chosen where the CPU has VAES and AVX-512, OpenSSL elsewhere', { skip: noNative }, () => {
  assert.equal(nativeAddon.xtsKernel, cpuHasVaes ? 'vaes' : 'openssl');
  assert.equal(xtsKernel, nativeAddon.xtsKernel, 'the engine reports the kernel the addon chose');
});

test('xts: the VAES kernel gives OpenSSL\'s bytes (CAIRN_XTS_VAES=0 in a child) for random keys, runs, block numbers and domains', { skip: !native || !cpuHasVaes ? 'no VAES kernel here' : false }, () => {
  // Block numbers near 2^53 and domains with high bits set carry through every byte of the tweak.
  const cases = Array.from({ length: 24 }, (_, i) => {
    const blocks = [1, 2, 3, 7, 31, 64, 255, 256][i % 8]!;
    return {
      key: randomKey().toString('base64'),
      data: randomBytes(blocks * BLOCK).toString('base64'),
      first: randomFirstBlock(blocks),
      domain: i % 3 === 0 ? XTS_DOMAIN_DISK : i % 3 === 1 ? XTS_DOMAIN_STREAM : Number.MAX_SAFE_INTEGER - randomInt(1000),
      encrypt: i % 2 === 0,
    };
  });
  const run = (c: (typeof cases)[number], xts: NonNullable<typeof native>): string => {
    const src = Buffer.from(c.data, 'base64');
    const dst = Buffer.alloc(src.length);
    xts(Buffer.from(c.key, 'base64'), src, dst, c.first, c.domain, c.encrypt);
    return dst.toString('base64');
  };
  const child = `
    const { nativeAddon } = await import(${JSON.stringify(new URL('../src/engine/native.js', import.meta.url).href)});
    if (nativeAddon.xtsKernel !== 'openssl') throw new Error('kernel ' + nativeAddon.xtsKernel);
    const cases = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
    process.stdout.write(JSON.stringify(cases.map((c) => (${run.toString()})(c, nativeAddon.xtsBlocks))));`;
  const out = execFileSync(process.execPath, ['--input-type=commonjs', '-e', `(async () => { ${child} })().catch((e) => { console.error(e); process.exit(1); })`], {
    input: JSON.stringify(cases), env: { ...process.env, CAIRN_XTS_VAES: '0' }, maxBuffer: 64 << 20, encoding: 'utf8',
  });
  const byOpenssl = JSON.parse(out) as string[];
  assert.equal(nativeAddon.xtsKernel, 'vaes');
  // Through a key handle too: the key expanded once (the schedule the engine's ciphers keep).
  const viaHandle: NonNullable<typeof native> = (key, ...rest) => native!(nativeAddon.xtsKey!(key as Buffer), ...rest);
  cases.forEach((c, i) => {
    const what = `case ${i}: ${c.data.length * 3 / 4 / BLOCK} blocks from ${c.first}, domain ${c.domain}, encrypt ${c.encrypt}`;
    assert.equal(run(c, native!), byOpenssl[i], what);
    assert.equal(run(c, viaHandle), byOpenssl[i], `${what}, through a key handle`);
  });
});
