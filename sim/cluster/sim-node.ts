// One simulated storage node: a real Pool on a SimDevice, a ClusterNode over the shared MemKv and
// SimNetwork, and a crash that keeps only what the disk may keep (SimDevice crash modes), after
// which a restart reopens the pool from the crash image as a new incarnation.
import { Prng } from '../../src/engine/device/prng.js';
import { SimDevice, type CrashMode } from '../../src/engine/device/sim-device.js';
import { createPool, openPool, checkPool } from '../../src/engine/pool.js';
import type { Engine } from '../../src/engine/index.js';
import { startClusterNode, type ClusterDataKeys, type ClusterNode } from '../../src/cluster/node.js';
import type { DataKey } from '../../src/engine/index.js';
import { simDataKey, simUnwrap } from './sim-keys.js';
import type { MemKv } from './mem-kv.js';
import type { SimNetwork } from './sim-network.js';
import type { SimClock } from './sim-clock.js';
import type { ClusterParams } from './cluster-params.js';

export interface SimNodeEnv {
  clock: SimClock;
  kv: MemKv;
  net: SimNetwork;
  params: ClusterParams;
  /** Every ClusterNode log event (the trace of a replay). */
  trace: ((line: string) => void) | null;
}

/** Metadata cache of each simulated pool (small: the sim's volumes are small). */
const CACHE_BYTES_MAX = 1024 * 1024;

export class SimNode {
  readonly name: string;
  readonly zone: string | null;
  device: SimDevice;
  pool: Engine | null = null;
  cluster: ClusterNode | null = null;
  /** Starts so far (1 after the first start); labels which acknowledgements belong to which life. */
  incarnation = 0;
  /** Resolves when the current life ends (a crash): a client waiting on this node gives up then. */
  died: Promise<void> = new Promise(() => undefined);
  private markDead: () => void = () => undefined;
  private readonly env: SimNodeEnv;
  private readonly prng: Prng;
  /** Data keys this node made (numbers them, so each is new). */
  private keysMade = 0;
  private readonly dataKeys: ClusterDataKeys = { newDataKey: (vol) => Promise.resolve(this.newDataKey(vol)), refusal: () => null };

  constructor(env: SimNodeEnv, name: string, zone: string | null, prng: Prng) {
    this.env = env;
    this.name = name;
    this.zone = zone;
    this.prng = prng;
    this.device = new SimDevice(env.params.poolBlocks, prng.fork());
  }

  get up(): boolean { return this.cluster !== null; }

  /** A fresh data key of this node's (for an encrypted volume's copy here). */
  newDataKey(vol: string): DataKey { return simDataKey(this.name, vol, ++this.keysMade); }

  /** "n2.3": this node in its third life (acknowledgements are kept per life). */
  get life(): string { return `${this.name}.${this.incarnation}`; }

  async start(): Promise<void> {
    const { clock, kv, net, params } = this.env;
    const poolOptions = { nowMs: () => clock.nowMs(), commitIntervalMs: 0, cacheBytesMax: CACHE_BYTES_MAX };
    if (this.incarnation === 0) {
      this.pool = await createPool(this.device, poolOptions);
    } else {
      const report = await checkPool(this.device);
      if (!report.ok || report.problems.length > 0) {
        throw new Error(`${this.name}: checkPool of the crash image found ${report.problems.length} problem(s): ` +
          report.problems.slice(0, 4).map((p) => p.message).join('; '));
      }
      this.pool = await openPool(this.device, poolOptions);
      // As the daemon's key manager does at start: every copy's data key back in memory.
      for (const k of this.pool.listKeys()) if (k.locked) this.pool.unlockKey(k.keyId, simUnwrap(k.wrapped[0]!));
    }
    this.incarnation++;
    this.died = new Promise((resolve) => { this.markDead = resolve; });
    net.setDown(this.name, false);
    const trace = this.env.trace;
    const life = this.life;
    try {
      this.cluster = await clock.run(startClusterNode({
        name: this.name,
        zone: this.zone,
        addresses: { api: null, nbd: null, nvmf: null, repl: `${this.name}:7400` },
        engine: this.pool,
        kv: kv.client(this.name),
        transport: net.endpoint(this.name),
        clock,
        leaseTtlSeconds: params.leaseTtlSeconds,
        replicaTimeoutMs: params.replicaTimeoutMs,
        degradedWaitMs: params.degradedWaitMs,
        checkpointIntervalMs: 0,
        replaceAfterMs: params.replaceAfterMs,
        defaultReplicas: 2,
        dataKeys: this.dataKeys,
        log: (event, fields) => { trace?.(`      [${life} @${Math.round(clock.nowMs() % 10_000_000)}] ${event} ${JSON.stringify(fields)}`); },
      }), 30_000, `start of ${this.name}`);
    } catch (err) {
      // The daemon exits (a supervisor restarts it later): what its pool made durable stays.
      await this.die('clean');
      throw err;
    }
  }

  /** Power cut: the process dies (no lease revoke), the disk keeps what `mode` lets it keep. */
  async crash(mode: CrashMode): Promise<void> {
    const cluster = this.cluster;
    this.cluster = null;
    if (cluster !== null) await cluster.stop();
    await this.die(mode);
  }

  private async die(mode: CrashMode): Promise<void> {
    this.cluster = null;
    this.env.net.setDown(this.name, true);
    this.env.net.endpointOf(this.name)?.shut();
    await this.env.kv.client(this.name).close();
    this.device = this.device.crash(mode);
    this.pool = null;
    this.markDead();
  }
}

export const crashModes: readonly CrashMode[] = ['clean', 'some', 'torn'];
