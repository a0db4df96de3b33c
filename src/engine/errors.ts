// Typed engine errors. Every error a caller can cause is a CairnError with a stable `code`;
// the API maps codes to HTTP status + problem+json, NBD maps them to errno, the CLI prints one line.
// An AssertionError is an engine bug (an invariant broke), never the caller's fault.

export type ErrorCode =
  | 'volume_not_found'
  | 'snapshot_not_found'
  | 'name_taken'
  | 'invalid_name'
  | 'invalid_size'
  | 'invalid_argument'
  | 'out_of_range'
  | 'pool_full'
  | 'read_only'
  | 'checksum_error'
  | 'io_error'
  | 'pool_corrupt'
  | 'superblock_lost'
  | 'log_damaged'
  | MetaCorruptCode
  | 'pool_closed'
  | 'shrink_refused'
  | 'volume_locked'
  | 'wrong_key'
  | 'key_slots_full'
  | 'not_primary'
  | 'internal_error';

export class CairnError extends Error {
  readonly code: ErrorCode;
  /** errno a block protocol should report for this error (NBD, later NVMe/TCP status). */
  readonly errno: 'EIO' | 'EPERM' | 'EACCES' | 'ENOSPC' | 'EINVAL' | 'ENXIO' | 'ESHUTDOWN';
  constructor(code: ErrorCode, message: string, errno: CairnError['errno'] = 'EINVAL') {
    super(message);
    this.name = 'CairnError';
    this.code = code;
    this.errno = errno;
  }
}

export class VolumeNotFound extends CairnError {
  constructor(name: string) { super('volume_not_found', `volume not found: ${name}`, 'ENXIO'); }
}
export class SnapshotNotFound extends CairnError {
  constructor(name: string) { super('snapshot_not_found', `snapshot not found: ${name}`, 'ENXIO'); }
}
export class NameTaken extends CairnError {
  constructor(name: string, detail = '') { super('name_taken', `name already in use: ${name}${detail ? ` (${detail})` : ''}`); }
}
export class InvalidName extends CairnError {
  constructor(name: string, why: string) { super('invalid_name', `invalid name ${JSON.stringify(name)}: ${why}`); }
}
export class InvalidSize extends CairnError {
  constructor(message: string) { super('invalid_size', message); }
}
export class InvalidArgument extends CairnError {
  constructor(message: string) { super('invalid_argument', message); }
}
export class OutOfRange extends CairnError {
  constructor(message: string) { super('out_of_range', message); }
}
export class PoolFull extends CairnError {
  constructor(message = 'pool is full: no free blocks (free space by deleting volumes or snapshots)') {
    super('pool_full', message, 'ENOSPC');
  }
}
export class ReadOnly extends CairnError {
  constructor(name: string) { super('read_only', `${name} is a read-only snapshot`, 'EPERM'); }
}
export class ChecksumError extends CairnError {
  readonly physicalBlock: number;
  constructor(physicalBlock: number, what: string) {
    super('checksum_error', `checksum mismatch in ${what} at physical block ${physicalBlock}`, 'EIO');
    assert(Number.isSafeInteger(physicalBlock) && physicalBlock >= 0, 'a checksum error names a block');
    this.physicalBlock = physicalBlock;
  }
}
/**
 * Why a metadata block read from the pool was refused (dm-thin's block validators, thin-provisioning-
 * tools' typed node errors): each cause is its own code, so a log line, an HTTP problem or a `cairn
 * check` line says what was wrong, not only that something was.
 */
export const META_CORRUPT_CODES = [
  'meta_bad_magic', // not a metadata block at all (zeroed, data, or another format)
  'meta_bad_checksum', // the bytes changed after the block was written (bit flip, torn write)
  'meta_wrong_location', // a valid block, but written for another block number (misdirected or swapped)
  'meta_wrong_type', // a valid block of another type than the pointer to it expects
  'meta_bad_structure', // checksum-valid but breaks a rule of its type (keys out of order, child outside the pool, ...)
  'meta_too_deep', // a descent went past the depth any valid tree can have (a cycle, or a damaged branch)
] as const;
export type MetaCorruptCode = typeof META_CORRUPT_CODES[number];

