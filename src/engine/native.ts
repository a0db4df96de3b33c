// The optional native addon (native/, built into dist/native/cairn-native.node by `npm run build`).
// Every function in it is an accelerator with a pure-Node fallback, so a missing addon (no C
// compiler, another CPU or OS) costs speed, never correctness.
import { createRequire } from 'node:module';

/** An expanded key held by the addon (an opaque external value). */
export type XtsKeyHandle = { readonly xtsKeyHandle: unique symbol };

export interface NativeAddon {
  /** crc32c of each 4 KiB block of `data` into out[at], out[at + 1], ... (x86-64 with SSE4.2). */
  crc32cBlocks?: (data: Buffer, out: Uint32Array, at: number) => void;
  /** Starts write-back of every dirty page of the file, without waiting for it (Linux). */
  startWriteback?: (fd: number) => Promise<void>;
  /** Puts every other thread of the process in SCHED_BATCH; returns how many it changed (Linux). */
  batchOtherThreads?: () => number;
  /**
   * Positional read from the page cache only (preadv2 RWF_NOWAIT, Linux): the bytes read, -1 when
   * the data is not all cached (nothing to rely on was read), -2 when the file refuses the flag.
   */
  preadNowait?: (fd: number, into: Buffer, position: number) => number;
  /**
   * preadNowait for many runs of whole blocks in one call: run i is plan[3i + 1] blocks from block
   * plan[3i] into `into` at block plan[3i + 2]. The number of runs read whole, in order (a run not all
   * cached ends it), or -2 when the file refuses the flag.
   */
  preadRunsNowait?: (fd: number, into: Buffer, plan: Float64Array, count: number) => number;
  /**
   * Which kernel runs the xts functions: 'vaes' (native/xts-vaes.c, where the CPU has VAES and
   * AVX-512, it matched OpenSSL on a known unit at load, and CAIRN_XTS_VAES is not 0) or 'openssl'.
   */
  xtsKernel?: 'vaes' | 'openssl';
  /**
   * AES-256-XTS of each 4 KiB block of src into dst (the same length; src itself for in place), block
   * i with the tweak u64 LE (firstBlock + i) then u64 LE domain; key is 64 bytes, its halves
   * different, or a handle from xtsKey. With `crcs` (a slot per block at least), the crc32c of each
   * ciphertext block too, as xtsBlocksAsync. Bad arguments throw RangeError (native/xts.c).
   */
  xtsBlocks?: (key: Buffer | XtsKeyHandle, src: Buffer, dst: Buffer, firstBlock: number, domain: number, encrypt: boolean, crcs?: Uint32Array) => void;
  /** A copy of a 64-byte XTS key expanded once for xtsBlocks (the VAES kernel's key schedule); freed with the handle. */
  xtsKey?: (key: Buffer) => XtsKeyHandle;
  /** Zeroes a handle's key and expansion at once; xtsBlocks then refuses the handle. */
  xtsKeyWipe?: (handle: XtsKeyHandle) => void;
  /**
   * xtsBlocks on libuv's thread pool; src and dst must not change until the promise settles. With
   * `crcs` (one per block; only where xtsSealPiecesAsync is), the job also puts there the crc32c of
   * each ciphertext block: of dst after encrypting, of src before decrypting.
   */
  xtsBlocksAsync?: (key: Buffer, src: Buffer, dst: Buffer, firstBlock: number, domain: number, encrypt: boolean, crcs?: Uint32Array) => Promise<void>;
  /**
   * Encrypts pieces[i] one after another into dst (as long as all, overlapping none), block j of
   * piece i with the tweak (firstBlocks[i] + j, domain), then the crc32c of each block of dst into
   * crcs, all in one job on libuv's thread pool (where crc32cBlocks runs). Nothing may change until it settles.
   */
  xtsSealPiecesAsync?: (key: Buffer, pieces: Buffer[], firstBlocks: Float64Array, dst: Buffer, domain: number, crcs: Uint32Array) => Promise<void>;
}

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  // Compiled, this file is dist/src/engine/native.js; run from source (tsx), src/engine/native.ts.
  for (const path of ['../../native/cairn-native.node', '../../dist/native/cairn-native.node']) {
    try {
      return require(path) as NativeAddon;
    } catch {
      // not built there
    }
  }
  return {};
}

export const nativeAddon: NativeAddon = load();
