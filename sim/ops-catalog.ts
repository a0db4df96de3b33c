// Catalog operations of the simulator: volume create/delete/resize, snapshots (single and groups),
// clones (of snapshots and live volumes), revert and flatten. Each successful one is durable when
// it resolves (types.ts: "mutations of the catalog are durable when their promise resolves").

import { BLOCK_SIZE_BYTES, type SettingChange } from '../src/engine/types.js';
import { SETTING_BYTES_MAX } from '../src/engine/constants.js';
import type { DataKey, EncryptionInfo } from '../src/engine/types.js';
import type { ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import { keySlotsTaken } from './keys.js';

const B = BLOCK_SIZE_BYTES;

function randomSizeBytes(sim: Simulator): number {
  const maxBlocks = sim.params.volumeBytesMax / B;
  const blocks = sim.prng.chance(0.7) ? sim.prng.int(1, Math.min(maxBlocks, 1024)) : sim.prng.int(1, maxBlocks);
  return blocks * B;
}

export async function opCreateVolume(sim: Simulator): Promise<void> {
  // With no live volume left (snapshots of deleted volumes fill the bound; a group snapshot may pass
  // it), every later op would find nothing to act on and the seed would stall: make room by deleting
  // snapshots. Each pass deletes one, so the loop ends.
  while (sim.model.targets.size >= sim.params.targetsMax) {
    if (sim.model.volumes().length > 0 || sim.model.snapshots().length === 0) return;
    await opDeleteSnapshot(sim);
  }
  const name = sim.newName('v');
  const sizeBytes = randomSizeBytes(sim);
  const key = sim.prng.chance(sim.params.encryptedShare) ? sim.keyBook.newKey(sim.prng) : null;
  sim.note(`createVolume ${name} ${sizeBytes}${key ? ` encrypted (wrapped ${key.wrapped.length}B)` : ''}`);
  const o = await sim.attempt(() => sim.e.createVolume(name, sizeBytes, key ? { encryption: key } : {}));
  if (!o.ok) {
    sim.expectError(o, key && keySlotsTaken(sim) ? ['pool_full', 'key_slots_full'] : ['pool_full'], `createVolume ${name}`);
    if (sim.e.listVolumes().some((v) => v.name === name)) sim.fail(`createVolume ${name} failed with ${o.code} but the volume exists`);
    if (o.code === 'key_slots_full') return;
    await relieveSpace(sim);
    return;
  }
  const info = o.value;
  if (info.name !== name || info.sizeBytes !== sizeBytes || info.mappedBytes !== 0 || info.kind !== 'volume') {
    sim.fail(`createVolume ${name} returned ${JSON.stringify(info)}`);
  }
  sim.model.durablePoint();
  addCreatedVolume(sim, name, sizeBytes, info.id, key, info.encryption);
  await sim.verifyDurableCatalog(`createVolume ${name}`);
  sim.count('createVolume');
}

/** A volume the engine created, in the model: an encrypted one begins a lineage (labelled by its name). */
export function addCreatedVolume(sim: Simulator, name: string, sizeBytes: number, id: number, key: DataKey | null, info: EncryptionInfo | null): void {
  if (key === null) {
    if (info !== null) sim.fail(`createVolume ${name} without a key made it encrypted: ${JSON.stringify(info)}`);
    sim.model.addVolume(name, sizeBytes, id);
    return;
  }
  if (info === null || info.locked || !(info.keyId >= 1)) sim.fail(`createVolume ${name} with a key returned encryption ${JSON.stringify(info)}`);
  sim.model.keys.set(name, { keyId: info.keyId, dek: key.dek, wrapped: [key.wrapped], locked: false });
  sim.model.addVolume(name, sizeBytes, id, name);
  sim.count('createEncrypted');
}

export async function opDeleteVolume(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null) return;
  await deleteTarget(sim, t, 'deleteVolume', async () => {
    // A held id must not reach the deleted volume (types.ts Target: I/O goes by id).
    sim.expectError(await sim.attempt(() => sim.e.read(t.id, 0, B)), ['volume_not_found'], `read of deleted ${t.name} by id`);
  });
}

