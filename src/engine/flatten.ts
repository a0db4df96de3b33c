// Flatten: make a clone share nothing with its origin by copying every shared data block to a new
// one, a bounded chunk per step. The cursor is in the catalog record, so a crash resumes where it was.
import { BLOCK_SIZE_BYTES, FLATTEN_CHUNK_BLOCKS } from './constants.js';
import type { PoolCore } from './pool.js';
import { FLAG_DELETED, type CatalogRecord } from './catalog.js';
import type { LeafEntry } from './format.js';
import { ChecksumError, PoolFull, VolumeNotFound, asIoError, assert, fail } from './errors.js';
import { blockChecksum } from './checksum.js';
import { cipherFor } from './data-path.js';
import type { Run } from './space-map.js';

export async function flattenVolume(core: PoolCore, rec: CatalogRecord, onProgress?: (fraction: number) => void): Promise<void> {
  assert(rec.sizeBytes % BLOCK_SIZE_BYTES === 0, 'a volume of whole blocks');
  cipherFor(core, rec); // a locked lineage cannot be flattened: its blocks move, so they are re-encrypted
  if (rec.flattenCursor === 0) {
    await core.mutate(async () => { assertFlattenable(core, rec); rec.flattenCursor = 1; await core.catalog.save(rec); });
    await core.commit();
  }
  for (;;) {
    // The cursor is read under the lock: a flatten resumed at open and one asked for may run on the same
    // volume side by side, and either may have moved it, or finished (cursor 0), since this one's last step.
    const step = await core.mutate(async (): Promise<number | Error | null> => {
      assertFlattenable(core, rec);
      const totalBlocks = rec.sizeBytes / BLOCK_SIZE_BYTES;
      const cursor = rec.flattenCursor - 1;
      if (rec.flattenCursor === 0 || cursor >= totalBlocks) return null;
      const end = Math.min(totalBlocks, cursor + FLATTEN_CHUNK_BLOCKS);
      // The cursor only moves forward, so the loop ends (a resumed flatten starts where it stopped).
      if (!(cursor >= 0 && end > cursor)) fail(`flatten step [${cursor}, ${end}) of ${rec.name}`);
      return await flattenChunk(core, rec, cursor, end) ?? end / totalBlocks;
    });
    if (step === null) break;
    // A copy that failed is thrown only now, outside mutate: what the step changed is consistent (see
    // unshareAndCopy), so the pool keeps running and a later flatten resumes from the cursor.
    if (step instanceof Error) throw step;
    const fraction = step;
    onProgress?.(fraction);
    // A step whose device calls all completed inline (the page cache) never left the microtask queue:
    // without a turn of the event loop between steps, a whole flatten held every socket and timer.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await core.mutate(async () => {
    assertFlattenable(core, rec);
    if (rec.flattenCursor === 0) return; // the other flatten of this volume finished it
    rec.flattenCursor = 0;
    rec.parentId = 0;
    rec.originSnapId = 0;
    await core.catalog.save(rec);
  });
  await core.commit();
  onProgress?.(1);
}

/** A flatten (possibly resumed in the background) stops when its volume is deleted meanwhile. */
function assertFlattenable(core: PoolCore, rec: CatalogRecord): void {
  core.assertHeld(); // checked and acted on in one lock hold
  if (core.catalog.byId.get(rec.id) !== rec || (rec.flags & FLAG_DELETED) !== 0) throw new VolumeNotFound(rec.name);
}

/**
 * Under the lock: unshare the path (identity edit), then copy every block still counted twice. Returns
 * the error of a copy that failed (the cursor then stays), null when the chunk is done.
 */
