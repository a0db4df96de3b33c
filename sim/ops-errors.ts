// Requests that must fail, and with which code (errors.ts): out of range, read-only snapshot,
// invalid size or name, taken name, unknown names, shrink without allowShrink. The model is unchanged.

import { BLOCK_SIZE_BYTES, type Engine } from '../src/engine/types.js';
import type { ErrorCode } from '../src/engine/errors.js';
import { DATA_KEY_BYTES, KEY_ID_MAX, KEY_WRAPPED_BYTES_MAX } from '../src/engine/constants.js';
import type { Simulator } from './simulator.js';

const B = BLOCK_SIZE_BYTES;

interface BadCase { what: string; codes: ErrorCode[]; call: (e: Engine) => unknown }

function cases(sim: Simulator): BadCase[] {
  const out: BadCase[] = [];
  const v = sim.pickVolume();
  // Snapshots of live volumes (a deleted volume's snapshot name reports volume_not_found instead).
  const s = sim.pickSnapshot((t) => sim.model.targets.has(t.volume));
  const unknown = sim.newName('missing');
  out.push({ what: `resolve unknown ${unknown}`, codes: ['volume_not_found'], call: (e) => e.resolve(unknown) });
  out.push({ what: `getVolume unknown ${unknown}`, codes: ['volume_not_found'], call: (e) => e.getVolume(unknown) });
  out.push({ what: `createVolume size 1000`, codes: ['invalid_size'], call: (e) => e.createVolume(sim.newName('bad'), 1000) });
  out.push({ what: `createVolume size -4096`, codes: ['invalid_size'], call: (e) => e.createVolume(sim.newName('bad'), -B) });
  out.push({ what: `createVolume name with @`, codes: ['invalid_name'], call: (e) => e.createVolume('x@y', B) });
  out.push({ what: `createVolume empty name`, codes: ['invalid_name'], call: (e) => e.createVolume('', B) });
  out.push({ what: `deleteSnapshot unknown`, codes: ['snapshot_not_found', 'volume_not_found'], call: (e) => e.deleteSnapshot(`${unknown}@x`) });
  if (v !== null) {
    out.push({ what: `createVolume taken ${v.name}`, codes: ['name_taken'], call: (e) => e.createVolume(v.name, B) });
    out.push({ what: `clone onto taken ${v.name}`, codes: ['name_taken'], call: (e) => e.cloneVolume(v.name, v.name) });
    out.push({ what: `read past end of ${v.name}`, codes: ['out_of_range'], call: (e) => e.read(v.id, v.sizeBytes - B / 2, B) });
    out.push({ what: `write past end of ${v.name}`, codes: ['out_of_range'], call: (e) => e.write(v.id, v.sizeBytes, Buffer.alloc(B, 1)) });
    out.push({ what: `trim past end of ${v.name}`, codes: ['out_of_range'], call: (e) => e.trim(v.id, v.sizeBytes, B) });
    out.push({ what: `snapshot of unknown snapshot name in ${v.name}`, codes: ['snapshot_not_found'], call: (e) => e.getSnapshot(`${v.name}@${unknown}`) });
    out.push({ what: `revert ${v.name} to unknown snapshot`, codes: ['snapshot_not_found'], call: (e) => e.revertVolume(v.name, unknown) });
    if (v.sizeBytes > B) out.push({ what: `shrink ${v.name} without allowShrink`, codes: ['shrink_refused'], call: (e) => e.resizeVolume(v.name, B) });
  }
  if (sim.prng.chance(0.4)) keyCases(sim, out);
  if (s !== null) {
    out.push({ what: `write to snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.write(s.id, 0, Buffer.alloc(B, 7)) });
    out.push({ what: `trim snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.trim(s.id, 0, B) });
    out.push({ what: `writeZeroes snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.writeZeroes(s.id, 0, B) });
    out.push({ what: `snapshot name taken ${s.name}`, codes: ['name_taken'], call: (e) => e.createSnapshots([s.name]) });
  }
  return out;
}

/**
 * Bad keys and key slots. A refused key may still have made the pool's keyring first (the key is
 * checked when its slot is taken), so a full pool may answer pool_full instead.
 */
function keyCases(sim: Simulator, out: BadCase[]): void {
  const key = sim.keyBook.newKey(sim.prng);
  const half = key.dek.subarray(0, DATA_KEY_BYTES / 2);
  const badCreate = (what: string, dek: Buffer, wrapped: Buffer): void => {
    out.push({ what: `createVolume with ${what}`, codes: ['invalid_argument', 'pool_full'], call: (e) => e.createVolume(sim.newName('bad'), B, { encryption: { dek, wrapped } }) });
  };
  badCreate(`a ${DATA_KEY_BYTES / 2}-byte data key`, Buffer.from(half), key.wrapped);
  badCreate('a data key of two equal halves', Buffer.concat([half, half]), key.wrapped);
  badCreate(`a wrapped key of ${KEY_WRAPPED_BYTES_MAX + 1} bytes`, key.dek, Buffer.alloc(KEY_WRAPPED_BYTES_MAX + 1, 1));
  badCreate('an empty wrapped key', key.dek, Buffer.alloc(0));
  const unknownSlot = KEY_ID_MAX + 1;
  out.push({ what: `unlockKey of slot ${unknownSlot}`, codes: ['invalid_argument'], call: (e) => e.unlockKey(unknownSlot, key.dek) });
  out.push({ what: 'lockKey of slot 0', codes: ['invalid_argument'], call: (e) => e.lockKey(0) });
  out.push({ what: `rewrapKey of slot ${unknownSlot}`, codes: ['invalid_argument'], call: (e) => e.rewrapKey(unknownSlot, key.wrapped) });
  const live = [...sim.model.liveKeys().values()];
  if (live.length > 0) {
    const k = sim.prng.pick(live);
    out.push({ what: `rewrapKey of slot ${k.keyId} to ${KEY_WRAPPED_BYTES_MAX + 1} bytes`, codes: ['invalid_argument'], call: (e) => e.rewrapKey(k.keyId, Buffer.alloc(KEY_WRAPPED_BYTES_MAX + 1, 2)) });
    out.push({ what: `unlockKey of slot ${k.keyId} with a wrong data key`, codes: ['wrong_key'], call: (e) => e.unlockKey(k.keyId, key.dek) });
  }
  const enc = sim.pickTarget();
  if (enc !== null && enc.sizeBytes > B) {
    out.push(enc.key === null
      ? { what: `readSealed of plain ${enc.name}`, codes: ['invalid_argument'], call: (e) => e.readSealed(enc.id, 0, B) }
      : { what: `readSealed of ${enc.name} not in whole blocks`, codes: ['invalid_argument'], call: (e) => e.readSealed(enc.id, 512, B) });
  }
}

export async function opBadRequest(sim: Simulator): Promise<void> {
  const c = sim.prng.pick(cases(sim));
  sim.note(`bad request: ${c.what}`);
  const o = await sim.attempt(async () => c.call(sim.e));
  sim.expectError(o, c.codes, c.what);
  sim.count('badRequest');
}