/**
 * A metadata block that fails its validator after a read. Carries the block number and what was
 * expected and found; errno EIO (a block protocol reports the read as failed, never as data).
 */
export class MetaCorrupt extends CairnError {
  readonly physicalBlock: number;
  readonly expected: string;
  readonly found: string;
  constructor(code: MetaCorruptCode, physicalBlock: number, what: string, expected: string | number, found: string | number) {
    super(code, `${what} at block ${physicalBlock}: expected ${expected}, found ${found}`, 'EIO');
    // The block number is what a reader of the log or of `cairn check` looks for: always a real one.
    assert(Number.isSafeInteger(physicalBlock) && physicalBlock >= 0, 'a corruption error names a block');
    this.name = 'MetaCorrupt';
    this.physicalBlock = physicalBlock;
    this.expected = String(expected);
    this.found = String(found);
  }
}
export class MetaBadMagic extends MetaCorrupt {
  constructor(block: number, expected: number, found: number) {
    super('meta_bad_magic', block, 'bad magic in metadata block', `0x${expected.toString(16)}`, `0x${found.toString(16)}`);
  }
}
export class MetaBadChecksum extends MetaCorrupt {
  constructor(block: number, expected: number, found: number) {
    super('meta_bad_checksum', block, 'bad checksum of metadata block', `crc32c 0x${expected.toString(16)}`, `0x${found.toString(16)}`);
    assert(expected !== found, 'a checksum mismatch has two different checksums');
  }
}
export class MetaWrongLocation extends MetaCorrupt {
  constructor(block: number, found: number) {
    super('meta_wrong_location', block, 'metadata block written for another location', `block number ${block}`, `block number ${found}`);
    assert(found !== block, 'a block found written for another location');
  }
}
export class MetaWrongType extends MetaCorrupt {
  constructor(block: number, expected: string, found: number) {
    super('meta_wrong_type', block, 'metadata block of the wrong type', expected, `type ${found}`);
  }
}
export class MetaBadStructure extends MetaCorrupt {
  /** The rule of the block type that the block breaks. */
  readonly rule: string;
  constructor(block: number, rule: string, expected: string | number, found: string | number) {
    super('meta_bad_structure', block, `malformed metadata block (${rule})`, expected, found);
    assert(rule.length > 0, 'a structure error names the rule broken');
    this.rule = rule;
  }
}
export class MetaTooDeep extends MetaCorrupt {
  constructor(block: number, what: string, levelsMax: number) {
    super('meta_too_deep', block, `${what} descends too deep`, `at most ${levelsMax} levels`, `more at block ${block}`);
    assert(levelsMax > 0, 'a depth bound of some levels');
  }
}

export class IoError extends CairnError {
  constructor(message: string) { super('io_error', message, 'EIO'); }
}
/**
 * A device failure as the engine's typed error, saying what was being done: raw errors (EIO from the
 * file system) never leave the engine (the fault sweep found them escaping flatten and pool grow).
 */
export function asIoError(err: unknown, what: string): CairnError {
  return err instanceof CairnError ? err : new IoError(`${what}: ${err instanceof Error ? err.message : String(err)}`);
}
export class PoolCorrupt extends CairnError {
  constructor(message: string) { super('pool_corrupt', message, 'EIO'); }
}
/**
 * The newest acknowledged generation has no valid superblock copy left: opening the newest valid one
 * would silently lose it, so the pool opens only when told to rewind (PoolOptions.rewind).
 */
