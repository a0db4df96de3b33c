// Batches the data writes of concurrent requests: redirect-on-write hands out neighbouring blocks to
// writes that arrive together, so their data is written with one device call per contiguous run
// (style.md "one pwrite for many redirected 4 KiB blocks"). A lone write goes out at once. At most
// WRITES_IN_FLIGHT_MAX device writes run at a time: a buffered write holds the file's inode lock, so
// more of them in the thread pool only spin on it (perf showed 8 % of the process in rwsem spinning),
// while writes that wait meanwhile merge into larger ones. A lone small write is held in memory instead
// (deferred-data.ts): a flush that follows carries it in its log round, one contiguous write.
import { DEVICE_IO_BLOCKS_MAX, BLOCK_SIZE_BYTES, DATA_WRITES_IN_FLIGHT_MAX as WRITES_IN_FLIGHT_MAX, DEFERRED_WRITE_BLOCKS_MAX } from './constants.js';
import type { DeferredData } from './deferred-data.js';
import { assert, fail } from './errors.js';

interface Pending { pba: number; buffers: Buffer[]; blocks: number; resolve: () => void; reject: (err: unknown) => void }

export class BlockWriter {
  private pending: Pending[] = [];
  private scheduled = false;
  private inFlight = 0;

  /** `writersActive` tells how many writes are under way: with company, a write waits to be batched. */
  constructor(private readonly device: DeferredData, private readonly writersActive: () => number, private readonly mayHold: () => boolean) {}

  /**
   * Writes the concatenation of `buffers` (whole blocks) at `pba`. `aloneInVolume`: the write is its
   * volume's only one under way; a small one is then held even while other volumes' writes batch, so a
   * tenant at queue depth 1 does not wait for a flood's device writes (it waited ~80 µs for one here).
   */
  write(pba: number, buffers: Buffer[], aloneInVolume = false): Promise<void> {
    // Data goes only past the superblocks, as whole blocks (gather.ts cuts payloads at block bounds).
    if (!(pba >= 2 && buffers.length > 0)) fail(`data write of ${buffers.length} buffers at block ${pba}`);
    let bytes = 0;
    for (const b of buffers) bytes += b.length;
    const quiet = this.inFlight === 0 && !this.scheduled && this.writersActive() <= 1;
    const holdable = bytes <= DEFERRED_WRITE_BLOCKS_MAX * BLOCK_SIZE_BYTES && this.mayHold();
    if (holdable && (quiet || aloneInVolume)) return this.device.hold(pba, buffers);
    if (quiet) return this.issue(pba, buffers);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ pba, buffers, blocks: bytes / BLOCK_SIZE_BYTES, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flushBatch());
      }
    });
  }

  private async issue(pba: number, buffers: Buffer[]): Promise<void> {
    assert(buffers.length > 0 && this.inFlight >= 0, 'a device write of some buffers, in-flight writes counted');
    this.inFlight++;
    try {
      if (buffers.length === 1) await this.device.write(pba, buffers[0]!);
      else await this.device.writev(pba, buffers);
    } finally {
      this.inFlight--;
      if (this.pending.length > 0 && !this.scheduled) this.flushBatch();
    }
  }

  private flushBatch(): void {
    assert(this.inFlight >= 0, 'writes in flight are counted');
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    batch.sort((a, b) => a.pba - b.pba);
    let i = 0;
    while (i < batch.length) {
      if (this.inFlight >= WRITES_IN_FLIGHT_MAX) {
        // The rest waits for a write to finish, and may merge with writes arriving meanwhile.
        this.pending = batch.slice(i).concat(this.pending);
        return;
      }
      if (batch[i]!.blocks % 1 !== 0) fail(`a batched write of ${batch[i]!.blocks} blocks is not whole blocks`);
      const group = [batch[i]!];
      let blocks = batch[i]!.blocks;
      let j = i + 1;
      while (j < batch.length) {
        const prev = group[group.length - 1]!, next = batch[j]!;
        if (prev.pba + prev.blocks !== next.pba || blocks + next.blocks > DEVICE_IO_BLOCKS_MAX) break;
        group.push(next);
        blocks += next.blocks;
        j++;
      }
      this.issue(group[0]!.pba, group.flatMap((p) => p.buffers)).then(
        () => { for (const p of group) p.resolve(); },
        (err: unknown) => { for (const p of group) p.reject(err); },
      );
      i = j;
    }
  }
}
