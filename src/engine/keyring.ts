// The keyring: the wrapped data key of every encrypted lineage (a volume with its snapshots and
// clones), in a region of key slots that is written in place, never copy-on-write. That is what makes
// crypto-shredding possible: the catalog only names a slot number, so no old copy of a catalog or tree
// block ever held key material, and zeroing a slot destroys the only copies (two: one per half of the
// region, so one damaged copy loses nothing). ARCHITECTURE.md, "Encryption", has the layout.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import {
  BLOCK_SIZE_BYTES, DATA_KEY_BYTES, DEVICE_IO_BLOCKS_MAX, KEY_CHECK_BYTES, KEY_SLOT_BYTES, KEY_SLOT_WRAPPED_OFFSET, KEY_SLOTS_PER_BLOCK, KEY_WRAPPED_BYTES_MAX,
} from './constants.js';
import type { Device } from './device/device.js';
import { getU64, setU64, viewOf } from './format.js';
import { InvalidArgument, KeySlotsFull, VolumeLocked, WrongKey, asIoError, assert, fail } from './errors.js';
import { XtsCipher } from './xts.js';

/** Every key slot in use starts with this magic ("CKS1"). */
const KEY_SLOT_MAGIC = 0x31534b43;
const OFFSET_MAGIC = 0, OFFSET_CRC = 4, OFFSET_KEY_ID = 8, OFFSET_COPY = 12, OFFSET_WRAPPED_BYTES = 14;
const OFFSET_POOL_UUID = 16, OFFSET_CHECK = 32, OFFSET_VERSION = 48;
assert(OFFSET_VERSION + 8 <= KEY_SLOT_WRAPPED_OFFSET && OFFSET_CHECK + KEY_CHECK_BYTES <= OFFSET_VERSION, 'key slot fields do not overlap');

/** One copy of a slot: the key wrapped by a key-encryption key (opaque to the engine) and its check value. */
export interface SlotCopy { wrapped: Buffer; check: Buffer; version: number }
/** Copies 0 and 1 of a slot (null: empty or damaged). Both differ only while a re-wrap is under way. */
type SlotCopies = [SlotCopy | null, SlotCopy | null];

/** The key-check value of a data key: a truncated HMAC, so it reveals nothing of the key. */
export function keyCheckValue(dek: Buffer): Buffer {
  return createHmac('sha256', dek).update('cairn data key check v1').digest().subarray(0, KEY_CHECK_BYTES);
}

function encodeSlot(buf: Buffer, off: number, keyId: number, copy: 0 | 1, slot: SlotCopy, poolUuid: Buffer): void {
  assert(slot.wrapped.length > 0 && slot.wrapped.length <= KEY_WRAPPED_BYTES_MAX && slot.check.length === KEY_CHECK_BYTES, 'a slot holds a wrapped key and its check value');
  buf.fill(0, off, off + KEY_SLOT_BYTES);
  buf.writeUInt32LE(KEY_SLOT_MAGIC, off + OFFSET_MAGIC);
  buf.writeUInt32LE(keyId, off + OFFSET_KEY_ID);
  buf.writeUInt8(copy, off + OFFSET_COPY);
  buf.writeUInt16LE(slot.wrapped.length, off + OFFSET_WRAPPED_BYTES);
  poolUuid.copy(buf, off + OFFSET_POOL_UUID);
  slot.check.copy(buf, off + OFFSET_CHECK);
  setU64(viewOf(buf), off + OFFSET_VERSION, slot.version);
  slot.wrapped.copy(buf, off + KEY_SLOT_WRAPPED_OFFSET);
  buf.writeUInt32LE(crc32c(buf.subarray(off + OFFSET_KEY_ID, off + KEY_SLOT_BYTES)), off + OFFSET_CRC);
}

/** What one slot copy on disk holds: empty (all zero), a valid copy, or damage (with why). */
export type DecodedSlot = { state: 'empty' } | { state: 'valid'; slot: SlotCopy } | { state: 'damaged'; cause: string };

