// Small data writes held in memory until a commit (ZFS's immediate writes). A flush syncs the whole
// pool file, and a sync costs by the number of separate pages it writes: a lone 4 KiB write followed
// by a flush would make its data block and a log block durable at two places. Held instead, its data
// goes into the flush's log round as an inline page right after the records (one contiguous write,
// intent-log.ts), and to its home block only when a commit drains what is held (the commit's own sync
// takes it with the tree). Reads see held data over whatever the home block holds.
//
// Every write to the device goes through here, so a held block is never shadowed by a later write to
// the same place (a block written by a request that then failed is free, and may be written again by
// anything once reallocated): such a write drops the held copy, after its home write if one is under way.
import { BLOCK_SIZE_BYTES, DEFERRED_DATA_BLOCKS_MAX, DEFERRED_DRAIN_WRITES_IN_FLIGHT, DEVICE_IO_BLOCKS_MAX } from './constants.js';
import type { Device, DeviceIoCounts } from './device/device.js';
import { assert, fail } from './errors.js';

interface Held {
  data: Buffer;
  /** Its home write, while one runs. */
  writing: Promise<void> | null;
}

export class DeferredData implements Device {
  private readonly held = new Map<number, Held>();
  /** A drain's home write failed: the data is still held, but no commit may go on without it. */
  private failure: Error | null = null;
  private draining: Promise<void> | null = null;
  /** Blocks that went to the log as inline pages (stats and tests). */
  inlined = 0;

  /** `inner`: the device itself (tests reach it to resize or fault it). */
  constructor(readonly inner: Device) {
    assert(!(inner instanceof DeferredData), 'held data is wrapped once');
  }

  get sizeBlocks(): number { return this.inner.sizeBlocks; }
  get heldBlocks(): number { return this.held.size; }

  /** Whole blocks, inside the device: a held copy past its end could never be drained. */
  private assertSpan(blockNumber: number, bytes: number): void {
    if (!(Number.isSafeInteger(blockNumber) && blockNumber >= 0)) fail(`block ${blockNumber}`);
    if (!(bytes > 0 && bytes % BLOCK_SIZE_BYTES === 0)) fail(`an I/O of ${bytes} bytes is whole blocks`);
    if (blockNumber + bytes / BLOCK_SIZE_BYTES > this.inner.sizeBlocks) fail(`blocks ${blockNumber}+${bytes / BLOCK_SIZE_BYTES} past the device's ${this.inner.sizeBlocks}`);
  }

