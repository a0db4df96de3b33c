// The data path: read, write (redirect-on-write to new blocks, checksummed), trim, write-zeroes and
// block status. Data is written outside the metadata lock; the mapping is switched under it.
import { BLOCK_SIZE_BYTES, EXTENT_BLOCKS_MAX, IO_BYTES_MAX, EDIT_CHUNK_BLOCKS, DEVICE_IO_BLOCKS_MAX } from './constants.js';
import { XTS_ASYNC_BLOCKS_MIN, type XtsCipher } from './xts.js';
import { releaseDeviceBuffer, takeDeviceBuffer } from './device-buffers.js';
import type { PoolCore } from './pool.js';
import { FLAG_DELETED, type CatalogRecord } from './catalog.js';
import type { LeafEntry } from './format.js';
import type { Run } from './space-map.js';
import { ChecksumError, InvalidArgument, IoError, OutOfRange, CairnError, PoolFull, VolumeNotFound, asIoError, assert, fail } from './errors.js';
import type { Extent } from './types.js';
import { concatData, dataLength, PayloadBlocks, type WriteData } from './gather.js';
import { blockChecksums } from './checksum.js';

/** A volume deleted (or a clone flattened away) while a write was in flight must not be touched. */
function assertLive(core: PoolCore, rec: CatalogRecord): void {
  // Under the lock (the mapping switch): a check without it could be overtaken by a delete.
  core.assertHeld();
  if (core.catalog.byId.get(rec.id) !== rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(rec.name);
}

/**
 * The cipher of an encrypted record's lineage (null for a plain one); VolumeLocked, before anything is
 * read or written, when its key is not in memory.
 */
export function cipherFor(core: PoolCore, rec: CatalogRecord): XtsCipher | null {
  if (rec.keyId === 0) return null;
  if (core.keyring === null) fail(`${rec.name} names key slot ${rec.keyId} in a pool without a keyring`);
  return core.keyring.cipherOf(rec.keyId, rec.name);
}

/**
 * Large runs are encrypted or decrypted in pieces of this many blocks, all at once on the thread pool:
 * one 1 MiB run as one job kept one helper thread busy while the others idled.
 */
const CRYPT_PIECE_BLOCKS = 64;

/**
 * Encrypts (or decrypts) `src` into `dst` (the same length; dst may be src) with the tweaks of the
 * physical blocks from `firstPba`: inline below XTS_ASYNC_BLOCKS_MIN blocks (no promise at all),
 * otherwise in CRYPT_PIECE_BLOCKS pieces on the thread pool. Undefined when done inline.
 */
function cryptRun(cipher: XtsCipher, encrypt: boolean, src: Buffer, dst: Buffer, firstPba: number): Promise<void> | undefined {
  assert(src.length === dst.length && src.length % BLOCK_SIZE_BYTES === 0, 'a run of whole blocks');
  if (src.length < XTS_ASYNC_BLOCKS_MIN * BLOCK_SIZE_BYTES) {
    if (encrypt) cipher.encryptBlocks(src, dst, firstPba); else cipher.decryptBlocks(src, dst, firstPba);
    return undefined;
  }
  const pieces: Promise<void>[] = [];
  const pieceBytes = CRYPT_PIECE_BLOCKS * BLOCK_SIZE_BYTES;
  for (let at = 0; at < src.length; at += pieceBytes) {
    const end = Math.min(src.length, at + pieceBytes);
    const s = src.subarray(at, end), d = dst.subarray(at, end), pba = firstPba + at / BLOCK_SIZE_BYTES;
    pieces.push(encrypt ? cipher.encryptBlocksAsync(s, d, pba) : cipher.decryptBlocksAsync(s, d, pba));
  }
  return settleAll(pieces);
}

/** Waits for every job (none may still touch a buffer when this settles), then fails with the first failure. */
async function settleAll(jobs: Promise<void>[]): Promise<void> {
  for (const s of await Promise.allSettled(jobs)) if (s.status === 'rejected') throw s.reason;
}

/** Decrypts a run read into `target` in place (after its checksums, which cover the ciphertext, passed). */
function decryptRun(cipher: XtsCipher, firstPba: number, target: Buffer): Promise<void> | undefined {
  return cryptRun(cipher, false, target, target, firstPba);
}

export function checkRange(rec: CatalogRecord, offsetBytes: number, lengthBytes: number): void {
  // The catalog keeps sizes in whole blocks (validateSize, the catalog page validator): the range
  // check below is in bytes, the lba math after it in blocks.
  if (rec.sizeBytes % BLOCK_SIZE_BYTES !== 0) fail(`${rec.name} has a size of ${rec.sizeBytes} bytes, not whole blocks`);
  if (!Number.isSafeInteger(offsetBytes) || !Number.isSafeInteger(lengthBytes) || offsetBytes < 0 || lengthBytes < 0) {
    throw new InvalidArgument(`invalid range offset=${offsetBytes} length=${lengthBytes}`);
  }
  if (offsetBytes + lengthBytes > rec.sizeBytes) {
    throw new OutOfRange(`range [${offsetBytes}, ${offsetBytes + lengthBytes}) is past the end of ${rec.name} (${rec.sizeBytes} bytes)`);
  }
  if (lengthBytes > IO_BYTES_MAX) throw new InvalidArgument(`request of ${lengthBytes} bytes exceeds the ${IO_BYTES_MAX}-byte maximum`);
}

/** Extents that are adjacent both logically and physically, read or written with one device call. */
function physicalRuns(entries: LeafEntry[]): LeafEntry[][] {
  // Extents are at most EXTENT_BLOCKS_MAX long, so a run never exceeds the device I/O bound below.
  assert(EXTENT_BLOCKS_MAX <= DEVICE_IO_BLOCKS_MAX, 'an extent fits one device call');
  const runs: LeafEntry[][] = [];
  let blocks = 0;
  for (const e of entries) {
    const run = runs[runs.length - 1];
    const last = run?.[run.length - 1];
    if (run && last && last.lba + last.lengthBlocks === e.lba && last.pba + last.lengthBlocks === e.pba && blocks + e.lengthBlocks <= DEVICE_IO_BLOCKS_MAX) {
      run.push(e);
      blocks += e.lengthBlocks;
    } else {
      runs.push([e]);
      blocks = e.lengthBlocks;
    }
  }
  return runs;
}

/**
 * Reads [startLba, endLba) into `out`: one device read per physical run, crc32c checked per block;
 * holes are zero-filled without any disk I/O. A run the device can read cheaply (from the page cache)
 * is read and verified on the spot; the others are read concurrently. Every read has finished when
 * this settles, also on failure: the caller may reuse `out` at once.
 */
async function readBlocks(core: PoolCore, rec: CatalogRecord, startLba: number, endLba: number, out: Buffer, cipher: XtsCipher | null): Promise<void> {
  // Layer boundary (tree → data): `out` is exactly the range, and the extents the tree hands out are
  // sorted, disjoint and inside it. A broken promise here would place data at the wrong offset, which
  // is wrong data returned, so it stops the request instead.
  if (out.length !== (endLba - startLba) * BLOCK_SIZE_BYTES) fail(`read buffer of ${out.length} bytes for ${endLba - startLba} blocks`);
  // The usual read finds every node cached and no edit under way: no promise at all.
  const entries = (core.trees.editUnderWay(rec) === null ? core.trees.lookupCached(rec.root, startLba, endLba) : undefined)
    ?? await core.trees.lookupStable(rec, () => rec.root, startLba, endLba);
  let cursor = startLba;
  for (const e of entries) {
    if (!(e.lba >= cursor && e.lengthBlocks > 0 && e.lba + e.lengthBlocks <= endLba && e.crcs.length >= e.lengthBlocks)) {
      fail(`lookup of [${startLba}, ${endLba}) returned extent [${e.lba}, ${e.lba + e.lengthBlocks}) after ${cursor}`);
    }
    if (e.lba > cursor) out.fill(0, (cursor - startLba) * BLOCK_SIZE_BYTES, (e.lba - startLba) * BLOCK_SIZE_BYTES);
    cursor = e.lba + e.lengthBlocks;
  }
  if (cursor < endLba) out.fill(0, (cursor - startLba) * BLOCK_SIZE_BYTES, (endLba - startLba) * BLOCK_SIZE_BYTES);
  const pending: Promise<void>[] = [];
  let failure: unknown = null;
  const runs = physicalRuns(entries);
  // Several runs (a volume overwritten at random): as many as the page cache serves in one device call.
  let batched = 0;
  if (runs.length >= 2 && core.device.readRunsIfCheap !== undefined) {
    try {
      batched = readCheapRuns(core, runs, startLba, out, cipher, pending);
    } catch (err) {
      // Nothing is pending yet: every decryption starts after all the batch's checks passed.
      assert(pending.length === 0, 'a failed batch left nothing running');
      throw readError(runs[0]![0]!.pba, err);
    }
  }
  for (let r = batched; r < runs.length; r++) {
    const run = runs[r]!;
    const first = run[0]!, last = run[run.length - 1]!;
    const target = out.subarray((first.lba - startLba) * BLOCK_SIZE_BYTES, (last.lba + last.lengthBlocks - startLba) * BLOCK_SIZE_BYTES);
    // A long encrypted run is verified and decrypted in one thread-pool job (openRun).
    const opened = cipher !== null && cipher.checksumsInJob && target.length >= XTS_ASYNC_BLOCKS_MIN * BLOCK_SIZE_BYTES ? cipher : null;
    try {
      if (core.device.readIfCheap?.(first.pba, target)) {
        if (opened !== null) {
          pending.push(openRun(core, opened, run, target));
          continue;
        }
        const decrypted = verifyAndDecrypt(core, run, target, cipher);
        if (decrypted !== undefined) pending.push(decrypted);
      } else {
        pending.push(core.device.read(first.pba, target).then(() => {
          if (opened !== null) return openRun(core, opened, run, target);
          return verifyAndDecrypt(core, run, target, cipher);
        }, (err: unknown) => { throw readError(first.pba, err); }));
      }
    } catch (err) {
      failure = readError(first.pba, err);
      break;
    }
  }
  // Served from the page cache, the usual 4 KiB read has nothing pending: no promise to wait for.
  if (pending.length > 0) {
    const settled = await Promise.allSettled(pending);
    if (failure === null) for (const s of settled) if (s.status === 'rejected') throw s.reason;
  }
  if (failure !== null) throw failure;
}

function readError(pba: number, err: unknown): unknown {
  assert(pba >= 0, 'a read error names a physical block');
  return asIoError(err, `read of physical block ${pba} failed`);
}

/** Checksums of a run being verified (a run is at most DEVICE_IO_BLOCKS_MAX blocks; verifying is synchronous). */
const runCrcs = new Uint32Array(DEVICE_IO_BLOCKS_MAX);
/**
 * Checksums of a batch of runs (readCheapRuns: synchronous, so one array serves every request): the
 * blocks of the longest read, IO_BYTES_MAX at an unaligned offset, which touches one block more.
 */
const batchCrcs = new Uint32Array(IO_BYTES_MAX / BLOCK_SIZE_BYTES + 1);
/** A batch's plan for the device, three numbers per run (readRunsIfCheap); grown when a request has more runs. */
let batchPlan = new Float64Array(3 * 256);

/**
 * Reads a prefix of `runs` (physical runs of one request, in logical order) in one device call while
 * the page cache serves them, checks them with one checksum call over the span they cover, then
 * decrypts them (a long run's decryption is added to `pending`). Returns how many runs it read; the
 * caller reads the rest. A bad block throws before any decryption starts.
 */
function readCheapRuns(core: PoolCore, runs: LeafEntry[][], startLba: number, out: Buffer, cipher: XtsCipher | null,
  pending: Promise<void>[]): number {
  if (batchPlan.length < 3 * runs.length) batchPlan = new Float64Array(3 * runs.length);
  const plan = batchPlan;
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i]!, first = run[0]!, last = run[run.length - 1]!;
    plan[3 * i] = first.pba;
    plan[3 * i + 1] = last.lba + last.lengthBlocks - first.lba;
    plan[3 * i + 2] = first.lba - startLba;
  }
  const read = core.device.readRunsIfCheap!(plan, runs.length, out);
  if (!(Number.isInteger(read) && read >= 0 && read <= runs.length)) fail(`a batch of ${runs.length} runs read ${read}`);
  if (read === 0) return 0;
  // Runs are in logical order: the span from the first run's start to the last one's end holds them all
  // (and the holes between them, zeros, summed and not compared).
  const spanStart = plan[2]!, spanEnd = plan[3 * (read - 1) + 2]! + plan[3 * (read - 1) + 1]!;
  blockChecksums(out.subarray(spanStart * BLOCK_SIZE_BYTES, spanEnd * BLOCK_SIZE_BYTES), batchCrcs, 0);
  for (let i = 0; i < read; i++) compareRun(core, runs[i]!, batchCrcs, plan[3 * i + 2]! - spanStart);
  if (cipher !== null) {
    for (let i = 0; i < read; i++) {
      const at = plan[3 * i + 2]! * BLOCK_SIZE_BYTES;
      const decrypting = decryptRun(cipher, plan[3 * i]!, out.subarray(at, at + plan[3 * i + 1]! * BLOCK_SIZE_BYTES));
      if (decrypting !== undefined) pending.push(decrypting);
    }
  }
  return read;
}

