// The seeded cluster simulator (issue 22 "Proving it"): 3–5 nodes, each a real Pool on a SimDevice
// running ClusterNode, over MemKv + SimNetwork + SimClock. One seed picks the shape and a schedule
// of volume creates, client writes/reads/flushes/snapshots, checkpoints, crashes and restarts,
// partitions of the network and of the control plane, and time jumps (lease expiries). Quiesces
// check cluster-design.md's invariants; a failure names its seed and step, and replays exactly
// with `node dist/sim/cluster/run.js --seed N --steps S`.
import { Prng } from '../../src/engine/device/prng.js';
import { VOLUME_PREFIX, type VolumeRecord } from '../../src/cluster/records.js';
import type { ReplRequest } from '../../src/cluster/messages.js';
import { SimClock } from './sim-clock.js';
import { MemKv } from './mem-kv.js';
import { SimNetwork } from './sim-network.js';
import { ClusterModel, type VolumeModel } from './cluster-model.js';
import { chooseClusterParams, type ClusterOpKind, type ClusterParams } from './cluster-params.js';
import { SimNode, type SimNodeEnv } from './sim-node.js';
import { runClusterOp } from './cluster-ops.js';
import { quiesceAndCheck } from './quiesce.js';

export interface ClusterSimOptions {
  seed: number;
  steps: number;
  /** Called with every step line and node event as it happens (--verbose). */
  trace?: (line: string) => void;
  /** Node log events in the trace too (very verbose). */
  nodeLog?: boolean;
  /**
   * false: a quiesce that does not bring every member back in sync is a finding, not a failure,
   * and invariant 2 is checked among the members in sync (for a node logic without rebuild yet).
   */
  requireConvergence?: boolean;
  /** Known findings (sim/cluster/FINDINGS.md: 'F1', ...) reported as findings instead of failing the seed. */
  tolerate?: readonly string[];
  /** Runs after a quiesce converged, before its checks (tests damage a replica here to see the checks fail). */
  beforeCheck?: (sim: ClusterSim) => Promise<void>;
}

export interface ClusterSimStats {
  steps: number;
  writesAcked: number;
  writesFailed: number;
  reads: number;
  staleReads: number;
  flushes: number;
  snapshots: number;
  checkpoints: number;
  crashes: number;
  restarts: number;
  partitions: number;
  kvCuts: number;
  quiesces: number;
  volumes: number;
  virtualMs: number;
}

export interface ClusterSimResult {
  ok: boolean;
  seed: number;
  failure?: string;
  stats: ClusterSimStats;
  /** Things worth a look that are not invariant violations (hangs, stale reads). */
  findings: string[];
  network: SimNetwork['stats'];
}

export class SimFailure extends Error {
  constructor(message: string) { super(message); this.name = 'SimFailure'; }
}

/** Recent step lines kept for a failure message. */
const HISTORY_LINES_MAX = 60;
const FINDINGS_MAX = 20;
/** Virtual time between steps at most (the schedule's own pace; `advance` steps jump further). */
const STEP_GAP_MS_MAX = 25;

export class ClusterSim {
  readonly seed: number;
  readonly prng: Prng;
  readonly params: ClusterParams;
  readonly clock: SimClock;
  readonly kv: MemKv;
  readonly net: SimNetwork;
  readonly nodes: SimNode[] = [];
  readonly model = new ClusterModel();
  readonly stats: ClusterSimStats = {
    steps: 0, writesAcked: 0, writesFailed: 0, reads: 0, staleReads: 0, flushes: 0, snapshots: 0, checkpoints: 0,
    crashes: 0, restarts: 0, partitions: 0, kvCuts: 0, quiesces: 0, volumes: 0, virtualMs: 0,
  };
  readonly findings: string[] = [];
  stepIndex = -1;
  readonly requireConvergence: boolean;
  readonly tolerate: ReadonlySet<string>;
  readonly beforeCheck: ((sim: ClusterSim) => Promise<void>) | null;
  /** Client calls and other background work in flight (quiesce waits for them). */
  readonly tasks = new Set<Promise<void>>();
  /** (volume#epoch) → primary, from every record version the control plane held. */
  private readonly epochPrimary = new Map<string, string>();
  private readonly lastRecord = new Map<string, VolumeRecord>();
  /** (volume#epoch) → senders of data requests in it (invariant 3, checked against epochPrimary). */
  private readonly epochSenders = new Map<string, Set<string>>();
  private readonly history: string[] = [];
  private readonly trace: ((line: string) => void) | undefined;
  private readonly startMs: number;
  private taskError: unknown = null;

