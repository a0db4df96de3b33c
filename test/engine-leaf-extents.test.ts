// A leaf's extents as typed arrays, against a plain array of entries: random splices (growing past a
// block's capacity and shrinking back), merges, copies and truncation, then an encode/decode round
// trip; and a leaf block whose checksum matches but whose extents do not fit is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeafExtents, LEAF_EXTENTS_MAX } from '../src/engine/leaf-extents.js';
import { decodeMeta, encodeMeta, leafOf, MetaType, type LeafEntry, type LeafNode } from '../src/engine/format.js';
import { blockChecksum } from '../src/engine/checksum.js';
import { EXTENT_BLOCKS_MAX } from '../src/engine/constants.js';
import { MetaBadStructure } from '../src/engine/errors.js';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

function entriesOf(x: LeafExtents): LeafEntry[] {
  return Array.from({ length: x.count }, (_, i) => x.entry(i));
}

function plain(list: LeafEntry[]): object[] {
  return list.map((e) => ({ lba: e.lba, pba: e.pba, len: e.lengthBlocks, crcs: [...e.crcs] }));
}

/** Sorted entries with gaps, inside [from, to), fresh checksums. */
function randomEntries(rand: () => number, from: number, to: number, max: number): LeafEntry[] {
  const out: LeafEntry[] = [];
  let lba = from;
  while (out.length < max) {
    const prev = out[out.length - 1];
    // Half the time the next extent continues the previous one on disk, so merges happen.
    const contiguous = prev !== undefined && rand() < 0.5;
    if (!contiguous) lba += Math.floor(rand() * 3);
    const len = 1 + Math.floor(rand() * (rand() < 0.2 ? EXTENT_BLOCKS_MAX : 4));
    if (lba + len > to) break;
    const pba = contiguous ? prev.pba + prev.lengthBlocks : 1000 + Math.floor(rand() * 1e6);
    out.push({ lba, pba, lengthBlocks: len, crcs: Uint32Array.from({ length: len }, () => Math.floor(rand() * 2 ** 32)) });
    lba += len;
  }
  return out;
}

/** The model's merge: contiguous in lba and pba, and the sum within an extent's maximum. */
function mergeModel(list: LeafEntry[], from: number, to: number): void {
  let i = Math.max(0, from);
  while (i < to && i + 1 < list.length) {
    const a = list[i]!, b = list[i + 1]!;
    if (a.lba + a.lengthBlocks === b.lba && a.pba + a.lengthBlocks === b.pba && a.lengthBlocks + b.lengthBlocks <= EXTENT_BLOCKS_MAX) {
      const crcs = new Uint32Array(a.lengthBlocks + b.lengthBlocks);
      crcs.set(a.crcs); crcs.set(b.crcs, a.lengthBlocks);
      list.splice(i, 2, { lba: a.lba, pba: a.pba, lengthBlocks: a.lengthBlocks + b.lengthBlocks, crcs });
      to--;
    } else {
      i++;
    }
  }
}

test('random splices, merges, copies and truncation match an array of entries', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rand = rng(seed);
    const x = new LeafExtents();
    const model: LeafEntry[] = [];
    for (let step = 0; step < 300; step++) {
      const first = Math.floor(rand() * (model.length + 1));
      const last = first + Math.floor(rand() * Math.min(4, model.length - first + 1));
      const lo = first > 0 ? model[first - 1]!.lba + model[first - 1]!.lengthBlocks : 0;
      const hi = last < model.length ? model[last]!.lba : lo + 4000;
      // Now and then a burst larger than a block holds, as a large write brings before the split.
      const repl = randomEntries(rand, lo, hi, rand() < 0.05 ? 300 : Math.floor(rand() * 4));
      x.splice(first, last, repl);
      model.splice(first, last - first, ...repl);
      if (rand() < 0.5) {
        const mergedBy = x.mergeAround(first - 1, Math.min(x.count - 1, first + repl.length));
        const before = model.length;
        mergeModel(model, first - 1, Math.min(model.length - 1, first + repl.length));
        assert.equal(mergedBy, before - model.length, `seed ${seed} step ${step}: merges counted`);
      }
      if (x.count > LEAF_EXTENTS_MAX / 2 && rand() < 0.3) {
        const cut = Math.floor(x.count / 2);
        const tail = x.copyRange(cut);
        assert.deepEqual(plain(entriesOf(tail)), plain(model.slice(cut)), `seed ${seed} step ${step}: copied tail`);
        x.truncate(cut);
        model.length = cut;
      }
      assert.equal(x.count, model.length, `seed ${seed} step ${step}: count`);
      assert.deepEqual(plain(entriesOf(x)), plain(model), `seed ${seed} step ${step}: extents`);
      assert.equal(x.bytes, model.reduce((s, e) => s + 20 + 4 * e.lengthBlocks, 0), `seed ${seed} step ${step}: bytes`);
    }
  }
});

test('entries handed out are copies: a later splice does not change them', () => {
  const x = LeafExtents.of([
    { lba: 0, pba: 100, lengthBlocks: 2, crcs: Uint32Array.of(1, 2) },
    { lba: 4, pba: 200, lengthBlocks: 3, crcs: Uint32Array.of(3, 4, 5) },
  ]);
  const out: LeafEntry[] = [];
  x.collect(1, 6, out);
  assert.deepEqual(plain(out), [{ lba: 1, pba: 101, len: 1, crcs: [2] }, { lba: 4, pba: 200, len: 2, crcs: [3, 4] }]);
  x.splice(0, 1, [{ lba: 0, pba: 300, lengthBlocks: 3, crcs: Uint32Array.of(7, 8, 9) }]);
  assert.deepEqual(plain(out), [{ lba: 1, pba: 101, len: 1, crcs: [2] }, { lba: 4, pba: 200, len: 2, crcs: [3, 4] }]);
  assert.deepEqual(plain(entriesOf(x)), [{ lba: 0, pba: 300, len: 3, crcs: [7, 8, 9] }, { lba: 4, pba: 200, len: 3, crcs: [3, 4, 5] }]);
});

test('a full leaf encodes and decodes to the same extents', () => {
  const rand = rng(99);
  const entries = randomEntries(rand, 0, 1e9, 2000).filter((e) => e.lengthBlocks <= 2);
  const x = new LeafExtents();
  for (const e of entries) if (x.bytes + 20 + 4 * e.lengthBlocks <= 4064) x.splice(x.count, x.count, [e]);
  const node = leafOf(77, 5, x);
  const back = decodeMeta(encodeMeta(node), 77, MetaType.Leaf) as LeafNode;
  assert.ok(x.count > 100);
  assert.deepEqual(plain(entriesOf(back.ext)), plain(entriesOf(x)));
});

test('a leaf block with a valid checksum but an extent past the block is refused, not indexed', () => {
  const x = LeafExtents.of([{ lba: 0, pba: 100, lengthBlocks: 1, crcs: Uint32Array.of(1) }]);
  const buf = encodeMeta(leafOf(9, 1, x));
  buf.writeUInt32LE(200, 32 + 16); // extent length 200: more than an extent may hold
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(blockChecksum(buf), 8);
  assert.throws(() => decodeMeta(buf, 9, MetaType.Leaf), (err: unknown) => err instanceof MetaBadStructure && err.code === 'meta_bad_structure' && err.physicalBlock === 9 && err.found === '200');
});
