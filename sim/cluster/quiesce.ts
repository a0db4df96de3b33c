// Quiesce and judge (cluster-design.md "Invariants the simulator checks"): heal everything, restart
// every node, let client calls finish and rebuilds converge; then every volume's members must all be
// in sync and byte-identical to the primary, same-named checkpoints (and snapshots) identical too
// (invariant 2), and the primary's blocks must be what the model allows (invariant 1: nothing
// acknowledged and flushed is lost). Invariant 3 (one writer per epoch) is checked from the epochs
// data requests carried.
import { nodeKey, type NodeRecord, type VolumeRecord } from '../../src/cluster/records.js';
import { BLOCK_SIZE_BYTES, type Engine } from '../../src/engine/index.js';
import { decodeBlock, describeBlock } from './block-content.js';
import { recordOf } from './client.js';
import { startNode } from './cluster-ops.js';
import type { ClusterSim } from './cluster-sim.js';
import type { VolumeModel } from './cluster-model.js';
import type { SimNode } from './sim-node.js';

/** Virtual time allowed for client calls to finish after the heal. */
const DRAIN_MS_MAX = 120_000;
/** Virtual time allowed for every volume to have all its members in sync again. */
const CONVERGE_MS_MAX = 300_000;
const CHECKPOINT_PREFIX = 'cairn-ckpt-';

export async function quiesceAndCheck(sim: ClusterSim, final: boolean): Promise<void> {
  sim.stats.quiesces++;
  sim.note(`quiesce${final ? ' (final)' : ''}: heal, restart every node, wait for calls and rebuilds`);
  sim.net.heal();
  for (const n of sim.nodes) sim.kv.setAvailable(n.name, true);
  for (const n of sim.downNodes()) {
    sim.stats.restarts++;
    if (!await startNode(sim, n)) sim.fail(`quiesce: ${n.name} does not start with the control plane reachable`);
  }
  try {
    await sim.clock.runUntil(() => sim.tasks.size === 0, DRAIN_MS_MAX, 'client calls');
  } catch {
    // Named in the failure: which calls still hang after everything healed.
    sim.fail(`quiesce: ${sim.tasks.size} client call(s) still unanswered ${DRAIN_MS_MAX} ms after the heal`);
  }
  sim.checkTasks();
  let why = '';
  const f2 = new Set<string>();
  const f5 = new Set<string>();
  try {
    await sim.clock.runUntil(() => (why = unconverged(sim, f2, f5)) === '', CONVERGE_MS_MAX, 'convergence');
    for (const what of f2) sim.finding(`F2: ${what}`);
    for (const what of f5) sim.finding(`F5: ${what}`);
  } catch {
    // The reason is the last thing unconverged() found.
    const what = `quiesce: no convergence within ${CONVERGE_MS_MAX} ms of virtual time: ${why}`;
    if (sim.requireConvergence) sim.fail(what);
    sim.finding(what);
  }
  await sim.clock.run(Promise.all(sim.upNodes().map((n) => n.cluster!.idle())), CONVERGE_MS_MAX, 'idle()');
  await sim.beforeCheck?.(sim);
  sim.checkWriters();
  for (const v of sim.model.volumes.values()) {
    const rec = recordOf(sim, v.name);
    if (rec === null) {
      if (v.created) sim.fail(`quiesce: the record of ${v.name} is gone though its create was acknowledged`);
      continue;
    }
    await checkVolume(sim, v, rec);
  }
  checkNoPlaintext(sim);
  if (final) {
    for (const n of sim.upNodes()) {
      const report = await sim.clock.run(n.pool!.check(), CONVERGE_MS_MAX, `check of ${n.name}`);
      if (!report.ok || report.problems.length > 0) sim.fail(`final check of ${n.name}'s pool: ${report.problems.slice(0, 4).map((p) => p.message).join('; ')}`);
    }
  }
  sim.note('  quiesce: invariants hold');
}

/**
 * No disk holds a block an encrypted volume was written with: every node (running or not) stores its
 * copies as ciphertext, whatever crashes, rebuilds and replacements happened (the stream carries
 * plaintext; each member encrypts what it stores).
 */
