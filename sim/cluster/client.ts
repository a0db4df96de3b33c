// The simulated client of each volume: it finds the primary from the volume's record, sends its I/O
// there and retries elsewhere on NotPrimary/EIO/a dead node, as an NBD or NVMe/TCP client with
// multipath would. Writes are numbered checksummed blocks (block-content.ts), at most one in flight
// per block, so the versions of a block are ordered by time and the model can judge any read.
import { volumeKey, type VolumeRecord } from '../../src/cluster/records.js';
import { BLOCK_SIZE_BYTES } from '../../src/engine/index.js';
import { blockContent } from './block-content.js';
import type { VolumeModel } from './cluster-model.js';
import type { ClusterSim } from './cluster-sim.js';
import type { SimNode } from './sim-node.js';

/** How long (virtual) a client keeps retrying one call before it gives up on it. */
export const CLIENT_DEADLINE_MS = 30_000;
/** A call on a live node unanswered this long is a hang (a finding; the client keeps waiting). */
export const CLIENT_HANG_MS = 60_000;
/** Pause between a failed attempt and the next. */
const RETRY_PAUSE_MS_MAX = 400;

export type CallOutcome<T> = { ok: true; value: T; node: SimNode; life: string; attempts: number } | { ok: false; why: string };

/** Codes of errors that mean a bug (or damage), not a refusal the client should retry through. */
const FATAL_CODES = new Set(['checksum_error', 'pool_corrupt', 'internal_error']);

export function recordOf(sim: ClusterSim, vol: string): VolumeRecord | null {
  const entry = sim.kv.entry(volumeKey(vol));
  return entry === null ? null : JSON.parse(entry.value) as VolumeRecord;
}

/** The node the record names primary, if it is running. */
export function primaryNode(sim: ClusterSim, vol: string): SimNode | null {
  const rec = recordOf(sim, vol);
  if (rec === null) return null;
  const node = sim.nodeNamed(rec.primary);
  return node !== null && node.up ? node : null;
}

/** An error the engine or cluster code should never throw: the simulation fails. */
export function isBug(err: unknown): boolean {
  if (!(err instanceof Error)) return true;
  if (['AssertionError', 'TypeError', 'RangeError', 'ReferenceError', 'SyntaxError'].includes(err.name)) return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (FATAL_CODES.has(code) || code.startsWith('meta_'));
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return `${err.name}${typeof code === 'string' ? `(${code})` : ''}: ${err.message}`;
}

/**
 * Runs `fn` on the volume's primary, retrying on refusals and dead nodes until CLIENT_DEADLINE_MS.
 * `pick` chooses another node than the primary (catalog calls may be sent anywhere).
 */
export async function callPrimary<T>(
  sim: ClusterSim, vol: string, what: string, fn: (node: SimNode) => Promise<T>, pick?: () => SimNode | null,
): Promise<CallOutcome<T>> {
  const deadlineMs = sim.clock.nowMs() + CLIENT_DEADLINE_MS;
  let why = 'no primary';
  let attempts = 0;
  while (sim.clock.nowMs() < deadlineMs) {
    const node = pick?.() ?? primaryNode(sim, vol);
    if (node === null || node.cluster === null) {
      await sim.clock.sleep(RETRY_PAUSE_MS_MAX);
      continue;
    }
    const life = node.life;
    attempts++;
    const attempt = fn(node);
    const result = await raceWithDeath(sim, node, attempt, `${what} on ${life}`);
    if (result.kind === 'ok') return { ok: true, value: result.value, node, life, attempts };
    if (result.kind === 'died') why = `${life} died`;
    else {
      if (isBug(result.error)) sim.fail(`${what} on ${life} threw what no caller should see: ${describeError(result.error)}`);
      why = describeError(result.error);
    }
    sim.detail(`    ${what} on ${life}: ${why}; retrying`);
    await sim.clock.sleep(1 + sim.prng.int(0, RETRY_PAUSE_MS_MAX));
  }
  return { ok: false, why };
}

type Raced<T> = { kind: 'ok'; value: T } | { kind: 'error'; error: unknown } | { kind: 'died' };

/** The call's outcome, or 'died' when its node crashes first. A call unanswered for CLIENT_HANG_MS is noted as a hang. */
async function raceWithDeath<T>(sim: ClusterSim, node: SimNode, attempt: Promise<T>, what: string): Promise<Raced<T>> {
  const settled = attempt.then((value): Raced<T> => ({ kind: 'ok', value }), (error: unknown): Raced<T> => ({ kind: 'error', error }));
  const died = node.died.then((): Raced<T> => ({ kind: 'died' }));
  let answered = false;
  const cancelHang = sim.clock.setTimer(CLIENT_HANG_MS, () => {
    if (!answered) sim.finding(`hang: ${what} unanswered after ${CLIENT_HANG_MS} ms of virtual time`);
  });
  const result = await Promise.race([settled, died]);
  answered = true;
  cancelHang();
  return result;
}