  constructor(opts: ClusterSimOptions) {
    this.seed = opts.seed;
    this.trace = opts.trace;
    this.requireConvergence = opts.requireConvergence ?? true;
    this.tolerate = new Set(opts.tolerate ?? []);
    this.beforeCheck = opts.beforeCheck ?? null;
    this.prng = new Prng(opts.seed);
    this.params = chooseClusterParams(this.prng, opts.seed);
    this.clock = new SimClock(this.prng.fork());
    this.startMs = this.clock.nowMs();
    this.kv = new MemKv(this.clock);
    this.net = new SimNetwork(this.clock, this.prng.fork(), {
      delayMsMin: 0.1, delayMsMax: this.params.delayMsMax,
      dropProbability: this.params.dropProbability, duplicateProbability: this.params.duplicateProbability,
    });
    this.net.tap = (from, _to, request) => this.tapRequest(from, request);
    if (opts.nodeLog === true && opts.trace !== undefined) {
      const trace = opts.trace;
      this.net.deliveryTap = (from, to, r, copy) => {
        if (r.t === 'flush' || r.t === 'status') return;
        const where = 'offsetBytes' in r ? ` @${r.offsetBytes}+${'data' in r ? r.data.length : r.lengthBytes}` : '';
        const seq = 'seq' in r ? ` seq ${r.seq}` : '';
        trace(`      net ${from}→${to} ${r.t} ${'vol' in r ? r.vol : ''} e${'epoch' in r ? r.epoch : '-'}${seq}${where}${copy > 0 ? ' (duplicate)' : ''}`);
      };
    }
    const env: SimNodeEnv = {
      clock: this.clock, kv: this.kv, net: this.net, params: this.params,
      trace: opts.nodeLog === true && opts.trace !== undefined ? opts.trace : null,
    };
    for (let i = 1; i <= this.params.nodes; i++) {
      const zone = this.params.zones === 0 ? null : `z${((i - 1) % this.params.zones) + 1}`;
      this.nodes.push(new SimNode(env, `n${i}`, zone, this.prng.fork()));
    }
  }

  nodeNamed(name: string): SimNode | null { return this.nodes.find((n) => n.name === name) ?? null; }
  upNodes(): SimNode[] { return this.nodes.filter((n) => n.up); }
  downNodes(): SimNode[] { return this.nodes.filter((n) => !n.up); }

  note(line: string): void {
    const full = `#${this.stepIndex} @${Math.round(this.clock.nowMs() - this.startMs)}ms ${line}`;
    this.history.push(full);
    if (this.history.length > HISTORY_LINES_MAX) this.history.shift();
    this.trace?.(full);
  }

  /** A line for the trace only (retries): the failure history keeps the steps. */
  detail(line: string): void {
    this.trace?.(`#${this.stepIndex} @${Math.round(this.clock.nowMs() - this.startMs)}ms ${line}`);
  }

  finding(line: string): void {
    if (this.findings.length < FINDINGS_MAX) this.findings.push(`SEED=${this.seed} ${line}`);
    this.note(`  FINDING ${line}`);
  }

  fail(message: string): never { throw new SimFailure(message); }

