// The simulator's side of encryption: the key book (what a key-encryption-key holder knows: every
// wrapped form it ever made, and the data key each one unwraps to), unlocking every key after a
// reopen, and the comparison of the engine's key slots with the model's lineages, including that a
// deleted lineage's wrapped key and every data key are absent from the device.

import type { SimDevice } from '../src/engine/device/sim-device.js';
import type { Prng } from '../src/engine/device/prng.js';
import type { Engine, DataKey, EncryptionInfo } from '../src/engine/types.js';
import { DATA_KEY_BYTES, KEY_WRAPPED_BYTES_MAX } from '../src/engine/constants.js';
import type { PoolCore } from '../src/engine/pool.js';
import type { Model, ModelKey, ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';

/** Wrapped forms shorter than this are not searched for on the device (a few bytes match by chance). */
const searchableWrappedBytesMin = 16;

/**
 * The stand-in for the key-encryption keys: a wrapped form is random bytes the book maps to its data
 * key, so "unwrapping" is a lookup. It only grows (a crash does not make the holder forget).
 */
export class KeyBook {
  private readonly deks = new Map<string, Buffer>();

  /** A new lineage's data key (its two halves differ, as XTS needs) and a first wrapped form. */
  newKey(prng: Prng): DataKey {
    let dek = prng.fill(Buffer.alloc(DATA_KEY_BYTES));
    while (dek.subarray(0, DATA_KEY_BYTES / 2).equals(dek.subarray(DATA_KEY_BYTES / 2))) dek = prng.fill(Buffer.alloc(DATA_KEY_BYTES));
    return { dek, wrapped: this.newWrapped(prng, dek) };
  }

  /** A wrapped form of `dek` never made before: mostly 16..192 bytes, sometimes as short as one. */
  newWrapped(prng: Prng, dek: Buffer): Buffer {
    for (;;) {
      const lengthBytes = prng.chance(0.1) ? prng.int(1, searchableWrappedBytesMin - 1) : prng.int(searchableWrappedBytesMin, KEY_WRAPPED_BYTES_MAX);
      const wrapped = prng.fill(Buffer.alloc(lengthBytes));
      if (this.deks.has(wrapped.toString('hex'))) continue;
      this.remember(wrapped, dek);
      return wrapped;
    }
  }

  remember(wrapped: Buffer, dek: Buffer): void {
    const known = this.deks.get(wrapped.toString('hex'));
    if (known !== undefined && !known.equals(dek)) throw new Error('key book: one wrapped form for two data keys');
    this.deks.set(wrapped.toString('hex'), Buffer.from(dek));
  }

  dekOf(wrapped: Buffer): Buffer | undefined {
    return this.deks.get(wrapped.toString('hex'));
  }
}

/** Whether every key slot of the pool holds a live lineage's key (a new lineage may be refused: key_slots_full). */
export function keySlotsTaken(sim: Simulator): boolean {
  const keyring = (sim.e as unknown as { core: PoolCore }).core.keyring;
  return keyring !== null && sim.model.liveKeys().size >= keyring.slotCount;
}

function short(buf: Buffer): string {
  return `${buf.subarray(0, 6).toString('hex')}..(${buf.length}B)`;
}

/**
 * After an open every key is locked: each is unwrapped through the book and offered (now and then a
 * wrong data key first, which must be refused and leave the key locked).
 */
export async function unlockKeys(sim: Simulator, what: string): Promise<void> {
  const e = sim.e;
  for (const k of e.listKeys()) {
    if (!k.locked) sim.fail(`${what}: key slot ${k.keyId} is unlocked right after the pool opened`);
    if (k.wrapped.length === 0) sim.fail(`${what}: key slot ${k.keyId} is listed with no wrapped form`);
    const deks = k.wrapped.map((w) => sim.keyBook.dekOf(w));
    const dek = deks[0];
    if (dek === undefined || deks.some((d) => d === undefined || !d.equals(dek))) {
      sim.fail(`${what}: key slot ${k.keyId} holds wrapped forms [${k.wrapped.map(short).join(', ')}] that do not all unwrap to one data key the simulator made`);
    }
    if (sim.prng.chance(0.1)) {
      const other = [...sim.model.keys.values()].find((m) => !m.dek.equals(dek));
      const wrong = other !== undefined && sim.prng.chance(0.5) ? other.dek : sim.keyBook.newKey(sim.prng).dek;
      sim.expectError(await sim.attempt(() => e.unlockKey(k.keyId, wrong)), ['wrong_key'], `${what}: unlock slot ${k.keyId} with a wrong data key`);
      if (e.listKeys().find((x) => x.keyId === k.keyId)?.locked !== true) sim.fail(`${what}: a refused data key unlocked slot ${k.keyId}`);
    }
    sim.must(await sim.attempt(() => e.unlockKey(k.keyId, dek)), `${what}: unlock key slot ${k.keyId}`);
  }
  for (const k of sim.model.keys.values()) k.locked = false;
}

function encryptionOf(e: Engine, t: ModelTarget): EncryptionInfo | null {
  return t.kind === 'volume' ? e.getVolume(t.name).encryption : e.getSnapshot(t.name).encryption;
}

/** Fills in key slots the model does not know yet (-1, the fault sweep's planned models) from the engine. */
export function fillKeyIds(e: Engine, model: Model): void {
  for (const t of model.targets.values()) {
    const k = t.key === null ? undefined : model.keys.get(t.key);
    if (k === undefined || k.keyId !== -1) continue;
    const info = e.listVolumes().find((v) => v.name === t.name)?.encryption ?? e.listSnapshots().find((s) => s.fullName === t.name)?.encryption;
    if (info) k.keyId = info.keyId;
  }
}

/**
 * What differs between the engine's key slots and the model's lineages, or null: the slots are
 * exactly the live lineages' (a deleted lineage's slot is gone), each holds only wrapped forms the
 * model allows, is locked as the model says (`allLocked`: a pool just opened, no key offered),
 * lists the lineage's members, and every target names its lineage's slot (snapshots and clones share it).
 */
export function keyMismatch(e: Engine, model: Model, allLocked: boolean): string | null {
  const live = model.liveKeys();
  const byId = new Map<number, [string, ModelKey]>();
  for (const [label, k] of live) {
    if (k.keyId < 0) return `lineage ${label} has no known key slot`;
    const twin = byId.get(k.keyId);
    if (twin !== undefined) return `lineages ${twin[0]} and ${label} both have key slot ${k.keyId}`;
    byId.set(k.keyId, [label, k]);
  }
  const keys = e.listKeys();
  const got = keys.map((k) => k.keyId).sort((a, b) => a - b);
  const want = [...byId.keys()].sort((a, b) => a - b);
  if (got.join(',') !== want.join(',')) {
    return `listKeys has slots [${got.join(',')}], the model's live lineages have [${[...byId].map(([id, [label]]) => `${label}:${id}`).join(',')}]`;
  }
  for (const k of keys) {
    const [label, mk] = byId.get(k.keyId) as [string, ModelKey];
    if (k.wrapped.length === 0 || k.wrapped.length > 2) return `slot ${k.keyId} (${label}) lists ${k.wrapped.length} wrapped forms`;
    for (const w of k.wrapped) {
      if (!mk.wrapped.some((m) => m.equals(w))) return `slot ${k.keyId} (${label}) holds wrapped form ${short(w)}, allowed only [${mk.wrapped.map(short).join(', ')}]`;
    }
    if (k.locked !== (allLocked || mk.locked)) return `slot ${k.keyId} (${label}) is ${k.locked ? '' : 'un'}locked, the model says ${allLocked || mk.locked ? '' : 'un'}locked`;
    const members = [...model.targets.values()].filter((t) => t.key === label).map((t) => t.name);
    const missing = members.filter((n) => !k.members.includes(n));
    // A deleted volume's record stays while its snapshots do, and still names the key.
    const extra = k.members.filter((n) => !members.includes(n) && !(model.snapshots(n).length > 0 && !model.targets.has(n)));
    if (missing.length > 0 || extra.length > 0) return `slot ${k.keyId} (${label}) lists members [${k.members.join(',')}], the model [${members.sort().join(',')}]`;
  }
  for (const t of model.targets.values()) {
    const info = encryptionOf(e, t);
    const mk = t.key === null ? undefined : model.keys.get(t.key);
    if (mk === undefined ? info !== null : info?.keyId !== mk.keyId || info.locked !== (allLocked || mk.locked)) {
      return `${t.name} has encryption ${JSON.stringify(info)}, the model ${mk === undefined ? 'null' : `slot ${mk.keyId} ${allLocked || mk.locked ? '' : 'un'}locked (lineage ${t.key})`}`;
    }
  }
  return null;
}

export function verifyKeys(sim: Simulator, what: string): void {
  const mismatch = keyMismatch(sim.e, sim.model, false);
  if (mismatch !== null) sim.fail(`keys ${what}: ${mismatch}`);
}

/**
 * Crypto-shredding: no durable block of `device` holds a wrapped form of a deleted lineage's key, nor
 * (`withDataKeys`) either half of any data key. Then the model forgets the deleted lineages.
 */
export function checkShredded(sim: Simulator, device: SimDevice, what: string, withDataKeys = true): void {
  const dead = sim.model.deadKeys();
  if (dead.length === 0) return;
  const needles: [Buffer, string][] = [];
  for (const [label, k] of dead) {
    for (const w of k.wrapped) if (w.length >= searchableWrappedBytesMin) needles.push([w, `the wrapped key ${short(w)} of deleted lineage ${label} (slot ${k.keyId})`]);
  }
  for (const [label, k] of withDataKeys ? sim.model.keys : []) {
    const name = `half of the data key of lineage ${label} (slot ${k.keyId})`;
    needles.push([k.dek.subarray(0, DATA_KEY_BYTES / 2), name], [k.dek.subarray(DATA_KEY_BYTES / 2), name]);
  }
  for (const b of device.storedBlocks()) {
    const content = device.peekDurable(b);
    for (const [needle, name] of needles) if (content.includes(needle)) sim.fail(`${what}: ${name} is on the device (block ${b})`);
  }
  sim.model.dropDeadKeys();
}

/**
 * A re-wrap may have been cut (a mid-op crash): whichever model the reopened pool turned out to match,
 * a slot may hold the wrapped forms either allowed.
 */
export function mergeWrappedForms(into: Model, other: Model): void {
  for (const [label, k] of into.keys) {
    const o = other.keys.get(label);
    if (o === undefined) continue;
    for (const w of o.wrapped) if (!k.wrapped.some((x) => x.equals(w))) k.wrapped.push(w);
  }
}
