// Requests that must fail, and with which code (errors.ts): out of range, read-only snapshot,
// invalid size or name, taken name, unknown names, shrink without allowShrink. The model is unchanged.

import { BLOCK_SIZE_BYTES, type Engine } from '../src/engine/types.js';
import type { ErrorCode } from '../src/engine/errors.js';
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
  if (s !== null) {
    out.push({ what: `write to snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.write(s.id, 0, Buffer.alloc(B, 7)) });
    out.push({ what: `trim snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.trim(s.id, 0, B) });
    out.push({ what: `writeZeroes snapshot ${s.name}`, codes: ['read_only'], call: (e) => e.writeZeroes(s.id, 0, B) });
    out.push({ what: `snapshot name taken ${s.name}`, codes: ['name_taken'], call: (e) => e.createSnapshots([s.name]) });
  }
  return out;
}

export async function opBadRequest(sim: Simulator): Promise<void> {
  const c = sim.prng.pick(cases(sim));
  sim.note(`bad request: ${c.what}`);
  const o = await sim.attempt(async () => c.call(sim.e));
  sim.expectError(o, c.codes, c.what);
  sim.count('badRequest');
}
