// Damaged metadata images, made deterministically (issue 17, section 5): a small pool with volumes, a
// snapshot and a tree of more than one level is built on a file, then one metadata block of each type
// (leaf, branch, space-map radix node, catalog radix node, count page, catalog page) is damaged in each
// way (bit flip, zeroed, torn half from another version or zeros, swapped with another metadata block,
// checksum-valid but malformed). For each image: the real `cairn check` exits 1 with one line per
// problem naming the cause and the block, without a stack trace or a hang; and opening the pool either
// refuses with one clear line, or opens and answers every read with the right data or EIO: never
// wrong data, and every volume that does not own the damaged block reads correctly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, openPoolFile, CairnError, META_CORRUPT_CODES, type Engine } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { decodeMeta, setU64, viewOf, MetaType, type MetaObject } from '../src/engine/format.js';
import { decodeRecord, RecordKind } from '../src/engine/catalog.js';
import { blockChecksum } from '../src/engine/checksum.js';
import { BLOCK_SIZE_BYTES, CATALOG_RECORD_BYTES, CATALOG_RECORDS_PER_PAGE, META_HEADER_BYTES, RADIX_FANOUT } from '../src/engine/constants.js';
import { cairn, assertBuilt } from './cli-helpers.js';
import { pattern, MiB } from './engine-helpers.js';

const B = BLOCK_SIZE_BYTES;
const POOL_BYTES = 32 * MiB;
const CHUNK_BYTES = 64 * 1024;

type Role = 'leaf' | 'branch' | 'space radix' | 'catalog radix' | 'count page' | 'catalog page';
type Damage = 'bit flip' | 'zeroed' | 'torn (other version)' | 'torn (zeros)' | 'swapped' | 'malformed';
const DAMAGES: Damage[] = ['bit flip', 'zeroed', 'torn (other version)', 'torn (zeros)', 'swapped', 'malformed'];

interface Image {
  path: string;
  totalBlocks: number;
  /** Expected content of every target (volume or snapshot) by name. */
  content: Map<string, Buffer>;
  /** Metadata block of each role, the block to swap it with, and the targets whose tree holds each tree block. */
  pick: Record<Role, { block: number; partner: number }>;
  owners: Map<number, Set<string>>;
}

/** The pool every case starts from: built once, copied per case. */
async function buildImage(dir: string): Promise<Image> {
  const path = join(dir, 'clean.pool');
  const engine = (await createPoolFile(path, POOL_BYTES, { commitIntervalMs: 0 })) as CairnEngine;
  const content = new Map<string, Buffer>();
  // Volume a: 400 single-block extents (every other block), more than a leaf holds: a branch root.
  const a = Buffer.alloc(4 * MiB);
  await engine.createVolume('a', a.length);
  const aId = engine.resolve('a').id;
  for (let lba = 0; lba < 800; lba += 2) {
    const data = pattern(lba + 1, B);
    await engine.write(aId, lba * B, data);
    data.copy(a, lba * B);
  }
  await engine.createSnapshots(['a@s1']);
  content.set('a@s1', Buffer.from(a));
  // Overwrites after the snapshot shadow a's root and first leaf; the other leaves stay shared.
  for (let lba = 0; lba < 40; lba += 2) {
    const data = pattern(10_000 + lba, B);
    await engine.write(aId, lba * B, data);
    data.copy(a, lba * B);
  }
  content.set('a', a);
  // Volume b: a dozen full extents in one leaf, sharing nothing with a (and enough blocks in use for
  // a second space-map page).
  const b = Buffer.alloc(4 * MiB);
  await engine.createVolume('b', b.length);
  const bId = engine.resolve('b').id;
  for (let i = 0; i < 3; i++) {
    const data = pattern(20_000 + i, MiB);
    await engine.write(bId, i * MiB, data);
    data.copy(b, i * MiB);
  }
  content.set('b', b);
  await engine.close();
  const sb = engine.core.sb;
  const file = readFileSync(path);
  const read = (block: number, type?: MetaType): MetaObject =>
    decodeMeta(Buffer.from(file.subarray(block * B, (block + 1) * B)), block, type);

  const countPages: number[] = [];
  const spaceRadix = read(sb.spaceRoot, MetaType.Radix);
  assert.equal(spaceRadix.type, MetaType.Radix);
  for (let i = 0; i < RADIX_FANOUT; i++) if (spaceRadix.ptrs[i]! !== 0) countPages.push(spaceRadix.ptrs[i]!);
  // The catalog's radix array is deeper: find its nodes and pages.
  const catalogRadix: number[] = [];
  const catalogPages: number[] = [];
  const stack = [sb.catalogRoot];
  while (stack.length > 0) {
    const block = stack.pop()!;
    const obj = read(block);
    if (obj.type === MetaType.Radix) {
      catalogRadix.push(block);
      for (let i = 0; i < RADIX_FANOUT; i++) if (obj.ptrs[i]! !== 0) stack.push(obj.ptrs[i]!);
    } else {
      assert.equal(obj.type, MetaType.CatalogPage);
      catalogPages.push(block);
    }
  }
  const owners = new Map<number, Set<string>>();
  const roots = new Map<string, number>();
  for (const pageBlock of catalogPages) {
    const page = read(pageBlock, MetaType.CatalogPage);
    assert.equal(page.type, MetaType.CatalogPage);
    for (let i = 0; i < CATALOG_RECORDS_PER_PAGE; i++) {
      const rec = decodeRecord(page.records, i * CATALOG_RECORD_BYTES, 0);
      if (!rec || rec.kind === RecordKind.DeadNode) continue;
      roots.set(rec.kind === RecordKind.Snapshot ? `a@${rec.name}` : rec.name, rec.root);
    }
  }
  const branches: number[] = [], leaves: number[] = [];
  for (const [name, root] of roots) {
    const walk = [root];
    while (walk.length > 0) {
      const block = walk.pop()!;
      if (!owners.has(block)) owners.set(block, new Set());
      owners.get(block)!.add(name);
      const node = read(block, MetaType.Leaf);
      if (node.type === MetaType.Branch) { if (!branches.includes(block)) branches.push(block); walk.push(...node.children); }
      else if (!leaves.includes(block)) leaves.push(block);
    }
  }
  const aRoot = roots.get('a')!, sRoot = roots.get('a@s1')!, bRoot = roots.get('b')!;
  assert.ok(branches.includes(aRoot) && branches.includes(sRoot), 'a and its snapshot have branch roots');
  assert.ok(leaves.includes(bRoot), 'b is one leaf');
  // A leaf a and its snapshot share (damage to it must not touch b).
  const shared = leaves.find((l) => owners.get(l)!.has('a') && owners.get(l)!.has('a@s1'))!;
  assert.ok(shared !== undefined, 'a leaf shared by a and a@s1');
  assert.ok(catalogRadix.length >= 2 && countPages.length >= 2, 'radix arrays of several blocks');
  const pick: Image['pick'] = {
    'leaf': { block: shared, partner: bRoot },
    'branch': { block: aRoot, partner: sRoot }, // the snapshot's root is the older version of a's root
    'space radix': { block: sb.spaceRoot, partner: countPages[0]! },
    'catalog radix': { block: sb.catalogRoot, partner: catalogRadix.find((r) => r !== sb.catalogRoot)! },
    'count page': { block: countPages[0]!, partner: countPages[1]! },
    'catalog page': { block: catalogPages[0]!, partner: bRoot },
  };
  return { path, totalBlocks: sb.totalBlocks, content, pick, owners };
}

