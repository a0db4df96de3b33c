// An Engine decorator that counts and times every data call (read, write, trim, write-zeroes, flush,
// extents, changedSince) per volume into Metrics. It implements the whole Engine interface, so the
// NBD server and the API receive it in place of the engine and cannot tell the difference; every
// other call is forwarded as is (ForwardingEngine).
import type { ByteRange, Engine, Extent, Target, WriteData, WriteOptions, ZeroOptions } from '../engine/index.js';
import { dataLength } from '../engine/index.js';
import { ForwardingEngine } from '../decorators/forwarding-engine.js';
import type { Metrics } from './metrics.js';

export class InstrumentedEngine extends ForwardingEngine {
  private readonly names = new Map<number, string>();
  constructor(inner: Engine, private readonly metrics: Metrics) { super(inner); }

  private nameOf(id: number): string {
    const known = this.names.get(id);
    if (known !== undefined) return known;
    const v = this.inner.listVolumes().find((x) => x.id === id);
    // A snapshot by id through the paged list (O(log count)): listing every snapshot here cost O(count)
    // on the first I/O of each of 100 000 snapshots.
    const page = v === undefined ? this.inner.listSnapshotsPage({ afterId: id - 1, limit: 1 }).snapshots : [];
    const s = page[0]?.id === id ? page[0] : undefined;
    const name = this.metrics.label(v?.name ?? s?.fullName ?? `id-${id}`);
    this.names.set(id, name);
    return name;
  }

  private async timed<T>(op: string, id: number | null, bytes: number, work: () => Promise<T>): Promise<T> {
    const io = this.metrics.io;
    const slot = io.slot(id === null ? 'pool' : this.nameOf(id), op);
    const started = performance.now();
    try {
      const result = await work();
      io.completed(slot, bytes);
      return result;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      this.metrics.ioErrors.inc({ volume: slot.volume, op, code: typeof code === 'string' ? code : 'unknown' });
      throw err;
    } finally {
      io.observe(slot, (performance.now() - started) / 1000);
    }
  }

  // Data path: instrumented.
  override read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    return this.timed('read', id, lengthBytes, () => this.inner.read(id, offsetBytes, lengthBytes, into));
  }
  override write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    return this.timed('write', id, dataLength(data), () => this.inner.write(id, offsetBytes, data, opts));
  }
  override trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    return this.timed('trim', id, lengthBytes, () => this.inner.trim(id, offsetBytes, lengthBytes, opts));
  }
  override writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    return this.timed('write_zeroes', id, lengthBytes, () => this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts));
  }
  override flush(): Promise<void> { return this.timed('flush', null, 0, () => this.inner.flush()); }
  override extents(id: number, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    return this.timed('extents', id, 0, () => this.inner.extents(id, offsetBytes, lengthBytes));
  }
  override changedSince(id: number, sinceFullName: string, offsetBytes: number, lengthBytes: number): Promise<ByteRange[]> {
    return this.timed('changed_since', id, 0, () => this.inner.changedSince(id, sinceFullName, offsetBytes, lengthBytes));
  }
  override resolve(name: string): Target {
    const target = this.inner.resolve(name);
    this.names.set(target.id, this.metrics.label(target.name));
    return target;
  }

}
