// Issue 17 §5, the superblock cases: damaged pool images made deterministically here (each copy bit
// flipped, zeroed, torn half, overwritten by another block; pairs of copies swapped; both copies of the
// newest generation bad; all four gone). For each: check reports every damaged copy as a problem or a
// note naming its block, one line each, never a throw (except a device with no superblock at all);
// open either gives the newest generation with its data, or refuses with one typed line, never an
// older generation in silence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool, checkPool } from '../src/engine/pool.js';
import { CairnError } from '../src/engine/errors.js';
import { BLOCK_SIZE_BYTES, SUPERBLOCK_MIRROR_SLOTS, SUPERBLOCK_SLOTS } from '../src/engine/constants.js';
import { pattern } from './engine-helpers.js';

const B = BLOCK_SIZE_BYTES;
const MiB = 1024 * 1024;
const slot = (role: 'primary' | 'mirror', g: number): number => (role === 'primary' ? SUPERBLOCK_SLOTS : SUPERBLOCK_MIRROR_SLOTS)[g % 2 === 0 ? 0 : 1];

interface Image { device: SimDevice; newest: number; treeBlock: number }

/** A pool with two flushed generations of volume v: pattern 1, then pattern 2 over it. */
async function image(): Promise<Image> {
  const device = new SimDevice(2048, new Prng(3));
  const engine = await createPool(device, { commitIntervalMs: 0 });
  await engine.createVolume('v', 4 * MiB);
  const id = engine.resolve('v').id;
  await engine.write(id, 0, pattern(1, 4 * B));
  await engine.checkpoint();
  await engine.write(id, 0, pattern(2, 4 * B));
  await engine.checkpoint();
  const newest = engine.stats().generation;
  const treeBlock = engine.core.catalog.volumesByName.get('v')?.root ?? assert.fail('volume root');
  await engine.close();
  return { device: device.crash('clean'), newest, treeBlock };
}

type Damage = (device: SimDevice, block: number, img: Image) => Buffer;
const damages: Record<string, Damage> = {
  'bit flip': (d, b) => { const x = d.peek(b); x[1234] = x[1234]! ^ 0x08; return x; },
  zeroed: () => Buffer.alloc(B),
  'torn half': (d, b) => Buffer.concat([d.peek(b).subarray(0, B / 2), Buffer.alloc(B / 2, 0x6b)]),
  'another block over it': (d, _b, img) => d.peek(img.treeBlock),
};

async function put(device: SimDevice, block: number, content: Buffer): Promise<void> {
  await device.write(block, content);
  await device.flush();
}

/** Check and open of a damaged image, against what §5 allows. */
async function judge(what: string, device: SimDevice, newest: number, damaged: number[]): Promise<'opened' | 'refused'> {
  const report = await checkPool(device);
  for (const p of report.problems) assert.ok(!p.message.includes('\n'), `${what}: one line per problem`);
  for (const block of damaged) {
    const named = report.problems.some((p) => p.kind === 'superblock' && p.physicalBlock === block) ||
      report.notes.some((n) => n.includes(`block ${block} `));
    assert.ok(named, `${what}: check names block ${block}: ${JSON.stringify(report)}`);
  }
  const opened = await openPool(device, { commitIntervalMs: 0 }).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  if (opened instanceof Error) {
    assert.ok(opened instanceof CairnError && ['superblock_lost', 'pool_corrupt'].includes(opened.code), `${what}: ${String(opened)}`);
    assert.ok(!opened.message.includes('\n'), `${what}: one line`);
    assert.equal(report.ok, false, `${what}: check fails a pool that does not open`);
    return 'refused';
  }
  assert.equal(opened.stats().generation, newest, `${what}: opens the newest generation, not an older one`);
  assert.deepEqual(await opened.read(opened.resolve('v').id, 0, 4 * B), pattern(2, 4 * B), `${what}: the newest data`);
  await opened.close();
  return 'opened';
}

test('one superblock copy damaged in each way: the newest generation always opens', async () => {
  for (const [name, damage] of Object.entries(damages)) {
    for (const role of ['primary', 'mirror'] as const) {
      for (const which of ['newest', 'previous'] as const) {
        const img = await image();
        const block = slot(role, which === 'newest' ? img.newest : img.newest - 1);
        await put(img.device, block, damage(img.device, block, img));
        const what = `${name} in the ${which} generation's ${role} (block ${block})`;
        if (which === 'newest') assert.equal((await checkPool(img.device)).ok, false, `${what}: a problem, not a note`);
        assert.equal(await judge(what, img.device, img.newest, [block]), 'opened', what);
      }
    }
  }
});

test('pairs and worse: swapped copies, both copies of the newest bad, all four gone', async () => {
  const cases: Array<{ name: string; apply: (img: Image) => Promise<number[]>; outcome: 'opened' | 'refused' }> = [
    { name: 'the two primaries swapped', outcome: 'opened', apply: async ({ device }) => {
      const [a, b] = [device.peek(0), device.peek(1)];
      await put(device, 0, b); await put(device, 1, a);
      return [0, 1];
    } },
    { name: 'primary and mirror of the newest swapped', outcome: 'refused', apply: async ({ device, newest }) => {
      const [p, m] = [slot('primary', newest), slot('mirror', newest)];
      const [a, b] = [device.peek(p), device.peek(m)];
      await put(device, p, b); await put(device, m, a);
      return [p, m];
    } },
    ...Object.keys(damages).map((name) => ({ name: `both copies of the newest: ${name}`, outcome: 'refused' as const, apply: async (img: Image) => {
      const blocks = [slot('primary', img.newest), slot('mirror', img.newest)];
      for (const b of blocks) await put(img.device, b, damages[name]!(img.device, b, img));
      return blocks;
    } })),
    { name: 'all four damaged', outcome: 'refused', apply: async (img) => {
      const blocks = [...SUPERBLOCK_SLOTS, ...SUPERBLOCK_MIRROR_SLOTS];
      for (const b of blocks) await put(img.device, b, damages['bit flip']!(img.device, b, img));
      return blocks;
    } },
  ];
  for (const c of cases) {
    const img = await image();
    const damaged = await c.apply(img);
    assert.equal(await judge(c.name, img.device, img.newest, damaged), c.outcome, c.name);
    if (c.outcome === 'refused' && c.name !== 'all four damaged') {
      const rewound = await openPool(img.device, { commitIntervalMs: 0, rewind: true });
      assert.equal(rewound.stats().generation, img.newest, `${c.name}: the rewind is committed as the next generation`);
      assert.deepEqual(await rewound.read(rewound.resolve('v').id, 0, 4 * B), pattern(1, 4 * B), `${c.name}: the previous generation's data`);
      assert.deepEqual((await rewound.check()).problems, []);
      await rewound.close();
    }
  }
  // No copy at all: not a Cairn pool (one line, a typed error), from check and open alike.
  const img = await image();
  for (const b of [...SUPERBLOCK_SLOTS, ...SUPERBLOCK_MIRROR_SLOTS]) await put(img.device, b, Buffer.alloc(B));
  await assert.rejects(checkPool(img.device), (err: unknown) => err instanceof CairnError && err.code === 'pool_corrupt');
  await assert.rejects(openPool(img.device), (err: unknown) => err instanceof CairnError && err.code === 'pool_corrupt');
});