function reChecksum(block: Buffer): void {
  block.writeUInt32LE(0, 8);
  block.writeUInt32LE(blockChecksum(block), 8);
}

/** A checksum-valid block of `role` that breaks one rule of its type. */
function malform(role: Role, block: Buffer, totalBlocks: number): void {
  const view = viewOf(block);
  const p = META_HEADER_BYTES;
  switch (role) {
    case 'leaf': { // the first two extents out of order
      const first = block.readUInt32LE(p), firstHigh = block.readUInt32LE(p + 4);
      const next = p + 20 + 4 * block.readUInt32LE(p + 16);
      block.writeUInt32LE(block.readUInt32LE(next), p); block.writeUInt32LE(block.readUInt32LE(next + 4), p + 4);
      block.writeUInt32LE(first, next); block.writeUInt32LE(firstHigh, next + 4);
      break;
    }
    case 'branch': setU64(view, p + 16 + 8, totalBlocks + 5); break; // child 1 outside the pool
    case 'space radix': case 'catalog radix': {
      for (let i = 0, off = p; i < RADIX_FANOUT; i++, off += 16) {
        if (view.getUint32(off, true) !== 0) { setU64(view, off, totalBlocks + 7); break; } // a pointer outside the pool
      }
      break;
    }
    case 'count page': block.writeUInt16LE(7, 6); break; // a count page has no entry count
    case 'catalog page': { // the first record's root outside the pool
      for (let i = 0; i < CATALOG_RECORDS_PER_PAGE; i++) {
        const off = p + i * CATALOG_RECORD_BYTES;
        if (block.readUInt8(off) !== 0) { setU64(view, off + 16, totalBlocks + 9); break; }
      }
      break;
    }
  }
  reChecksum(block);
}

const SECTOR_BYTES = 512;

/**
 * A write torn at a sector boundary: `own` keeps its sectors before the tear and has `old`'s after it.
 * The tear is at the half when the halves differ; a block whose second half is the same in both (a
 * radix node of a small pool is mostly zeros) is torn at the last sector where they differ.
 */
function tear(own: Buffer, old: Buffer): void {
  let at = B / 2;
  if (own.subarray(at).equals(old.subarray(at))) {
    let last = B - 1;
    while (last > 0 && own[last] === old[last]) last--;
    at = Math.floor(last / SECTOR_BYTES) * SECTOR_BYTES;
  }
  old.copy(own, at, at);
}

