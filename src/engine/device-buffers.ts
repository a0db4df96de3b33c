// Reused buffers for data on its way to the device. A fresh 1 MiB Buffer per encrypted write made the
// 1 MiB encrypted write row spend more CPU in garbage collection (18 full collections in 4 s against 1
// for plain writes, which reuse the socket's buffers) than in AES itself (bench, issue 20). A commit's
// runs of encoded metadata (up to 1 MiB each) take them too: a fresh 1 MiB buffer can be fresh memory
// that faults on first touch (0.4-15 µs a block to zero in a microbenchmark, ~0.1-0.5 µs reused).
// Power-of-two classes from one block to one device write; each keeps a bounded number of buffers: 8,
// or as many as fill DEVICE_BUFFERS_CLASS_BYTES for the small classes, since a queue-depth-32 stream of
// encrypted 4 KiB writes has 32 in flight, and with only 8 kept the other 24 were fresh allocations
// (allocUnsafeSlow 1.9 % of the daemon's time in that bench row, plus the garbage they left).
import { BLOCK_SIZE_BYTES, DEVICE_IO_BLOCKS_MAX } from './constants.js';
import { assert, fail } from './errors.js';

/** Buffers kept per class at least: enough for the large writes in flight of a busy pool. */
const DEVICE_BUFFERS_PER_CLASS_MIN = 8;
/** A small class keeps up to this many bytes of buffers (512 of 4 KiB). */
const DEVICE_BUFFERS_CLASS_BYTES = 2 * 1024 * 1024;
const CLASSES = Math.log2(DEVICE_IO_BLOCKS_MAX) + 1;
const keptPerClass = Array.from({ length: CLASSES }, (_, c) =>
  Math.max(DEVICE_BUFFERS_PER_CLASS_MIN, DEVICE_BUFFERS_CLASS_BYTES / (2 ** c * BLOCK_SIZE_BYTES)));
assert(Number.isInteger(CLASSES) && keptPerClass.reduce((sum, n, c) => sum + n * 2 ** c * BLOCK_SIZE_BYTES, 0) <= 96 * 1024 * 1024,
  'pooled device buffers stay bounded');

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
  if (free[c]!.length < keptPerClass[c]!) free[c]!.push(whole);
}
