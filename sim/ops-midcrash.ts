// Power cut in the middle of an operation (SQLite's "crash at every write"): the device captures
// its crash image just before the k-th device write or flush of the op; the op runs to completion
// on the live device, then the simulator switches to the image. The reopened pool must show the
// catalog as it was before the op or as it is after it, nothing in between, and its data must fit.

import type { CrashMode } from '../src/engine/device/sim-device.js';
import type { Model } from './model.js';
import type { Simulator } from './simulator.js';
import { opFlush } from './ops-data.js';
import {
  opClone, opCreateVolume, opDeleteSnapshot, opDeleteVolume, opFlatten, opResizeVolume, opSnapshot,
} from './ops-catalog.js';
import { describeModelSettings, describeSettings, resolvePending, verifyTarget } from './verify.js';
import { mergeWrappedForms } from './keys.js';
import { opRewrap } from './ops-keys.js';

const victims = {
  snapshot: opSnapshot,
  clone: opClone,
  createVolume: opCreateVolume,
  deleteVolume: opDeleteVolume,
  deleteSnapshot: opDeleteSnapshot,
  resizeVolume: opResizeVolume,
  flatten: opFlatten,
  flush: opFlush,
  rewrap: opRewrap,
} as const;

/** Device writes/flushes after which the cut may land: a commit of a small op writes a few dozen. */
const cutOpsMax = 40;
const rewrapCallsMax = 4;

/** Names and sizes of the catalog as the engine lists it, and as a model has it. */
export function engineCatalog(sim: Simulator): string {
  const vols = sim.e.listVolumes().map((v) => `${v.name}:${v.sizeBytes}`);
  const snaps = sim.e.listSnapshots().map((s) => `${s.fullName}:${s.sizeBytes}`);
  return `${[...vols, ...snaps].sort().join(',')} settings:${describeSettings(sim.e.listSettings(''))}`;
}

export function modelCatalog(model: Model): string {
  return `${[...model.targets.values()].map((t) => `${t.name}:${t.sizeBytes}`).sort().join(',')} settings:${describeModelSettings(model)}`;
}

export async function opMidCrash(sim: Simulator): Promise<void> {
  const kind = sim.prng.pick(Object.keys(victims) as (keyof typeof victims)[]);
  // A re-wrap makes four device calls (two writes, two flushes): a cut aimed there, not past it.
  const cutAfter = sim.prng.int(0, kind === 'rewrap' ? rewrapCallsMax : cutOpsMax);
  const mode: CrashMode = sim.prng.pick(['clean', 'some', 'torn']);
  sim.note(`mid-op crash: ${kind}, power cut before device op ${cutAfter} (${mode})`);
  const before = sim.model.clone();
  const relievedBefore = sim.relieved;
  const device = sim.device;
  device.armCrash(cutAfter, mode);
  try {
    await victims[kind](sim);
  } catch (err) {
    device.takeArmedImage();
    throw err;
  }
  // Keep the image only if the cut landed inside this one op (and on the device the op began on).
  const image = sim.device === device ? device.takeArmedImage() : null;
  device.takeArmedImage();
  if (image === null || sim.relieved !== relievedBefore) {
    sim.note('  the op finished before the cut (or freed space): no crash');
    return;
  }
  const after = sim.model;
  sim.engine = null;
  sim.device = image;
  sim.note(`  crash image: ${JSON.stringify(image.lastCrash)}`);
  await sim.openChecked(`after a power cut inside ${kind}`, () => {
    const got = engineCatalog(sim);
    const pre = modelCatalog(before);
    const post = modelCatalog(after);
    if (got === post && got !== pre) {
      sim.note('  the op is there after the crash');
    } else if (got === pre) {
      // Not committed (or an op that does not change names and sizes): writes before it stay
      // uncertain, and a flatten may have copied some blocks already (diff may report them).
      sim.model = before;
      if (kind === 'flatten') for (const t of before.volumes()) markCopied(sim, t.name, after);
      sim.note('  the op is not there after the crash');
    } else {
      sim.fail(`after a power cut inside ${kind} the catalog is [${got}]; before the op it was [${pre}], after [${post}]`);
    }
    // A re-wrap leaves the catalog as it was: either wrapped form may be what the slot kept.
    mergeWrappedForms(sim.model, sim.model === before ? after : before);
  });
  await resolvePending(sim);
  for (const t of sim.model.targets.values()) await verifyTarget(sim, t, 'sample');
  sim.count(`midCrash-${kind}`);
}

/** Takes the flatten's identity changes (unknown where shared) from the post-op model. */
function markCopied(sim: Simulator, name: string, after: Model): void {
  const post = after.targets.get(name);
  const pre = sim.model.targets.get(name);
  if (post === undefined || pre === undefined) return;
  for (const [b, s] of post.blocks) {
    if (s.identity !== -1) continue;
    const cur = pre.blocks.get(b);
    if (cur !== undefined) pre.blocks.set(b, { ...cur, identity: -1 });
    // The crash candidates too: whichever of them the block turns out to hold, it may be a copy.
    const candidates = pre.pending.get(b);
    if (candidates !== undefined) pre.pending.set(b, candidates.map((c) => ({ ...c, identity: -1 })));
  }
}