function checkNoPlaintext(sim: ClusterSim): void {
  const encrypted = new Map([...sim.model.volumes.values()].filter((v) => v.encrypted).map((v) => [v.tag, v.name]));
  if (encrypted.size === 0) return;
  for (const n of sim.nodes) {
    for (const b of n.device.storedBlocks()) {
      const d = decodeBlock(n.device.peek(b));
      if (d.kind === 'write' && encrypted.has(d.volTag)) sim.fail(`${n.name}'s disk holds plaintext of encrypted volume ${encrypted.get(d.volTag)} at block ${b} (${d.block} v${d.version})`);
    }
  }
}

/** '' when every record has all its members in sync on their nodes' current incarnations. */
function unconverged(sim: ClusterSim, f2: Set<string>, f5: Set<string>): string {
  f2.clear();
  f5.clear();
  if (sim.tasks.size > 0) return `${sim.tasks.size} calls in flight`;
  for (const v of sim.model.volumes.values()) {
    const rec = recordOf(sim, v.name);
    if (rec === null || knownF1(sim, v, rec)) continue;
    for (const m of rec.members) {
      const running = runningIncarnation(sim, m.node);
      if (m.state !== 'in-sync') return `${v.name}: ${m.node} is ${m.state} (record ${describeRecord(rec)})`;
      if (running === null) return `${v.name}: member ${m.node} has no node record`;
      if (running !== m.incarnation) {
        const what = `${v.name}: member ${m.node} in sync as incarnation ${m.incarnation}, the node runs ${running}`;
        // F2 (sim/cluster/FINDINGS.md), when tolerated: judged among the other members, reported after.
        if (sim.tolerate.has('F2')) { f2.add(what); continue; }
        return what;
      }
    }
    if (rec.members.length !== rec.replicas) {
      const what = `${v.name}: ${rec.members.length} members, ${rec.replicas} wanted`;
      // F5 (sim/cluster/FINDINGS.md), when tolerated: surplus members in sync are judged like the others.
      if (rec.members.length > rec.replicas && sim.tolerate.has('F5')) { f5.add(what); continue; }
      return what;
    }
  }
  return '';
}

/** F1 (sim/cluster/FINDINGS.md), when tolerated: the create was retried and its primary never got the volume. */
function knownF1(sim: ClusterSim, v: VolumeModel, rec: VolumeRecord): boolean {
  if (!v.createRetried || !sim.tolerate.has('F1')) return false;
  const primary = sim.nodeNamed(rec.primary);
  return primary !== null && primary.pool !== null && !primary.pool.listVolumes().some((x) => x.name === v.name);
}

function runningIncarnation(sim: ClusterSim, node: string): string | null {
  const entry = sim.kv.entry(nodeKey(node));
  return entry === null ? null : (JSON.parse(entry.value) as NodeRecord).incarnation;
}

function describeRecord(rec: VolumeRecord): string {
  return `e${rec.epoch} primary ${rec.primary} [${rec.members.map((m) => `${m.node}:${m.state}`).join(' ')}]`;
}

async function readAll(sim: ClusterSim, pool: Engine, name: string): Promise<Buffer> {
  const target = pool.resolve(name);
  return sim.clock.run(pool.read(target.id, 0, pool.targetSizeBytes(target.id)), 60_000, `read of ${name}`);
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let off = 0; off < Math.max(a.length, b.length); off += BLOCK_SIZE_BYTES) {
    if (!a.subarray(off, off + BLOCK_SIZE_BYTES).equals(b.subarray(off, off + BLOCK_SIZE_BYTES))) return off / BLOCK_SIZE_BYTES;
  }
  return -1;
}