/** Checks every block of a run read into `target` against its crc32c. */
function verifyRun(core: PoolCore, run: LeafEntry[], target: Buffer): void {
  // Every block of the target is checked against its own checksum: lengths must agree exactly.
  if (target.length > runCrcs.length * BLOCK_SIZE_BYTES) fail(`a run of ${target.length} bytes exceeds the verify buffer`);
  blockChecksums(target, runCrcs, 0);
  compareRun(core, run, runCrcs);
}

/**
 * Checks a run read into `target` and decrypts it (encrypted, at most XTS_ASYNC_BLOCKS_MIN blocks
 * where the kernel sums: one addon call for both, the checksums taken of the ciphertext first); a
 * pending decryption of a longer run is returned. A bad block fails the read.
 */
function verifyAndDecrypt(core: PoolCore, run: LeafEntry[], target: Buffer, cipher: XtsCipher | null): Promise<void> | undefined {
  if (cipher !== null && cipher.checksumsInJob && target.length < XTS_ASYNC_BLOCKS_MIN * BLOCK_SIZE_BYTES) {
    // The bytes are decrypted before the comparison: a bad block's plaintext is garbage the failed
    // read never hands out (as openRun).
    cipher.openBlocks(target, run[0]!.pba, runCrcs);
    compareRun(core, run, runCrcs);
    return undefined;
  }
  verifyRun(core, run, target);
  return cipher === null ? undefined : decryptRun(cipher, run[0]!.pba, target);
}

