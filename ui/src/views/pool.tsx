// Pool: size, allocation, free space, checksum errors, counts, per-tenant usage (an admin's view),
// and capacity over time (the daemon's samples, then the page's own).
import { get, listAll, type CapacityHistory, type Pool, type Tenant, type Volume, type Whoami } from '../api';
import { Card, Chart, ErrorLine, useInterval, useLoad } from '../components';
import { bytes, percent, tenantOf } from '../format';
import { poolHistory, useHistory } from '../samplers';
import { useState } from 'preact/hooks';

interface TenantUsage { name: string; volumes: number; mappedBytes: number; provisionedBytes: number }

async function tenantUsage(): Promise<TenantUsage[]> {
  const [tenants, volumes] = await Promise.all([get<Tenant[]>('/v1/tenants'), listAll<Volume>('/v1/volumes')]);
  const by = new Map<string, TenantUsage>(tenants.map((t) => [t.name, { name: t.name, volumes: 0, mappedBytes: 0, provisionedBytes: 0 }]));
  for (const v of volumes) {
    const t = tenantOf(v.name);
    const u = by.get(t) ?? { name: t, volumes: 0, mappedBytes: 0, provisionedBytes: 0 };
    u.volumes += 1; u.mappedBytes += v.mappedBytes; u.provisionedBytes += v.size;
    by.set(t, u);
  }
  return [...by.values()].sort((a, b) => b.mappedBytes - a.mappedBytes);
}

export function PoolView({ who }: { who: Whoami }) {
  const [pool, setPool] = useState<Pool | null>(null);
  const [error, setError] = useState<unknown>(null);
  useInterval(() => { get<Pool>('/v1/pool').then((p) => { setPool(p); setError(null); }, setError); }, 2000);
  // Tenants are an admin's business: a tenant's token is never sent to the admin-only /v1/tenants.
  const usage = useLoad(() => (who.role === 'admin' ? tenantUsage() : Promise.resolve(null)), [who.role]);
  const live = useHistory(poolHistory);
  // The daemon's own samples (a minute apart, up to a day) first, then this page's newer ones.
  const past = useLoad(() => get<CapacityHistory>('/v1/pool/history'), []);
  const older = (past.value?.samples ?? []).map((s) => ({ t: s.timeMs / 1000, allocated: s.allocatedBytes, free: s.freeBytes, metadata: s.metadataBytes }));
  const since = older.length > 0 ? older[older.length - 1]!.t : 0;
  const history = [...older, ...live.filter((p) => p.t > since)];
  return (
    <section aria-labelledby="pool-h">
      <h1 id="pool-h">Pool</h1>
      <ErrorLine error={error} />
      {pool !== null && (
        <>
          <p class="sub"><code>{pool.path}</code>{pool.nbd !== null && <> · NBD <code>{pool.nbd}</code></>}</p>
          <div class="cards">
            <Card label="Size" value={bytes(pool.size)} hint={`${bytes(pool.blockSize)} blocks`} />
            <Card label="Allocated" value={bytes(pool.allocatedBytes)} hint={`${percent(pool.allocatedBytes, pool.size)} of the pool: data and metadata`} />
            <Card label="Metadata" value={pool.metadataBytes === null ? '–' : bytes(pool.metadataBytes)}
              hint={pool.metadataBytes === null ? 'not counted yet' : `${percent(pool.metadataBytes, pool.allocatedBytes)} of allocated: trees, maps, catalog, log`} />
            <Card label="Free" value={bytes(pool.freeBytes)} hint={percent(pool.freeBytes, pool.size)} />
            <Card label="Volumes" value={pool.volumes} hint={`${pool.snapshots} snapshots`} />
            <Card label="Checksum errors" value={<span class={pool.checksumErrors > 0 ? 'bad' : ''}>{pool.checksumErrors}</span>} hint="since the daemon started" />
            <Card label="Pending frees" value={pool.pendingDeleteNodes} hint="deleted trees still being freed" />
          </div>
          <div class="meter" role="meter" aria-label="Pool allocated" aria-valuemin={0} aria-valuemax={pool.size} aria-valuenow={pool.allocatedBytes}
            aria-valuetext={`${bytes(pool.allocatedBytes)} of ${bytes(pool.size)}`}>
            <div style={{ width: `${Math.min(100, (100 * pool.allocatedBytes) / Math.max(1, pool.size))}%` }} />
          </div>
        </>
      )}
      <Chart title="Capacity (the daemon's samples since it started, then live)" x={history.map((p) => p.t)}
        series={[{ label: 'allocated', color: '#1f5fa8' }, { label: 'metadata', color: '#8e44ad' }, { label: 'free', color: '#2e7d32' }]}
        values={[history.map((p) => p.allocated), history.map((p) => p.metadata), history.map((p) => p.free)]} format={bytes} />
      {who.role === 'admin' && (
        <>
          <h2>Usage by tenant</h2>
          <ErrorLine error={usage.error} />
          {usage.value !== null && usage.value !== undefined && (
            <div class="table-wrap">
              <table class="plain">
                <thead><tr><th scope="col">Tenant</th><th scope="col" class="num">Volumes</th><th scope="col" class="num">Mapped</th><th scope="col" class="num">Provisioned</th></tr></thead>
                <tbody>
                  {usage.value.map((u) => (
                    <tr><td>{u.name}</td><td class="num">{u.volumes}</td><td class="num">{bytes(u.mappedBytes)}</td><td class="num">{bytes(u.provisionedBytes)}</td></tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}