export class SuperblockLost extends CairnError {
  constructor(readonly lostGeneration: number, readonly newestValidGeneration: number, detail: string) {
    super('superblock_lost', `generation ${lostGeneration} of the pool is lost: ${detail}; the newest valid generation is ${newestValidGeneration}. ` +
      `Open with rewind (cairn serve --rewind) to roll the pool back to it, discarding what generation ${lostGeneration} committed`, 'EIO');
    assert(lostGeneration > newestValidGeneration, 'the lost generation is newer than the newest valid one');
  }
}
/**
 * A block of the intent log is damaged while a later flush's blocks are whole: the damaged flush was
 * complete (flushes are written one after another), so its acknowledged writes would be lost. The
 * pool opens only when told to rewind, replaying the log up to the damage.
 */
export class LogDamaged extends CairnError {
  /** `laterSeq`: the block of a later flush that proves the damaged one was synced; null when the damaged block proves it itself. */
  constructor(readonly damagedSeq: number, readonly laterSeq: number | null) {
    super('log_damaged', `intent log block ${damagedSeq} is damaged ` +
      (laterSeq === null ? 'by a flipped bit after it was written whole' : `but block ${laterSeq} of a later flush is whole`) +
      `: writes acknowledged by the damaged flush would be lost. ` +
      `Open with rewind (cairn serve --rewind) to replay the log up to the damage and discard the rest`, 'EIO');
    assert(laterSeq === null || laterSeq > damagedSeq, 'the later flush follows the damage');
  }

  /** A log block one bit away from a whole block of the log: written, then damaged (no tear does that). */
  static bitFlip(damagedSeq: number): LogDamaged {
    return new LogDamaged(damagedSeq, null);
  }
}
export class PoolClosed extends CairnError {
  constructor() { super('pool_closed', 'pool is closed', 'ESHUTDOWN'); }
}
export class ShrinkRefused extends CairnError {
  constructor(name: string) { super('shrink_refused', `refusing to shrink ${name}: pass allowShrink to discard data past the new end`); }
}

export class PoolShrinkRefused extends CairnError {
  constructor(currentBytes: number, askedBytes: number) {
    super('shrink_refused', `refusing to shrink the pool from ${currentBytes} to ${askedBytes} bytes: a pool only grows`);
    assert(askedBytes < currentBytes, 'a refused shrink asks for less');
  }
}

/**
 * I/O to an encrypted volume, snapshot or clone whose data key is not in memory: its tenant's
 * key-encryption key was unavailable when the pool opened (or was removed). Nothing is read or written.
 */
export class VolumeLocked extends CairnError {
  constructor(name: string) {
    super('volume_locked', `${name} is locked: the key-encryption key of its tenant is unavailable, so its data key could not be unwrapped (it unlocks when the key provider is back, or with cairn tenant unlock)`, 'EACCES');
  }
}
/** A data key offered for a lineage does not match its key-check value (a wrong KEK unwrapped something else). */
export class WrongKey extends CairnError {
  constructor(keyId: number) { super('wrong_key', `the data key offered for key slot ${keyId} does not match its key-check value`, 'EACCES'); }
}
/** Every key slot of the pool's keyring holds a lineage's key. */
export class KeySlotsFull extends CairnError {
  constructor(slots: number) { super('key_slots_full', `all ${slots} key slots of this pool hold a data key: delete an encrypted volume (with its snapshots and clones) first`, 'ENOSPC'); }
}

export class AssertionError extends Error {
  constructor(message: string) { super(`assertion failed: ${message}`); this.name = 'AssertionError'; }
}

/** Invariant check; cheap, always on. Never used for caller input (that gets a CairnError). */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/**
 * The failing branch of an assertion whose message names values: `if (!ok) fail(`block ${b}`)`.
 * Passed to assert(), a template literal is built on every call, also when the check holds; per-block
 * checks did that ~1M times a second on 1 MiB writes (string building and its garbage, in profiles).
 */
export function fail(message: string): never {
  throw new AssertionError(message);
}