/** Verifies and decrypts an encrypted run read into `target` in one thread-pool job; a bad block fails the read. */
async function openRun(core: PoolCore, cipher: XtsCipher, run: LeafEntry[], target: Buffer): Promise<void> {
  const sums = new Uint32Array(target.length / BLOCK_SIZE_BYTES);
  await cipher.openBlocksAsync(target, run[0]!.pba, sums);
  compareRun(core, run, sums);
}

/**
 * Fails with ChecksumError (counted and logged) at the first block of `run` whose checksum is not
 * `sums`' one; the run's first block's sum is at `at`.
 */
function compareRun(core: PoolCore, run: LeafEntry[], sums: Uint32Array, at = 0): void {
  const first = run[0]!;
  assert(at >= 0, 'a run\'s sums lie inside the array');
  for (const e of run) {
    const base = at + e.lba - first.lba;
    for (let i = 0; i < e.lengthBlocks; i++) {
      if (sums[base + i] !== e.crcs[i]) {
        core.checksumErrors++;
        core.log('checksum_error', { physicalBlock: e.pba + i, lba: e.lba + i });
        throw new ChecksumError(e.pba + i, 'data block');
      }
    }
  }
}

export async function readRange(core: PoolCore, rec: CatalogRecord, offsetBytes: number, lengthBytes: number, into?: Buffer): Promise<Buffer> {
  checkRange(rec, offsetBytes, lengthBytes);
  const cipher = cipherFor(core, rec);
  // A root is 0 (nothing mapped) or a tree node inside the pool (the catalog page validator checked it).
  if (!(rec.root === 0 || (rec.root >= 2 && rec.root < core.sb.totalBlocks))) fail(`${rec.name} has root ${rec.root} outside the pool`);
  const epoch = core.beginRead();
  try {
    const startLba = Math.floor(offsetBytes / BLOCK_SIZE_BYTES);
    const endLba = Math.ceil((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES);
    const aligned = offsetBytes % BLOCK_SIZE_BYTES === 0 && lengthBytes % BLOCK_SIZE_BYTES === 0;
    const bytes = (endLba - startLba) * BLOCK_SIZE_BYTES;
    const buf = aligned && into !== undefined && into.length >= bytes ? into.subarray(0, bytes) : Buffer.allocUnsafe(bytes);
    await readBlocks(core, rec, startLba, endLba, buf, cipher);
    if (aligned) return buf;
    assert(buf.length >= lengthBytes + (offsetBytes - startLba * BLOCK_SIZE_BYTES), 'the unaligned read lies inside its blocks');
    const skip = offsetBytes - startLba * BLOCK_SIZE_BYTES;
    return buf.subarray(skip, skip + lengthBytes);
  } finally {
    core.endRead(epoch);
  }
}

/** Per-volume locks on boundary blocks, so concurrent unaligned writes to one block both land. */
const rmwLocks = new WeakMap<CatalogRecord, Map<number, Promise<void>>>();

async function withBlockLocks<T>(rec: CatalogRecord, lbas: number[], fn: () => Promise<T>): Promise<T> {
  assert(lbas.length > 0 && lbas.length <= 2, 'an unaligned write locks its one or two edge blocks');
  let locks = rmwLocks.get(rec);
  if (!locks) rmwLocks.set(rec, (locks = new Map()));
  const waits: Promise<void>[] = [];
  let release!: () => void;
  const mine = new Promise<void>((r) => { release = r; });
  for (const lba of lbas) {
    const prev = locks.get(lba);
    if (prev) waits.push(prev);
    locks.set(lba, mine);
  }
  await Promise.all(waits);
  try { return await fn(); } finally {
    release();
    for (const lba of lbas) if (locks.get(lba) === mine) locks.delete(lba);
  }
}

/** Writes `data` at any byte offset: whole blocks directly, partial edge blocks by read-modify-write. */
export async function writeRange(core: PoolCore, rec: CatalogRecord, offsetBytes: number, data: WriteData, noHole = false): Promise<void> {
  const length = dataLength(data);
  checkRange(rec, offsetBytes, length);
  const cipher = cipherFor(core, rec);
  if (length === 0) return;
  const startLba = Math.floor(offsetBytes / BLOCK_SIZE_BYTES);
  const endLba = Math.ceil((offsetBytes + length) / BLOCK_SIZE_BYTES);
  const head = offsetBytes % BLOCK_SIZE_BYTES;
  const aligned = head === 0 && length % BLOCK_SIZE_BYTES === 0;
  assert(endLba > startLba, 'a non-empty write covers a block');
  if (aligned) return writeBlocks(core, rec, startLba, new PayloadBlocks(data), noHole);
  const edges = endLba - 1 > startLba ? [startLba, endLba - 1] : [startLba];
  await withBlockLocks(rec, edges, async () => {
    const buf = Buffer.alloc((endLba - startLba) * BLOCK_SIZE_BYTES);
    const epoch = core.beginRead();
    try {
      for (const lba of edges) {
        await readBlocks(core, rec, lba, lba + 1, buf.subarray((lba - startLba) * BLOCK_SIZE_BYTES, (lba - startLba + 1) * BLOCK_SIZE_BYTES), cipher);
      }
    } finally { core.endRead(epoch); }
    concatData(data).copy(buf, head);
    await writeBlocks(core, rec, startLba, new PayloadBlocks(buf), noHole);
  });
}

/** Aligned write of whole blocks starting at `startLba`. All-zero blocks become holes unless noHole. */
async function writeBlocks(core: PoolCore, rec: CatalogRecord, startLba: number, blocks: PayloadBlocks, noHole: boolean): Promise<void> {
  // Layer boundary (engine → tree): the blocks lie inside the volume (checkRange ran on the bytes).
  if (!(startLba >= 0 && blocks.count > 0 && (startLba + blocks.count) * BLOCK_SIZE_BYTES <= rec.sizeBytes)) {
    fail(`write of blocks [${startLba}, ${startLba + blocks.count}) to ${rec.name} of ${rec.sizeBytes} bytes`);
  }
  const nonZero: boolean[] = new Array<boolean>(blocks.count);
  let count = 0;
  for (let i = 0; i < blocks.count; i++) {
    nonZero[i] = noHole || !blocks.isZero(i);
    if (nonZero[i]) count++;
  }
  const cipher = cipherFor(core, rec);
  const runs: Run[] = count > 0 ? await reserveData(core, count) : [];
  core.writersActive++;
  core.volumeWriters.set(rec.id, (core.volumeWriters.get(rec.id) ?? 0) + 1);
  try {
    const entries = await writeData(core, blocks, startLba, nonZero, runs, cipher, rec.id);
    const endLba = startLba + blocks.count;
    if (entries.length > 0 && entries[entries.length - 1]!.lba + entries[entries.length - 1]!.lengthBlocks > endLba) fail('written extents lie inside the write');
    const switched = core.mutateNow(() => {
      assertLive(core, rec);
      if (!core.catalog.canSaveMappingNow(rec)) return undefined;
      const edited = core.trees.editNow(rec.root, startLba, endLba, entries);
      if (edited === undefined) return undefined;
      rec.root = edited.root;
      rec.mappedBlocks += edited.mappedDelta;
      const saved = core.catalog.saveMappingNow(rec);
      core.intentLog?.append(rec.id, core.store.txn, startLba, endLba, entries);
      return saved;
    });
    if (switched === undefined) await core.mutate(async () => {
      assertLive(core, rec);
      const { root, mappedDelta } = await core.trees.edit(rec.root, startLba, endLba, entries, rec);
      rec.root = root;
      rec.mappedBlocks += mappedDelta;
      await core.catalog.saveMapping(rec);
      // In the mutation that made the switch: the log's records keep the switches' order.
      core.intentLog?.append(rec.id, core.store.txn, startLba, endLba, entries);
    });
  } finally {
    core.writersActive--;
    const left = core.volumeWriters.get(rec.id)! - 1;
    assert(left >= 0, 'a volume\'s writes under way are counted');
    if (left === 0) core.volumeWriters.delete(rec.id);
    else core.volumeWriters.set(rec.id, left);
    core.space.unreserve(runs);
  }
}

/**
 * Reserves data blocks. Blocks freed by overwrites wait for their commit before reuse, so a pool that
 * looks full may only be waiting for one: commit (outside the lock) and try again before ENOSPC.
 */
async function reserveData(core: PoolCore, count: number): Promise<Run[]> {
  core.ensureUsable();
  assert(count > 0 && count <= IO_BYTES_MAX / BLOCK_SIZE_BYTES, 'a reservation for one request');
  const fast = core.space.tryReserveSync(count);
  if (fast) return fast;
  for (let attempt = 0; ; attempt++) {
    try {
      return await core.mutate(() => core.space.reserve(count, false));
    } catch (err) {
      if (!(err instanceof PoolFull) || attempt >= 3 || !core.space.hasHeldFrees()) throw err;
      await core.commit();
    }
  }
}

/** Writes the non-zero blocks into the reserved runs (one device write per physical run). */
async function writeData(core: PoolCore, blocks: PayloadBlocks, startLba: number, nonZero: boolean[], runs: Run[], cipher: XtsCipher | null, volumeId: number): Promise<LeafEntry[]> {
  const entries: LeafEntry[] = [];
  const writes: Promise<void>[] = [];
  assert(nonZero.length === blocks.count, 'a flag per block');
  // One checksum array for the request; each extent keeps its slice (as leaf edits already do).
  const crcs = new Uint32Array(blocks.count);
  let runIdx = 0, runUsed = 0;
  let i = 0;
  while (i < nonZero.length) {
    if (!nonZero[i]) { i++; continue; }
    const run = runs[runIdx]!;
    let len = 0;
    while (i + len < nonZero.length && nonZero[i + len] && runUsed + len < run.lengthBlocks && len < EXTENT_BLOCKS_MAX) len++;
    // The usual small write is one extent: it keeps the array itself (a view would move it off V8's heap, see checksum.ts).
    entries.push({ lba: startLba + i, pba: run.pba + runUsed, lengthBlocks: len, crcs: len === blocks.count ? crcs : crcs.subarray(i, i + len) });
    runUsed += len;
    if (runUsed === run.lengthBlocks) { runIdx++; runUsed = 0; }
    i += len;
  }
  const physical = physicalRuns(entries);
  // A write too small for a hand-off (the usual 4 KiB one) is sealed on the loop: no group, no added promise.
  let dataBlocks = 0;
  for (const e of entries) dataBlocks += e.lengthBlocks;
  const sealGroups = cipher?.checksumsInJob === true && dataBlocks >= XTS_ASYNC_BLOCKS_MIN ? new SealGroups() : null;
  // The volume's only write under way may be held even while other volumes' writes batch (block-writer.ts).
  const alone = core.volumeWriters.get(volumeId) === 1;
  // The iovecs of each device write are also what gets checksummed: one pass over the pieces.
  for (const run of physical) {
    const first = run[0]!, last = run[run.length - 1]!;
    const pieces = blocks.pieces(first.lba - startLba, last.lba + last.lengthBlocks - startLba);
    if (cipher !== null) {
      const at = first.lba - startLba, runBlocks = last.lba + last.lengthBlocks - first.lba;
      if (sealGroups === null) writes.push(writeSealedRun(core, cipher, pieces, first.pba, crcs, at, alone));
      else for (const group of sealGroups.add({ pba: first.pba, at, blocks: runBlocks, pieces })) writes.push(...sealGroupWrites(core, cipher, group, crcs));
      continue;
    }
    let at = first.lba - startLba;
    for (const piece of pieces) { blockChecksums(piece, crcs, at); at += piece.length / BLOCK_SIZE_BYTES; }
    writes.push(core.blockWriter.write(first.pba, pieces, alone));
  }
  if (sealGroups !== null) for (const group of sealGroups.end()) writes.push(...sealGroupWrites(core, cipher!, group, crcs));
  // Every non-zero block got a place: the reservation was exactly their count.
  if (runIdx !== runs.length) fail(`a write used ${runIdx} of its ${runs.length} reserved runs`);
  // Every write must have finished before this returns, also when one failed: the caller then
  // unreserves the blocks, and a write still landing in one after another request got it would
  // overwrite that request's data.
  for (const s of await Promise.allSettled(writes)) {
    if (s.status === 'rejected') {
      const err: unknown = s.reason;
      throw asIoError(err, 'data write failed');
    }
  }
  return entries;
}

/**
 * Writes a physical run encrypted: its plaintext pieces are sealed into a pooled buffer (the caller's
 * data is never changed in place), each block with its own physical block number as the tweak, and the
 * checksums are taken of the result: they cover what is on disk, so a pool is verified without a key.
 */
async function writeSealedRun(core: PoolCore, cipher: XtsCipher, pieces: Buffer[], firstPba: number, crcs: Uint32Array, crcAt: number, alone: boolean): Promise<void> {
  let total = 0;
  for (const p of pieces) total += p.length;
  if (total % BLOCK_SIZE_BYTES !== 0) fail(`a run of ${total} bytes to encrypt`);
  const sealed = takeDeviceBuffer(total);
  try {
    const pending: Promise<void>[] = [];
    let at = 0;
    for (const piece of pieces) {
      const sealing = cryptRun(cipher, true, piece, sealed.subarray(at, at + piece.length), firstPba + at / BLOCK_SIZE_BYTES);
      if (sealing !== undefined) pending.push(sealing);
      at += piece.length;
    }
    if (pending.length > 0) await settleAll(pending);
    blockChecksums(sealed, crcs, crcAt);
    await core.blockWriter.write(firstPba, [sealed], alone);
  } finally {
    // Every sealing job and the device write have finished with it, also on failure (settleAll waits for all).
    releaseDeviceBuffer(sealed);
  }
}

/** A physical run of an encrypted write: its first block, its offset in the request, its plaintext. */
interface SealRun {
  pba: number;
  at: number;
  blocks: number;
  pieces: Buffer[];
}

/**
 * Gathers an encrypted write's runs into groups of at most one device write's blocks. After random
 * overwrites a 1 MiB write lands in ~11 runs of ~23 blocks; each alone is below the size worth a
 * thread-pool hand-off (XTS_ASYNC_BLOCKS_MIN), so it was encrypted and then summed on the event loop.
 * A group is sealed in one job that also sums the ciphertext while it is in cache.
 */
class SealGroups {
  private runs: SealRun[] = [];
  private blocks = 0;

  /** Adds a run; returns the groups now complete (the one it did not fit in). */
  add(run: SealRun): SealRun[][] {
    assert(run.blocks > 0 && run.blocks <= DEVICE_IO_BLOCKS_MAX, 'a run fits one device write');
    const done = this.blocks + run.blocks > DEVICE_IO_BLOCKS_MAX ? this.end() : [];
    this.runs.push(run);
    this.blocks += run.blocks;
    return done;
  }

  /** The group gathered so far, if any. */
  end(): SealRun[][] {
    const group = this.runs;
    this.runs = [];
    this.blocks = 0;
    return group.length > 0 ? [group] : [];
  }
}

/**
 * The writes of a group of runs, encrypted: a single run, or a group too small for a hand-off, run by
 * run (writeSealedRun); otherwise one writeSealedGroup.
 */
function sealGroupWrites(core: PoolCore, cipher: XtsCipher, group: SealRun[], crcs: Uint32Array): Promise<void>[] {
  let total = 0;
  for (const r of group) total += r.blocks;
  assert(total > 0 && total <= DEVICE_IO_BLOCKS_MAX, 'a group fits one device buffer');
  if (total < XTS_ASYNC_BLOCKS_MIN) return group.map((r) => writeSealedRun(core, cipher, r.pieces, r.pba, crcs, r.at, false));
  return [writeSealedGroup(core, cipher, group, total, crcs)];
}

/**
 * Seals a group of runs into one pooled buffer by one thread-pool job, which also takes the
 * checksums of the ciphertext, then writes each run from its part of it.
 */
async function writeSealedGroup(core: PoolCore, cipher: XtsCipher, group: SealRun[], total: number, crcs: Uint32Array): Promise<void> {
  const sealed = takeDeviceBuffer(total * BLOCK_SIZE_BYTES);
  try {
    const pieces: Buffer[] = [], firstBlocks: number[] = [];
    for (const r of group) {
      let pba = r.pba;
      for (const p of r.pieces) { pieces.push(p); firstBlocks.push(pba); pba += p.length / BLOCK_SIZE_BYTES; }
      assert(pba === r.pba + r.blocks, 'the pieces of a run cover it');
    }
    const sums = new Uint32Array(total);
    await cipher.sealPiecesAsync(pieces, firstBlocks, sealed, sums);
    const writes: Promise<void>[] = [];
    let off = 0;
    for (const r of group) {
      crcs.set(sums.subarray(off, off + r.blocks), r.at);
      writes.push(core.blockWriter.write(r.pba, [sealed.subarray(off * BLOCK_SIZE_BYTES, (off + r.blocks) * BLOCK_SIZE_BYTES)]));
      off += r.blocks;
    }
    await settleAll(writes);
  } finally {
    // The sealing job and every device write have finished with it, also on failure.
    releaseDeviceBuffer(sealed);
  }
}

/** Unmaps whole blocks [startLba, endLba) in bounded steps (a trim of a huge volume stays cheap). */
export async function unmapBlocks(core: PoolCore, rec: CatalogRecord, startLba: number, endLba: number): Promise<void> {
  assert(startLba >= 0 && startLba <= endLba, 'an unmap of a forward range');
  let cursor = startLba;
  while (cursor < endLba) {
    // Each step removes at most EDIT_CHUNK_BLOCKS blocks of mapped data and jumps over holes, so a
    // discard of a huge, mostly empty volume (mkfs does one) stays cheap and bounded per commit.
    cursor = await core.mutate(async () => {
      assertLive(core, rec);
      const next = await core.trees.lookup(rec.root, cursor, endLba, 1);
      if (next.length === 0) return endLba;
      const from = next[0]!.lba;
      const to = Math.min(endLba, from + EDIT_CHUNK_BLOCKS);
      // Progress: each step moves the cursor forward, so the loop ends.
      if (!(from >= cursor && to > from)) fail(`unmap step [${from}, ${to}) from cursor ${cursor}`);
      const { root, mappedDelta } = await core.trees.edit(rec.root, from, to, [], rec);
      rec.root = root;
      rec.mappedBlocks += mappedDelta;
      await core.catalog.saveMapping(rec);
      core.intentLog?.append(rec.id, core.store.txn, from, to, []);
      return to;
    });
  }
}

/** Trim and write-zeroes: whole blocks become holes; partial edge blocks are zeroed in place. */
export async function zeroRange(core: PoolCore, rec: CatalogRecord, offsetBytes: number, lengthBytes: number, noHole: boolean): Promise<void> {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 0) throw new InvalidArgument(`invalid length ${lengthBytes}`);
  if (offsetBytes + lengthBytes > rec.sizeBytes || offsetBytes < 0) {
    throw new OutOfRange(`range [${offsetBytes}, ${offsetBytes + lengthBytes}) is past the end of ${rec.name} (${rec.sizeBytes} bytes)`);
  }
  cipherFor(core, rec); // a locked volume takes no trim either: its I/O is refused whole
  if (lengthBytes === 0) return;
  const firstFull = Math.ceil(offsetBytes / BLOCK_SIZE_BYTES);
  const endFull = Math.floor((offsetBytes + lengthBytes) / BLOCK_SIZE_BYTES);
  assert(rec.sizeBytes % BLOCK_SIZE_BYTES === 0, 'volume sizes are whole blocks');
  if (firstFull >= endFull) {
    await writeRange(core, rec, offsetBytes, Buffer.alloc(lengthBytes), noHole);
    return;
  }
  if (offsetBytes < firstFull * BLOCK_SIZE_BYTES) await writeRange(core, rec, offsetBytes, Buffer.alloc(firstFull * BLOCK_SIZE_BYTES - offsetBytes), noHole);
  if (noHole) {
    for (let lba = firstFull; lba < endFull; lba += IO_BYTES_MAX / BLOCK_SIZE_BYTES) {
      const n = Math.min(endFull - lba, IO_BYTES_MAX / BLOCK_SIZE_BYTES);
      await writeBlocks(core, rec, lba, new PayloadBlocks(Buffer.alloc(n * BLOCK_SIZE_BYTES)), true);
    }
  } else {
    await unmapBlocks(core, rec, firstFull, endFull);
  }
  const tail = offsetBytes + lengthBytes - endFull * BLOCK_SIZE_BYTES;
  if (tail > 0) await writeRange(core, rec, endFull * BLOCK_SIZE_BYTES, Buffer.alloc(tail), noHole);
}

