// Settings every node of a cluster shares: tenants, API tokens (salted hashes), NBD keys, NVMe host
// lists and tenant QoS limits. They live in etcd under /cairn/settings/ and are mirrored into each
// node's pool (where the tenancy and QoS layers read them), so a token made through one node works on
// every node and a revocation reaches all of them within a watch round trip; layers that cache a
// setting hear of a remote change through onApplied. Settings that only make sense on one node stay
// local: KEK references (paths and HSM slots of that machine), the pool's per-id volume QoS records
// (a volume's limits travel in its cluster record instead: records.ts), the pool identity, fences.
import type { Engine, SettingChange } from '../engine/index.js';
import type { Kv, KvOp, KvWatchEvent } from './kv.js';
import { KEY_PREFIX } from './records.js';

/** 'qos/t/' is the QoS layer's tenant limits (src/qos/limits.ts TENANT_KEY_PREFIX); each node enforces them on its own I/O. */
export const SHARED_SETTING_PREFIXES = ['tenant/', 'token/', 'nbdkey/', 'nvmehost/', 'qos/t/'] as const;
export const SETTINGS_KEY_PREFIX = `${KEY_PREFIX}settings/`;
/** Set in a pool once it has joined: from then on etcd is the truth (a key gone there was deleted). */
export const SETTINGS_JOINED_SETTING = 'cluster/settings-joined';
/** Operations per etcd transaction (etcd refuses more than 128 by default). */
export const SETTINGS_TXN_OPS_MAX = 64;

export function isSharedSetting(key: string): boolean {
  return SHARED_SETTING_PREFIXES.some((p) => key.startsWith(p));
}

const kvKey = (key: string): string => `${SETTINGS_KEY_PREFIX}${encodeURIComponent(key)}`;
const settingKey = (kvKeyName: string): string => decodeURIComponent(kvKeyName.slice(SETTINGS_KEY_PREFIX.length));
const kvOp = (c: SettingChange): KvOp => (c.value === null ? { op: 'delete', key: kvKey(c.key) } : { op: 'put', key: kvKey(c.key), value: c.value.toString('base64') });

export class SharedSettings {
  private stopWatch: (() => void) | null = null;
  /** Remote changes apply one after another, in watch order. */
  private applying: Promise<void> = Promise.resolve();
  private readonly listeners = new Set<(key: string) => void>();

  constructor(private readonly kv: Kv, private readonly local: Engine,
    private readonly log: (event: string, fields: Record<string, unknown>) => void) {}

  /**
   * Watches, then reconciles: etcd's shared settings are copied into the pool; shared settings only the
   * pool has are pushed to etcd on the pool's first join (a single node that becomes a cluster node
   * keeps its tenants and tokens) and deleted afterwards (they were deleted while this node was away).
   */
  async start(): Promise<void> {
    this.stopWatch = await this.kv.watch(SETTINGS_KEY_PREFIX, (event) => this.onRemote(event));
    const remote = new Map<string, Buffer>();
    for (const entry of await this.kv.range(SETTINGS_KEY_PREFIX)) remote.set(settingKey(entry.key), Buffer.from(entry.value, 'base64'));
    const joined = this.local.getSetting(SETTINGS_JOINED_SETTING) !== null;
    const changes: SettingChange[] = [];
    for (const [key, value] of remote) {
      const mine = this.local.getSetting(key);
      if (mine === null || !mine.equals(value)) changes.push({ key, value });
    }
    const push: SettingChange[] = [];
    for (const prefix of SHARED_SETTING_PREFIXES) {
      for (const s of this.local.listSettings(prefix)) {
        if (remote.has(s.key)) continue;
        if (joined) changes.push({ key: s.key, value: null });
        else push.push({ key: s.key, value: s.value });
      }
    }
    await this.toKv(push);
    if (!joined) changes.push({ key: SETTINGS_JOINED_SETTING, value: Buffer.from('1') });
    if (changes.length > 0) await this.local.putSettings(changes);
    for (const c of changes) this.notify(c.key);
    this.log('cluster.settings_synced', { fromCluster: remote.size, pushed: push.length, removed: changes.filter((c) => c.value === null).length });
  }

  /** A change made through this node: shared keys go to etcd first (every node applies them), then here. */
  async put(changes: SettingChange[]): Promise<void> {
    await this.toKv(changes.filter((c) => isSharedSetting(c.key)));
    await this.local.putSettings(changes);
  }

  close(): void { this.stopWatch?.(); this.stopWatch = null; }

  /** Calls `listener` with each shared key another node changed, once the change is in this pool. */
  onApplied(listener: (key: string) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  private notify(key: string): void {
    for (const l of [...this.listeners]) {
      try { l(key); } catch (err) {
        this.log('cluster.settings_listener_failed', { key, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }

  private async toKv(changes: SettingChange[]): Promise<void> {
    for (let i = 0; i < changes.length; i += SETTINGS_TXN_OPS_MAX) {
      await this.kv.txn([], changes.slice(i, i + SETTINGS_TXN_OPS_MAX).map(kvOp));
    }
  }

  private onRemote(event: KvWatchEvent): void {
    const key = settingKey(event.key);
    if (!isSharedSetting(key)) return;
    const value = event.value === null ? null : Buffer.from(event.value, 'base64');
    this.applying = this.applying.then(async () => {
      const mine = this.local.getSetting(key);
      if (value === null ? mine === null : mine !== null && mine.equals(value)) return;
      await this.local.putSettings([{ key, value }]);
      this.notify(key);
    }).catch((err: unknown) => {
      // The pool refused (closing, full): the next start reconciles from etcd.
      this.log('cluster.settings_apply_failed', { key, error: err instanceof Error ? err.message : String(err) });
    });
  }
}