/** Writes the damaged copy of the image; returns the blocks that were changed. */
function damage(image: Image, role: Role, how: Damage, path: string): number[] {
  const file = readFileSync(image.path);
  const { block, partner } = image.pick[role];
  const at = (b: number): Buffer => file.subarray(b * B, (b + 1) * B);
  const own = Buffer.from(at(block)), other = Buffer.from(at(partner));
  let changed = [block];
  switch (how) {
    case 'bit flip': own[100]! ^= 0x10; break;
    case 'zeroed': own.fill(0); break;
    case 'torn (other version)': tear(own, other); break;
    case 'torn (zeros)': tear(own, Buffer.alloc(B)); break;
    case 'swapped': other.copy(at(block)); own.copy(at(partner)); changed = [block, partner]; break;
    case 'malformed': malform(role, own, image.totalBlocks); break;
  }
  if (how !== 'swapped') own.copy(at(block));
  writeFileSync(path, file);
  return changed;
}

function withTimeout<T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} hung for ${ms} ms`)), ms); });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const ALLOWED_OPEN_CODES = new Set<string>([...META_CORRUPT_CODES, 'pool_corrupt', 'io_error']);

/** Opens the damaged pool and reads every target: right data or EIO, and all of an undamaged target. */
async function openAndRead(image: Image, path: string, damaged: number[], where: string): Promise<string> {
  let engine: Engine;
  try {
    engine = await withTimeout(openPoolFile(path, { commitIntervalMs: 0 }), `open (${where})`);
  } catch (err) {
    assert.ok(err instanceof CairnError, `${where}: open refuses with a typed error, got ${String(err)}`);
    assert.ok(ALLOWED_OPEN_CODES.has(err.code), `${where}: open refuses with a corruption code, got ${err.code}`);
    assert.ok(!err.message.includes('\n') && err.message.length > 0, `${where}: one clear line: ${err.message}`);
    return `refused: ${err.code}`;
  }
  // A target is undamaged when no damaged block is a node of its tree (damage elsewhere may still
  // stop its reads: those must then fail, never return wrong data).
  const treeDamage = damaged.some((b) => image.owners.has(b));
  const hit = new Set(damaged.flatMap((b) => [...(image.owners.get(b) ?? [])]));
  const counts = { ok: 0, eio: 0 };
  try {
    for (const [name, expected] of image.content) {
      const mustRead = treeDamage && !damaged.some((b) => !image.owners.has(b)) && !hit.has(name);
      const id = engine.resolve(name).id;
      for (let off = 0; off < expected.length; off += CHUNK_BYTES) {
        const want = expected.subarray(off, off + CHUNK_BYTES);
        try {
          const got = await withTimeout(engine.read(id, off, want.length), `read ${name}@${off} (${where})`);
          assert.ok(got.equals(want), `${where}: ${name} at ${off} reads the right data`);
          counts.ok++;
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err;
          assert.ok(err instanceof CairnError && err.errno === 'EIO', `${where}: a read of ${name} at ${off} fails with EIO, got ${String(err)}`);
          assert.ok(!mustRead, `${where}: ${name} owns no damaged block, yet its read at ${off} failed: ${(err as Error).message}`);
          counts.eio++;
        }
      }
    }
  } finally {
    await engine.close().catch(() => undefined); // the case is judged on its reads; a damaged pool may refuse a clean close
  }
  return `opened: ${counts.ok} chunks read, ${counts.eio} EIO`;
}

const ROLES: Role[] = ['leaf', 'branch', 'space radix', 'catalog radix', 'count page', 'catalog page'];

test('damaged metadata images: check names every problem, open refuses or reads right data or EIO', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'cairn-damaged-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const image = await buildImage(dir);
  const clean = await cairn(null, ['check', '--pool', image.path]);
  assert.equal(clean.code, 0, `the undamaged image checks clean: ${clean.stdout}${clean.stderr}`);
  const summary: string[] = [];
  for (const role of ROLES) {
    for (const how of DAMAGES) {
      const where = `${role}, ${how}`;
      const path = join(dir, 'case.pool');
      copyFileSync(image.path, path);
      const damaged = damage(image, role, how, path);
      const check = await cairn(null, ['check', '--pool', path]);
      const output = check.stdout + check.stderr;
      assert.equal(check.code, 1, `${where}: check exits 1, got ${check.code}: ${output}`);
      assert.doesNotMatch(output, /\n\s+at /, `${where}: no stack trace`);
      assert.equal(check.stderr, '', `${where}: problems go to stdout, one line each`);
      const lines = check.stdout.trim().split('\n');
      assert.match(lines[lines.length - 1]!, /^FAILED: \d+ problems/, `${where}: a summary line`);
      // The damaged block is named, with the cause as its code.
      const named = lines.filter((l) => damaged.some((b) => new RegExp(`\\b${b}\\b`).test(l)) && /\(meta_[a-z_]+\)/.test(l));
      assert.ok(named.length > 0, `${where}: a line names block ${damaged.join('/')} and its cause:\n${lines.slice(0, 6).join('\n')}`);
      const opened = await openAndRead(image, path, damaged, where);
      summary.push(`${where}: check ${named[0]!.replace(/\s+/g, ' ').slice(0, 120)}; ${opened}`);
    }
  }
  t.diagnostic(summary.join('\n'));
});
