// The consistency check, the tests' oracle: reads the durable state straight from the device (no
// cache), walks every tree, recomputes every reference count and verifies every checksum, then
// compares with the space map. Reports leaks, double ownership and corruption with block numbers.
import {
  BLOCK_SIZE_BYTES, CATALOG_RECORDS_MAX, CHECK_PROBLEMS_MAX, CATALOG_RECORDS_PER_PAGE, CATALOG_RECORD_BYTES, FIRST_FREE_BLOCK, FORMAT_VERSION_SETTINGS, FORMAT_VERSION_LOGGED,
  FORMAT_VERSION_UNMIRRORED, RADIX_FANOUT, REFCOUNTS_PER_PAGE, SUPERBLOCK_MIRROR_SLOTS, TREE_DEPTH_MAX, RADIX_DEPTH_MAX, radixDepth, EXTENT_BLOCKS_MAX,
  POOL_BLOCKS_MIN, POOL_BLOCKS_MAX, KEY_SLOTS_PER_BLOCK, KEY_SLOT_BYTES,
} from './constants.js';
import type { Device } from './device/device.js';
import { decodeMeta, MetaType, type MetaLimits, type MetaObject, type RadixNode, type CountPage, type CatalogPage, type TreeNode } from './format.js';
import { recoverSuperblock } from './superblock-recovery.js';
import { copyBlock, hasKeyring, type Superblock } from './superblock.js';
import { decodeSlot, uuidBytes } from './keyring.js';
import { blockChecksums } from './checksum.js';
import { decodeRecord, RecordKind, type CatalogRecord } from './catalog.js';
import type { CheckProblem, CheckReport } from './types.js';
import { CairnError, PoolCorrupt, assert, fail } from './errors.js';

class Checker {
  readonly problems: CheckProblem[] = [];
  readonly expected: Uint32Array;
  nodesChecked = 0;
  blocksChecked = 0;
  /** Counting metadata objects only: data extents are neither read nor checked. */
  metadataOnly = false;

  /** Blocks that hold superblock copies: counted as used, never pointed at. */
  readonly reserved: ReadonlySet<number>;
  readonly limits: MetaLimits;

  constructor(readonly device: Device, readonly totalBlocks: number, mirrored: boolean, generation: number) {
    // checkDevice bounds the size first: a damaged superblock must not size this array.
    assert(totalBlocks >= POOL_BLOCKS_MIN && totalBlocks <= POOL_BLOCKS_MAX, 'a checked pool of a valid size');
    this.expected = new Uint32Array(totalBlocks);
    this.reserved = new Set(mirrored ? SUPERBLOCK_MIRROR_SLOTS : []);
    this.limits = { totalBlocks, generationMax: generation };
  }

  problem(p: CheckProblem): void {
    assert(p.message.length > 0, 'a problem says what is wrong');
    p.message = p.message.replace(/\s*\n\s*/g, ' '); // `cairn check` prints one line per problem
    if (this.problems.length < CHECK_PROBLEMS_MAX) this.problems.push(p); }

  inRange(block: number, what: string): boolean {
    if (block >= FIRST_FREE_BLOCK && block < this.totalBlocks && !this.reserved.has(block)) return true;
    if (this.reserved.has(block)) {
      this.problem({ kind: 'dangling', physicalBlock: block, message: `${what} points at a superblock mirror slot (block ${block})` });
      return false;
    }
    this.problem({ kind: 'dangling', physicalBlock: block, message: `${what} points outside the pool (block ${block})` });
    return false;
  }

  async readMeta(block: number, type: MetaType, what: string): Promise<MetaObject | null> {
    assert(block >= FIRST_FREE_BLOCK && block < this.totalBlocks, 'metadata is read from inside the pool (inRange first)');
    const buf = Buffer.alloc(BLOCK_SIZE_BYTES);
    try {
      await this.device.read(block, buf);
      this.nodesChecked++;
      return decodeMeta(buf, block, type, this.limits);
    } catch (err) {
      // The error's code names the cause (meta_bad_checksum, meta_wrong_location, ...).
      const code = err instanceof CairnError ? ` (${err.code})` : '';
      this.problem({ kind: 'corrupt', physicalBlock: block, message: `${what}: ${(err as Error).message}${code}` });
      return null;
    }
  }

