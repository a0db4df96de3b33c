// Key operations of the simulator: re-wrapping a lineage's key (KEK rotation), locking a lineage
// (its I/O refused with volume_locked, everything else untouched) and unlocking it again, a bit flip
// in one copy of a key slot (the other copy serves, open repairs it), and finding an encrypted data
// block on the device by its ciphertext so that the data bit flip can aim at it.

import { BLOCK_SIZE_BYTES } from '../src/engine/types.js';
import { KEY_SLOT_BYTES, KEY_SLOTS_PER_BLOCK } from '../src/engine/constants.js';
import { checkPool, type PoolCore } from '../src/engine/pool.js';
import { XtsCipher } from '../src/engine/xts.js';
import { adoptPlan, commitPlan, planWrite } from './apply.js';
import type { ModelKey, ModelTarget } from './model.js';
import type { Simulator } from './simulator.js';
import { compareRead, verifyCatalog, verifyTarget } from './verify.js';

const B = BLOCK_SIZE_BYTES;

function pickLineage(sim: Simulator): [string, ModelKey] | null {
  const live = [...sim.model.liveKeys()];
  return live.length === 0 ? null : sim.prng.pick(live);
}

function keyringOf(sim: Simulator): PoolCore['keyring'] {
  return (sim.e as unknown as { core: PoolCore }).core.keyring;
}

/** A new wrapped form of a lineage's key: durable when it resolves, and then the only one listed. */
export async function opRewrap(sim: Simulator): Promise<void> {
  const lineage = pickLineage(sim);
  if (lineage === null) return;
  const [label, k] = lineage;
  await rewrap(sim, label, k);
  await sim.verifyDurableCatalog(`rewrapKey slot ${k.keyId}`);
  sim.count('rewrap');
}

async function rewrap(sim: Simulator, label: string, k: ModelKey): Promise<void> {
  const wrapped = sim.keyBook.newWrapped(sim.prng, k.dek);
  sim.note(`rewrapKey slot ${k.keyId} (${label}${k.locked ? ', locked' : ''}) to a wrapped form of ${wrapped.length}B`);
  sim.must(await sim.attempt(() => sim.e.rewrapKey(k.keyId, wrapped)), `rewrapKey slot ${k.keyId}`);
  k.wrapped = [wrapped];
  const listed = sim.e.listKeys().find((x) => x.keyId === k.keyId)?.wrapped ?? [];
  if (listed.length !== 1 || !listed[0]?.equals(wrapped)) sim.fail(`after rewrapKey slot ${k.keyId} lists ${listed.length} wrapped forms, not just the new one`);
}

/**
 * Locks a lineage: every member's I/O fails with volume_locked (and changes nothing), other targets
 * keep working, a wrong data key is refused; unlocked with the key the book unwraps, it reads as before.
 * `race`: the lock lands while a write to a member is in flight (when a member is a volume).
 */
export async function opLockUnlock(sim: Simulator, race: boolean): Promise<void> {
  const lineage = pickLineage(sim);
  if (lineage === null) return;
  const [label, k] = lineage;
  const e = sim.e;
  const members = [...sim.model.targets.values()].filter((t) => t.key === label);
  const t = sim.prng.pick(members);
  const racing = race && t.kind === 'volume' && t.sizeBytes > 0;
  sim.note(`lockKey slot ${k.keyId} (${members.map((m) => m.name).join(',')})${racing ? ` racing a write to ${t.name}` : ''}`);
  if (racing) await lockRacingWrite(sim, t, k);
  else sim.must(await sim.attempt(() => e.lockKey(k.keyId)), `lockKey slot ${k.keyId}`);
  k.locked = true;
  verifyCatalog(sim, `with slot ${k.keyId} locked`);
  await expectLocked(sim, t);
  const other = sim.pickTarget();
  if (other !== null && other.key !== label && other.sizeBytes > 0) {
    const got = sim.must(await sim.attempt(() => e.read(other.id, 0, Math.min(other.sizeBytes, 4 * B))), `read ${other.name} while slot ${k.keyId} is locked`);
    compareRead(sim, other, 0, got, `read of another target while slot ${k.keyId} is locked`);
  }
  if (sim.prng.chance(0.3)) await rewrap(sim, label, k);
  const wrong = sim.keyBook.newKey(sim.prng).dek;
  sim.expectError(await sim.attempt(() => e.unlockKey(k.keyId, wrong)), ['wrong_key'], `unlock slot ${k.keyId} with a wrong data key`);
  const wrapped = e.listKeys().find((x) => x.keyId === k.keyId)?.wrapped[0];
  const dek = wrapped === undefined ? undefined : sim.keyBook.dekOf(wrapped);
  if (dek === undefined) sim.fail(`slot ${k.keyId} lists no wrapped form the simulator made`);
  sim.must(await sim.attempt(() => e.unlockKey(k.keyId, dek)), `unlock slot ${k.keyId}`);
  k.locked = false;
  verifyCatalog(sim, `with slot ${k.keyId} unlocked again`);
  await verifyTarget(sim, t, 'sample');
  sim.count(racing ? 'lockRace' : 'lockUnlock');
}

/**
 * The lock lands while a write to a member is in flight: the write either completes (it began with
 * the key) or fails with volume_locked (or pool_full on a full pool), and its blocks then hold the
 * old or the new content.
 */
