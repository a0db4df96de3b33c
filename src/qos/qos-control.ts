// QoS state of the pool: each volume's and each tenant's limits (kept as engine settings, loaded at
// start, changed live), the stages a delayed request passes through (its volume's token buckets, then
// its tenant's, then the fair scheduler), and the time requests waited. QosEngine (qos-engine.ts) calls
// in here; the API reads and changes limits here.
import type { Engine, SettingChange } from '../engine/index.js';
import { DEFAULT_TENANT, splitQualified } from '../tenancy/names.js';
import { TenantStore } from '../tenancy/store.js';
import { realClock, type QosClock } from './clock.js';
import { FairScheduler, Flow } from './fair.js';
import {
  TENANT_KEY_PREFIX, VOLUME_KEY_PREFIX, applyChange, decodeLimits, encodeLimits, hasRates, noLimits,
  type QosChange, type QosLimits,
} from './limits.js';
import type { Pending } from './pending.js';
import { Throttle } from './throttle.js';

/**
 * Requests in the engine at once, across the pool, before fair sharing queues them by tenant, when it
 * is on: enough to keep the device queue and the helper threads busy, few for a light tenant to wait
 * behind. Off by default (INFLIGHT_MAX_DEFAULT 0): on this project's 2-core bench host the bound did
 * not lower a light tenant's QD-1 latency beside a flood (the event loop and the clients' CPU are the
 * bottleneck there, not the engine's queue; docs/performance.md, "QoS"), so it only cost a wait.
 */
export const FAIR_INFLIGHT_MAX = 8;
export const INFLIGHT_MAX_DEFAULT = 0;

export interface QosOptions {
  clock?: QosClock;
  /** See INFLIGHT_MAX_DEFAULT; 0 turns fair sharing off. */
  inflightMax?: number;
  log?: (event: string, fields: Record<string, unknown>) => void;
}

/** Wait totals for metrics. */
export interface QosWaitTotals { name: string; waitSeconds: number; delayedRequests: number }

export class TenantQos {
  limits = noLimits();
  throttle: Throttle | null = null;
  readonly flow = new Flow(this.limits.weight);
  readonly volumes = new Set<VolumeQos>();
  waitMsTotal = 0;
  delayedTotal = 0;
  constructor(readonly name: string) {}
}

export class VolumeQos {
  limits: QosLimits | null = null;
  throttle: Throttle | null = null;
  /** No bucket of its own or its tenant's is limited: requests skip the throttles. */
  unthrottled = true;
  waitMsTotal = 0;
  delayedTotal = 0;
  constructor(readonly id: number, readonly name: string, readonly tenant: TenantQos) {}
}

export class QosControl {
  readonly clock: QosClock;
  readonly scheduler: FairScheduler;
  private readonly volumes = new Map<number, VolumeQos>();
  private readonly tenants = new Map<string, TenantQos>();
  /** Stored volume limits by id, also for volumes no request has touched yet. */
  private readonly volumeLimitsById = new Map<number, QosLimits>();
  private readonly log: NonNullable<QosOptions['log']>;

  constructor(private readonly engine: Engine, opts: QosOptions = {}) {
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? (() => undefined);
    this.scheduler = new FairScheduler(opts.inflightMax ?? INFLIGHT_MAX_DEFAULT, (p) => this.run(p));
  }

  /** Reads every stored limit; removes those of volumes that no longer exist (ids are never reused). */
  async load(): Promise<void> {
    const live = new Set(this.engine.listVolumes().map((v) => v.id));
    const stale: SettingChange[] = [];
    for (const s of this.engine.listSettings(VOLUME_KEY_PREFIX)) {
      const id = Number(s.key.slice(VOLUME_KEY_PREFIX.length));
      if (!live.has(id)) { stale.push({ key: s.key, value: null }); continue; }
      this.volumeLimitsById.set(id, this.decode(s.key, s.value));
    }
    for (const s of this.engine.listSettings(TENANT_KEY_PREFIX)) {
      this.applyTenant(this.tenant(s.key.slice(TENANT_KEY_PREFIX.length)), this.decode(s.key, s.value));
    }
    if (stale.length > 0) await this.engine.putSettings(stale);
  }

