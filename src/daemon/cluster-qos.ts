// QoS on a cluster node (issue 22): a volume's limits travel in its cluster record, so whichever node
// is its primary (the only one serving its I/O) applies them, also right after a failover; tenant
// limits are shared settings, re-read here when another node changes them. Each node enforces a
// tenant's limits on the I/O it serves (the tenant's volumes whose primary it is).
import type { Engine } from '../engine/index.js';
import type { ClusterHandle } from '../cluster/handle.js';
import type { QosControl } from '../qos/qos-control.js';
import { encodedLimits, recordLimits, TENANT_KEY_PREFIX } from '../qos/limits.js';

type Log = (event: string, fields: Record<string, unknown>) => void;

/** Keeps this node's QoS in step with the cluster's records and shared settings; returns the unsubscribe. */
export function followClusterQos(cluster: ClusterHandle, local: Engine, qos: QosControl, log: Log): () => void {
  const applyVolume = (vol: string): void => {
    const rec = cluster.volume(vol);
    if (rec === null || rec.primary !== cluster.self) return;
    let id: number;
    try {
      id = local.resolve(vol).id;
    } catch {
      return; // no copy here (yet): it is applied when this node becomes primary with one
    }
    const current = qos.volumeLimits(id);
    if ((current === null ? null : encodedLimits(vol, current)) === (rec.qos ?? null)) return;
    qos.replaceVolumeLimits(id, recordLimits(rec.qos, log, vol)).then(
      () => log('cluster.qos_applied', { vol, qos: rec.qos ?? null }),
      (err: unknown) => log('cluster.qos_apply_failed', { vol, error: err instanceof Error ? err.message : String(err) }),
    );
  };
  const applyAll = (): void => { for (const r of cluster.volumes()) applyVolume(r.name); };
  const offVolumes = cluster.onChange((vol) => (vol === null ? applyAll() : applyVolume(vol)));
  const offSettings = cluster.onSettingChange?.((key) => {
    if (key.startsWith(TENANT_KEY_PREFIX)) qos.reloadTenant(key.slice(TENANT_KEY_PREFIX.length));
  }) ?? ((): void => undefined);
  applyAll();
  return () => { offVolumes(); offSettings(); };
}
