// The fault sweep's fixed history and the operations it sweeps. The history leaves a small pool with
// volumes, snapshots (of one volume and of a group), a clone, a deleted volume whose tree waits in
// the drop queue, data flushed and data not: every operation then starts from that same state. Each
// operation says how it changes the reference model when it completes (its "post" model).

import { DELETE_NODES_PER_STEP } from '../src/engine/constants.js';
import { openPool } from '../src/engine/pool.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { commitPlan, planWrite, planZero, type Plan } from './apply.js';
import type { Model } from './model.js';
import type { Simulator } from './simulator.js';
import { keySweepOps } from './sweep-ops-keys.js';

const B = BLOCK_SIZE_BYTES;
const MiB = 1024 * 1024;

/** Deterministic, distinct content for a tag (no randomness: every case starts from the same bytes). */
export function patternBytes(tag: number, lengthBytes: number): Buffer {
  return memo(`p${tag}:${lengthBytes}`, () => {
    const buf = Buffer.alloc(lengthBytes);
    for (let i = 0; i < lengthBytes; i++) buf[i] = (tag * 131 + i * 7 + (i >>> 12) * 13) & 0xff || 1;
    return buf;
  });
}

/** Every case writes the same bytes: made once (nothing writes into a payload; the model copies). */
const payloads = new Map<string, Buffer>();
function memo(key: string, make: () => Buffer): Buffer {
  let buf = payloads.get(key);
  if (buf === undefined) payloads.set(key, buf = make());
  return buf;
}

/** Data on even blocks, zeroes (holes) on odd ones: one request, as many one-block extents as data blocks. */
function everyOtherBlock(tag: number, blocks: number): Buffer {
  return memo(`e${tag}:${blocks}`, () => {
    const buf = Buffer.alloc(blocks * B);
    for (let b = 0; b < blocks; b += 2) patternBytes(tag * 1000 + b, B).copy(buf, b * B);
    return buf;
  });
}

/** Runs a data op and records its effect in the model (the setup's ops must succeed). */
async function write(sim: Simulator, name: string, offsetBytes: number, data: Buffer): Promise<void> {
  const t = sim.model.get(name);
  const plan = planWrite(sim, t, offsetBytes, data);
  sim.must(await sim.attempt(() => sim.e.write(t.id, offsetBytes, data)), `setup write ${name}`);
  commitPlan(sim, t, plan, false);
}

async function flush(sim: Simulator): Promise<void> {
  sim.must(await sim.attempt(() => sim.e.flush()), 'setup flush');
  sim.model.durablePoint();
}

async function snapshot(sim: Simulator, fullNames: string[]): Promise<void> {
  const infos = sim.must(await sim.attempt(() => sim.e.createSnapshots(fullNames)), `setup snapshot ${fullNames.join(',')}`);
  sim.model.durablePoint();
  infos.forEach((info) => sim.model.addCopy(sim.model.get(info.volume), info.fullName, 'snapshot', info.id));
}

/**
 * The history every case starts from: v1 (2 MiB), v2 (1 MiB), a group snapshot @s1 of both,
 * overwrites, a clone c1 of v1@s1 with its own writes, v1@s2, v3 written then deleted (its tree
 * queued for freeing); then (setupUnflushed) unflushed writes, a partial write and a trim on top.
 */
export async function setupHistory(sim: Simulator): Promise<void> {
  for (const [name, sizeBytes] of [['v1', 2 * MiB], ['v2', MiB], ['v3', 2 * MiB]] as const) {
    const info = sim.must(await sim.attempt(() => sim.e.createVolume(name, sizeBytes)), `setup create ${name}`);
    sim.model.durablePoint();
    sim.model.addVolume(name, sizeBytes, info.id);
  }
  await write(sim, 'v1', 0, patternBytes(1, 16 * B));
  await write(sim, 'v2', 0, patternBytes(2, 8 * B));
  // One-block extents on every other block: trees of a branch and several leaves (a leaf holds
  // ~160 such extents), so operations walk, shadow and free more than one node.
  await write(sim, 'v3', 0, everyOtherBlock(3, 512));
  await flush(sim);
  sim.must(await sim.attempt(() => sim.e.putSettings([{ key: 'tenant/a', value: Buffer.from('old') }, { key: 'tenant/b', value: Buffer.from('old') }])), 'setup settings');
  sim.model.settings.set('tenant/a', 'old');
  sim.model.settings.set('tenant/b', 'old');
  await snapshot(sim, ['v1@s1', 'v2@s1']);
  await write(sim, 'v1', 32 * B, everyOtherBlock(9, 480));
  await write(sim, 'v1', 4 * B, patternBytes(4, 4 * B));
  await write(sim, 'v1', 300 * B, patternBytes(5, 2 * B));
  await flush(sim);
  const clone = sim.must(await sim.attempt(() => sim.e.cloneVolume('c1', 'v1@s1')), 'setup clone');
  sim.model.durablePoint();
  sim.model.addCopy(sim.model.get('v1@s1'), 'c1', 'volume', clone.id);
  await write(sim, 'c1', 0, patternBytes(6, 2 * B));
  await snapshot(sim, ['v1@s2']);
  sim.must(await sim.attempt(() => sim.e.deleteVolume('v3')), 'setup delete v3');
  sim.model.durablePoint();
  sim.model.targets.delete('v3');
}

