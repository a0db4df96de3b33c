// Reused buffers for data on its way to the device. A fresh 1 MiB Buffer per encrypted write made the
// 1 MiB encrypted write row spend more CPU in garbage collection (18 full collections in 4 s against 1
// for plain writes, which reuse the socket's buffers) than in AES itself (bench, issue 20). A commit's
// runs of encoded metadata (up to 1 MiB each) take them too: a fresh 1 MiB buffer can be fresh memory
// that faults on first touch (0.4-15 µs a block to zero in a microbenchmark, ~0.1-0.5 µs reused).
// Power-of-two classes from one block to one device write; each keeps a bounded number of buffers.
import { BLOCK_SIZE_BYTES, DEVICE_IO_BLOCKS_MAX } from './constants.js';
import { assert, fail } from './errors.js';

/** Buffers kept per class: enough for the writes in flight of a busy pool (bounded: < 64 MiB in all). */
const DEVICE_BUFFERS_PER_CLASS_MAX = 8;
const CLASSES = Math.log2(DEVICE_IO_BLOCKS_MAX) + 1;
assert(Number.isInteger(CLASSES) && (2 ** (CLASSES - 1)) * BLOCK_SIZE_BYTES * DEVICE_BUFFERS_PER_CLASS_MAX * 2 <= 128 * 1024 * 1024, 'pooled device buffers stay bounded');

const free: Buffer[][] = Array.from({ length: CLASSES }, () => []);

function classOf(bytes: number): number {
  if (!(bytes > 0 && bytes % BLOCK_SIZE_BYTES === 0 && bytes <= DEVICE_IO_BLOCKS_MAX * BLOCK_SIZE_BYTES)) fail(`a device buffer of ${bytes} bytes`);
  return Math.ceil(Math.log2(bytes / BLOCK_SIZE_BYTES));
}

/** A buffer of exactly `bytes` (a view of a pooled one); give it back with releaseDeviceBuffer when the device is done with it. */
export function takeDeviceBuffer(bytes: number): Buffer {
  const c = classOf(bytes);
  const whole = free[c]!.pop() ?? Buffer.allocUnsafeSlow(2 ** c * BLOCK_SIZE_BYTES);
  return whole.subarray(0, bytes);
}

/** Returns a buffer from takeDeviceBuffer to its class (dropped when the class is full). */
export function releaseDeviceBuffer(view: Buffer): void {
  const whole = Buffer.from(view.buffer, 0, view.buffer.byteLength);
  const c = classOf(whole.length);
  assert(2 ** c * BLOCK_SIZE_BYTES === whole.length, 'a device buffer comes back whole to its class');
  if (free[c]!.length < DEVICE_BUFFERS_PER_CLASS_MAX) free[c]!.push(whole);
}
