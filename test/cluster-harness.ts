// Nodes of a cluster in one process for the cluster tests: each with its own in-memory pool
// (SimDevice), over the simulator's MemKv, SimNetwork and SimClock, so a test drives virtual time.
import { SimClock } from '../sim/cluster/sim-clock.js';
import { MemKv, type MemKvClient } from '../sim/cluster/mem-kv.js';
import { SimNetwork } from '../sim/cluster/sim-network.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { createPool } from '../src/engine/pool.js';
import type { Engine } from '../src/engine/index.js';
import { startClusterNode, type ClusterNode, type ClusterNodeOptions } from '../src/cluster/node.js';

export const POOL_BLOCKS = 16384;

export interface TestNode {
  name: string;
  zone: string | null;
  local: Engine;
  kv: MemKvClient;
  node: ClusterNode;
}

export class Harness {
  readonly clock: SimClock;
  readonly store: MemKv;
  readonly net: SimNetwork;
  readonly nodes = new Map<string, TestNode>();
  /** Bytes of resync-data requests each node received. */
  readonly resyncBytes = new Map<string, number>();

  /** Each node's simulated disk (a test searches what a pool stores). */
  readonly devices = new Map<string, SimDevice>();

  /** `perNode` adds options of one node (say, its data keys) to `nodeOpts`. */
  constructor(seed: number, readonly nodeOpts: Partial<ClusterNodeOptions> = {},
    readonly perNode: (name: string) => Partial<ClusterNodeOptions> = () => ({})) {
    this.clock = new SimClock(seed);
    this.store = new MemKv(this.clock);
    this.net = new SimNetwork(this.clock, this.clock.prng.fork(), { delayMsMin: 0.1, delayMsMax: 1 });
  }

  run<T>(p: Promise<T>, what = 'call'): Promise<T> { return this.clock.run(p, 120_000, what); }

  async add(name: string, zone: string | null = null): Promise<TestNode> {
    return this.start(name, zone, await this.pool(name));
  }

  /** Starts (or restarts, a new incarnation) `name` on `local`. */
  start(name: string, zone: string | null, local: Engine): Promise<TestNode> {
    return this.run(this.launch(name, zone, local), `start ${name}`);
  }

  /** start() without driving virtual time: the caller drives it (a start that waits for the control plane). */
  async launch(name: string, zone: string | null, local: Engine): Promise<TestNode> {
    const kv = this.store.client(name);
    const transport = this.net.endpoint(name);
    const counting = {
      request: transport.request.bind(transport),
      close: transport.close.bind(transport),
      serve: (handler: Parameters<typeof transport.serve>[0]) => transport.serve((from, r) => {
        if (r.t === 'resync-data') this.resyncBytes.set(name, (this.resyncBytes.get(name) ?? 0) + r.data.length);
        return handler(from, r);
      }),
    };
    this.net.setDown(name, false);
    const node = await startClusterNode({
      name, zone, addresses: { api: null, nbd: null, nvmf: null, repl: `${name}:7000` }, engine: local, kv, transport: counting, clock: this.clock,
      checkpointIntervalMs: 0, replaceAfterMs: 600_000,
      ...(process.env['CLUSTER_LOG'] ? { log: (e: string, f: Record<string, unknown>) => console.log(this.clock.nowMs() % 1e6, e, JSON.stringify(f)) } : {}),
      ...this.nodeOpts, ...this.perNode(name),
    });
    const t: TestNode = { name, zone, local, kv, node };
    this.nodes.set(name, t);
    return t;
  }

  /** A new in-memory pool for a node. */
  async pool(name: string): Promise<Engine> {
    const device = new SimDevice(POOL_BLOCKS, this.clock.prng.fork());
    this.devices.set(name, device);
    return createPool(device, { nowMs: () => this.clock.nowMs(), commitIntervalMs: 0 });
  }

  get(name: string): TestNode { return this.nodes.get(name)!; }

  /** A crash: the node stops, the network stops reaching it, its lease expires. */
  async kill(name: string): Promise<void> {
    const t = this.get(name);
    await t.node.stop();
    this.net.setDown(name, true);
    await t.kv.close();
  }

  async restart(name: string): Promise<TestNode> {
    const t = this.get(name);
    return this.start(name, t.zone, t.local);
  }

  /** Lets virtual time pass. */
  advance(ms: number): Promise<void> { return this.clock.advance(ms); }

  async idle(): Promise<void> {
    for (const t of this.nodes.values()) await this.run(t.node.idle(), `idle ${t.name}`);
  }

  async write(name: string, vol: string, offsetBytes: number, data: Buffer): Promise<void> {
    const e = this.get(name).node.engine;
    await this.run(e.write(e.resolve(vol).id, offsetBytes, data), `write ${vol}`);
  }

  async readLocal(name: string, target: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    const e = this.get(name).local;
    return this.run(e.read(e.resolve(target).id, offsetBytes, lengthBytes), `read ${target}`);
  }

  async close(): Promise<void> {
    for (const t of this.nodes.values()) {
      await t.node.stop();
      await t.local.close().catch(() => undefined);
    }
  }
}

export function block(seed: number, bytes = 4096): Buffer {
  const buf = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) buf.writeUInt32LE((seed * 2654435761 + i * 97) >>> 0, i);
  return buf;
}
