// Which superblock to open, from the four copies (primary and mirror of each parity). A commit writes
// its primary, flushes, then its mirror, flushes, and only then acknowledges: so a mirror of g proves
// the primary of g was durable, and a commit whose two copies are both gone was complete, not torn.
// A torn superblock belongs to a commit never acknowledged and is passed over; damage that costs an
// acknowledged generation is reported (SuperblockLost) and opened only when asked to rewind.
import { BLOCK_SIZE_BYTES, FORMAT_VERSION_UNMIRRORED, SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS } from './constants.js';
import type { Device } from './device/device.js';
import { IoError, assert } from './errors.js';
import { copyBlock, decodeSuperblock, type CopyRole, type DecodedCopy, type Superblock } from './superblock.js';

export interface SuperblockCopy {
  role: CopyRole;
  parity: 0 | 1;
  blockNumber: number;
  decoded: DecodedCopy;
}

/** A finding about one copy: `problem` when only damage explains it, otherwise a note. */
export interface CopyFinding { blockNumber: number; message: string; problem: boolean }

export interface SuperblockRecovery {
  /** The newest valid superblock (what opens, or what a rewind opens); null when no copy is valid. */
  sb: Superblock | null;
  copies: SuperblockCopy[];
  /** A generation that was complete (both copies written) and has no valid copy left, or null. */
  lostGeneration: number | null;
  findings: CopyFinding[];
  /** A copy of the newest generation is missing or damaged: the next commit must run (and rewrite it). */
  repairNeeded: boolean;
}

/** Reads the four copies; a copy that cannot be read stops recovery (it may hold the newest state). */
export async function readSuperblockCopies(device: Device): Promise<SuperblockCopy[]> {
  const copies: SuperblockCopy[] = [];
  for (const role of ['primary', 'mirror'] as const) {
    for (const parity of [0, 1] as const) {
      const blockNumber = role === 'primary' ? SUPERBLOCK_SLOTS[parity] : SUPERBLOCK_MIRROR_SLOTS[parity];
      const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
      try { await device.read(blockNumber, buf); } catch (err) {
        throw new IoError(`cannot read superblock ${role} copy at block ${blockNumber}: ${(err as Error).message}`);
      }
      copies.push({ role, parity, blockNumber, decoded: decodeSuperblock(buf, blockNumber) });
    }
  }
  assert(copies.length === 4, 'four superblock copies');
  return copies;
}

export async function recoverSuperblock(device: Device): Promise<SuperblockRecovery> {
  return classifyCopies(await readSuperblockCopies(device));
}

function generationOf(copy: SuperblockCopy): number | null {
  return copy.decoded.state === 'valid' ? copy.decoded.sb.generation : null;
}

function describe(copy: SuperblockCopy): string {
  const d = copy.decoded;
  const what = `superblock ${copy.role} copy at block ${copy.blockNumber}`;
  if (d.state === 'damaged') return `${what} is damaged (${d.cause})`;
  if (d.state === 'empty') return `${what} is missing (all zero)`;
  return `${what} holds generation ${d.sb.generation}`;
}

