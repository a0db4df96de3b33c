// AES-256-XTS of whole 4 KiB data blocks (IEEE 1619, data unit = one block). The 16-byte tweak of a
// block: bytes 0..7 = u64 LE block number (the physical block on disk, the logical block in a
// stream), bytes 8..15 = u64 LE domain (XTS_DOMAIN_DISK, XTS_DOMAIN_STREAM), so the same bytes at two
// places, or on disk and in an export stream, never encrypt alike. The native kernel (native/xts.c,
// in the addon of native.ts) takes the key once per run of blocks; without it, Node's crypto gives
// the same bytes with one cipher object per block (~9-15 us each, ~270 MiB/s against ~5 GiB/s).
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { BLOCK_SIZE_BYTES } from './types.js';
import { assert, fail, InvalidArgument } from './errors.js';
import { nativeAddon, type XtsKeyHandle } from './native.js';

/** Bytes of an AES-256-XTS key: two AES-256 keys (data, tweak), which must differ. */
export const XTS_KEY_BYTES = 64;
const XTS_TWEAK_BYTES = 16;
/** Tweak domain of data blocks on disk (block number = physical block). */
export const XTS_DOMAIN_DISK = 0;
/** Tweak domain of an export stream (block number = logical block of the volume). */
export const XTS_DOMAIN_STREAM = 1;
/**
 * Runs of at least this many blocks go to libuv's thread pool in the async calls; shorter runs are
 * done on the caller's thread, which costs the event loop less. Measured (2 vCPUs, OpenSSL 3.0 with
 * AES-NI, main thread's CPU from /proc/self/task/PID/schedstat): a run costs ~0.5 us + ~0.72 us per
 * block on the thread (11.7 us for 16 blocks, 23 us for 32, 47 us for 64), while a trip through the
 * pool costs the loop ~18-21 us whatever the size (waking it, settling the promise) and adds
 * ~30 us of latency. They cross at ~24-28 blocks; at 16 blocks the pool costs the loop more than
 * doing it, at 64 it costs less than half.
 */
export const XTS_ASYNC_BLOCKS_MIN = 32;

/** 'native': native/xts.c; 'node': Node's crypto, one cipher object per block (the fallback). */
export type XtsImplementation = 'native' | 'node';

/** Which implementation an XtsCipher uses unless told: native where the addon has it. */
export const xtsDefaultImplementation: XtsImplementation = nativeAddon.xtsBlocks && nativeAddon.xtsBlocksAsync ? 'native' : 'node';

/**
 * The AES-256-XTS code behind the default implementation, for logs: 'vaes' (native/xts-vaes.c, 512-bit
 * VAES where the CPU has it), 'openssl' (the OpenSSL inside Node, 128-bit AES-NI), 'node' (the fallback).
 */
export const xtsKernel: 'vaes' | 'openssl' | 'node' = xtsDefaultImplementation === 'native' ? nativeAddon.xtsKernel ?? 'openssl' : 'node';

export interface XtsOptions {
  /** Forces an implementation (tests compare them); 'native' where the addon lacks it throws. */
  implementation?: XtsImplementation;
}

/** AES-256-XTS with one key, over runs of whole 4 KiB blocks. Holds a copy of the key until destroy(). */
export class XtsCipher {
  readonly implementation: XtsImplementation;
  readonly #key: Buffer;
  /** The key expanded once in the addon (native only): sync calls skip the key schedule. */
  readonly #handle: XtsKeyHandle | null;
  #destroyed = false;

