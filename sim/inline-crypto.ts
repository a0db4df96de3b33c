// The simulator's AES-256-XTS: the native kernel's thread-pool calls (xtsBlocksAsync, taken for runs
// of 32 blocks or more, and xtsSealPiecesAsync, for writes of several runs) replaced by the same
// kernel run inline, checksums included. Otherwise a seed would wait on a thread whose finishing time
// orders the device calls after it (and the simulated device's jitter draws with them), and a failing
// seed would not replay. The bytes are the same either way (test/engine-xts.test.ts compares them).

import { nativeAddon } from '../src/engine/native.js';
import { blockChecksums } from '../src/engine/checksum.js';

let installed = false;

/** Idempotent; without the native addon the engine's fallback is inline already. */
export function installInlineCrypto(): void {
  const inline = nativeAddon.xtsBlocks;
  if (installed || inline === undefined || nativeAddon.xtsBlocksAsync === undefined) return;
  installed = true;
  nativeAddon.xtsBlocksAsync = async (key, src, dst, firstBlock, domain, encrypt, crcs) => {
    // The checksums are of the ciphertext: before decrypting, after encrypting.
    if (crcs !== undefined && !encrypt) blockChecksums(src, crcs);
    inline(key, src, dst, firstBlock, domain, encrypt);
    if (crcs !== undefined && encrypt) blockChecksums(dst, crcs);
  };
  if (nativeAddon.xtsSealPiecesAsync !== undefined) {
    nativeAddon.xtsSealPiecesAsync = async (key, pieces, firstBlocks, dst, domain, crcs) => {
      let at = 0;
      pieces.forEach((piece, i) => {
        inline(key, piece, dst.subarray(at, at + piece.length), firstBlocks[i]!, domain, true);
        at += piece.length;
      });
      blockChecksums(dst, crcs);
    };
  }
}