/** The reasoning over the four copies (pure, so tests can drive it with any combination). */
export function classifyCopies(copies: SuperblockCopy[]): SuperblockRecovery {
  assert(copies.length === 4, 'four superblock copies');
  const findings: CopyFinding[] = [];
  const valid = copies.filter((c) => c.decoded.state === 'valid');
  if (valid.length === 0) {
    for (const c of copies) if (c.decoded.state === 'damaged' || c.role === 'primary') findings.push({ blockNumber: c.blockNumber, message: describe(c), problem: true });
    return { sb: null, copies, lostGeneration: null, findings, repairNeeded: false };
  }
  // The newest valid copy; of two equal ones the primary (they hold the same state).
  let best = valid[0]!;
  for (const c of valid) if (generationOf(c)! > generationOf(best)!) best = c;
  const sb = (best.decoded as { sb: Superblock }).sb;
  const slot = (role: CopyRole, parity: number): SuperblockCopy => copies.find((c) => c.role === role && c.parity === parity)!;
  if (sb.formatVersion === FORMAT_VERSION_UNMIRRORED) return classifyUnmirrored(copies, sb, slot);
  const newest = sb.generation, p = newest % 2, q = 1 - p;
  let repairNeeded = false;

  // The newest generation's own copies.
  const primary = slot('primary', p), mirror = slot('mirror', p);
  assert(primary.blockNumber !== mirror.blockNumber && primary.parity === mirror.parity, 'a generation\'s two copies');
  if (generationOf(primary) !== newest) {
    repairNeeded = true;
    findings.push({ blockNumber: primary.blockNumber, problem: true,
      message: `${describe(primary)}; its mirror at block ${mirror.blockNumber} holds generation ${newest}, which opens (nothing lost; the next commit rewrites both)` });
  }
  if (generationOf(mirror) !== newest) {
    repairNeeded = true;
    // Empty: no mirrored commit of this parity before the newest, which stopped between its copies.
    const neverWritten = mirror.decoded.state === 'empty' && newest - 2 < sb.firstMirroredGeneration;
    const olderValid = mirror.decoded.state === 'valid';
    if (!neverWritten && !olderValid) {
      findings.push({ blockNumber: mirror.blockNumber, problem: true,
        message: `${describe(mirror)}: generation ${newest} has one copy left (block ${primary.blockNumber}) until the next commit` });
    }
  }

  // The other parity: generation newest - 1, or what a newer commit left half-written there.
  const otherPrimary = slot('primary', q), otherMirror = slot('mirror', q);
  assert(otherPrimary.parity !== primary.parity, 'the other parity');
  const pState = otherPrimary.decoded.state, mState = otherMirror.decoded.state;
  const nextGeneration = newest + 1;
  let lostGeneration: number | null = null;
  if (pState === 'valid' && mState === 'valid') {
    // Both superseded; nothing to say.
  } else if (mState === 'valid') {
    // The mirror still holds an older generation, so commit `nextGeneration` never reached its mirror:
    // it was never acknowledged. A damaged primary is its torn write (or damage to a superseded copy).
    findings.push({ blockNumber: otherPrimary.blockNumber, problem: pState === 'empty',
      message: pState === 'empty'
        ? `${describe(otherPrimary)} (a superseded copy; no crash leaves a primary empty)`
        : `${describe(otherPrimary)}: a torn write of generation ${nextGeneration}, never acknowledged, or damage to a superseded copy; generation ${newest} opens` });
  } else if (pState === 'valid') {
    // The primary never got `nextGeneration`; this mirror is of an older commit of this parity.
    const g = generationOf(otherPrimary)!;
    const neverWritten = mState === 'empty' && g - 2 < sb.firstMirroredGeneration;
    if (mState === 'damaged') {
      findings.push({ blockNumber: otherMirror.blockNumber, problem: false,
        message: `${describe(otherMirror)}: a torn mirror write of an earlier crash, or damage to a superseded copy` });
    } else if (!neverWritten) {
      findings.push({ blockNumber: otherMirror.blockNumber, problem: true, message: `${describe(otherMirror)} (a superseded copy)` });
    }
  } else if (newest === 1 && mState === 'empty') {
    // The pool's first generation is the newest: this parity was never committed, or its first
    // commit (generation 2) tore its primary.
    if (pState === 'damaged') {
      findings.push({ blockNumber: otherPrimary.blockNumber, problem: false,
        message: `${describe(otherPrimary)}: a torn write of generation 2, never acknowledged; generation 1 opens` });
    }
  } else {
    // Neither copy is valid. No crash does that: the mirror is written only once the primary is
    // durable. Generation `nextGeneration` may have been complete and acknowledged; it cannot be read.
    lostGeneration = nextGeneration;
    for (const c of [otherPrimary, otherMirror]) findings.push({ blockNumber: c.blockNumber, problem: true, message: describe(c) });
    findings.push({ blockNumber: otherPrimary.blockNumber, problem: true,
      message: `generation ${nextGeneration} is lost: neither copy (blocks ${otherPrimary.blockNumber}, ${otherMirror.blockNumber}) is valid; ` +
        `the newest valid generation is ${newest} (rewind to it to open the pool, discarding what generation ${nextGeneration} committed)` });
  }
  return { sb, copies, lostGeneration, findings, repairNeeded };
}

/**
 * Format 1: one copy per generation, so a damaged newest copy cannot be told from a torn write. The
 * newest valid one opens, as format 1 always did, but never silently: the damage is noted.
 */
function classifyUnmirrored(copies: SuperblockCopy[], sb: Superblock, slot: (role: CopyRole, parity: number) => SuperblockCopy): SuperblockRecovery {
  const findings: CopyFinding[] = [];
  const other = slot('primary', 1 - (sb.generation % 2));
  if (other.decoded.state === 'damaged') {
    findings.push({ blockNumber: other.blockNumber, problem: false,
      message: `${describe(other)}: a torn write of generation ${sb.generation + 1}, or damage that lost it (format 1 keeps one copy and cannot tell); generation ${sb.generation} opens` });
  }
  assert(copyBlock('primary', sb.generation) !== other.blockNumber, 'the two parities');
  return { sb, copies, lostGeneration: null, findings, repairNeeded: false };
}