  /** Walks a paged array's radix tree; counts its blocks and checks the free summaries. */
  async walkRadix(rootBlock: number, totalRecords: number, perPage: number, pageType: MetaType, what: string,
    onPage: (index: number, page: MetaObject | null) => void, freeOf: (page: MetaObject | null, index: number) => number | null): Promise<void> {
    const pages = Math.ceil(totalRecords / perPage);
    const depth = radixDepth(pages);
    // The walk below descends exactly `depth` levels; the bound says no array can need more.
    if (depth > RADIX_DEPTH_MAX) fail(`${what} needs ${depth} radix levels, more than ${RADIX_DEPTH_MAX}`);
    if (rootBlock === 0) { for (let p = 0; p < pages; p++) onPage(p, null); return; }
    // Returns the free records of the subtree (null when the array keeps no summaries or a node is unreadable).
    const visit = async (block: number, level: number, firstPage: number): Promise<number | null> => {
      if (!this.inRange(block, what)) return null;
      this.expected[block]! += 1;
      const node = (await this.readMeta(block, MetaType.Radix, `${what} radix node`)) as RadixNode | null;
      if (!node) return null;
      const span = RADIX_FANOUT ** (level - 1);
      let subtreeFree: number | null = 0;
      for (let i = 0; i < RADIX_FANOUT; i++) {
        const childFirst = firstPage + i * span;
        if (childFirst >= pages) break;
        const ptr = node.ptrs[i]!;
        let free: number | null;
        if (level > 1) {
          // An absent subtree is all free: every record it spans inside the array.
          free = ptr !== 0 ? await visit(ptr, level - 1, childFirst)
            : freeOf(null, childFirst) === null ? null : Math.min(span * perPage, totalRecords - childFirst * perPage);
        } else {
          let page: MetaObject | null = null;
          if (ptr !== 0 && this.inRange(ptr, what)) {
            this.expected[ptr]! += 1;
            page = await this.readMeta(ptr, pageType, `${what} page ${childFirst}`);
          }
          onPage(childFirst, page);
          free = freeOf(page, childFirst);
        }
        if (free !== null && free !== node.free[i]) {
          this.problem({ kind: 'corrupt', physicalBlock: block, message: `${what} free summary of ${level > 1 ? `the subtree from page ${childFirst}` : `page ${childFirst}`} says ${node.free[i]}, it has ${free}` });
        }
        subtreeFree = free === null || subtreeFree === null ? null : subtreeFree + free;
      }
      return subtreeFree;
    };
    await visit(rootBlock, depth, 0);

  }

  async walkTree(root: number, owner: string): Promise<void> {
    assert(root !== 0, 'an empty tree is not walked');
    // (block, level) pairs: every descent counts its levels (a cycle also stops at a shared block).
    const stack: number[] = [root, 1];
    while (stack.length > 0) {
      const level = stack.pop()!, block = stack.pop()!;
      if (!this.inRange(block, `tree of ${owner}`)) continue;
      if (level > TREE_DEPTH_MAX) {
        this.problem({ kind: 'corrupt', physicalBlock: block, message: `tree of ${owner} descends past ${TREE_DEPTH_MAX} levels at block ${block} (meta_too_deep)` });
        continue;
      }
      this.expected[block]! += 1;
      if (this.expected[block]! > 1) continue; // shared subtree: its children were counted once already
      const node = (await this.readMeta(block, MetaType.Leaf, `tree node of ${owner}`)) as TreeNode | null;
      if (!node) continue;
      if (node.type === MetaType.Branch) { for (const child of node.children) stack.push(child, level + 1); continue; }
      if (this.metadataOnly) continue;
      for (let i = 0; i < node.ext.count; i++) {
        const e = node.ext.entry(i);
        await this.checkExtent(e.pba, e.lengthBlocks, e.crcs, owner);
      }
    }
  }