  /**
   * Takes a copy of `buffers` (whole blocks) as the content of blocks from `pba` on; resolves at once.
   * Not durable until a log round carries it inline or a commit drains it.
   */
  hold(pba: number, buffers: Buffer[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    let at = 0;
    for (const b of buffers) {
      if (b.length % BLOCK_SIZE_BYTES !== 0) fail(`a held write of ${b.length} bytes`);
      for (let off = 0; off < b.length; off += BLOCK_SIZE_BYTES, at++) {
        const prev = this.held.get(pba + at);
        const data = Buffer.allocUnsafe(BLOCK_SIZE_BYTES);
        b.copy(data, 0, off, off + BLOCK_SIZE_BYTES);
        // A copy left by a request that failed after its data write: replaced, and its home write (if
        // one runs) lands before this one can start.
        this.held.set(pba + at, { data, writing: prev?.writing ?? null });
      }
    }
    assert(at > 0, 'a held write has blocks');
    this.assertSpan(pba, at * BLOCK_SIZE_BYTES);
    if (this.held.size > DEFERRED_DATA_BLOCKS_MAX) this.drainInBackground();
    return Promise.resolve();
  }

  /** The held content of `pba`, if any (a log round inlines it). */
  peek(pba: number): Buffer | undefined {
    const data = this.held.get(pba)?.data;
    assert(data === undefined || data.length === BLOCK_SIZE_BYTES, 'a held copy is one block');
    return data;
  }

  async read(blockNumber: number, into: Buffer): Promise<void> {
    this.assertSpan(blockNumber, into.length);
    if (this.held.size === 0) return this.inner.read(blockNumber, into);
    // Taken before the device read starts: a drain finishing meanwhile removes the entry, and the
    // read may still return the home block as it was before that write.
    const n = into.length / BLOCK_SIZE_BYTES;
    const copies: Array<[number, Buffer]> = [];
    for (let i = 0; i < n; i++) {
      const h = this.held.get(blockNumber + i);
      if (h) copies.push([i, h.data]);
    }
    await this.inner.read(blockNumber, into);
    for (const [i, data] of copies) data.copy(into, i * BLOCK_SIZE_BYTES);
  }

  readIfCheap(blockNumber: number, into: Buffer): boolean {
    this.assertSpan(blockNumber, into.length);
    if (!this.inner.readIfCheap?.(blockNumber, into)) return false;
    this.overlay(blockNumber, into);
    return true;
  }

  readRunsIfCheap(plan: Float64Array, count: number, into: Buffer): number {
    for (let i = 0; i < count; i++) this.assertSpan(plan[3 * i]!, plan[3 * i + 1]! * BLOCK_SIZE_BYTES);
    const read = this.inner.readRunsIfCheap?.(plan, count, into) ?? 0;
    assert(read >= 0 && read <= count, 'a batch reads a prefix of its runs');
    if (this.held.size > 0) {
      for (let i = 0; i < read; i++) {
        const at = plan[3 * i + 2]! * BLOCK_SIZE_BYTES;
        this.overlay(plan[3 * i]!, into.subarray(at, at + plan[3 * i + 1]! * BLOCK_SIZE_BYTES));
      }
    }
    return read;
  }

  private overlay(blockNumber: number, into: Buffer): void {
    if (this.held.size === 0) return;
    assert(into.length % BLOCK_SIZE_BYTES === 0, 'an overlay is whole blocks');
    const n = into.length / BLOCK_SIZE_BYTES;
    for (let i = 0; i < n; i++) this.held.get(blockNumber + i)?.data.copy(into, i * BLOCK_SIZE_BYTES);
  }

  async write(blockNumber: number, data: Buffer): Promise<void> {
    this.assertSpan(blockNumber, data.length);
    await this.dropHeld(blockNumber, data.length / BLOCK_SIZE_BYTES);
    await this.inner.write(blockNumber, data);
  }

  async writev(blockNumber: number, buffers: Buffer[]): Promise<void> {
    let bytes = 0;
    for (const b of buffers) bytes += b.length;
    this.assertSpan(blockNumber, bytes);
    await this.dropHeld(blockNumber, bytes / BLOCK_SIZE_BYTES);
    const inner = this.inner as Device & { writev?: (block: number, bufs: Buffer[]) => Promise<void> };
    if (inner.writev) await inner.writev(blockNumber, buffers);
    else await inner.write(blockNumber, Buffer.concat(buffers));
  }

  /**
   * Writes `data` durably (only it: held data stays held, other unflushed writes unflushed). Falls
   * back to a write and a sync where the device has no such write.
   */
  async writeDurable(blockNumber: number, data: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.assertSpan(blockNumber, data.length);
    await this.dropHeld(blockNumber, data.length / BLOCK_SIZE_BYTES);
    if (this.inner.writeDurable) return this.inner.writeDurable(blockNumber, data);
    await this.inner.write(blockNumber, data);
    await this.inner.flush();
  }

  private async dropHeld(blockNumber: number, count: number): Promise<void> {
    assert(count > 0, 'a write drops the held copies of at least one block');
    if (this.held.size === 0) return;
    const waits: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const h = this.held.get(blockNumber + i);
      if (!h) continue;
      this.held.delete(blockNumber + i);
      // Its drain's failure is kept in `failure` and reported by the next commit; the write waits only
      // for the drain's write to be over, so that its own lands after it.
      if (h.writing) waits.push(h.writing.catch(() => undefined));
    }
    if (waits.length > 0) await Promise.all(waits);
  }

  /** Drains everything held to its home blocks, then makes every completed write durable. */
  async flush(): Promise<void> {
    await this.drainAll();
    if (this.failure) throw this.failure;
    await this.inner.flush();
  }