export function decodeSlot(buf: Buffer, off: number, keyId: number, copy: 0 | 1, poolUuid: Buffer): DecodedSlot {
  const bytes = buf.subarray(off, off + KEY_SLOT_BYTES);
  assert(bytes.length === KEY_SLOT_BYTES, 'a slot lies inside its block');
  if (bytes.every((b) => b === 0)) return { state: 'empty' };
  if (bytes.readUInt32LE(OFFSET_MAGIC) !== KEY_SLOT_MAGIC) return { state: 'damaged', cause: 'bad magic' };
  if (bytes.readUInt32LE(OFFSET_CRC) !== crc32c(bytes.subarray(OFFSET_KEY_ID))) return { state: 'damaged', cause: 'bad checksum' };
  if (bytes.readUInt32LE(OFFSET_KEY_ID) !== keyId || bytes.readUInt8(OFFSET_COPY) !== copy) return { state: 'damaged', cause: 'written for another slot' };
  if (!bytes.subarray(OFFSET_POOL_UUID, OFFSET_POOL_UUID + 16).equals(poolUuid)) return { state: 'damaged', cause: 'written by another pool' };
  const wrappedBytes = bytes.readUInt16LE(OFFSET_WRAPPED_BYTES);
  if (wrappedBytes < 1 || wrappedBytes > KEY_WRAPPED_BYTES_MAX) return { state: 'damaged', cause: `wrapped key of ${wrappedBytes} bytes` };
  return {
    state: 'valid',
    slot: {
      wrapped: Buffer.from(bytes.subarray(KEY_SLOT_WRAPPED_OFFSET, KEY_SLOT_WRAPPED_OFFSET + wrappedBytes)),
      check: Buffer.from(bytes.subarray(OFFSET_CHECK, OFFSET_CHECK + KEY_CHECK_BYTES)),
      version: getU64(viewOf(bytes), OFFSET_VERSION),
    },
  };
}

export function uuidBytes(poolUuid: string): Buffer {
  const hex = poolUuid.replace(/-/g, '');
  assert(/^[0-9a-f]{32}$/.test(hex), 'a pool uuid');
  return Buffer.from(hex, 'hex');
}

/** The keyring region of a pool: copy 0 in [start, start + blocks), copy 1 right after it. */
export interface KeyringRegion { startBlock: number; blocks: number }

/** What load found: slots in use, and per copy what was damaged (reported and repaired by the pool). */
export interface KeyringFindings { damaged: { keyId: number; copy: 0 | 1; cause: string }[] }

export class Keyring {
  /** Index keyId - 1. */
  private readonly slots: SlotCopies[];
  /** Unwrapped data keys of unlocked lineages, by slot. */
  private readonly ciphers = new Map<number, XtsCipher>();
  private readonly uuid: Buffer;
  /** Slot writes run one at a time, each building its blocks from the state current when it runs. */
  private chain: Promise<void> = Promise.resolve();

  private constructor(private readonly device: Device, readonly region: KeyringRegion, poolUuid: string) {
    assert(region.blocks >= 1 && region.startBlock >= 2, 'a keyring region past the superblocks');
    this.uuid = uuidBytes(poolUuid);
    this.slots = Array.from({ length: region.blocks * KEY_SLOTS_PER_BLOCK }, (): SlotCopies => [null, null]);
  }

  get slotCount(): number {
    assert(this.slots.length === this.region.blocks * KEY_SLOTS_PER_BLOCK, 'a slot per 256 bytes of a copy');
    return this.slots.length;
  }

  /** A keyring over a region that was just zeroed. */
  static empty(device: Device, region: KeyringRegion, poolUuid: string): Keyring { return new Keyring(device, region, poolUuid); }

  /** Reads both copies of the region; a damaged copy of a slot is taken from the other one. */
  static async load(device: Device, region: KeyringRegion, poolUuid: string): Promise<{ keyring: Keyring; findings: KeyringFindings }> {
    const ring = new Keyring(device, region, poolUuid);
    const findings: KeyringFindings = { damaged: [] };
    for (const copy of [0, 1] as const) {
      const buf = Buffer.alloc(region.blocks * BLOCK_SIZE_BYTES);
      await device.read(region.startBlock + copy * region.blocks, buf).catch((err: unknown) => { throw asIoError(err, `reading copy ${copy} of the keyring failed`); });
      for (let i = 0; i < ring.slots.length; i++) {
        const d = decodeSlot(buf, i * KEY_SLOT_BYTES, i + 1, copy, ring.uuid);
        if (d.state === 'valid') ring.slots[i]![copy] = d.slot;
        else if (d.state === 'damaged') findings.damaged.push({ keyId: i + 1, copy, cause: d.cause });
      }
    }
    return { keyring: ring, findings };
  }

  /** Slots holding a key (at least one valid copy). */
  usedKeyIds(): number[] {
    const out: number[] = [];
    this.slots.forEach((s, i) => { if (s[0] !== null || s[1] !== null) out.push(i + 1); });
    return out;
  }

