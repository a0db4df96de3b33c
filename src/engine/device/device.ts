// The one interface through which the engine touches storage (LevelDB's Env idea):
// production uses a file or raw block device, tests a simulated device that injects faults.
// Offsets are in blocks of BLOCK_SIZE_BYTES; buffers are whole blocks.

/** Where a device's reads and writes ran: inline on the event loop, or on the thread pool (file-device.ts). */
export interface DeviceIoCounts {
  inlineReads: number;
  pooledReads: number;
  /** Inline reads that took longer than a page-cache copy could, each sending reads to the pool for a while. */
  slowInlineReads: number;
  inlineWrites: number;
  pooledWrites: number;
  slowInlineWrites: number;
}

export interface Device {
  /** Size of the device in blocks. */
  readonly sizeBlocks: number;
  /** Reads `countBlocks` blocks starting at `blockNumber` into `into` (length = countBlocks * block size). */
  read(blockNumber: number, into: Buffer): Promise<void>;
  /**
   * Optional: reads synchronously and returns true when that is cheap now (e.g. the page cache serves
   * it); returns false, having done nothing, otherwise. Saves a promise per read on the hot path.
   */
  readIfCheap?(blockNumber: number, into: Buffer): boolean;
  /**
   * Optional: readIfCheap for many runs at once, in order, stopping at the first that is not cheap;
   * returns how many (a prefix) it read. Run i is plan[3i + 1] blocks from block plan[3i] into `into`
   * at block plan[3i + 2] (a read of a volume overwritten at random is hundreds of runs).
   */
  readRunsIfCheap?(plan: Float64Array, count: number, into: Buffer): number;
  /** Writes whole blocks at `blockNumber`. Not durable until flush() resolves. */
  write(blockNumber: number, data: Buffer): Promise<void>;
  /**
   * Optional: writes whole blocks and makes them (only them) durable before resolving, as a write
   * through a descriptor opened with O_DSYNC does: cheaper than write + flush when other writes are
   * still unflushed, since those are not waited for.
   */
  writeDurable?(blockNumber: number, data: Buffer): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** Grows the device (files only); a raw device refuses. */
  resize(sizeBlocks: number): Promise<void>;
  /**
   * Learns the device's size anew (a file or raw device may have been enlarged from outside, e.g.
   * `truncate` or `lvextend`), updates `sizeBlocks` and returns it.
   */
  refreshSize(): Promise<number>;
  close(): Promise<void>;
  /** Optional: counts of where I/O ran so far (engine stats, the bench's diagnostics). */
  ioCounts?(): DeviceIoCounts;
}
