// The operations of the cluster simulator's schedule: what the clients do (create, write, read,
// flush, snapshot), what the operator does (checkpoint now), and what the world does (crash,
// restart, partition, heal, control-plane cut, time passing). Client calls run in the background
// (several in flight); faults apply at once.
import { BLOCK_SIZE_BYTES } from '../../src/engine/index.js';
import type { ClusterOpKind } from './cluster-params.js';
import type { ClusterSim } from './cluster-sim.js';
import { clientFlush, clientRead, clientSnapshot, clientWrite, callPrimary, primaryNode, recordOf, isBug } from './client.js';
import { crashModes, type SimNode } from './sim-node.js';
import { KvUnavailable } from '../../src/cluster/kv.js';
import { quiesceAndCheck } from './quiesce.js';

/** Blocks one client write or read spans at most. */
const IO_BLOCKS_MAX = 4;
/** Time jumps of the `advance` step: short ones, a lease TTL and more, a replaceAfter. */
const ADVANCE_MS_CHOICES = [50, 300, 1000, 2500, 5000, 12_000];
/** etcd's default election timeout: what a new leader adds to every lease it renews. */
const ELECTION_TIMEOUT_MS = 1000;

export async function runClusterOp(sim: ClusterSim, kind: ClusterOpKind): Promise<void> {
  switch (kind) {
    case 'create': return opCreate(sim);
    case 'write': return opWrite(sim);
    case 'read': return opRead(sim);
    case 'flush': return opFlush(sim);
    case 'snapshot': return opSnapshot(sim);
    case 'checkpoint': return opCheckpoint(sim);
    case 'crash': return opCrash(sim);
    case 'restart': return opRestart(sim);
    case 'partition': return opPartition(sim);
    case 'isolatePrimary': return opIsolatePrimary(sim);
    case 'heal': sim.note('heal network'); sim.net.heal(); return;
    case 'kvCut': return opKvCut(sim);
    case 'kvLeaderChange': return opKvLeaderChange(sim);
    case 'kvHeal': sim.note('heal control plane'); for (const n of sim.nodes) sim.kv.setAvailable(n.name, true); return;
    case 'advance': {
      const ms = sim.prng.pick(ADVANCE_MS_CHOICES);
      sim.note(`advance ${ms} ms`);
      await sim.clock.advance(ms);
      return;
    }
    case 'quiesce': return quiesceAndCheck(sim, false);
  }
}

function opCreate(sim: ClusterSim): void {
  if (sim.model.volumes.size >= sim.params.volumesMax) return;
  const up = sim.upNodes();
  if (up.length === 0) return;
  const name = `vol${sim.model.volumes.size + 1}`;
  const sizeBlocks = sim.prng.int(Math.min(8, sim.params.volumeBlocksMax), sim.params.volumeBlocksMax);
  const replicas = Math.min(sim.params.nodes, sim.prng.pick([1, 2, 2, 2, 3, 3, 3]));
  const index = sim.model.volumes.size + 1;
  const encrypted = sim.params.encrypted === 'all' || (sim.params.encrypted === 'odd' && index % 2 === 1);
  const v = sim.model.addVolume(name, sizeBlocks, replicas, encrypted);
  const via = sim.prng.pick(up);
  sim.note(`create ${name} (${sizeBlocks} blocks, ${replicas} replicas${encrypted ? ', encrypted' : ''}) via ${via.life}`);
  sim.spawn(`create ${name}`, async () => {
    const o = await callPrimary(sim, name, `create ${name}`, async (node) => {
      try {
        await node.cluster!.createVolume(name, sizeBlocks * BLOCK_SIZE_BYTES, replicas, encrypted ? { encryption: node.newDataKey(name) } : undefined);
      } catch (err) {
        // A retry after an attempt whose reply was lost finds the volume placed.
        if ((err as { code?: unknown }).code !== 'name_taken' || recordOf(sim, name) === null) throw err;
      }
    }, () => (via.up ? via : sim.upNodes()[0] ?? null));
    v.created = o.ok;
    v.createRetried = !o.ok || o.attempts > 1;
    sim.note(`  create ${name}: ${o.ok ? `acked by ${o.life}` : `failed (${o.why})`}`);
  });
}

function opWrite(sim: ClusterSim): void {
  const vols = sim.liveVolumes().filter((v) => v.created && !v.snapshotting && v.inflight < sim.params.inflightMax);
  if (vols.length === 0) return;
  const v = sim.prng.pick(vols);
  const count = sim.prng.int(1, Math.min(IO_BLOCKS_MAX, v.sizeBlocks));
  const first = sim.prng.int(0, v.sizeBlocks - count);
  for (let b = first; b < first + count; b++) if (v.busy.has(b)) return;
  sim.note(`write ${v.name}[${first}+${count}]`);
  sim.spawn(`write ${v.name}`, () => clientWrite(sim, v, first, count));
}

