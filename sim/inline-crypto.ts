// The simulator's AES-256-XTS: the native kernel's thread-pool call (xtsBlocksAsync, taken for runs
// of 16 blocks or more) replaced by the same kernel run inline. Otherwise a seed would wait on a
// thread whose finishing time orders the device calls after it (and the simulated device's jitter
// draws with them), and a failing seed would not replay. The bytes are the same either way.

import { nativeAddon } from '../src/engine/native.js';

let installed = false;

/** Idempotent; without the native addon the engine's fallback is inline already. */
export function installInlineCrypto(): void {
  const inline = nativeAddon.xtsBlocks;
  if (installed || inline === undefined || nativeAddon.xtsBlocksAsync === undefined) return;
  installed = true;
  nativeAddon.xtsBlocksAsync = async (key, src, dst, firstBlock, domain, encrypt) => { inline(key, src, dst, firstBlock, domain, encrypt); };
}
