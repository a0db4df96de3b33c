// NBD_CMD_BLOCK_STATUS descriptors for one metadata context: base:allocation from engine.extents
// (a hole reads as zeroes: HOLE|ZERO), qemu:dirty-bitmap:since:SNAP from engine.changedSince
// (changed = 1, unchanged = 0). Adjacent equal statuses are merged (proto.md: SHOULD use different
// status values between consecutive descriptors).
import type { Engine } from '../engine/index.js';
import { NBD_STATE_HOLE, NBD_STATE_ZERO, NBD_STATE_DIRTY, BLOCK_STATUS_DESCRIPTORS_MAX } from './constants.js';
import type { MetaContext } from './meta-context.js';

export interface Descriptors { lengths: number[]; flags: number[] }

export async function blockStatusDescriptors(
  engine: Engine, targetId: number, context: MetaContext, offsetBytes: number, lengthBytes: number, onlyOne: boolean,
): Promise<Descriptors> {
  const out: Descriptors = { lengths: [], flags: [] };
  const limit = onlyOne ? 1 : BLOCK_STATUS_DESCRIPTORS_MAX;
  if (context.kind === 'allocation') {
    const extents = await engine.extents(targetId, offsetBytes, lengthBytes);
    let position = offsetBytes;
    for (const extent of extents) {
      position = addRange(out, position, offsetBytes + lengthBytes, extent.offsetBytes, extent.lengthBytes,
        extent.hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0, 0);
    }
    // Anything the engine did not describe is reported as data (status 0 is always safe, proto.md).
    if (position < offsetBytes + lengthBytes) append(out, offsetBytes + lengthBytes - position, 0);
  } else {
    const ranges = await engine.changedSince(targetId, context.sinceFullName, offsetBytes, lengthBytes);
    let position = offsetBytes;
    for (const range of ranges) {
      position = addRange(out, position, offsetBytes + lengthBytes, range.offsetBytes, range.lengthBytes, NBD_STATE_DIRTY, 0);
    }
    if (position < offsetBytes + lengthBytes) append(out, offsetBytes + lengthBytes - position, 0);
  }
  if (out.lengths.length > limit) {
    out.lengths.length = limit;
    out.flags.length = limit;
  }
  return out;
}

/**
 * Adds [start, start+length) clipped to [position, end) with `flags`, after a gap (if any) with
 * `gapFlags`. Returns the new position. Ranges must come sorted; overlaps are clipped away.
 */
function addRange(out: Descriptors, position: number, end: number, start: number, length: number, flags: number, gapFlags: number): number {
  const from = Math.max(start, position);
  const to = Math.min(start + length, end);
  if (to <= from) return position;
  if (from > position) append(out, from - position, gapFlags);
  append(out, to - from, flags);
  return to;
}

function append(out: Descriptors, lengthBytes: number, flags: number): void {
  const last = out.lengths.length - 1;
  if (last >= 0 && out.flags[last] === flags) out.lengths[last]! += lengthBytes;
  else { out.lengths.push(lengthBytes); out.flags.push(flags); }
}