/** Data/hole map of a byte range at block granularity, clipped to the range. */
export async function extentsOf(core: PoolCore, rec: CatalogRecord, offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
  if (offsetBytes < 0 || offsetBytes + lengthBytes > rec.sizeBytes) {
    throw new OutOfRange(`range [${offsetBytes}, ${offsetBytes + lengthBytes}) is past the end of ${rec.name}`);
  }
  const end = offsetBytes + lengthBytes;
  const startLba = Math.floor(offsetBytes / BLOCK_SIZE_BYTES), endLba = Math.ceil(end / BLOCK_SIZE_BYTES);
  const entries = await core.trees.lookupStable(rec, () => rec.root, startLba, endLba);
  // The map must cover the range exactly: sorted, disjoint extents (the hole filling below relies on it).
  for (let i = 1; i < entries.length; i++) if (entries[i]!.lba < entries[i - 1]!.lba + entries[i - 1]!.lengthBlocks) fail('extents sorted and disjoint');
  const out: Extent[] = [];
  const push = (from: number, to: number, hole: boolean): void => {
    const s = Math.max(from, offsetBytes), t = Math.min(to, end);
    if (s >= t) return;
    const last = out[out.length - 1];
    if (last && last.hole === hole && last.offsetBytes + last.lengthBytes === s) last.lengthBytes += t - s;
    else out.push({ offsetBytes: s, lengthBytes: t - s, hole });
  };
  let cursor = startLba;
  for (const e of entries) {
    if (e.lba > cursor) push(cursor * BLOCK_SIZE_BYTES, e.lba * BLOCK_SIZE_BYTES, true);
    push(e.lba * BLOCK_SIZE_BYTES, (e.lba + e.lengthBlocks) * BLOCK_SIZE_BYTES, false);
    cursor = e.lba + e.lengthBlocks;
  }
  if (cursor < endLba) push(cursor * BLOCK_SIZE_BYTES, endLba * BLOCK_SIZE_BYTES, true);
  return out;
}