async function lockRacingWrite(sim: Simulator, t: ModelTarget, k: ModelKey): Promise<void> {
  const lengthBlocks = Math.min(t.sizeBytes / B, sim.prng.int(1, 32));
  const data = sim.prng.fill(Buffer.alloc(lengthBlocks * B));
  const plan = planWrite(sim, t, 0, data);
  const write = sim.attempt(() => sim.e.write(t.id, 0, data));
  sim.must(await sim.attempt(() => sim.e.lockKey(k.keyId)), `lockKey slot ${k.keyId} during a write`);
  const o = await write;
  sim.note(`  the racing write ${o.ok ? 'completed' : `failed: ${o.code}`}`);
  if (o.ok) {
    commitPlan(sim, t, plan, false);
    return;
  }
  // A full pool refuses the write before the lock can (pool_full, nothing changed), as it would any write.
  sim.expectError(o, ['volume_locked', 'pool_full'], `write to ${t.name} racing lockKey`);
  sim.must(await sim.attempt(() => sim.e.unlockKey(k.keyId, k.dek)), `unlock slot ${k.keyId} to read back the refused write`);
  await adoptPlan(sim, t, plan, 'write refused by a racing lock');
  sim.must(await sim.attempt(() => sim.e.lockKey(k.keyId)), `lockKey slot ${k.keyId} again`);
}

async function expectLocked(sim: Simulator, t: ModelTarget): Promise<void> {
  const e = sim.e;
  if (t.sizeBytes === 0) return;
  const what = (op: string): string => `${op} of ${t.name} while its key is locked`;
  sim.expectError(await sim.attempt(() => e.read(t.id, 0, B)), ['volume_locked'], what('read'));
  sim.expectError(await sim.attempt(() => e.readSealed(t.id, 0, B)), ['volume_locked'], what('readSealed'));
  if (t.kind !== 'volume') return;
  sim.expectError(await sim.attempt(() => e.write(t.id, 0, Buffer.alloc(B, 0x5a))), ['volume_locked'], what('write'));
  sim.expectError(await sim.attempt(() => e.trim(t.id, 0, B)), ['volume_locked'], what('trim'));
  sim.expectError(await sim.attempt(() => e.writeZeroes(t.id, 0, B)), ['volume_locked'], what('writeZeroes'));
  sim.expectError(await sim.attempt(() => e.flattenVolume(t.name)), ['volume_locked'], what('flatten'));
}

/**
 * A bit flip in one copy of a live lineage's key slot, on a cold reopen: check names the damaged
 * copy (a note, not a problem: the other copy is whole), the pool opens, the key unlocks and its
 * members read as before; after a close the copy is whole again (open rewrote it).
 */
export async function flipKeySlot(sim: Simulator): Promise<void> {
  const keyring = keyringOf(sim);
  const lineage = pickLineage(sim);
  if (keyring === null || lineage === null) return;
  const [label, k] = lineage;
  const copy = sim.prng.int(0, 1);
  const slot = k.keyId - 1;
  const block = keyring.region.startBlock + copy * keyring.region.blocks + Math.floor(slot / KEY_SLOTS_PER_BLOCK);
  const bit = (slot % KEY_SLOTS_PER_BLOCK) * KEY_SLOT_BYTES * 8 + sim.prng.int(0, KEY_SLOT_BYTES * 8 - 1);
  const image = sim.device.crash('clean');
  image.injectBitFlip(block, bit);
  sim.note(`bit flip in key slot ${k.keyId} (${label}) copy ${copy}: block ${block} bit ${bit}, cold reopen`);
  sim.engine = null;
  sim.device = image;
  const named = `key slot ${k.keyId}, copy ${copy}`;
  const report = await checkPool(image);
  if (!report.notes.some((n) => n.includes(named))) sim.fail(`check does not note the damaged ${named}: notes ${JSON.stringify(report.notes)}`);
  await sim.openChecked(`after a bit flip in ${named}`);
  for (const t of sim.model.targets.values()) if (t.key === label) await verifyTarget(sim, t, 'sample');
  // Open rewrote the copy without a flush (keyring.ts repair): the next commit makes it durable.
  // Two setting changes are two commits, and leave the settings as they were.
  const probe = 'sim/keyring-probe';
  sim.must(await sim.attempt(() => sim.e.putSettings([{ key: probe, value: Buffer.from('x') }])), 'a commit after the repair');
  sim.must(await sim.attempt(() => sim.e.putSettings([{ key: probe, value: null }])), 'a second commit after the repair');
  sim.model.durablePoint();
  const repaired = await checkPool(sim.device.crash('clean'));
  const left = repaired.notes.filter((n) => n.includes(named));
  if (left.length > 0) sim.fail(`the damaged ${named} is still damaged on disk after open and a commit: ${left.join('; ')}`);
  sim.count('bitFlipKeySlot');
}

/** Where an encrypted target's block is on the device: the stored blocks that decrypt (tweak: the physical block) to `content`. */
export function findCiphertext(sim: Simulator, t: ModelTarget, content: Buffer): number[] {
  const k = t.key === null ? undefined : sim.model.keys.get(t.key);
  if (k === undefined) return [];
  const cipher = new XtsCipher(k.dek);
  const plain = Buffer.alloc(B);
  const found: number[] = [];
  for (const pb of sim.device.storedBlocks()) {
    cipher.decryptBlocks(sim.device.peek(pb), plain, pb);
    if (plain.equals(content)) found.push(pb);
  }
  cipher.destroy();
  return found;
}