/** Deletes a volume or snapshot, expecting its `deleted` event and a durable catalog without it. */
async function deleteTarget(sim: Simulator, t: ModelTarget, op: 'deleteVolume' | 'deleteSnapshot', checkGone?: () => Promise<void>): Promise<void> {
  sim.note(`${op} ${t.name}`);
  sim.expectEvents([], `before ${op}`);
  sim.must(await sim.attempt(() => sim.e[op](t.name)), `${op} ${t.name}`);
  sim.expectEvents([{ type: 'deleted', id: t.id }], `${op} ${t.name}`);
  sim.model.durablePoint();
  sim.model.targets.delete(t.name);
  await checkGone?.();
  await sim.verifyDurableCatalog(`${op} ${t.name}`);
  sim.count(op);
}

export async function opResizeVolume(sim: Simulator): Promise<void> {
  const t = sim.pickVolume();
  if (t === null) return;
  const shrink = t.sizeBytes > B && sim.prng.chance(0.4);
  const sizeBytes = shrink
    ? sim.prng.int(1, t.sizeBytes / B - 1) * B
    : t.sizeBytes + sim.prng.int(1, Math.max(1, Math.min(t.sizeBytes, sim.params.volumeBytesMax) / B)) * B;
  const allowShrink = shrink && sim.prng.chance(0.7);
  sim.note(`resizeVolume ${t.name} ${t.sizeBytes} -> ${sizeBytes}${allowShrink ? ' allowShrink' : ''}`);
  sim.expectEvents([], 'before resizeVolume');
  const o = await sim.attempt(() => sim.e.resizeVolume(t.name, sizeBytes, { allowShrink }));
  sim.expectEvents(o.ok ? [{ type: 'resized', id: t.id, sizeBytes }] : [], `resizeVolume ${t.name}`);
  if (shrink && !allowShrink) {
    sim.expectError(o, ['shrink_refused'], `shrink ${t.name} without allowShrink`);
    return;
  }
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], `resize ${t.name}`);
    if (sim.e.getVolume(t.name).sizeBytes !== t.sizeBytes) sim.fail(`resize ${t.name} failed with pool_full but the size changed`);
    await relieveSpace(sim);
    return;
  }
  if (o.value.sizeBytes !== sizeBytes) sim.fail(`resize ${t.name} returned size ${o.value.sizeBytes}, asked ${sizeBytes}`);
  sim.model.durablePoint();
  if (shrink) sim.model.truncate(t, sizeBytes);
  else t.sizeBytes = sizeBytes;
  await sim.verifyDurableCatalog(`resizeVolume ${t.name}`);
  sim.count(shrink ? 'shrink' : 'grow');
}

export async function opSnapshot(sim: Simulator): Promise<void> {
  const volumes = sim.model.volumes();
  if (volumes.length === 0) return;
  const groupSize = volumes.length < 2 || sim.prng.chance(0.7) ? 1 : sim.prng.int(2, Math.min(4, volumes.length));
  const group = new Set<ModelTarget>();
  while (group.size < Math.min(groupSize, volumes.length)) group.add(sim.prng.pick(volumes));
  const members = [...group];
  // Sometimes reuse a snapshot name one member already has: the whole group must then be refused.
  const taken = sim.prng.chance(0.08) ? sim.model.snapshots(members[0]?.name).map((s) => s.name.split('@')[1] as string) : [];
  const snapName = taken.length > 0 ? sim.prng.pick(taken) : sim.newName('s');
  const fullNames = members.map((v) => `${v.name}@${snapName}`);
  sim.note(`createSnapshots [${fullNames.join(', ')}]`);
  const o = await sim.attempt(() => sim.e.createSnapshots(fullNames));
  const existing = (): string[] => fullNames.filter((n) => !sim.model.targets.has(n) && sim.e.listSnapshots().some((s) => s.fullName === n));
  if (taken.length > 0) {
    sim.expectError(o, ['name_taken'], `snapshot with taken name ${snapName}`);
    if (existing().length > 0) sim.fail(`refused group snapshot still created ${existing().join(',')}`);
    return;
  }
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], `createSnapshots ${fullNames.join(',')}`);
    if (existing().length > 0) sim.fail(`createSnapshots failed with pool_full but created ${existing().join(',')}`);
    await relieveSpace(sim);
    return;
  }
  if (o.value.length !== fullNames.length) sim.fail(`createSnapshots returned ${o.value.length} snapshots for ${fullNames.length}`);
  sim.model.durablePoint();
  o.value.forEach((info, i) => {
    const v = members[i] as ModelTarget;
    if (info.fullName !== fullNames[i] || info.volume !== v.name || info.sizeBytes !== v.sizeBytes) {
      sim.fail(`createSnapshots returned ${JSON.stringify(info)} for ${fullNames[i]}`);
    }
    sim.model.addCopy(v, info.fullName, 'snapshot', info.id);
  });
  await sim.verifyDurableCatalog(`createSnapshots ${fullNames.join(',')}`);
  sim.count(members.length > 1 ? 'snapshotGroup' : 'snapshot');
}

