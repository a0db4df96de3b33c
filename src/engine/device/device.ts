// The one interface through which the engine touches storage (LevelDB's Env idea):
// production uses a file or raw block device, tests a simulated device that injects faults.
// Offsets are in blocks of BLOCK_SIZE_BYTES; buffers are whole blocks.

export interface Device {
  /** Size of the device in blocks. */
  readonly sizeBlocks: number;
  /** Reads `countBlocks` blocks starting at `blockNumber` into `into` (length = countBlocks * block size). */
  read(blockNumber: number, into: Buffer): Promise<void>;
  /** Writes whole blocks at `blockNumber`. Not durable until flush() resolves. */
  write(blockNumber: number, data: Buffer): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** Grows the device (files only); a raw device refuses. */
  resize(sizeBlocks: number): Promise<void>;
  close(): Promise<void>;
}
