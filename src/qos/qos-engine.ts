// An Engine decorator that applies QoS to every data request (read, write, trim, write-zeroes by
// target id), whatever protocol or connection it comes from: the daemon wraps its engine once, so NBD
// (every connection of a multi-conn client) and later NVMe/TCP share one set of limits per volume and
// per tenant. A volume with no limit of its own or of its tenant, while the pool is not contended,
// takes the direct path: a map lookup and an in-flight count, no allocation beyond the engine call's,
// no timer. Everything else is delegated as is.
import type { Engine, Target, WriteData, WriteOptions, ZeroOptions } from '../engine/index.js';
import { dataLength } from '../engine/index.js';
import { ForwardingEngine } from '../decorators/forwarding-engine.js';
import { QosControl, type QosOptions, type VolumeQos } from './qos-control.js';
import { OpKind, type Pending } from './pending.js';

export class QosEngine extends ForwardingEngine {
  readonly control: QosControl;
  private readonly doneOk = <T>(value: T): T => { this.control.scheduler.done(); return value; };
  private readonly doneErr = (err: unknown): never => { this.control.scheduler.done(); throw err; };
  private readonly unsubscribe: () => void;

  constructor(inner: Engine, opts: QosOptions = {}) {
    super(inner);
    this.control = new QosControl(inner, opts);
    const log = opts.log ?? (() => undefined);
    this.unsubscribe = inner.onTargetEvent((event) => {
      if (event.type !== 'deleted') return;
      this.control.forgetVolume(event.id).catch((err: unknown) => {
        // Harmless: ids are never reused, and the next start removes records of deleted volumes.
        log('qos_forget_failed', { id: event.id, error: err instanceof Error ? err.message : String(err) });
      });
    });
  }

  /**
   * 0: `v` may skip QoS (no limits, fair sharing off); 1: it may go now, counted in flight (finish with
   * doneOk/doneErr); 2: it must be delayed. Engine data calls are async functions: they never throw
   * synchronously, so an in-flight count taken here is always given back.
   */
  private path(v: VolumeQos): 0 | 1 | 2 {
    const s = this.control.scheduler;
    if (s.inflightMax === 0) return v.unthrottled ? 0 : 2;
    s.arrive(v.tenant.flow);
    if (!v.unthrottled || !s.open) return 2;
    s.inflight += 1;
    return 1;
  }

  private delayed<T>(v: VolumeQos, kind: OpKind, costBytes: number, run: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const p: Pending = {
        kind, costBytes, arrivedMs: this.control.clock.nowMs(), volume: v, tag: 0, next: null, run,
        resolve: resolve as (value: unknown) => void, reject,
      };
      this.control.submit(p);
    });
  }

  // Data path: no closure unless the request is delayed.
  override read(id: number, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
    const v = this.control.volume(id);
    const path = this.path(v);
    if (path === 0) return this.inner.read(id, offsetBytes, lengthBytes, into);
    if (path === 1) return this.inner.read(id, offsetBytes, lengthBytes, into).then(this.doneOk, this.doneErr);
    return this.delayed(v, OpKind.read, lengthBytes, () => this.inner.read(id, offsetBytes, lengthBytes, into));
  }
  override write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    const v = this.control.volume(id);
    const path = this.path(v);
    if (path === 0) return this.inner.write(id, offsetBytes, data, opts);
    if (path === 1) return this.inner.write(id, offsetBytes, data, opts).then(this.doneOk, this.doneErr);
    return this.delayed(v, OpKind.write, dataLength(data), () => this.inner.write(id, offsetBytes, data, opts));
  }
  override trim(id: number, offsetBytes: number, lengthBytes: number, opts?: WriteOptions): Promise<void> {
    const v = this.control.volume(id);
    const path = this.path(v);
    if (path === 0) return this.inner.trim(id, offsetBytes, lengthBytes, opts);
    if (path === 1) return this.inner.trim(id, offsetBytes, lengthBytes, opts).then(this.doneOk, this.doneErr);
    return this.delayed(v, OpKind.trim, 0, () => this.inner.trim(id, offsetBytes, lengthBytes, opts));
  }
  override writeZeroes(id: number, offsetBytes: number, lengthBytes: number, opts?: ZeroOptions): Promise<void> {
    const v = this.control.volume(id);
    const path = this.path(v);
    if (path === 0) return this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts);
    if (path === 1) return this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts).then(this.doneOk, this.doneErr);
    return this.delayed(v, OpKind.writeZeroes, 0, () => this.inner.writeZeroes(id, offsetBytes, lengthBytes, opts));
  }
  override resolve(name: string): Target {
    const target = this.inner.resolve(name);
    this.control.learn(target.id, target.name);
    return target;
  }

  // Flush, block status and dirty maps move no data of their own: forwarded unlimited, as is the
  // control path (ForwardingEngine); close also releases what waits.
  override close(): Promise<void> {
    this.unsubscribe();
    this.control.releaseAll();
    return this.inner.close();
  }
}