  /** Runs `work` in the background; an exception in it fails the simulation at the next step. */
  spawn(what: string, work: () => Promise<void>): void {
    const task = work().catch((err: unknown) => {
      if (this.taskError === null) this.taskError = err instanceof SimFailure ? err : new SimFailure(`${what}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    }).finally(() => { this.tasks.delete(task); });
    this.tasks.add(task);
  }

  /** Volumes whose record exists (the client may use them). */
  liveVolumes(): VolumeModel[] {
    return [...this.model.volumes.values()].filter((v) => this.kv.entry(`${VOLUME_PREFIX}${encodeURIComponent(v.name)}`) !== null);
  }

  checkTasks(): void {
    if (this.taskError !== null) throw this.taskError;
    if (this.model.violations.length > 0) this.fail(this.model.violations.join('; '));
  }

  async setup(): Promise<void> {
    this.note(`params ${JSON.stringify({ ...this.params, weights: undefined })}`);
    await this.kv.watch(VOLUME_PREFIX, (e) => { if (e.value !== null) this.recordVersion(JSON.parse(e.value) as VolumeRecord); });
    for (const node of this.nodes) await node.start();
    await this.clock.advance(100);
  }

  async run(steps: number): Promise<ClusterSimResult> {
    try {
      await this.setup();
      for (this.stepIndex = 0; this.stepIndex < steps; this.stepIndex++) {
        const kind: ClusterOpKind = this.prng.weighted(this.params.weights);
        await runClusterOp(this, kind);
        await this.clock.advance(this.prng.int(1, STEP_GAP_MS_MAX));
        this.checkTasks();
        this.stats.steps++;
      }
      this.stepIndex = -2;
      this.note('final quiesce');
      await quiesceAndCheck(this, true);
      this.checkTasks();
      return this.result(null);
    } catch (err) {
      const what = err instanceof SimFailure ? err.message : `unexpected ${err instanceof Error ? err.stack ?? err.message : String(err)}`;
      return this.result(`SEED=${this.seed} step #${this.stepIndex}: ${what}\n  recent steps:\n    ${this.history.join('\n    ')}`);
    }
  }

  /** Invariant 3 on the sender side: every data request of (vol, epoch) comes from that epoch's primary. */
  checkWriters(): void {
    for (const [key, senders] of this.epochSenders) {
      const primary = this.epochPrimary.get(key);
      if (primary === undefined) {
        if (senders.size > 1) this.fail(`invariant 3: ${key} has data requests from ${[...senders].join(' and ')}`);
        continue;
      }
      for (const s of senders) {
        if (s !== primary) this.fail(`invariant 3: ${s} sent data requests for ${key}, whose primary in the record was ${primary}`);
      }
    }
  }

  private tapRequest(from: string, request: ReplRequest): void {
    if (request.t !== 'write' && request.t !== 'trim' && request.t !== 'zero' && request.t !== 'resync-data') return;
    const key = `${request.vol}#${request.epoch}`;
    let senders = this.epochSenders.get(key);
    if (senders === undefined) this.epochSenders.set(key, senders = new Set());
    senders.add(from);
  }

  /** Every record version: epochs never go back, and a change of primary or in-sync set bumps the epoch. */
  private recordVersion(rec: VolumeRecord): void {
    const key = `${rec.name}#${rec.epoch}`;
    const seen = this.epochPrimary.get(key);
    if (seen !== undefined && seen !== rec.primary) this.model.violations.push(`record of ${rec.name}: epoch ${rec.epoch} with primary ${seen}, then ${rec.primary}`);
    this.epochPrimary.set(key, rec.primary);
    const prev = this.lastRecord.get(rec.name);
    if (prev !== undefined) {
      const inSync = (r: VolumeRecord) => r.members.filter((m) => m.state === 'in-sync').map((m) => `${m.node}/${m.incarnation}`).sort().join(',');
      if (rec.epoch < prev.epoch) this.model.violations.push(`record of ${rec.name}: epoch went back from ${prev.epoch} to ${rec.epoch}`);
      else if (rec.epoch === prev.epoch && (rec.primary !== prev.primary || inSync(rec) !== inSync(prev))) {
        this.model.violations.push(`record of ${rec.name}: primary/in-sync changed (${prev.primary} [${inSync(prev)}] → ${rec.primary} [${inSync(rec)}]) at the same epoch ${rec.epoch}`);
      }
    }
    this.lastRecord.set(rec.name, rec);
    this.note(`    record ${rec.name} e${rec.epoch} primary ${rec.primary} [${rec.members.map((m) => `${m.node}:${m.state}`).join(' ')}]`);
  }

  private result(failure: string | null): ClusterSimResult {
    this.stats.volumes = this.model.volumes.size;
    this.stats.virtualMs = this.clock.nowMs() - this.startMs;
    return {
      ok: failure === null, seed: this.seed, ...(failure === null ? {} : { failure }),
      stats: this.stats, findings: this.findings, network: this.net.stats,
    };
  }
}

export async function runClusterSimulation(opts: ClusterSimOptions): Promise<ClusterSimResult> {
  return new ClusterSim(opts).run(opts.steps);
}
