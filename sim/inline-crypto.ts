// The simulator's AES-256-XTS: the native kernel's thread-pool calls (xtsBlocksAsync, taken for runs
// of 32 blocks or more, and xtsSealPiecesAsync, for writes of several runs) replaced by the same
// kernel run inline, checksums included (the sync call sums and ciphers in the same C routine as the
// jobs). Otherwise a seed would wait on a thread whose finishing time orders the device calls after it
// (and the simulated device's jitter draws with them), and a failing seed would not replay. The bytes
// are the same either way (test/engine-xts.test.ts compares them).

import { nativeAddon } from '../src/engine/native.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';

let installed = false;

/** Idempotent; without the native addon the engine's fallback is inline already. */
export function installInlineCrypto(): void {
  const inline = nativeAddon.xtsBlocks;
  if (installed || inline === undefined || nativeAddon.xtsBlocksAsync === undefined) return;
  installed = true;
  nativeAddon.xtsBlocksAsync = async (key, src, dst, firstBlock, domain, encrypt, crcs) => {
    if (crcs === undefined) inline(key, src, dst, firstBlock, domain, encrypt);
    else inline(key, src, dst, firstBlock, domain, encrypt, crcs);
  };
  if (nativeAddon.xtsSealPiecesAsync !== undefined) {
    nativeAddon.xtsSealPiecesAsync = async (key, pieces, firstBlocks, dst, domain, crcs) => {
      let at = 0;
      pieces.forEach((piece, i) => {
        const blocks = at / BLOCK_SIZE_BYTES;
        inline(key, piece, dst.subarray(at, at + piece.length), firstBlocks[i]!, domain, true, crcs.subarray(blocks, blocks + piece.length / BLOCK_SIZE_BYTES));
        at += piece.length;
      });
    };
  }
}