export async function opDeleteSnapshot(sim: Simulator): Promise<void> {
  const s = sim.pickSnapshot();
  if (s === null) return;
  await deleteTarget(sim, s, 'deleteSnapshot');
}

export async function opClone(sim: Simulator): Promise<void> {
  if (sim.model.targets.size >= sim.params.targetsMax) return;
  const source = sim.prng.chance(0.5) ? sim.pickSnapshot() ?? sim.pickVolume() : sim.pickVolume();
  if (source === null) return;
  const name = sim.newName('c');
  sim.note(`cloneVolume ${name} from ${source.name}`);
  const o = await sim.attempt(() => sim.e.cloneVolume(name, source.name));
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], `clone ${name} from ${source.name}`);
    if (sim.e.listVolumes().some((v) => v.name === name)) sim.fail(`clone ${name} failed with pool_full but exists`);
    await relieveSpace(sim);
    return;
  }
  const info = o.value;
  const wantOrigin = source.kind === 'snapshot'
    ? { volume: source.volume, snapshot: source.name.split('@')[1] }
    : { volume: source.name, snapshot: null };
  if (info.name !== name || info.sizeBytes !== source.sizeBytes || info.origin?.volume !== wantOrigin.volume ||
      (info.origin.snapshot !== wantOrigin.snapshot && info.origin.snapshot !== source.name)) {
    sim.fail(`clone ${name} from ${source.name} returned ${JSON.stringify(info)}`);
  }
  sim.model.durablePoint();
  sim.model.addCopy(source, name, 'volume', info.id);
  await sim.verifyDurableCatalog(`cloneVolume ${name}`);
  sim.count(source.kind === 'snapshot' ? 'cloneOfSnapshot' : 'cloneOfVolume');
}

export async function opRevert(sim: Simulator): Promise<void> {
  const v = sim.pickVolume((t) => sim.model.snapshots(t.name).length > 0);
  if (v === null) return;
  const s = sim.prng.pick(sim.model.snapshots(v.name));
  const snapName = s.name.split('@')[1] as string;
  sim.note(`revertVolume ${v.name} to ${s.name}`);
  sim.expectEvents([], 'before revertVolume');
  const o = await sim.attempt(() => sim.e.revertVolume(v.name, snapName));
  sim.expectEvents(o.ok ? [{ type: 'reverted', id: v.id }] : [], `revertVolume ${v.name}`);
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], `revert ${v.name} to ${s.name}`);
    await relieveSpace(sim);
    return;
  }
  if (o.value.sizeBytes !== s.sizeBytes) sim.fail(`revert ${v.name} to ${s.name}: size ${o.value.sizeBytes}, snapshot has ${s.sizeBytes}`);
  sim.model.durablePoint();
  v.blocks = new Map(s.blocks);
  v.sizeBytes = s.sizeBytes;
  await sim.verifyDurableCatalog(`revertVolume ${v.name}`);
  sim.count('revert');
}