  async checkExtent(pba: number, lengthBlocks: number, crcs: Uint32Array, owner: string): Promise<void> {
    // The leaf passed its validator: extents are short and carry a checksum per block.
    assert(lengthBlocks >= 1 && lengthBlocks <= EXTENT_BLOCKS_MAX && crcs.length >= lengthBlocks, 'a validated extent');
    if (!this.inRange(pba, `extent of ${owner}`) || pba + lengthBlocks > this.totalBlocks) return;
    const data = Buffer.alloc(lengthBlocks * BLOCK_SIZE_BYTES);
    let readOk = true;
    try { await this.device.read(pba, data); } catch (err) {
      readOk = false;
      this.problem({ kind: 'corrupt', physicalBlock: pba, message: `data of ${owner} unreadable: ${(err as Error).message}` });
    }
    const actual = new Uint32Array(lengthBlocks);
    if (readOk) blockChecksums(data, actual);
    for (let i = 0; i < lengthBlocks; i++) {
      this.expected[pba + i]! += 1;
      this.blocksChecked++;
      if (readOk && actual[i] !== crcs[i]) {
        this.problem({ kind: 'corrupt', physicalBlock: pba + i, message: `data block of ${owner} fails its checksum` });
      }
    }
  }
}

export async function checkDevice(device: Device): Promise<CheckReport> {
  const recovery = await recoverSuperblock(device);
  const sbProblems: CheckProblem[] = [];
  const notes: string[] = [];
  for (const f of recovery.findings) {
    if (f.problem) sbProblems.push({ kind: 'superblock', physicalBlock: f.blockNumber, message: f.message });
    else notes.push(f.message);
  }
  const sb = recovery.sb;
  if (recovery.copies.every((copy) => copy.decoded.state === 'empty')) throw new PoolCorrupt('no superblock: not a Cairn pool (all four superblock slots are zero)');
  // No valid copy: nothing to walk; the copies are what there is to report.
  if (sb === null) return { ok: false, problems: sbProblems, notes, blocksChecked: 0, nodesChecked: 0 };
  // The checker keeps a count per block in memory: a size from a damaged superblock must not decide it.
  if (!(sb.totalBlocks >= POOL_BLOCKS_MIN && sb.totalBlocks <= Math.min(POOL_BLOCKS_MAX, device.sizeBlocks))) {
    throw new PoolCorrupt(`superblock claims ${sb.totalBlocks} blocks, the device has ${device.sizeBlocks}`);
  }
  // A lost generation: what follows checks the generation a rewind would open.
  const mirrored = sb.formatVersion !== FORMAT_VERSION_UNMIRRORED;
  const c = new Checker(device, sb.totalBlocks, mirrored, sb.generation);
  for (const p of sbProblems) c.problem(p);
  for (let b = 0; b < FIRST_FREE_BLOCK; b++) c.expected[b] = 1;
  for (const b of c.reserved) c.expected[b] = 1;
  // The intent log's region is the superblock's, like its slots (its records are replayed at open;
  // the checker checks the committed state they apply to).
  if (sb.logBlocks > 0) {
    if (!(sb.logStartBlock >= FIRST_FREE_BLOCK && sb.logStartBlock + sb.logBlocks <= sb.totalBlocks)) {
      c.problem({ kind: 'superblock', physicalBlock: sb.logStartBlock, message: `intent log region [${sb.logStartBlock}, ${sb.logStartBlock + sb.logBlocks}) lies outside the pool` });
    } else {
      for (let b = sb.logStartBlock; b < sb.logStartBlock + sb.logBlocks; b++) c.expected[b] = (c.expected[b] ?? 0) + 1;
    }
  }
  if (hasKeyring(sb.formatVersion)) {
    const end = sb.keyringStartBlock + 2 * sb.keyringBlocks;
    if (!(sb.keyringBlocks >= 1 && sb.keyringStartBlock >= FIRST_FREE_BLOCK && end <= sb.totalBlocks)) {
      c.problem({ kind: 'superblock', physicalBlock: sb.keyringStartBlock, message: `keyring region [${sb.keyringStartBlock}, ${end}) lies outside the pool` });
    } else {
      for (let b = sb.keyringStartBlock; b < end; b++) c.expected[b] = (c.expected[b] ?? 0) + 1;
    }
  }
  const actual = new Uint32Array(sb.totalBlocks);
  await walkSpaceMap(c, sb, actual);
  const records = await walkCatalog(c, sb);
  checkCatalog(c, records);
  await checkKeyring(c, device, sb, records, notes);
  if (sb.formatVersion < FORMAT_VERSION_SETTINGS && records.some((r) => r.kind === RecordKind.Setting)) {
    c.problem({ kind: 'catalog', physicalBlock: 0, message: `format ${sb.formatVersion} pool holds setting records (format ${FORMAT_VERSION_SETTINGS} and later only)` });
  }
  await walkTrees(c, records);
  if (sb.metaObjects !== null && c.problems.length === 0 && sb.metaObjects !== c.nodesChecked) {
    c.problem({ kind: 'superblock', physicalBlock: copyBlock('primary', sb.generation), message: `superblock counts ${sb.metaObjects} metadata blocks, the pool holds ${c.nodesChecked}` });
  }
  if (sb.formatVersion === FORMAT_VERSION_UNMIRRORED) {
    const free = SUPERBLOCK_MIRROR_SLOTS.every((b) => actual[b] === 0);
    notes.push(`format ${FORMAT_VERSION_UNMIRRORED} pool: one superblock copy per generation; ` +
      (free ? `opening it upgrades it to format ${FORMAT_VERSION_LOGGED} (mirrored, with an intent log)` : `blocks ${SUPERBLOCK_MIRROR_SLOTS.join(' and ')} are in use, so it stays unmirrored`));
  }
  assert(actual.length === c.expected.length, 'a count and a reference count per block');
  for (let b = 0; b < sb.totalBlocks; b++) {
    const want = c.expected[b]!, have = actual[b]!;
    if (want === have) continue;
    if (want === 0) c.problem({ kind: 'leak', physicalBlock: b, message: `block ${b} has count ${have} but nothing references it` });
    else if (have < want) c.problem({ kind: 'double_owner', physicalBlock: b, message: `block ${b} is referenced ${want} times but counted ${have}: it could be handed out twice` });
    else c.problem({ kind: 'refcount_mismatch', physicalBlock: b, message: `block ${b} is referenced ${want} times but counted ${have}` });
  }
  return { ok: c.problems.length === 0, problems: c.problems, notes, blocksChecked: c.blocksChecked, nodesChecked: c.nodesChecked };
}