  /** Makes completed writes durable without draining: held data stays off the device (a log round). */
  syncKeepingHeld(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return this.inner.flush();
  }

  private drainInBackground(): void {
    // A failure is kept and reported by the next flush (a commit), which then stops the pool.
    assert(this.held.size > 0, 'a drain has something to write');
    if (this.draining === null) void this.drainAll();
  }

  /**
   * Writes every block held when called to its home (contiguous ones together); resolves when they
   * are written (or a write failed: `failure`). A drain under way took its blocks before this call,
   * so one more may be needed; holds that arrive meanwhile are not waited for.
   */
  async drainAll(): Promise<void> {
    if (this.draining) await this.draining;
    if (this.held.size === 0 || this.failure) return;
    this.draining ??= this.drainOnce().finally(() => { this.draining = null; });
    await this.draining;
  }

  private async drainOnce(): Promise<void> {
    const pbas = [...this.held.keys()].sort((a, b) => a - b);
    assert(pbas.length > 0 && this.failure === null, 'a drain starts with blocks held and no failure');
    const inFlight = new Set<Promise<void>>();
    let i = 0;
    while (i < pbas.length) {
      // Entries are looked up as each run is issued: one dropped meanwhile by a write of its block
      // must not be written over that write.
      const run: number[] = [], entries: Held[] = [];
      while (i < pbas.length) {
        const pba = pbas[i]!, h = this.held.get(pba);
        if (run.length > 0 && (!h || run[run.length - 1]! + 1 !== pba || run.length >= DEVICE_IO_BLOCKS_MAX)) break;
        i++;
        if (!h) continue;
        run.push(pba);
        entries.push(h);
      }
      if (run.length === 0) break;
      // An earlier drain's write of the same blocks goes first; its failure is already in `failure`.
      const before = entries.filter((h) => h.writing !== null).map((h) => h.writing!.catch(() => undefined));
      const writing = Promise.all(before).then(() => this.writeRunHome(run, entries));
      for (const h of entries) h.writing = writing;
      const tracked: Promise<void> = writing.then(() => {
        // Written: the entries leave, unless a later hold replaced one meanwhile.
        for (let k = 0; k < run.length; k++) if (this.held.get(run[k]!) === entries[k]) this.held.delete(run[k]!);
      }, (err: unknown) => {
        this.failure ??= err instanceof Error ? err : new Error(String(err));
        for (const h of entries) if (h.writing === writing) h.writing = null;
      }).finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      assert(inFlight.size <= DEFERRED_DRAIN_WRITES_IN_FLIGHT, 'drain writes in flight are bounded');
      if (inFlight.size >= DEFERRED_DRAIN_WRITES_IN_FLIGHT) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  }

  private writeRunHome(run: number[], entries: Held[]): Promise<void> {
    assert(run.length === entries.length && run.length > 0, 'a run of held blocks');
    assert(run.every((pba, k) => pba === run[0]! + k), 'a run is contiguous');
    const inner = this.inner as Device & { writev?: (block: number, bufs: Buffer[]) => Promise<void> };
    if (entries.length === 1) return inner.write(run[0]!, entries[0]!.data);
    const bufs = entries.map((h) => h.data);
    return inner.writev ? inner.writev(run[0]!, bufs) : inner.write(run[0]!, Buffer.concat(bufs));
  }

  resize(sizeBlocks: number): Promise<void> {
    // Pools only grow; a held block past a new end would be written nowhere.
    for (const pba of this.held.keys()) if (pba >= sizeBlocks) fail(`held block ${pba} past a new size of ${sizeBlocks}`);
    return this.inner.resize(sizeBlocks);
  }
  refreshSize(): Promise<number> { return this.inner.refreshSize(); }

  async close(): Promise<void> {
    // A pool closes after its last commit drained everything; a stopped pool's held data is lost
    // with its unflushed writes, which is what a crash would do to them.
    this.held.clear();
    await this.inner.close();
  }

  get ioCounts(): (() => DeviceIoCounts) | undefined {
    const inner = this.inner;
    return inner.ioCounts ? () => inner.ioCounts!() : undefined;
  }
}