  private decode(key: string, value: Buffer): QosLimits {
    try { return decodeLimits(value); } catch (err) {
      // A record this version cannot read limits nothing, rather than stopping the daemon.
      this.log('qos_setting_unreadable', { key, error: err instanceof Error ? err.message : String(err) });
      return noLimits();
    }
  }

  // ---- limits ----

  /** A volume's limits (null: none set). */
  volumeLimits(id: number): QosLimits | null { return this.volumeLimitsById.get(id) ?? null; }

  tenantLimits(tenant: string): QosLimits { return this.tenants.get(tenant)?.limits ?? noLimits(); }

  /** Whether `tenant` exists (the API sets limits only on tenants that do). */
  tenantExists(tenant: string): boolean { return new TenantStore(this.engine).tenantExists(tenant); }

  /** Applies `change` to volume `id`'s limits: durable, then live for queued and future requests. */
  async setVolumeLimits(id: number, change: QosChange): Promise<QosLimits | null> {
    const next = applyChange(this.volumeLimits(id) ?? noLimits(), { ...change, weight: undefined });
    const key = `${VOLUME_KEY_PREFIX}${id}`;
    const value = encodeLimits(key, next);
    await this.engine.putSettings([{ key, value }]);
    const limits = value === null ? null : next;
    if (limits === null) this.volumeLimitsById.delete(id); else this.volumeLimitsById.set(id, limits);
    const v = this.volumes.get(id);
    if (v !== undefined) this.applyVolume(v, limits);
    return limits;
  }

  /** Sets volume `id`'s limits to exactly `limits` (null: none): a cluster node applying a volume record's. */
  async replaceVolumeLimits(id: number, limits: QosLimits | null): Promise<void> {
    const key = `${VOLUME_KEY_PREFIX}${id}`;
    const value = limits === null ? null : encodeLimits(key, limits);
    await this.engine.putSettings([{ key, value }]);
    if (value === null) this.volumeLimitsById.delete(id); else this.volumeLimitsById.set(id, limits!);
    const v = this.volumes.get(id);
    if (v !== undefined) this.applyVolume(v, value === null ? null : limits);
  }

  /** Re-reads `tenant`'s stored limits (another node changed them: the setting is shared in a cluster). */
  reloadTenant(tenant: string): void {
    const value = this.engine.getSetting(`${TENANT_KEY_PREFIX}${tenant}`);
    this.applyTenant(this.tenant(tenant), value === null ? noLimits() : this.decode(`${TENANT_KEY_PREFIX}${tenant}`, value));
  }

  async setTenantLimits(tenant: string, change: QosChange): Promise<QosLimits> {
    const next = applyChange(this.tenantLimits(tenant), change);
    const key = `${TENANT_KEY_PREFIX}${tenant}`;
    await this.engine.putSettings([{ key, value: encodeLimits(key, next) }]);
    this.applyTenant(this.tenant(tenant), next);
    return next;
  }

  /** A volume was deleted: its requests (if any still come) are unlimited, its record goes. */
  async forgetVolume(id: number): Promise<void> {
    const v = this.volumes.get(id);
    if (v !== undefined) { this.applyVolume(v, null); v.tenant.volumes.delete(v); this.volumes.delete(id); }
    if (!this.volumeLimitsById.delete(id)) return;
    await this.engine.putSettings([{ key: `${VOLUME_KEY_PREFIX}${id}`, value: null }]);
  }

  /** Tenant limits go with the tenant (the tenant store calls this when it deletes one). */
  async forgetTenant(tenant: string): Promise<void> {
    const t = this.tenants.get(tenant);
    if (t !== undefined) this.applyTenant(t, noLimits());
    if (this.engine.getSetting(`${TENANT_KEY_PREFIX}${tenant}`) !== null) {
      await this.engine.putSettings([{ key: `${TENANT_KEY_PREFIX}${tenant}`, value: null }]);
    }
  }

  private applyVolume(v: VolumeQos, limits: QosLimits | null): void {
    v.limits = limits;
    if (limits !== null && hasRates(limits)) {
      v.throttle ??= new Throttle(this.clock, (p) => this.toTenant(p));
      v.throttle.setRates(limits, limits.burstSeconds);
    } else if (v.throttle !== null) {
      v.throttle.setRates(noLimits(), 1); // passes what waits, in order
    }
    this.refresh(v);
  }