/** Walks the space map's radix tree and pages (their counts into `actual`), checking its free summaries. */
async function walkSpaceMap(c: Checker, sb: Superblock, actual: Uint32Array): Promise<void> {
  assert(actual.length === sb.totalBlocks, 'a count per block of the pool');
  await c.walkRadix(sb.spaceRoot, sb.totalBlocks, REFCOUNTS_PER_PAGE, MetaType.CountPage, 'space map', (index, page) => {
    if (!page) return;
    const counts = (page as CountPage).counts;
    const first = index * REFCOUNTS_PER_PAGE;
    for (let i = 0; i < REFCOUNTS_PER_PAGE && first + i < sb.totalBlocks; i++) actual[first + i] = counts[i]!;
  }, (page, index) => {
    const first = index * REFCOUNTS_PER_PAGE;
    const n = Math.min(REFCOUNTS_PER_PAGE, sb.totalBlocks - first);
    if (!page) return n;
    let free = 0;
    for (let i = 0; i < n; i++) if ((page as CountPage).counts[i] === 0) free++;
    return free;
  });
}

/** Walks the catalog's radix tree and pages; returns its records. */
async function walkCatalog(c: Checker, sb: Superblock): Promise<CatalogRecord[]> {
  const records: CatalogRecord[] = [];
  await c.walkRadix(sb.catalogRoot, CATALOG_RECORDS_MAX, CATALOG_RECORDS_PER_PAGE, MetaType.CatalogPage, 'catalog', (index, page) => {
    if (!page) return;
    for (let i = 0; i < CATALOG_RECORDS_PER_PAGE; i++) {
      const slot = index * CATALOG_RECORDS_PER_PAGE + i;
      let rec: CatalogRecord | null;
      try {
        rec = decodeRecord((page as CatalogPage).records, i * CATALOG_RECORD_BYTES, slot);
      } catch (e) {
        if (!(e instanceof PoolCorrupt)) throw e;
        c.problem({ kind: 'catalog', physicalBlock: page.block, message: e.message });
        continue;
      }
      if (rec) {
        if (slot >= sb.catalogSlots) c.problem({ kind: 'catalog', physicalBlock: page.block, message: `record in slot ${slot} past the used slots (${sb.catalogSlots})` });
        records.push(rec);
      }
    }
  }, () => null); // the catalog keeps its free slots in memory, not in the summary
  assert(records.length <= CATALOG_RECORDS_MAX, 'no more records than the catalog holds');
  return records;
}