/** The end of the history, after setupHistory (and, for a cold start, a reopen): writes not flushed. */
export async function setupUnflushed(sim: Simulator): Promise<void> {
  // Not flushed: these are what a power cut may keep or lose, block by block.
  await write(sim, 'v1', 10 * B, patternBytes(7, 2 * B));
  await write(sim, 'v2', 3 * B + 100, patternBytes(8, 300));
  const v1 = sim.model.get('v1');
  const trim = planZero(sim, v1, 300 * B, B, 'trim');
  sim.must(await sim.attempt(() => sim.e.trim(v1.id, 300 * B, B)), 'setup trim');
  commitPlan(sim, v1, trim, false);
}

/** One swept operation: how to run it, and the model after it completes. */
export interface SweepOp {
  name: string;
  /**
   * 'data': a failed op may leave each of its blocks old or new; 'catalog': all or nothing (per step,
   * with `stages`); 'key': a failed re-wrap may leave the old or the new wrapped form.
   */
  kind: 'data' | 'catalog' | 'key';
  /** Calls the engine (through `sim.e`). */
  run(sim: Simulator): Promise<unknown>;
  /** Runs before the faults are armed and the model is taken as the state before the op. */
  prepare?(sim: Simulator): Promise<void>;
  /**
   * Changes `sim.model` (a copy of the model before the op) into the model after the op. `durable`:
   * the op completed and was acknowledged, so a FUA write is durable; otherwise it is only allowed.
   * Returns the data op's plan (its blocks may hold old or new after a failure), if any.
   */
  apply(sim: Simulator, durable: boolean): Plan | null;
  /**
   * An op of several durable steps: the models after each step but the last, from `pre` (a cut or a
   * failure may stop it after any of them).
   */
  stages?(sim: Simulator, pre: Model): Model[];
}

function dataOp(name: string, target: string, offsetBytes: number, lengthBytes: number, how: 'write' | 'fua' | 'zero' | 'trim'): SweepOp {
  const data = patternBytes(100 + name.length, lengthBytes);
  return {
    name,
    kind: 'data',
    run: (sim) => {
      const id = sim.model.get(target).id;
      if (how === 'zero') return sim.e.writeZeroes(id, offsetBytes, lengthBytes);
      if (how === 'trim') return sim.e.trim(id, offsetBytes, lengthBytes);
      return sim.e.write(id, offsetBytes, data, { fua: how === 'fua' });
    },
    apply: (sim, durable) => {
      const t = sim.model.get(target);
      const plan = how === 'write' || how === 'fua' ? planWrite(sim, t, offsetBytes, data) : planZero(sim, t, offsetBytes, lengthBytes, how);
      commitPlan(sim, t, plan, durable && how === 'fua');
      return plan;
    },
  };
}

/** A catalog op: durable when it resolves (types.ts), so everything before it is durable too. */
function catalogOp(name: string, run: (sim: Simulator) => Promise<unknown>, change: (model: Model) => void): SweepOp {
  return {
    name,
    kind: 'catalog',
    run,
    apply: (sim) => {
      sim.model.durablePoint();
      change(sim.model);
      return null;
    },
  };
}

/** A new target's id is known only once the engine made it: -1 here, filled in from the engine's lists. */
const idUnknown = -1;