function opRead(sim: ClusterSim): void {
  const vols = sim.liveVolumes().filter((v) => v.created);
  if (vols.length === 0) return;
  const v = sim.prng.pick(vols);
  const count = sim.prng.int(1, Math.min(IO_BLOCKS_MAX, v.sizeBlocks));
  const first = sim.prng.int(0, v.sizeBlocks - count);
  sim.note(`read ${v.name}[${first}+${count}]`);
  sim.spawn(`read ${v.name}`, () => clientRead(sim, v, first, count));
}

function opFlush(sim: ClusterSim): void {
  const vols = sim.liveVolumes();
  if (vols.length === 0) return;
  const v = sim.prng.pick(vols);
  sim.note(`flush via ${v.name}`);
  sim.spawn(`flush via ${v.name}`, () => clientFlush(sim, v));
}

function opSnapshot(sim: ClusterSim): void {
  const vols = sim.liveVolumes().filter((v) => v.created && v.inflight === 0 && !v.snapshotting);
  if (vols.length === 0) return;
  const v = sim.prng.pick(vols);
  sim.note(`snapshot ${v.name}`);
  sim.spawn(`snapshot ${v.name}`, () => clientSnapshot(sim, v));
}

function opCheckpoint(sim: ClusterSim): void {
  const vols = sim.liveVolumes();
  if (vols.length === 0) return;
  const v = sim.prng.pick(vols);
  const node = primaryNode(sim, v.name);
  if (node === null) return;
  const life = node.life;
  sim.note(`checkpoint ${v.name} on ${life}`);
  sim.spawn(`checkpoint ${v.name}`, async () => {
    try {
      await node.cluster!.checkpointNow(v.name);
      sim.stats.checkpoints++;
      sim.note(`  checkpoint ${v.name} on ${life}: done`);
    } catch (err) {
      if (isBug(err)) throw err;
      // A checkpoint refused (fenced, degraded, node died) is the cluster's business: noted only.
      sim.note(`  checkpoint ${v.name} on ${life}: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
}

async function opCrash(sim: ClusterSim): Promise<void> {
  const up = sim.upNodes();
  if (sim.downNodes().length >= sim.params.downMax || up.length === 0) return;
  const node = sim.prng.pick(up);
  const mode = sim.prng.pick(crashModes);
  sim.note(`crash ${node.life} (${mode})`);
  // Its volumes may lose what was acknowledged but not flushed.
  for (const v of sim.model.volumes.values()) {
    const rec = recordOf(sim, v.name);
    if (rec === null || rec.members.some((m) => m.node === node.name)) sim.model.crashed(v);
  }
  sim.stats.crashes++;
  await node.crash(mode);
}

async function opRestart(sim: ClusterSim): Promise<void> {
  const down = sim.downNodes();
  if (down.length === 0) return;
  const node = sim.prng.pick(down);
  sim.note(`restart ${node.name}`);
  sim.stats.restarts++;
  await startNode(sim, node);
}

/** Starts a node; a start refused because the control plane is out of reach leaves it down. */
export async function startNode(sim: ClusterSim, node: SimNode): Promise<boolean> {
  try {
    await node.start();
  } catch (err) {
    if (!(err instanceof KvUnavailable)) throw err;
    sim.note(`  ${node.name} did not start: ${err.message}`);
    return false;
  }
  sim.note(`  started ${node.life}`);
  return true;
}

function opPartition(sim: ClusterSim): void {
  const names = sim.nodes.map((n) => n.name);
  const a = names.filter(() => sim.prng.chance(0.5));
  if (a.length === 0 || a.length === names.length) return;
  const b = names.filter((n) => !a.includes(n));
  sim.note(`partition [${a.join(',')}] | [${b.join(',')}]`);
  sim.stats.partitions++;
  sim.net.partition(a, b);
}

/** The primary of a volume loses the other nodes (and half the time the control plane too): a stale primary. */
function opIsolatePrimary(sim: ClusterSim): void {
  const vols = sim.liveVolumes();
  if (vols.length === 0) return;
  const node = primaryNode(sim, sim.prng.pick(vols).name);
  if (node === null) return;
  const kvToo = sim.prng.chance(0.5);
  sim.note(`isolate primary ${node.life} from the other nodes${kvToo ? ' and the control plane' : ''}`);
  sim.stats.partitions++;
  sim.net.isolate(node.name, sim.nodes.map((n) => n.name));
  if (kvToo) {
    sim.stats.kvCuts++;
    sim.kv.setAvailable(node.name, false);
  }
}

/** etcd's leader moves: every lease is renewed (a node cut away past its lease may find it alive on return). */
function opKvLeaderChange(sim: ClusterSim): void {
  sim.note('control plane leader change: every lease renewed');
  sim.stats.kvCuts++;
  sim.kv.leaderChange(ELECTION_TIMEOUT_MS);
}

function opKvCut(sim: ClusterSim): void {
  const up = sim.upNodes();
  if (up.length === 0) return;
  const node = sim.prng.pick(up);
  sim.note(`cut ${node.name} from the control plane`);
  sim.stats.kvCuts++;
  sim.kv.setAvailable(node.name, false);
}