/** Walks the tree of every record (volumes, snapshots, trees still being dropped). */
async function walkTrees(c: Checker, records: CatalogRecord[]): Promise<void> {
  assert(records.length <= CATALOG_RECORDS_MAX, 'records of one catalog');
  for (const rec of records) {
    if (rec.root === 0) continue;
    const owner = rec.kind === RecordKind.DeadNode ? `dropped node ${rec.root}` : `${rec.kind === RecordKind.Volume ? 'volume' : 'snapshot'} ${rec.name} (#${rec.id})`;
    await c.walkTree(rec.root, owner);
  }
}

/**
 * Blocks holding metadata objects in the committed state on `device` (generation `sb`), by a walk
 * that reads metadata only; null when the walk meets damage (the count stays unknown).
 */
export async function countMetaObjects(device: Device, sb: Superblock): Promise<number | null> {
  const c = new Checker(device, sb.totalBlocks, sb.formatVersion !== FORMAT_VERSION_UNMIRRORED, sb.generation);
  c.metadataOnly = true;
  await walkSpaceMap(c, sb, new Uint32Array(sb.totalBlocks));
  await walkTrees(c, await walkCatalog(c, sb));
  assert(c.blocksChecked === 0, 'a metadata-only walk reads no data');
  return c.problems.length === 0 ? c.nodesChecked : null;
}

/**
 * Key slots against the catalog: every key a record names has a valid copy (checksums only: no key is
 * needed to check an encrypted pool), a lineage's records share one key, and a slot no record names
 * is noted (a crash between a deletion's commit and its shred; the next open destroys it).
 */