  /** The distinct wrapped forms of a slot's key (two while a re-wrap is under way), newest version first. */
  copiesOf(keyId: number): SlotCopy[] {
    const [a, b] = this.slotAt(keyId);
    const copies = [a, b].filter((c): c is SlotCopy => c !== null).sort((x, y) => y.version - x.version);
    return copies.length === 2 && copies[0]!.wrapped.equals(copies[1]!.wrapped) ? [copies[0]!] : copies;
  }

  isUnlocked(keyId: number): boolean {
    assert(keyId >= 1, 'a key slot number');
    return this.ciphers.has(keyId);
  }

  /**
   * The cipher of a record's lineage: null for a plain record; VolumeLocked when its key is not in
   * memory. Called for every I/O of an encrypted target, so it is a map lookup.
   */
  cipherOf(keyId: number, name: string): XtsCipher | null {
    if (keyId === 0) return null;
    if (!(Number.isSafeInteger(keyId) && keyId >= 1)) fail(`key slot ${keyId}`);
    const cipher = this.ciphers.get(keyId);
    if (cipher === undefined) throw new VolumeLocked(name);
    return cipher;
  }

  /** Takes a free slot for a new lineage's key and unlocks it; the caller writes it (writeNew) before the commit that names it. */
  allocate(dek: Buffer, wrapped: Buffer): number {
    validateKey(dek, wrapped);
    const i = this.slots.findIndex((s) => s[0] === null && s[1] === null);
    if (i < 0) throw new KeySlotsFull(this.slots.length);
    assert(!this.ciphers.has(i + 1), 'a free slot has no key in memory');
    const copy: SlotCopy = { wrapped: Buffer.from(wrapped), check: keyCheckValue(dek), version: 1 };
    this.slots[i] = [copy, { ...copy }];
    this.ciphers.set(i + 1, new XtsCipher(dek));
    return i + 1;
  }

  /** Zeroes the whole region (both copies) of a new keyring: nothing left in those blocks may pass for a slot. */
  zeroRegion(): Promise<void> {
    return this.serial(async () => {
      const total = 2 * this.region.blocks;
      for (let at = 0; at < total; at += DEVICE_IO_BLOCKS_MAX) {
        const n = Math.min(DEVICE_IO_BLOCKS_MAX, total - at);
        await this.device.write(this.region.startBlock + at, Buffer.alloc(n * BLOCK_SIZE_BYTES))
          .catch((err: unknown) => { throw asIoError(err, 'zeroing the new keyring failed'); });
      }
    });
  }

  /** Writes both copies of a new slot; the commit naming it makes them durable (its first flush). */
  writeNew(keyId: number): Promise<void> {
    return this.serial(async () => { await this.writeCopy(keyId, 0); await this.writeCopy(keyId, 1); });
  }

  /** Offers the data key of a slot: checked against its check value, never used when it does not match. */
  unlock(keyId: number, dek: Buffer): void {
    const copies = this.copiesOf(keyId);
    if (copies.length === 0) throw new InvalidArgument(`key slot ${keyId} holds no key`);
    if (dek.length !== DATA_KEY_BYTES) throw new WrongKey(keyId);
    const check = keyCheckValue(dek);
    if (!copies.some((c) => timingSafeEqual(c.check, check))) throw new WrongKey(keyId);
    if (this.ciphers.has(keyId)) return;
    this.ciphers.set(keyId, new XtsCipher(dek));
  }

  /**
   * Forgets a slot's data key (its lineage is locked until unlocked again). The cipher is not wiped
   * here: a write or read already past its lock check still uses it (wiping failed that request with an
   * assertion, found by the simulator); it is dropped, and new I/O is refused (VolumeLocked).
   */
  lock(keyId: number): void {
    assert(keyId >= 1, 'a key slot number');
    this.ciphers.delete(keyId);
  }

  /** Wipes and forgets a slot's data key: its lineage is gone (shred) or the pool is closing. */
  private wipe(keyId: number): void {
    this.ciphers.get(keyId)?.destroy();
    this.ciphers.delete(keyId);
  }