  /** Copies `key` (64 bytes, its two halves different, else InvalidArgument). */
  constructor(key: Buffer, options: XtsOptions = {}) {
    if (key.length !== XTS_KEY_BYTES) throw new InvalidArgument(`an AES-256-XTS key is ${XTS_KEY_BYTES} bytes, not ${key.length}`);
    const half = XTS_KEY_BYTES / 2;
    if (key.subarray(0, half).equals(key.subarray(half))) throw new InvalidArgument('the two halves of an AES-256-XTS key must differ');
    this.implementation = options.implementation ?? xtsDefaultImplementation;
    if (this.implementation === 'native' && xtsDefaultImplementation !== 'native') {
      throw new InvalidArgument('the native addon has no AES-256-XTS (npm run build compiles it)');
    }
    this.#key = Buffer.alloc(XTS_KEY_BYTES); // not from Buffer's shared pool: destroy() wipes it alone
    key.copy(this.#key);
    assert(!this.#key.subarray(0, half).equals(this.#key.subarray(half)), 'the copied key has different halves');
    this.#handle = this.implementation === 'native' ? nativeAddon.xtsKey?.(this.#key) ?? null : null;
  }

  /** Encrypts each 4 KiB block of `src` into `dst` (as long; `src` itself for in place), block i with tweak (firstBlock + i, domain). */
  encryptBlocks(src: Buffer, dst: Buffer, firstBlock: number, domain = XTS_DOMAIN_DISK): void {
    assert(this.#checkRun(src, dst, firstBlock, domain), 'a valid run of blocks');
    this.#runSync(src, dst, firstBlock, domain, true);
  }

  /** Decrypts what encryptBlocks wrote with the same block numbers and domain. */
  decryptBlocks(src: Buffer, dst: Buffer, firstBlock: number, domain = XTS_DOMAIN_DISK): void {
    assert(this.#checkRun(src, dst, firstBlock, domain), 'a valid run of blocks');
    this.#runSync(src, dst, firstBlock, domain, false);
  }

  /**
   * encryptBlocks, on libuv's thread pool for runs of XTS_ASYNC_BLOCKS_MIN blocks or more (native
   * only). `src` and `dst` must not change until the promise settles.
   */
  async encryptBlocksAsync(src: Buffer, dst: Buffer, firstBlock: number, domain = XTS_DOMAIN_DISK): Promise<void> {
    assert(this.#checkRun(src, dst, firstBlock, domain), 'a valid run of blocks');
    await this.#runAsync(src, dst, firstBlock, domain, true);
  }

  /** decryptBlocks, on the thread pool as encryptBlocksAsync. */
  async decryptBlocksAsync(src: Buffer, dst: Buffer, firstBlock: number, domain = XTS_DOMAIN_DISK): Promise<void> {
    assert(this.#checkRun(src, dst, firstBlock, domain), 'a valid run of blocks');
    await this.#runAsync(src, dst, firstBlock, domain, false);
  }

  /**
   * Whether sealPiecesAsync and openBlocksAsync work here: the native kernel with its checksums
   * (x86-64 with SSE4.2). Elsewhere callers encrypt or decrypt, and sum on their own thread.
   */
  get checksumsInJob(): boolean {
    return this.implementation === 'native' && nativeAddon.xtsSealPiecesAsync !== undefined;
  }

  /**
   * Encrypts `pieces` one after another into `dst` (as long as all of them, apart from each), piece i's
   * blocks with tweaks from firstBlocks[i] on, and puts each ciphertext block's crc32c into `crcs`
   * (one per block of dst): one thread-pool job for a write whose data lands in several runs.
   * Nothing passed may change until the promise settles. Only where checksumsInJob.
   */
  sealPiecesAsync(pieces: Buffer[], firstBlocks: number[], dst: Buffer, crcs: Uint32Array, domain = XTS_DOMAIN_DISK): Promise<void> {
    const native = nativeAddon.xtsSealPiecesAsync;
    assert(this.checksumsInJob && native !== undefined, 'sealPiecesAsync where the native kernel seals pieces');
    assert(pieces.length > 0 && pieces.length === firstBlocks.length, 'a first block per piece');
    let bytes = 0;
    for (let i = 0; i < pieces.length; i++) {
      assert(this.#checkRun(pieces[i]!, pieces[i]!, firstBlocks[i]!, domain), 'a valid piece');
      assert(!sharesMemory(pieces[i]!, dst), 'dst apart from every piece');
      bytes += pieces[i]!.length;
    }
    assert(bytes === dst.length && crcs.length === dst.length / BLOCK_SIZE_BYTES, 'dst as long as the pieces, a checksum per block');
    return native(this.#key, pieces, Float64Array.from(firstBlocks), dst, domain, crcs);
  }

  /**
   * Decrypts `data` in place on the thread pool, first putting the crc32c of each of its ciphertext
   * blocks into `crcs` (one per block), so a read is verified and decrypted in one hand-off while its
   * bytes are in cache. The caller compares the checksums and must not use the bytes if one differs.
   * Only where checksumsInJob.
   */
  openBlocksAsync(data: Buffer, firstBlock: number, crcs: Uint32Array, domain = XTS_DOMAIN_DISK): Promise<void> {
    const native = nativeAddon.xtsBlocksAsync;
    assert(this.checksumsInJob && native !== undefined, 'openBlocksAsync where the native kernel sums in the job');
    assert(this.#checkRun(data, data, firstBlock, domain), 'a valid run of blocks');
    assert(crcs.length === data.length / BLOCK_SIZE_BYTES, 'a checksum per block');
    return native(this.#key, data, data, firstBlock, domain, false, crcs);
  }

  /**
   * openBlocksAsync on the caller's thread, for runs below XTS_ASYNC_BLOCKS_MIN blocks (a 4 KiB read
   * from the page cache): one addon call sums and decrypts. `crcs` has a slot per block at least.
   */
  openBlocks(data: Buffer, firstBlock: number, crcs: Uint32Array, domain = XTS_DOMAIN_DISK): void {
    const native = nativeAddon.xtsBlocks;
    assert(this.checksumsInJob && native !== undefined, 'openBlocks where the native kernel sums in the call');
    assert(this.#checkRun(data, data, firstBlock, domain), 'a valid run of blocks');
    assert(crcs.length >= data.length / BLOCK_SIZE_BYTES, 'a checksum slot per block');
    native(this.#handle ?? this.#key, data, data, firstBlock, domain, false, crcs);
  }

  /** Zeroes this cipher's copy of the key; any later call is a bug. Work already started finishes (it holds its own copy). */
  destroy(): void {
    if (this.#handle !== null) nativeAddon.xtsKeyWipe?.(this.#handle);
    this.#key.fill(0);
    this.#destroyed = true;
    assert(this.#key.every((b) => b === 0), 'the key is wiped');
  }

  /** Whether a call's arguments are sound (each failure is an engine bug, asserted by the caller). */
  #checkRun(src: Buffer, dst: Buffer, firstBlock: number, domain: number): boolean {
    assert(!this.#destroyed, 'an XtsCipher is not used after destroy()');
    if (!(src.length > 0 && src.length % BLOCK_SIZE_BYTES === 0)) fail(`XTS runs are whole 4 KiB blocks, not ${src.length} bytes`);
    assert(dst.length === src.length, 'dst is as long as src');
    assert(!partlyOverlapping(src, dst), 'dst is src itself or apart from it');
    if (!(Number.isSafeInteger(firstBlock) && firstBlock >= 0)) fail(`a block number, not ${firstBlock}`);
    // Subtracted, not added: MAX_SAFE_INTEGER + 2 - 1 rounds back to a safe integer.
    assert(firstBlock <= Number.MAX_SAFE_INTEGER - (src.length / BLOCK_SIZE_BYTES - 1), 'the last block number is at most 2^53 - 1');
    if (!(Number.isSafeInteger(domain) && domain >= 0)) fail(`a tweak domain, not ${domain}`);
    return true;
  }

  #runSync(src: Buffer, dst: Buffer, firstBlock: number, domain: number, encrypt: boolean): void {
    const native = this.implementation === 'native' ? nativeAddon.xtsBlocks : undefined;
    assert(this.implementation === 'node' || native !== undefined, 'the native kernel is there when chosen');
    if (native) native(this.#handle ?? this.#key, src, dst, firstBlock, domain, encrypt);
    else nodeBlocks(this.#key, src, dst, firstBlock, domain, encrypt);
  }

  #runAsync(src: Buffer, dst: Buffer, firstBlock: number, domain: number, encrypt: boolean): Promise<void> {
    const native = this.implementation === 'native' ? nativeAddon.xtsBlocksAsync : undefined;
    assert(this.implementation === 'node' || native !== undefined, 'the native kernel is there when chosen');
    if (native && src.length >= XTS_ASYNC_BLOCKS_MIN * BLOCK_SIZE_BYTES) return native(this.#key, src, dst, firstBlock, domain, encrypt);
    this.#runSync(src, dst, firstBlock, domain, encrypt);
    return Promise.resolve();
  }
}

/** True when a and b have any byte in common. */
function sharesMemory(a: Buffer, b: Buffer): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

/** True when a and b share memory but are not the same bytes (in place is a == b exactly). */
function partlyOverlapping(a: Buffer, b: Buffer): boolean {
  assert(a.length === b.length, 'compared runs are as long');
  if (a.buffer !== b.buffer) return false;
  if (a.byteOffset === b.byteOffset) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

/** The fallback: Node's crypto, one cipher object per block (XTS takes a new tweak only with a new object). */
function nodeBlocks(key: Buffer, src: Buffer, dst: Buffer, firstBlock: number, domain: number, encrypt: boolean): void {
  assert(src.length === dst.length && src.length % BLOCK_SIZE_BYTES === 0, 'whole blocks, as many in dst');
  const tweak = Buffer.alloc(XTS_TWEAK_BYTES);
  writeU64(tweak, 8, domain);
  for (let at = 0, block = firstBlock; at < src.length; at += BLOCK_SIZE_BYTES, block++) {
    writeU64(tweak, 0, block);
    const cipher = encrypt ? createCipheriv('aes-256-xts', key, tweak) : createDecipheriv('aes-256-xts', key, tweak);
    const out = cipher.update(src.subarray(at, at + BLOCK_SIZE_BYTES));
    const rest = cipher.final();
    assert(out.length === BLOCK_SIZE_BYTES && rest.length === 0, 'XTS gives a block for a block');
    out.copy(dst, at);
  }
}

/** Writes a safe integer as u64 little-endian (two u32 halves: no BigInt per block). */
function writeU64(into: Buffer, at: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, 'a u64 that a number holds exactly');
  into.writeUInt32LE(value % 0x1_0000_0000, at);
  into.writeUInt32LE(Math.floor(value / 0x1_0000_0000), at + 4);
}