  private applyTenant(t: TenantQos, limits: QosLimits): void {
    t.limits = limits;
    t.flow.weight = limits.weight;
    if (hasRates(limits)) {
      t.throttle ??= new Throttle(this.clock, (p) => this.scheduler.submit(p, t.flow));
      t.throttle.setRates(limits, limits.burstSeconds);
    } else if (t.throttle !== null) {
      t.throttle.setRates(noLimits(), 1);
    }
    for (const v of t.volumes) this.refresh(v);
  }

  private refresh(v: VolumeQos): void {
    v.unthrottled = !(v.throttle?.limited ?? false) && !(v.tenant.throttle?.limited ?? false);
  }

  // ---- state by id ----

  private tenant(name: string): TenantQos {
    let t = this.tenants.get(name);
    if (t === undefined) { t = new TenantQos(name); this.tenants.set(name, t); }
    return t;
  }

  /** The QoS state of target `id` (a volume or a snapshot), made on its first request. */
  volume(id: number): VolumeQos {
    return this.volumes.get(id) ?? this.learn(id, null);
  }

  /** Made from a resolved target's name (no lookup), or by looking the id up in the catalog. */
  learn(id: number, engineName: string | null): VolumeQos {
    const known = this.volumes.get(id);
    if (known !== undefined) return known;
    const name = engineName ?? this.nameOf(id);
    const tenant = this.tenant(name === null ? DEFAULT_TENANT : splitQualified(name).tenant);
    const v = new VolumeQos(id, name ?? `id-${id}`, tenant);
    tenant.volumes.add(v);
    this.volumes.set(id, v);
    // Snapshots are targets of their own with no volume limits; their tenant's limits apply.
    this.applyVolume(v, this.volumeLimitsById.get(id) ?? null);
    return v;
  }

  private nameOf(id: number): string | null {
    const v = this.engine.listVolumes().find((x) => x.id === id);
    if (v !== undefined) return v.name;
    const page = this.engine.listSnapshotsPage({ afterId: id - 1, limit: 1 }).snapshots;
    return page[0]?.id === id ? page[0].fullName : null;
  }

  // ---- the path of a delayed request ----

  /** A request that cannot take the direct path: through its volume's and tenant's buckets, then fair sharing. */
  submit(p: Pending): void {
    const v = p.volume;
    if (v.throttle !== null && v.throttle.limited) v.throttle.submit(p); else this.toTenant(p);
  }

  private toTenant(p: Pending): void {
    const t = p.volume.tenant;
    if (t.throttle !== null && t.throttle.limited) t.throttle.submit(p); else this.scheduler.submit(p, t.flow);
  }

  private run(p: Pending): void {
    const waitedMs = this.clock.nowMs() - p.arrivedMs;
    const v = p.volume;
    v.waitMsTotal += waitedMs;
    v.delayedTotal += 1;
    v.tenant.waitMsTotal += waitedMs;
    v.tenant.delayedTotal += 1;
    let work: Promise<unknown>;
    try { work = p.run(); } catch (err) { work = Promise.reject(err); }
    work.then((value) => { this.scheduler.done(); p.resolve(value); }, (err: unknown) => { this.scheduler.done(); p.reject(err); });
  }

  /** Shutdown: nothing waits any more; every queued request runs. */
  releaseAll(): void {
    for (const v of this.volumes.values()) v.throttle?.releaseAll();
    for (const t of this.tenants.values()) t.throttle?.releaseAll();
    this.scheduler.releaseAll();
  }

  waitTotals(): { volumes: QosWaitTotals[]; tenants: QosWaitTotals[] } {
    const of = (x: { waitMsTotal: number; delayedTotal: number }, name: string): QosWaitTotals => ({ name, waitSeconds: x.waitMsTotal / 1000, delayedRequests: x.delayedTotal });
    return {
      volumes: [...this.volumes.values()].filter((v) => v.delayedTotal > 0).map((v) => of(v, v.name)),
      tenants: [...this.tenants.values()].filter((t) => t.delayedTotal > 0).map((t) => of(t, t.name)),
    };
  }
}
