// Dispatch from an op kind (chosen by the seed, params.ts) to the function that runs and checks it.

import type { OpKind } from './params.js';
import type { Simulator } from './simulator.js';
import { opConcurrentWrites, opFlush, opRead, opWrite, opZero } from './ops-data.js';
import {
  opClone, opCreateVolume, opDeleteSnapshot, opDeleteVolume, opFlatten, opResizeVolume, opRevert, opSettings, opSnapshot,
} from './ops-catalog.js';
import { opCatalog, opChangedSince, opDiff, opExtents, opSpaceUsage } from './ops-query.js';
import { opBitFlip, opCrash, opEio, opReopen } from './ops-faults.js';
import { opBadRequest } from './ops-errors.js';
import { opMidCrash } from './ops-midcrash.js';
import { opConcurrentMixed } from './ops-concurrent.js';
import { opLockUnlock, opRewrap } from './ops-keys.js';

const table: Record<OpKind, (sim: Simulator) => Promise<void> | void> = {
  createVolume: opCreateVolume,
  deleteVolume: opDeleteVolume,
  resizeVolume: opResizeVolume,
  write: opWrite,
  read: opRead,
  trim: (sim) => opZero(sim, true),
  writeZeroes: (sim) => opZero(sim, false),
  flush: opFlush,
  snapshot: opSnapshot,
  deleteSnapshot: opDeleteSnapshot,
  clone: opClone,
  revert: opRevert,
  flatten: opFlatten,
  diff: opDiff,
  changedSince: opChangedSince,
  extents: opExtents,
  spaceUsage: opSpaceUsage,
  catalog: opCatalog,
  crash: opCrash,
  reopen: opReopen,
  bitFlip: opBitFlip,
  eio: opEio,
  concurrentWrites: opConcurrentWrites,
  badRequest: opBadRequest,
  midCrash: opMidCrash,
  concurrentMixed: opConcurrentMixed,
  settings: opSettings,
  rewrap: opRewrap,
  lockUnlock: (sim) => opLockUnlock(sim, false),
  lockRace: (sim) => opLockUnlock(sim, true),
};

export async function runOp(sim: Simulator, kind: OpKind): Promise<void> {
  // Keep at least one volume around so that I/O ops have a target.
  if (sim.model.volumes().length === 0 && kind !== 'createVolume') {
    await table.createVolume(sim);
    return;
  }
  await table[kind](sim);
}
