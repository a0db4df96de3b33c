// The engine's entry points: create or open a pool on a file or raw device. See types.ts for the
// Engine interface that everything above the engine uses.
export * from './types.js';
export * from './errors.js';
export { createPoolFile, openPoolFile, openOrCreatePoolFile, checkPoolFile, type Preallocation, type PoolFileOptions } from './pool-file.js';
export { dataLength } from './gather.js';
export { checksumKernel } from './checksum.js';
export { xtsKernel } from './xts.js';
export { nativeAddon } from './native.js';