  /**
   * Replaces the wrapped form of a slot's key (a new key-encryption key), crash-safe: copy 0 is
   * written and made durable before copy 1 is touched, so at every instant one copy holds the key
   * wrapped by the old KEK or the new one, never neither.
   */
  rewrap(keyId: number, wrapped: Buffer): Promise<void> {
    const current = this.copiesOf(keyId)[0];
    if (current === undefined) throw new InvalidArgument(`key slot ${keyId} holds no key`);
    if (wrapped.length < 1 || wrapped.length > KEY_WRAPPED_BYTES_MAX) throw new InvalidArgument(`a wrapped key of ${wrapped.length} bytes (1..${KEY_WRAPPED_BYTES_MAX})`);
    const next: SlotCopy = { wrapped: Buffer.from(wrapped), check: current.check, version: current.version + 1 };
    return this.serial(async () => {
      const slot = this.slotAt(keyId);
      slot[0] = next;
      await this.writeCopy(keyId, 0);
      await this.flushDevice();
      slot[1] = { ...next };
      await this.writeCopy(keyId, 1);
      await this.flushDevice();
    });
  }

  /**
   * Destroys a slot's key for good: both copies zeroed in place and made durable, the in-memory key
   * wiped. Called once no committed catalog record names the slot.
   */
  shred(keyIds: number[]): Promise<void> {
    if (keyIds.length === 0) return Promise.resolve();
    return this.serial(async () => {
      const blocks = new Set<number>();
      for (const keyId of keyIds) {
        this.wipe(keyId);
        this.slots[keyId - 1] = [null, null];
        blocks.add(Math.floor((keyId - 1) / KEY_SLOTS_PER_BLOCK));
      }
      for (const block of blocks) for (const copy of [0, 1] as const) await this.writeBlock(block, copy);
      await this.flushDevice();
    });
  }

  /** Rewrites the block of a slot copy found damaged at load from the other copy (not flushed: the next commit's flush covers it). */
  repair(keyId: number, copy: 0 | 1): Promise<void> {
    const slot = this.slotAt(keyId);
    const other = slot[copy === 0 ? 1 : 0];
    if (slot[copy] === null && other !== null) slot[copy] = { ...other };
    return this.serial(() => this.writeCopy(keyId, copy));
  }

  private slotAt(keyId: number): SlotCopies {
    if (!(Number.isInteger(keyId) && keyId >= 1 && keyId <= this.slots.length)) fail(`key slot ${keyId} outside the keyring's ${this.slots.length}`);
    return this.slots[keyId - 1]!;
  }

  private writeCopy(keyId: number, copy: 0 | 1): Promise<void> {
    this.slotAt(keyId);
    assert(copy === 0 || copy === 1, 'one of the two copies');
    return this.writeBlock(Math.floor((keyId - 1) / KEY_SLOTS_PER_BLOCK), copy);
  }

  /** Writes one block of one copy, every slot of it from memory (unchanged slots get their same bytes). */
  private async writeBlock(block: number, copy: 0 | 1): Promise<void> {
    assert(block >= 0 && block < this.region.blocks, 'a block of the keyring');
    const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
    for (let j = 0; j < KEY_SLOTS_PER_BLOCK; j++) {
      const keyId = block * KEY_SLOTS_PER_BLOCK + j + 1;
      const slot = this.slots[keyId - 1]![copy];
      if (slot !== null) encodeSlot(buf, j * KEY_SLOT_BYTES, keyId, copy, slot, this.uuid);
    }
    const at = this.region.startBlock + copy * this.region.blocks + block;
    await this.device.write(at, buf).catch((err: unknown) => { throw asIoError(err, `writing key slot block ${at} failed`); });
  }

  private async flushDevice(): Promise<void> {
    await this.device.flush().catch((err: unknown) => { throw asIoError(err, 'flushing the keyring failed'); });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    // The chain only orders the writes: each one's failure reaches its caller through `run`.
    this.chain = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Wipes every key held in memory (the pool is closing). */
  close(): void {
    for (const keyId of [...this.ciphers.keys()]) this.wipe(keyId);
  }
}

function validateKey(dek: Buffer, wrapped: Buffer): void {
  if (dek.length !== DATA_KEY_BYTES) throw new InvalidArgument(`a data key is ${DATA_KEY_BYTES} bytes, got ${dek.length}`);
  if (dek.subarray(0, DATA_KEY_BYTES / 2).equals(dek.subarray(DATA_KEY_BYTES / 2))) throw new InvalidArgument('the two halves of an XTS data key must differ');
  if (wrapped.length < 1 || wrapped.length > KEY_WRAPPED_BYTES_MAX) throw new InvalidArgument(`a wrapped key of ${wrapped.length} bytes (1..${KEY_WRAPPED_BYTES_MAX})`);
}