/** A write of blocks [first, first+count) of `v`, each a new version. Runs as a background task. */
export async function clientWrite(sim: ClusterSim, v: VolumeModel, first: number, count: number): Promise<void> {
  const blocks = Array.from({ length: count }, (_, i) => first + i);
  const versions = blocks.map((b) => sim.model.begin(v, b));
  const fua = sim.prng.chance(0.1);
  for (const b of blocks) v.busy.add(b);
  v.inflight++;
  const what = `write ${v.name}[${first}+${count}] v${versions.join(',')}${fua ? ' fua' : ''}`;
  try {
    const data = Buffer.concat(blocks.map((b, i) => blockContent(v.name, b, versions[i]!)));
    const o = await callPrimary(sim, v.name, what, async (node) => {
      const engine = node.cluster!.engine;
      await engine.write(engine.resolve(v.name).id, first * BLOCK_SIZE_BYTES, data, { fua });
    });
    if (o.ok) {
      blocks.forEach((b, i) => sim.model.ack(v, b, versions[i]!, o.life));
      // FUA: durable on every member when acknowledged (cluster-design.md "FUA write").
      if (fua) blocks.forEach((b, i) => { const m = v.blocks[b]!; m.flushFloor = Math.max(m.flushFloor, versions[i]!); });
      sim.stats.writesAcked++;
      sim.note(`  ${what}: acked by ${o.life}`);
    } else {
      blocks.forEach((b, i) => sim.model.fail(v, b, versions[i]!));
      sim.stats.writesFailed++;
      sim.note(`  ${what}: failed (${o.why})`);
    }
  } finally {
    for (const b of blocks) v.busy.delete(b);
    v.inflight--;
  }
}

/** A read of blocks [first, first+count) from the primary, judged against the model. */
export async function clientRead(sim: ClusterSim, v: VolumeModel, first: number, count: number): Promise<void> {
  const ranges = Array.from({ length: count }, (_, i) => sim.model.range(v, first + i));
  const what = `read ${v.name}[${first}+${count}]`;
  const o = await callPrimary(sim, v.name, what, async (node) => {
    const engine = node.cluster!.engine;
    return engine.read(engine.resolve(v.name).id, first * BLOCK_SIZE_BYTES, count * BLOCK_SIZE_BYTES);
  });
  if (!o.ok) { sim.note(`  ${what}: failed (${o.why})`); return; }
  sim.stats.reads++;
  for (let i = 0; i < count; i++) {
    const block = o.value.subarray(i * BLOCK_SIZE_BYTES, (i + 1) * BLOCK_SIZE_BYTES);
    // The floor as the read went out; the newest try as it came back (a read retried after a
    // failover may see writes issued after it).
    const range = { lo: ranges[i]!.lo, hi: sim.model.range(v, first + i).hi };
    const wrong = sim.model.judge(v, first + i, block, range);
    if (wrong === null) continue;
    // Older than the floor: a read served by a primary that lost its role but does not know yet
    // (the design has no read lease); judged for good at the next quiesce.
    if (wrong.includes('older than the floor')) {
      sim.stats.staleReads++;
      sim.finding(`stale read at step ${sim.stepIndex}: ${what} block ${first + i} from ${o.life}: ${wrong}`);
      continue;
    }
    sim.fail(`${what} block ${first + i} from ${o.life}: ${wrong}`);
  }
}

/** A flush on the primary of `v`: on success each volume this node (same life) is still primary of gets its floor raised. */
export async function clientFlush(sim: ClusterSim, v: VolumeModel): Promise<void> {
  const before = new Map([...sim.model.volumes.values()].map((m) => [m.name, sim.model.ackedNow(m)]));
  const o = await callPrimary(sim, v.name, `flush via ${v.name}`, async (node) => { await node.cluster!.engine.flush(); });
  if (!o.ok) { sim.note(`  flush via ${v.name}: failed (${o.why})`); return; }
  sim.stats.flushes++;
  const covered: string[] = [];
  for (const m of sim.model.volumes.values()) {
    const rec = recordOf(sim, m.name);
    if (rec === null || rec.primary !== o.node.name || o.node.life !== o.life) continue;
    sim.model.flushed(m, o.life, before.get(m.name) ?? new Map());
    covered.push(m.name);
  }
  sim.note(`  flush via ${v.name} on ${o.life}: covers ${covered.join(',') || 'nothing'}`);
}

/** A snapshot of `v` (no write of `v` in flight, none starts meanwhile): the model keeps each block's allowed range. */
export async function clientSnapshot(sim: ClusterSim, v: VolumeModel): Promise<void> {
  v.inflight++;
  v.snapshotting = true;
  const fullName = `${v.name}@s${++v.snapshotsTaken}`;
  try {
    const o = await callPrimary(sim, v.name, `snapshot ${fullName}`, async (node): Promise<'made' | 'existed'> => {
      try {
        await node.cluster!.engine.createSnapshots([fullName]);
        return 'made';
      } catch (err) {
        // A retry after a failed attempt finds the snapshot there: an idempotent client (CSI's
        // CreateSnapshot) takes that as success.
        if ((err as { code?: unknown }).code !== 'name_taken') throw err;
        return 'existed';
      }
    });
    // The ranges as the call returns: no write of `v` ran meanwhile, but a crash may have lowered
    // the floors (the snapshot may have been taken after it).
    const snap = sim.model.takeSnapshot(v, fullName);
    // F6 (sim/cluster/FINDINGS.md), when tolerated: "exists" after a failed attempt is not an acknowledgement.
    snap.acked = o.ok && !(o.value === 'existed' && sim.tolerate.has('F6'));
    if (o.ok) sim.stats.snapshots++;
    sim.note(`  snapshot ${fullName}: ${o.ok ? `acked by ${o.life}${o.value === 'existed' ? ' (existed)' : ''}` : `failed (${o.why})`}`);
  } finally {
    v.snapshotting = false;
    v.inflight--;
  }
}
