// Cairn nodes on the namespace test network (test/netns-harness.ts): `cairn serve [--cluster …]`
// per node namespace with its own pool, the REST calls the cluster test needs, the seeded fault
// schedule, and the final replica comparison (every node stopped, each pool opened with the engine).
import { existsSync, readFileSync, readdirSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { openPoolFile } from '../src/engine/index.js';
import { cairnBin, repoRoot } from './cli-helpers.js';
import { type EtcdCluster, type Host, type NsProcess, type TestNetwork, sleep } from './netns-harness.js';

const API_PORT = 9000;
const NBD_PORT = 10809;
/** A hang bound, not a speed: a busy 2-core machine starts a daemon slowly. */
const READY_WAIT_MS_MAX = 120_000;
/** CI's schedule length; CAIRN_NETNS_STEPS asks for a longer one. */
const STEPS_DEFAULT = 6;
/** 3 nodes hold a 3-replica volume; up to 5 leave room for replacements. */
const NODES_MIN = 3;
const NODES_MAX = 5;
/** After a step is healed, the writer must make this many more flushes (I/O resumed) within the bound. */
const FLUSHES_AFTER_STEP_MIN = 3;
const RESUME_WAIT_MS_MAX = 60_000;
const QUIESCE_WAIT_MS_MAX = 90_000;
/** How often a node fault targets a member of the volume rather than any node. */
const MEMBER_FAULT_FRACTION = 0.75;
/** The link delay a slow-node step adds (netem), or the queue it allows (tbf). */
const SLOW_DELAY_MS = 50;

export function seedFromEnv(): number {
  const env = process.env.CAIRN_NETNS_SEED;
  return env !== undefined && env !== '' ? Number(env) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

export function stepsFromEnv(): number {
  const env = process.env.CAIRN_NETNS_STEPS;
  return env !== undefined && env !== '' ? Math.max(1, Number(env)) : STEPS_DEFAULT;
}

/** Nodes of the cluster test: 3 in CI, CAIRN_NETNS_NODES (3..5) on demand. */
export function nodesFromEnv(): number {
  const env = process.env.CAIRN_NETNS_NODES;
  return env !== undefined && env !== '' ? Math.min(NODES_MAX, Math.max(NODES_MIN, Number(env))) : NODES_MIN;
}

/** Why this build cannot run the cluster test (its daemon does not start a cluster node), or null. */
export function clusterSupported(): string | null {
  const daemon = join(repoRoot(), 'dist', 'src', 'daemon');
  if (!existsSync(daemon)) return 'dist/ is not built';
  const wired = readdirSync(daemon).filter((f) => f.endsWith('.js')).some((f) => readFileSync(join(daemon, f), 'utf8').includes('startClusterNode'));
  return wired ? null : 'this build of `cairn serve` starts no cluster node (the daemon part of issue 22 is not merged)';
}

/** mulberry32: the schedule's seeded choices (small, and independent of the engine's internals). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface CairnNode { host: Host; pool: string; proc: NsProcess; api: string; nbd: string }

interface Replica { node: string; state: string; primary: boolean }

export class CairnNodes {
  readonly nodes: CairnNode[];

  /** `secretFile`: a cluster secret every node holds (the replication link then runs in TLS-PSK). */
  constructor(readonly net: TestNetwork, opts: { cluster: string | null; secretFile?: string }) {
    this.nodes = net.nodes.map((host) => {
      const dir = join(net.opts.dir, host.name);
      mkdirSync(dir, { recursive: true });
      const pool = join(dir, 'cairn.pool');
      const argv = [process.execPath, cairnBin, 'serve', '--pool', pool, '--pool-size', '2G',
        '--api', `${host.ip}:${API_PORT}`, '--nbd', `${host.ip}:${NBD_PORT}`, '--log-format', 'json',
        ...(opts.cluster === null ? [] : ['--cluster', opts.cluster, '--node', host.name, '--advertise', host.ip]),
        ...(opts.secretFile === undefined ? [] : ['--cluster-secret-file', opts.secretFile])];
      const proc = net.spawn(host, `cairn-${host.name}`, argv);
      return { host, pool, proc, api: `http://${host.ip}:${API_PORT}`, nbd: `nbd://${host.ip}:${NBD_PORT}` };
    });
  }

  node(name: string): CairnNode {
    const n = this.nodes.find((x) => x.host.name === name);
    if (n === undefined) throw new Error(`no node ${name}`);
    return n;
  }

  private waitReady(n: CairnNode): Promise<string> {
    return n.proc.waitLine((line) => {
      try { return (JSON.parse(line) as { event?: string }).event === 'ready'; } catch { return false; } // a line that is not JSON
    }, READY_WAIT_MS_MAX);
  }

  /** The processes were spawned by the constructor; waits for every "ready" line. */
  async startAll(): Promise<void> { await Promise.all(this.nodes.map((n) => this.waitReady(n))); }

  async restart(name: string): Promise<void> {
    const n = this.node(name);
    n.proc.start();
    await this.waitReady(n);
  }

  /**
   * Freezes every node at once (SIGSTOP), then SIGKILLs them: a graceful stop revokes a node's lease,
   * and the nodes still running would take over and rebuild while the others stop, changing the
   * replicas under the comparison. What the comparison needs is durable already: the writer's last
   * flush reached every in-sync member, and a pool opens after SIGKILL as after a crash.
   */
  async freezeAndKillAll(): Promise<void> {
    for (const n of this.nodes) n.proc.signal('SIGSTOP');
    await Promise.all(this.nodes.map((n) => n.proc.stop('SIGKILL')));
  }

  private token(n: CairnNode): string { return readFileSync(`${n.pool}.admin-token`, 'utf8').trim(); }

  /** A REST call to `node` as its admin; resolves with status and parsed body. */
  async call(node: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const n = this.node(node);
    const res = await fetch(`${n.api}${path}`, {
      method, signal: AbortSignal.timeout(5_000),
      headers: { authorization: `Bearer ${this.token(n)}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? null : JSON.parse(text) as unknown };
  }

  /** Waits until `node`'s GET /v1/nodes lists every node alive (each has registered with etcd). */
  async waitNodesAlive(node: string, timeoutMs = READY_WAIT_MS_MAX): Promise<void> {
    const end = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const r = await this.call(node, 'GET', '/v1/nodes');
        const listed = (r.body as { items?: Array<{ name: string; alive: boolean }> } | Array<{ name: string; alive: boolean }>);
        const items = Array.isArray(listed) ? listed : listed.items ?? [];
        last = `${r.status} ${JSON.stringify(r.body)}`;
        if (this.nodes.every((n) => items.some((i) => i.name === n.host.name && i.alive))) return;
      } catch (e) {
        last = (e as Error).message; // not answering yet: ask again
      }
      if (Date.now() > end) throw new Error(`not every node alive within ${timeoutMs} ms: ${last}`);
      await sleep(250);
    }
  }

  async createVolume(node: string, name: string, sizeBytes: number, replicas: number | null): Promise<void> {
    const r = await this.call(node, 'POST', '/v1/volumes', { name, size: sizeBytes, ...(replicas === null ? {} : { replicas }) });
    if (r.status !== 200 && r.status !== 201) throw new Error(`create ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** Every node's NBD URI for `volume` (`first`'s first). */
  nbdUris(volume: string, first?: string): string[] {
    const sorted = [...this.nodes].sort((a, b) => Number(b.host.name === first) - Number(a.host.name === first));
    return sorted.map((n) => `${n.nbd}/${volume}`);
  }

  private running(): CairnNode[] { return this.nodes.filter((n) => n.proc.running && !n.proc.paused); }

  private async replicas(volume: string): Promise<Replica[] | null> {
    for (const n of this.running()) {
      try {
        const r = await this.call(n.host.name, 'GET', `/v1/volumes/${encodeURIComponent(volume)}`);
        if (r.status === 200) return (r.body as { replicas?: Replica[] }).replicas ?? null;
      } catch { /* that node does not answer now: ask the next */ }
    }
    return null;
  }

  /** The volume's epoch and members as a node reports them ("?" when none answers): a step's effect. */
  async describeVolume(volume: string): Promise<string> {
    for (const n of this.running()) {
      try {
        const r = await this.call(n.host.name, 'GET', `/v1/volumes/${encodeURIComponent(volume)}`);
        const v = r.body as { epoch?: number; replicas?: Replica[] };
        if (r.status === 200) return `epoch ${v.epoch}, ${(v.replicas ?? []).map((x) => `${x.node}${x.primary ? '*' : ''}:${x.state}`).join(' ')}`;
      } catch { /* that node does not answer now: ask the next */ }
    }
    return '?';
  }

  /** The nodes holding a member of `volume` now (empty when no node answers). */
  async membersOf(volume: string): Promise<CairnNode[]> {
    const names = new Set((await this.replicas(volume) ?? []).map((r) => r.node));
    return this.nodes.filter((n) => names.has(n.host.name));
  }

  async primaryOf(volume: string): Promise<string> {
    const primary = (await this.replicas(volume))?.find((r) => r.primary)?.node;
    if (primary === undefined) throw new Error(`no primary known for ${volume}`);
    return primary;
  }

  /** Waits until GET /v1/cluster shows no degraded volume and `volume`'s members are all in-sync. */
  async waitQuiesced(volume: string, timeoutMs = QUIESCE_WAIT_MS_MAX): Promise<void> {
    const end = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      for (const n of this.running()) {
        try {
          const r = await this.call(n.host.name, 'GET', '/v1/cluster');
          const status = r.body as { degraded?: unknown[]; nodes?: Array<{ name: string; alive: boolean }> };
          const reps = await this.replicas(volume);
          last = `cluster ${r.status} degraded=${JSON.stringify(status.degraded)} replicas=${JSON.stringify(reps)}`;
          if (r.status === 200 && status.degraded?.length === 0 && status.nodes?.every((x) => x.alive) === true
            && reps !== null && reps.length > 0 && reps.every((x) => x.state === 'in-sync')) return;
          break;
        } catch (e) {
          last = `${n.host.name}: ${(e as Error).message}`; // that node does not answer now: ask the next
        }
      }
      if (Date.now() > end) throw new Error(`not quiesced within ${timeoutMs} ms: ${last}`);
      await sleep(500);
    }
  }
}

type Fault = 'kill-node' | 'pause-node' | 'partition-nodes' | 'isolate-node' | 'slow-node' | 'kill-etcd' | 'pause-etcd' | 'isolate-etcd';
const FAULTS: Fault[] = ['kill-node', 'pause-node', 'partition-nodes', 'isolate-node', 'slow-node', 'kill-etcd', 'pause-etcd', 'isolate-etcd'];

/**
 * Runs `steps` seeded fault steps, one at a time: apply, hold, heal, then wait until the writer
 * flushes again and the cluster is quiesced (so no step takes a second member of a degraded volume).
 * Returns one log line per step.
 */
export interface ScheduleOptions {
  net: TestNetwork;
  etcd: EtcdCluster;
  nodes: CairnNodes;
  seed: number;
  steps: number;
  /** The writer's acknowledged flushes so far (progress after each step). */
  flushes: () => number;
  /** Told each step as it starts and as it ends (printed as it goes, so a failing run shows its history). */
  note: (line: string) => void;
}

export async function runSchedule(opts: ScheduleOptions): Promise<void> {
  const { net, etcd, nodes, seed, steps, flushes, note } = opts;
  const next = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  for (let step = 1; step <= steps; step++) {
    const fault = pick(FAULTS);
    const holdMs = 1_000 + Math.floor(next() * 4_000);
    // With more nodes than replicas, a node fault hits a member of the volume 3 times in 4 (a fault
    // on a node holding nothing tests little). Which nodes are members is the cluster's state then.
    const members = await nodes.membersOf('vol');
    const onMember = next() < MEMBER_FAULT_FRACTION && members.length > 0;
    const node = pick(onMember ? members : nodes.nodes);
    const other = pick(nodes.nodes.filter((n) => n !== node));
    const member = pick(etcd.members);
    const what = describe(fault, node, other, member, holdMs);
    note(`step ${step}: ${what}`);
    switch (fault) {
      case 'kill-node':
        await node.proc.stop('SIGKILL');
        await sleep(holdMs);
        await nodes.restart(node.host.name);
        break;
      case 'pause-node':
        node.proc.signal('SIGSTOP');
        await sleep(holdMs);
        node.proc.signal('SIGCONT');
        break;
      case 'partition-nodes':
        net.partition(node.host, other.host);
        await sleep(holdMs);
        net.heal(node.host);
        break;
      case 'isolate-node':
        net.isolate(node.host);
        await sleep(holdMs);
        net.heal(node.host);
        break;
      case 'slow-node': {
        note(`  link slowed by ${net.slow(node.host, SLOW_DELAY_MS)}`);
        await sleep(holdMs);
        net.unslow(node.host);
        break;
      }
      case 'kill-etcd':
        await member.stop('SIGKILL');
        await sleep(holdMs);
        member.start();
        break;
      case 'pause-etcd':
        member.signal('SIGSTOP');
        await sleep(holdMs);
        member.signal('SIGCONT');
        break;
      case 'isolate-etcd':
        net.isolate(member.host);
        await sleep(holdMs);
        net.heal(member.host);
        break;
    }
    const before = flushes();
    const end = Date.now() + RESUME_WAIT_MS_MAX;
    while (flushes() < before + FLUSHES_AFTER_STEP_MIN) {
      if (Date.now() > end) throw new Error(`step ${step} (${what}): the writer made no progress within ${RESUME_WAIT_MS_MAX} ms after the heal`);
      await sleep(100);
    }
    await etcd.waitHealthy(QUIESCE_WAIT_MS_MAX);
    await nodes.waitQuiesced('vol');
    note(`step ${step}: healed; I/O resumed after it, cluster quiesced: ${await nodes.describeVolume('vol')}`);
  }
}

function describe(fault: Fault, node: CairnNode, other: CairnNode, member: NsProcess, holdMs: number): string {
  switch (fault) {
    case 'kill-node': return `SIGKILL ${node.host.name}, restart after ${holdMs} ms`;
    case 'pause-node': return `SIGSTOP ${node.host.name} for ${holdMs} ms`;
    case 'partition-nodes': return `partition ${node.host.name} from ${other.host.name} for ${holdMs} ms`;
    case 'isolate-node': return `isolate ${node.host.name} from nodes and etcd for ${holdMs} ms`;
    case 'slow-node': return `slow ${node.host.name}'s link (${SLOW_DELAY_MS} ms) for ${holdMs} ms`;
    case 'kill-etcd': return `SIGKILL etcd ${member.host.name}, restart after ${holdMs} ms`;
    case 'pause-etcd': return `SIGSTOP etcd ${member.host.name} for ${holdMs} ms`;
    case 'isolate-etcd': return `isolate etcd ${member.host.name} for ${holdMs} ms`;
  }
}

/** Blocks shown per differing pair: enough to see the pattern. */
const DIFFERING_BLOCKS_SHOWN_MAX = 8;

/** The version stamped in a workload block (test/netns-workload.py's header: u64 at byte 16), 0 for zeros. */
function versionAt(data: Buffer, block: number): number {
  return Number(data.readBigUInt64LE(block * 4096 + 16));
}

function differingBlocks(a: { node: string; data: Buffer }, b: { node: string; data: Buffer }, readBack: Array<number | null>): string {
  const shown: string[] = [];
  let count = 0;
  for (let block = 0; block * 4096 < a.data.length; block++) {
    const at = block * 4096;
    if (a.data.subarray(at, at + 4096).equals(b.data.subarray(at, at + 4096))) continue;
    count++;
    if (shown.length < DIFFERING_BLOCKS_SHOWN_MAX) {
      shown.push(`block ${block} ${a.node}=v${versionAt(a.data, block)} ${b.node}=v${versionAt(b.data, block)} read-back=v${readBack[block] ?? '?'}`);
    }
  }
  return `${count} blocks (${shown.join('; ')})`;
}

/**
 * A relay opened in the instant of a takeover may target the node itself once or twice (the
 * relayed connection is served locally on arrival); a loop relays every arrival again (seen: 1,700).
 */
const SELF_RELAYS_MAX = 2;

/**
 * Problems the nodes' own logs show: a node relaying an NBD export to itself in a loop (it believes
 * the primary is elsewhere while the record names it: each relayed connection arrives back and is
 * relayed again).
 */
export function logProblems(nodes: CairnNodes): string[] {
  const problems: string[] = [];
  for (const n of nodes.nodes) {
    const path = join(nodes.net.opts.dir, `${n.proc.label}.log`);
    if (!existsSync(path)) continue;
    let selfForwards = 0;
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      if (!line.includes('nbd_forward_connected')) continue;
      try {
        if ((JSON.parse(line) as { primary?: string }).primary === n.host.name) selfForwards++;
      } catch { /* a torn last line of a killed process */ }
    }
    if (selfForwards > SELF_RELAYS_MAX) problems.push(`${n.host.name} relayed an NBD export to itself ${selfForwards} times`);
  }
  return problems;
}

export interface ReplicaReport { problems: string[]; summary: string }

/**
 * With every node stopped: opens each pool with the engine and compares `volume`'s first `bytes`
 * and every checkpoint snapshot both hold, byte for byte, against the first node's.
 */
export async function verifyReplicas(nodes: CairnNodes, volume: string, bytes: number, readBack: Array<number | null> = []): Promise<ReplicaReport> {
  const images: Array<{ node: string; data: Buffer; snapshots: Map<string, Buffer> }> = [];
  for (const n of nodes.nodes) {
    const engine = await openPoolFile(n.pool);
    try {
      if (!engine.listVolumes().some((v) => v.name === volume)) continue;
      const data = await engine.read(engine.resolve(volume).id, 0, bytes);
      const snapshots = new Map<string, Buffer>();
      for (const s of engine.listSnapshots(volume)) snapshots.set(s.name, await engine.read(s.id, 0, bytes));
      images.push({ node: n.host.name, data, snapshots });
    } finally {
      await engine.close();
    }
  }
  const problems: string[] = [];
  if (images.length < 2) problems.push(`only ${images.length} node(s) hold ${volume}`);
  const [first, ...rest] = images;
  let comparedSnapshots = 0;
  for (const other of rest) {
    if (!first!.data.equals(other.data)) problems.push(`${volume} differs between ${first!.node} and ${other.node}: ${differingBlocks(first!, other, readBack)}`);
    for (const [name, data] of first!.snapshots) {
      const theirs = other.snapshots.get(name);
      if (theirs === undefined) continue;
      comparedSnapshots++;
      if (!data.equals(theirs)) problems.push(`${volume}@${name} differs between ${first!.node} and ${other.node}`);
    }
  }
  return { problems, summary: `${images.length} replicas of ${volume} compared (${images.map((i) => i.node).join(', ')}), ${comparedSnapshots} common snapshot pairs` };
}