export const sweepOps: SweepOp[] = [
  // Unaligned, over flushed and unflushed blocks: read-modify-write of its edges.
  dataOp('write', 'v1', 6 * B + 100, 5 * B, 'write'),
  dataOp('writeFua', 'c1', B, 3 * B, 'fua'),
  dataOp('writeZeroes', 'v1', 400 * B + 512, 3 * B, 'zero'),
  // Over ~20 one-block extents, in a part of the tree the unflushed writes did not load.
  dataOp('trim', 'v1', 100 * B, 40 * B, 'trim'),
  catalogOp('snapshot', (sim) => sim.e.createSnapshots(['v1@s3']), (m) => { m.addCopy(m.get('v1'), 'v1@s3', 'snapshot', idUnknown); }),
  catalogOp('groupSnapshot', (sim) => sim.e.createSnapshots(['v1@g', 'v2@g', 'c1@g']), (m) => {
    for (const v of ['v1', 'v2', 'c1']) m.addCopy(m.get(v), `${v}@g`, 'snapshot', idUnknown);
  }),
  catalogOp('cloneOfVolume', (sim) => sim.e.cloneVolume('c2', 'v1'), (m) => { m.addCopy(m.get('v1'), 'c2', 'volume', idUnknown); }),
  catalogOp('cloneOfSnapshot', (sim) => sim.e.cloneVolume('c3', 'v2@s1'), (m) => { m.addCopy(m.get('v2@s1'), 'c3', 'volume', idUnknown); }),
  catalogOp('deleteVolume', (sim) => sim.e.deleteVolume('v2'), (m) => { m.targets.delete('v2'); }),
  catalogOp('deleteSnapshot', (sim) => sim.e.deleteSnapshot('v1@s1'), (m) => { m.targets.delete('v1@s1'); }),
  catalogOp('revert', (sim) => sim.e.revertVolume('v1', 's1'), (m) => {
    const v = m.get('v1');
    const s = m.get('v1@s1');
    v.blocks = new Map(s.blocks);
    v.sizeBytes = s.sizeBytes;
  }),
  catalogOp('grow', (sim) => sim.e.resizeVolume('v2', 3 * MiB), (m) => { m.get('v2').sizeBytes = 3 * MiB; }),
  // Pool growth (not a volume's): doubling stays in the space map's radix levels; 2 GiB adds a level on top.
  catalogOp('poolGrow', (sim) => sim.e.growPool(sim.e.stats().sizeBytes * 2), () => undefined),
  catalogOp('poolGrowLevel', (sim) => sim.e.growPool(2048 * MiB), () => undefined),
  catalogOp('shrink', (sim) => sim.e.resizeVolume('v1', MiB, { allowShrink: true }), (m) => { m.truncate(m.get('v1'), MiB); }),
  // c1 is 2 MiB: two flatten steps of 256 blocks, each a commit; content does not change.
  catalogOp('flatten', (sim) => sim.e.flattenVolume('c1'), (m) => { m.markCopied(m.get('c1')); }),
  // One step of the background freeing of the deleted v3's tree, and its commit (pool.ts scheduleGc).
  catalogOp('freeStep', async (sim) => {
    const core = (sim.e as CairnEngine).core;
    await core.mutate(() => core.freeSomeNodes(DELETE_NODES_PER_STEP));
    await core.commit();
  }, () => undefined),
  catalogOp('flush', (sim) => sim.e.flush(), () => undefined),
  // A batch that adds, replaces and removes settings: all or nothing at every cut.
  catalogOp('settings', (sim) => sim.e.putSettings([{ key: 'tenant/a', value: Buffer.from('new') }, { key: 'tenant/b', value: null }, { key: 'token/c', value: Buffer.alloc(200, 7) }]), (m) => {
    m.settings.set('tenant/a', 'new');
    m.settings.delete('tenant/b');
    m.settings.set('token/c', Buffer.alloc(200, 7).toString('latin1'));
  }),
  // The commit that retires the intent log (what the interval, the dirty bound or a full log start).
  catalogOp('checkpoint', (sim) => sim.e.checkpoint(), () => undefined),
  {
    // The unflushed writes are flushed (to the intent log), then the engine is dropped without a
    // commit, as by a power cut that kept every write, and the pool is opened: the op is the replay
    // and the commit that makes it durable. A cut during it must lose none of the flushed writes.
    ...catalogOp('replay', async (sim) => {
      const core = (sim.e as CairnEngine).core;
      // Abandoned: nothing of it runs again, and a call to it fails as a stopped pool's would (io_error).
      core.poisoned = new Error('engine abandoned for the replay sweep');
      // The device itself: data the old pool held in memory is gone with it, as in a power cut.
      sim.engine = await openPool(core.device.inner, sim.poolOptions());
    }, () => undefined),
    prepare: async (sim) => { await flush(sim); },
  },
  ...keySweepOps,
];
