// Catalog operations and I/O in flight together on different targets: writes to one volume while
// another is snapshotted, a clone is made from a snapshot, a further snapshot is deleted, a volume
// is created and another grows, and untouched targets are read. Since no two of them touch the same
// target, the result must equal running them one after the other.

import { BLOCK_SIZE_BYTES, type VolumeInfo } from '../src/engine/types.js';
import { adoptPlan, commitPlan, planWrite, type Plan } from './apply.js';
import type { ModelTarget } from './model.js';
import { makeData, pickRange, type Range } from './ops-data.js';
import { addCreatedVolume, relieveSpace } from './ops-catalog.js';
import { keySlotsTaken } from './keys.js';
import type { Outcome, Simulator } from './simulator.js';
import { compareRead } from './verify.js';

const B = BLOCK_SIZE_BYTES;

function pickOther(sim: Simulator, all: ModelTarget[], taken: Set<ModelTarget>): ModelTarget | null {
  const free = all.filter((t) => !taken.has(t));
  if (free.length === 0) return null;
  const t = sim.prng.pick(free);
  taken.add(t);
  return t;
}

export async function opConcurrentMixed(sim: Simulator): Promise<void> {
  const volumes = sim.model.volumes();
  const taken = new Set<ModelTarget>();
  const writeTo = pickOther(sim, volumes, taken);
  if (writeTo === null || writeTo.sizeBytes === 0) return;
  const snapOf = pickOther(sim, volumes, taken);
  const growOf = pickOther(sim, volumes, taken);
  const snapshots = sim.model.snapshots();
  const cloneFrom = pickOther(sim, snapshots, taken);
  const dropSnap = pickOther(sim, snapshots.filter((s) => s !== cloneFrom), taken);
  const readOf = pickOther(sim, [...sim.model.targets.values()], taken);
  const newName = sim.newName('v');
  const newKey = sim.prng.chance(sim.params.encryptedShare) && !keySlotsTaken(sim) ? sim.keyBook.newKey(sim.prng) : null;
  const cloneName = sim.newName('c');
  const snapName = snapOf ? `${snapOf.name}@${sim.newName('s')}` : '';
  const growBytes = growOf ? growOf.sizeBytes + sim.prng.int(1, 64) * B : 0;
  const ranges: Range[] = [];
  for (let i = 0; i < 4; i++) {
    const r = pickRange(sim, writeTo, true);
    if (ranges.every((q) => r.offsetBytes + r.lengthBytes <= q.offsetBytes || q.offsetBytes + q.lengthBytes <= r.offsetBytes)) ranges.push(r);
  }
  const datas = ranges.map((r) => makeData(sim, r.lengthBytes));
  const plans: Plan[] = ranges.map((r, i) => planWrite(sim, writeTo, r.offsetBytes, datas[i] as Buffer));
  const readRange = readOf && readOf.sizeBytes > 0 ? pickRange(sim, readOf, false) : null;
  sim.note(`concurrent mix: ${ranges.length} writes to ${writeTo.name}; snapshot ${snapName || '-'}; clone ${cloneFrom ? `${cloneName} from ${cloneFrom.name}` : '-'}; ` +
    `delete ${dropSnap?.name ?? '-'}; create ${newName}${newKey ? ' encrypted' : ''}; grow ${growOf?.name ?? '-'}; read ${readOf?.name ?? '-'}`);
  const e = sim.e;
  const none = Promise.resolve<Outcome<unknown> | null>(null);
  const [writes, snap, clone, drop, created, grown, read] = await Promise.all([
    Promise.all(ranges.map((r, i) => sim.attempt(() => e.write(writeTo.id, r.offsetBytes, datas[i] as Buffer)))),
    snapOf ? sim.attempt(() => e.createSnapshots([snapName])) : none,
    cloneFrom ? sim.attempt(() => e.cloneVolume(cloneName, cloneFrom.name)) : none,
    dropSnap ? sim.attempt(() => e.deleteSnapshot(dropSnap.name)) : none,
    sim.attempt(() => e.createVolume(newName, 64 * B, newKey ? { encryption: newKey } : {})),
    growOf ? sim.attempt(() => e.resizeVolume(growOf.name, growBytes)) : none,
    readOf && readRange ? sim.attempt(() => e.read(readOf.id, readRange.offsetBytes, readRange.lengthBytes)) : none,
  ]);
  let poolFull = false;
  function okOrFull<T>(o: Outcome<T>, what: string): o is { ok: true; value: T } {
    if (o.ok) return true;
    sim.expectError(o, ['pool_full'], what);
    poolFull = true;
    return false;
  }
  for (let i = 0; i < ranges.length; i++) {
    const o = writes[i] as Outcome<void>;
    if (okOrFull(o, `concurrent write to ${writeTo.name}`)) commitPlan(sim, writeTo, plans[i] as Plan, false);
    else await adoptPlan(sim, writeTo, plans[i] as Plan, 'concurrent write that hit pool_full');
  }
  // Catalog ops that succeeded are durable (and make the writes acknowledged before them durable,
  // but which ones completed first is unknown, so the writes stay uncertain).
  if (snap && snapOf && okOrFull(snap, `snapshot ${snapName}`)) {
    const infos = snap.value as { id: number }[];
    sim.model.addCopy(snapOf, snapName, 'snapshot', infos[0]?.id ?? -1);
  }
  if (clone && cloneFrom && okOrFull(clone, `clone ${cloneName}`)) {
    sim.model.addCopy(cloneFrom, cloneName, 'volume', (clone.value as { id: number }).id);
  }
  if (drop && dropSnap && okOrFull(drop, `delete ${dropSnap.name}`)) sim.model.targets.delete(dropSnap.name);
  if (okOrFull(created, `create ${newName}`)) {
    const info = created.value as VolumeInfo;
    addCreatedVolume(sim, newName, 64 * B, info.id, newKey, info.encryption);
  }
  if (grown && growOf && okOrFull(grown, `grow ${growOf.name}`)) growOf.sizeBytes = growBytes;
  if (read && readOf && readRange) {
    const got = sim.must(read as Outcome<Buffer>, `concurrent read of ${readOf.name}`);
    compareRead(sim, readOf, readRange.offsetBytes, got, 'read during concurrent catalog ops');
  }
  sim.drainEvents();
  // The other targets are certain again (their catalog changes are durable).
  for (const t of sim.model.targets.values()) if (t !== writeTo) t.pending.clear();
  await sim.verifyDurableCatalog('concurrent catalog ops');
  sim.count('concurrentMixed');
  if (poolFull) await relieveSpace(sim);
}