async function flattenChunk(core: PoolCore, rec: CatalogRecord, start: number, end: number): Promise<Error | null> {
  core.assertHeld();
  const entries = await core.trees.lookup(rec.root, start, end);
  // At most every mapped block of the chunk is copied: they are reserved before anything changes, so a
  // full pool fails the flatten cleanly (it resumes from the cursor later). Reserving each copy's block
  // later would fail half-way when the edits' new tree nodes (which may use the metadata reserve) took
  // the free blocks above the reserve: a mutation failing after changes stops the pool (seed 5009).
  const mappedBlocks = entries.reduce((n, e) => n + e.lengthBlocks, 0);
  if (core.space.availableBlocks - core.space.reserveBlocks < mappedBlocks) throw new PoolFull('pool is full: flatten needs space to copy shared blocks');
  if (entries.length > 0) {
    const spare = await core.space.reserve(mappedBlocks, false);
    let failed: Error | null;
    try {
      failed = await unshareAndCopy(core, rec, start, end, entries, spare);
    } finally {
      core.space.unreserve(spare);
    }
    if (failed) return failed;
  }
  // (No assertion that the cursor is still start + 1: a second flatten of the same volume, one resumed
  // at open and one asked for, may have done this step already; redoing it changes nothing.)
  rec.flattenCursor = end + 1;
  await core.catalog.save(rec);
  return null;
}

/**
 * Re-inserting the same mapping shadows every shared node on the path; a block that was shared only
 * through a shared leaf then shows a count of 2 and is copied, to the next block of `spare`.
 *
 * A copy whose data cannot be read (EIO), fails its checksum, or cannot be written ends the step and is
 * returned, not thrown: every state between the edits is one the pool may commit (the path unshared,
 * each block either copied and remapped or still shared with the origin), so a damaged block of the
 * origin fails this flatten alone instead of stopping the pool (sim seed 24044).
 */
async function unshareAndCopy(core: PoolCore, rec: CatalogRecord, start: number, end: number, entries: LeafEntry[], spare: Run[]): Promise<Error | null> {
  core.assertHeld();
  for (const e of entries) await core.space.addRange(e.pba, e.lengthBlocks, 1);
  const edited = await core.trees.edit(rec.root, start, end, entries, rec);
  for (const e of entries) await core.space.addRange(e.pba, e.lengthBlocks, -1);
  rec.root = edited.root;
  const copies: LeafEntry[] = [];
  for (const e of entries) {
    for (let i = 0; i < e.lengthBlocks; i++) {
      if ((await core.space.get(e.pba + i)) > 1) copies.push({ lba: e.lba + i, pba: e.pba + i, lengthBlocks: 1, crcs: e.crcs.subarray(i, i + 1) });
    }
  }
  const targets = spare.flatMap((r) => Array.from({ length: r.lengthBlocks }, (_, i) => r.pba + i));
  assert(copies.length <= targets.length, 'a block reserved for every copy');
  for (const [k, c] of copies.entries()) {
    const target = targets[k]!;
    const data = Buffer.alloc(BLOCK_SIZE_BYTES);
    try {
      await core.device.read(c.pba, data);
    } catch (err) {
      return asIoError(err, `flatten: read of physical block ${c.pba} failed`);
    }
    if (blockChecksum(data) !== c.crcs[0]) { core.checksumErrors++; return new ChecksumError(c.pba, 'data block (flatten)'); }
    // An encrypted block's tweak is its physical block: moved, it is decrypted and sealed again, and its checksum follows.
    const cipher = cipherFor(core, rec);
    if (cipher !== null) {
      cipher.decryptBlocks(data, data, c.pba);
      cipher.encryptBlocks(data, data, target);
    }
    const crc = cipher === null ? c.crcs[0]! : blockChecksum(data);
    try {
      await core.device.write(target, data);
    } catch (err) {
      return asIoError(err, `flatten: write of physical block ${target} failed`);
    }
    const r = await core.trees.edit(rec.root, c.lba, c.lba + 1, [{ lba: c.lba, pba: target, lengthBlocks: 1, crcs: Uint32Array.of(crc) }], rec);
    rec.root = r.root;
  }
  return null;
}
