// Batches the data writes of concurrent requests: redirect-on-write hands out neighbouring blocks to
// writes that arrive together, so their data is written with one device call per contiguous run
// (style.md "one pwrite for many redirected 4 KiB blocks"). A lone write goes out at once.
import { DEVICE_IO_BLOCKS_MAX, BLOCK_SIZE_BYTES } from './constants.js';
import type { Device } from './device/device.js';

interface Pending { pba: number; data: Buffer; resolve: () => void; reject: (err: unknown) => void }

export class BlockWriter {
  private pending: Pending[] = [];
  private scheduled = false;
  private inFlight = 0;

  /** `writersActive` tells how many writes are under way: with company, a write waits to be batched. */
  constructor(private readonly device: Device, private readonly writersActive: () => number) {}

  write(pba: number, data: Buffer): Promise<void> {
    if (this.inFlight === 0 && !this.scheduled && this.writersActive() <= 1) return this.issue(pba, [data]);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ pba, data, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flushBatch());
      }
    });
  }

  private async issue(pba: number, buffers: Buffer[]): Promise<void> {
    this.inFlight++;
    try {
      const device = this.device as Device & { writev?: (block: number, bufs: Buffer[]) => Promise<void> };
      if (buffers.length === 1) await device.write(pba, buffers[0]!);
      else if (device.writev) await device.writev(pba, buffers);
      else await device.write(pba, Buffer.concat(buffers));
    } finally {
      this.inFlight--;
    }
  }

  private flushBatch(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    batch.sort((a, b) => a.pba - b.pba);
    let i = 0;
    while (i < batch.length) {
      const group = [batch[i]!];
      let blocks = batch[i]!.data.length / BLOCK_SIZE_BYTES;
      let j = i + 1;
      while (j < batch.length) {
        const prev = group[group.length - 1]!, next = batch[j]!;
        const nextBlocks = next.data.length / BLOCK_SIZE_BYTES;
        if (prev.pba + prev.data.length / BLOCK_SIZE_BYTES !== next.pba || blocks + nextBlocks > DEVICE_IO_BLOCKS_MAX) break;
        group.push(next);
        blocks += nextBlocks;
        j++;
      }
      this.issue(group[0]!.pba, group.map((p) => p.data)).then(
        () => { for (const p of group) p.resolve(); },
        (err: unknown) => { for (const p of group) p.reject(err); },
      );
      i = j;
    }
  }
}