async function checkKeyring(c: Checker, device: Device, sb: Superblock, records: CatalogRecord[], notes: string[]): Promise<void> {
  const named = new Set(records.filter((r) => r.kind === RecordKind.Volume || r.kind === RecordKind.Snapshot).map((r) => r.keyId).filter((k) => k !== 0));
  const byId = new Map(records.filter((r) => r.kind === RecordKind.Volume).map((r) => [r.id, r]));
  for (const r of records) {
    const parent = r.parentId !== 0 ? byId.get(r.parentId) : undefined;
    if ((r.kind === RecordKind.Snapshot || r.kind === RecordKind.Volume) && parent !== undefined && parent.keyId !== r.keyId) {
      c.problem({ kind: 'catalog', physicalBlock: 0, message: `${r.name} (#${r.id}) uses key slot ${r.keyId} but its ${r.kind === RecordKind.Snapshot ? 'volume' : 'origin'} ${parent.name} uses ${parent.keyId}` });
    }
  }
  if (!hasKeyring(sb.formatVersion)) {
    if (named.size > 0) c.problem({ kind: 'catalog', physicalBlock: 0, message: `records name key slots but the pool (format ${sb.formatVersion}) has no keyring` });
    return;
  }
  if (!(sb.keyringBlocks >= 1 && sb.keyringStartBlock + 2 * sb.keyringBlocks <= sb.totalBlocks)) return; // reported with the region
  const uuid = uuidBytes(sb.poolUuid);
  const copies: Buffer[] = [];
  for (const copy of [0, 1] as const) {
    const buf = Buffer.alloc(sb.keyringBlocks * BLOCK_SIZE_BYTES);
    await device.read(sb.keyringStartBlock + copy * sb.keyringBlocks, buf);
    copies.push(buf);
  }
  const slots = sb.keyringBlocks * KEY_SLOTS_PER_BLOCK;
  for (let keyId = 1; keyId <= slots; keyId++) {
    const decoded = ([0, 1] as const).map((copy) => decodeSlot(copies[copy]!, (keyId - 1) * KEY_SLOT_BYTES, keyId, copy, uuid));
    const valid = decoded.filter((d) => d.state === 'valid').length;
    const block = (copy: number): number => sb.keyringStartBlock + copy * sb.keyringBlocks + Math.floor((keyId - 1) / KEY_SLOTS_PER_BLOCK);
    decoded.forEach((d, copy) => {
      if (d.state !== 'damaged') return;
      if (named.has(keyId) && valid === 0) return; // reported below, once
      notes.push(`key slot ${keyId}, copy ${copy} (block ${block(copy)}) is damaged (${d.cause})${valid > 0 ? ': the other copy is whole, and open rewrites this one' : ''}`);
    });
    if (named.has(keyId) && valid === 0) {
      c.problem({ kind: 'corrupt', physicalBlock: block(0), message: `key slot ${keyId} has no valid copy: the data of its lineage cannot be decrypted` });
    } else if (!named.has(keyId) && valid > 0) {
      notes.push(`key slot ${keyId} holds a key no volume or snapshot uses (a deletion interrupted before its key was destroyed): the next open destroys it`);
    }
  }
  for (const keyId of named) if (keyId > slots) c.problem({ kind: 'catalog', physicalBlock: 0, message: `records name key slot ${keyId}, past the keyring's ${slots}` });
}

function checkCatalog(c: Checker, records: CatalogRecord[]): void {
  assert(records.every((r) => r.kind !== RecordKind.Empty), 'empty slots are not records');
  const ids = new Map<number, CatalogRecord>();
  const names = new Set<string>();
  const settingKeys = new Set<string>();
  for (const r of records) {
    if (r.kind === RecordKind.DeadNode) continue;
    if (r.kind === RecordKind.Setting) {
      if (settingKeys.has(r.name)) c.problem({ kind: 'catalog', physicalBlock: 0, message: `setting ${r.name} stored twice` });
      settingKeys.add(r.name);
      continue;
    }
    if (ids.has(r.id)) c.problem({ kind: 'catalog', physicalBlock: 0, message: `catalog id ${r.id} used twice` });
    ids.set(r.id, r);
    if (r.kind === RecordKind.Volume) {
      if (names.has(r.name)) c.problem({ kind: 'catalog', physicalBlock: 0, message: `volume name ${r.name} used twice` });
      names.add(r.name);
    }
  }
  for (const r of records) {
    if (r.kind === RecordKind.Snapshot && ids.get(r.parentId)?.kind !== RecordKind.Volume) {
      c.problem({ kind: 'catalog', physicalBlock: 0, message: `snapshot ${r.name} (#${r.id}) belongs to missing volume #${r.parentId}` });
    }
  }
}