export async function opFlatten(sim: Simulator): Promise<void> {
  const clones = sim.model.volumes().filter((t) => t.name.startsWith('c'));
  const v = clones.length > 0 && sim.prng.chance(0.8) ? sim.prng.pick(clones) : sim.pickVolume();
  if (v === null) return;
  sim.note(`flattenVolume ${v.name}`);
  const progress: number[] = [];
  const o = await sim.attempt(() => sim.e.flattenVolume(v.name, (f) => progress.push(f)));
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], `flatten ${v.name}`);
    // The chunks done before the pool filled were copied (the flatten resumes later from its cursor):
    // as after a crash mid-flatten, this volume's identities are uncertain until it finishes.
    v.flattening = true;
    await relieveSpace(sim);
    return;
  }
  for (let i = 0; i < progress.length; i++) {
    const f = progress[i] as number;
    if (!(f >= 0 && f <= 1) || (i > 0 && f < (progress[i - 1] as number))) sim.fail(`flatten ${v.name} progress not monotone in [0,1]: ${progress.join(',')}`);
  }
  if (o.value.flattenProgress !== null) sim.fail(`flatten ${v.name} finished with flattenProgress ${o.value.flattenProgress}`);
  sim.model.durablePoint();
  // Shared blocks were copied to new physical blocks: diffs across the flatten may report them.
  sim.model.markCopied(v);
  sim.count('flatten');
}

/** After pool_full: delete snapshots and volumes until few remain, then flush so frees complete. */
export async function relieveSpace(sim: Simulator): Promise<void> {
  sim.note('relieve space: delete targets');
  sim.relieved++;
  const keep = sim.prng.int(1, 2);
  for (const s of sim.model.snapshots()) {
    if (sim.prng.chance(0.3)) continue;
    sim.must(await sim.attempt(() => sim.e.deleteSnapshot(s.name)), `deleteSnapshot ${s.name} to free space`);
    sim.model.durablePoint();
    sim.model.targets.delete(s.name);
  }
  const volumes = sim.model.volumes();
  for (const v of volumes.slice(keep)) {
    sim.must(await sim.attempt(() => sim.e.deleteVolume(v.name)), `deleteVolume ${v.name} to free space`);
    sim.model.durablePoint();
    sim.model.targets.delete(v.name);
  }
  for (let i = 0; i < 3; i++) sim.must(await sim.attempt(() => sim.e.flush()), 'flush to free space');
  sim.model.durablePoint();
  sim.drainEvents();
}

/** Settings in a small key space (so changes replace and remove): one batch of 1-4, all or nothing. */
export async function opSettings(sim: Simulator): Promise<void> {
  const changes: SettingChange[] = [];
  const keys = new Set<string>();
  for (let n = sim.prng.int(1, 4); n > 0; n--) {
    const key = `${sim.prng.pick(['tenant', 'token', 'qos'])}/${sim.prng.int(0, 5)}`;
    if (keys.has(key)) continue;
    keys.add(key);
    const length = sim.prng.chance(0.2) ? SETTING_BYTES_MAX - key.length : sim.prng.int(0, 60);
    const value = sim.prng.chance(0.3) ? null : Buffer.from(Array.from({ length }, () => sim.prng.int(0, 255)));
    changes.push({ key, value });
  }
  sim.note(`putSettings ${changes.map((c) => `${c.key}${c.value === null ? '-' : `=${c.value.length}B`}`).join(' ')}`);
  const o = await sim.attempt(() => sim.e.putSettings(changes));
  if (!o.ok) {
    sim.expectError(o, ['pool_full'], 'putSettings');
    await relieveSpace(sim);
    return;
  }
  sim.model.durablePoint();
  for (const { key, value } of changes) {
    if (value === null) sim.model.settings.delete(key);
    else sim.model.settings.set(key, value.toString('latin1'));
  }
  await sim.verifyDurableCatalog(`putSettings ${[...keys].join(',')}`);
  sim.count('settings');
}