async function checkVolume(sim: ClusterSim, v: VolumeModel, rec: VolumeRecord): Promise<void> {
  const primary = sim.nodeNamed(rec.primary);
  if (primary === null || primary.pool === null) sim.fail(`quiesce: ${v.name}'s primary ${rec.primary} is not running`);
  // In sync in the record and on the incarnation the node runs now (a restarted member's copy is
  // not owed until the primary rebuilds it: without convergence, that is a liveness finding only).
  const members = rec.members
    .filter((m) => m.state === 'in-sync' && m.incarnation === runningIncarnation(sim, m.node))
    .map((m) => sim.nodeNamed(m.node)!).filter((n) => n !== primary && n.up);
  const where = `${v.name} (${describeRecord(rec)})`;
  const hasLocal = (n: SimNode): boolean => n.pool!.listVolumes().some((x) => x.name === v.name);
  if (!hasLocal(primary)) {
    const what = `${where}: the primary holds no ${v.name}`;
    // F1 (sim/cluster/FINDINGS.md): a create whose materialize was lost leaves a record nothing repairs.
    if (v.createRetried && sim.tolerate.has('F1')) { sim.finding(`F1: ${what}`); return; }
    sim.fail(`invariant 2: ${what}`);
  }
  const data = await readAll(sim, primary.pool, v.name);
  // Invariant 1: each block is the floor or a later try.
  for (let block = 0; block < v.sizeBlocks; block++) {
    const got = data.subarray(block * BLOCK_SIZE_BYTES, (block + 1) * BLOCK_SIZE_BYTES);
    const wrong = sim.model.judge(v, block, got, sim.model.range(v, block));
    if (wrong !== null) sim.fail(`invariant 1: ${where} block ${block} on primary ${primary.life}: ${wrong}`);
  }
  for (const m of members) {
    if (!hasLocal(m)) sim.fail(`invariant 2: ${where}: in-sync member ${m.life} holds no ${v.name}`);
    const theirs = await readAll(sim, m.pool!, v.name);
    const diff = firstDifference(data, theirs);
    if (diff >= 0) {
      sim.fail(`invariant 2: ${where}: member ${m.life} differs from primary ${primary.life} at block ${diff}: ` +
        `primary ${describeBlock(data.subarray(diff * BLOCK_SIZE_BYTES, (diff + 1) * BLOCK_SIZE_BYTES))}, ` +
        `member ${describeBlock(theirs.subarray(diff * BLOCK_SIZE_BYTES, (diff + 1) * BLOCK_SIZE_BYTES))}`);
    }
  }
  await checkSnapshots(sim, v, primary, members, where);
}

async function checkSnapshots(sim: ClusterSim, v: VolumeModel, primary: SimNode, members: SimNode[], where: string): Promise<void> {
  const names = (n: SimNode): string[] => n.pool!.listSnapshots(v.name).map((s) => s.fullName);
  const onPrimary = new Set(names(primary));
  for (const s of v.snapshots) {
    if (!onPrimary.has(s.fullName)) {
      // F3 (sim/cluster/FINDINGS.md): a rebuild that did not carry user snapshots, then a failover.
      if (s.acked) {
        const what = `${where}: acknowledged snapshot ${s.fullName} missing on primary ${primary.life}`;
        if (sim.tolerate.has('F3')) sim.finding(`F3: ${what}`);
        else sim.fail(`invariant 2: ${what}`);
      }
      continue;
    }
    const data = await readAll(sim, primary.pool!, s.fullName);
    for (let block = 0; block < v.sizeBlocks; block++) {
      const wrong = sim.model.judge(v, block, data.subarray(block * BLOCK_SIZE_BYTES, (block + 1) * BLOCK_SIZE_BYTES), s.ranges[block]!);
      if (wrong !== null) sim.fail(`invariant 1: snapshot ${s.fullName} block ${block} on primary ${primary.life}: ${wrong}`);
    }
  }
  // Every snapshot and checkpoint the primary holds: identical on each member that holds it; user
  // snapshots must be on every in-sync member.
  for (const full of onPrimary) {
    const isCheckpoint = full.slice(full.indexOf('@') + 1).startsWith(CHECKPOINT_PREFIX);
    const data = await readAll(sim, primary.pool!, full);
    for (const m of members) {
      if (!names(m).includes(full)) {
        if (!isCheckpoint) {
          const what = `${where}: snapshot ${full} on the primary, not on in-sync member ${m.life}`;
          if (sim.tolerate.has('F3')) sim.finding(`F3: ${what}`);
          else sim.fail(`invariant 2: ${what}`);
        }
        continue;
      }
      const theirs = await readAll(sim, m.pool!, full);
      const diff = firstDifference(data, theirs);
      if (diff >= 0) {
        const at = (b: Buffer): string => describeBlock(b.subarray(diff * BLOCK_SIZE_BYTES, (diff + 1) * BLOCK_SIZE_BYTES));
        const what = `${where}: ${full} on member ${m.life} differs from the primary's at block ${diff}: primary ${at(data)}, member ${at(theirs)}`;
        // F4 (sim/cluster/FINDINGS.md), when tolerated: reported; the live volumes were compared already.
        if (sim.tolerate.has('F4')) { sim.finding(`F4: ${what}`); continue; }
        sim.fail(`invariant 2: ${what}`);
      }
    }
  }
}
