// Storage nodes and degraded volumes, when the daemon runs as part of a cluster (GET /v1/cluster);
// a daemon without the cluster answers 404, and the view is not offered at all.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, get } from '../api';
import { ErrorLine, useInterval } from '../components';

interface ClusterNode { name: string; alive: boolean; zone?: string | null; replicas?: number; primaries?: number }
interface Degraded { name?: string; volume?: string; inSync?: number; replicas?: number; primary?: string }
interface Cluster {
  self: string; nodes: ClusterNode[]; degraded: Array<string | Degraded>;
  controlPlane?: { healthy: boolean; endpoints: string[]; error: string | null };
}

function degradedLine(d: string | Degraded): string {
  if (typeof d === 'string') return d;
  const name = d.volume ?? d.name ?? JSON.stringify(d);
  const counts = d.inSync !== undefined && d.replicas !== undefined ? `: ${d.inSync} of ${d.replicas} replicas in sync` : '';
  return `${name}${counts}${d.primary !== undefined ? `, primary ${d.primary}` : ''}`;
}

/** True once GET /v1/cluster answered (false on 404 or any refusal: no cluster view). */
export function useClusterAvailable(asAdmin: boolean): boolean {
  const [available, setAvailable] = useState(false);
  useEffect(() => {
    if (!asAdmin) { setAvailable(false); return; }
    get<Cluster>('/v1/cluster').then(() => setAvailable(true), (err: unknown) => {
      // 404: no cluster on this daemon; 403: not this token's to see. Either way the view stays hidden.
      if (!(err instanceof ApiError)) console.warn(err);
      setAvailable(false);
    });
  }, [asAdmin]);
  return available;
}

export function ClusterView() {
  const [cluster, setCluster] = useState<Cluster | null>(null);
  const [error, setError] = useState<unknown>(null);
  useInterval(() => { get<Cluster>('/v1/cluster').then((c) => { setCluster(c); setError(null); }, setError); }, 2000);
  return (
    <section aria-labelledby="cl-h">
      <h1 id="cl-h">Cluster</h1>
      <ErrorLine error={error} />
      {cluster !== null && (
        <>
          <p class="sub">This daemon: {cluster.self}</p>
          {cluster.controlPlane !== undefined && (
            <p class={cluster.controlPlane.healthy ? 'state-succeeded' : 'state-failed'}>
              etcd {cluster.controlPlane.healthy ? 'healthy' : `unhealthy${cluster.controlPlane.error !== null ? `: ${cluster.controlPlane.error}` : ''}`}
              {cluster.controlPlane.endpoints.length > 0 ? ` (${cluster.controlPlane.endpoints.join(', ')})` : ''}
            </p>
          )}
          <div class="table-wrap">
            <table class="plain">
              <thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Zone</th><th scope="col" class="num">Replicas</th><th scope="col" class="num">Primaries</th></tr></thead>
              <tbody>
                {cluster.nodes.map((n) => (
                  <tr><td>{n.name}</td><td class={n.alive ? 'state-succeeded' : 'state-failed'}>{n.alive ? 'alive' : 'down'}</td>
                    <td>{n.zone ?? ''}</td><td class="num">{n.replicas ?? ''}</td><td class="num">{n.primaries ?? ''}</td></tr>
                ))}
              </tbody>
            </table>
          </div>
          <h2>Degraded volumes</h2>
          {cluster.degraded.length === 0 ? <p>None: every volume has all its replicas.</p> : (
            <ul>{cluster.degraded.map((d) => <li>{degradedLine(d)}</li>)}</ul>
          )}
        </>
      )}
    </section>
  );
}
