// The fault sweep's encrypted operations: a lineage's life in one operation (create with a key, write,
// snapshot, clone, write, delete the volume; a second lineage created, written and deleted, so its key
// is destroyed) and a re-wrap of a key. A cut may land between any two steps, so the allowed states
// are every step's; a re-wrap cut short may leave the old or the new wrapped form, never neither.

import { Prng } from '../src/engine/device/prng.js';
import { DATA_KEY_BYTES } from '../src/engine/constants.js';
import { BLOCK_SIZE_BYTES, type DataKey } from '../src/engine/types.js';
import { commitPlan, planWrite } from './apply.js';
import type { Model } from './model.js';
import type { Simulator } from './simulator.js';
import type { SweepOp } from './sweep-ops.js';

const B = BLOCK_SIZE_BYTES;
const MiB = 1024 * 1024;

/** Random-looking fixed bytes (not the arithmetic patterns of the data, which hold each other as substrings). */
function fixedBytes(tag: number, lengthBytes: number): Buffer {
  return new Prng(0x6b657973 + tag).fill(Buffer.alloc(lengthBytes));
}

function fixedKey(tag: number): DataKey {
  return { dek: fixedBytes(tag, DATA_KEY_BYTES), wrapped: fixedBytes(100 + tag, 72) };
}

const keyA = fixedKey(1);
const keyB = fixedKey(2);
const keyC = fixedKey(3);
const wrappedC2 = fixedBytes(104, 96);

/** Every wrapped form the encrypted ops use, with its data key: the key book of each case knows them. */
export const sweepWrappedKeys: readonly (readonly [Buffer, Buffer])[] = [
  [keyA.wrapped, keyA.dek], [keyB.wrapped, keyB.dek], [keyC.wrapped, keyC.dek], [wrappedC2, keyC.dek],
];

const payloads = new Map<string, Buffer>();
function payload(tag: number, lengthBytes: number): Buffer {
  const key = `${tag}:${lengthBytes}`;
  let buf = payloads.get(key);
  if (buf === undefined) payloads.set(key, buf = fixedBytes(200 + tag, lengthBytes));
  return buf;
}

/** One step of a multi-step op: the engine call, and how it changes the model. */
interface Step { run(sim: Simulator): Promise<unknown>; change(sim: Simulator): void }

/** The key slot of a lineage is the engine's to choose: -1 until it lists it (sweep.ts fills it in). */
const keyIdUnknown = -1;
const idUnknown = -1;

function create(name: string, sizeBytes: number, key: DataKey): Step {
  return {
    run: (sim) => sim.e.createVolume(name, sizeBytes, { encryption: key }),
    change: (sim) => {
      sim.model.durablePoint();
      sim.model.keys.set(name, { keyId: keyIdUnknown, dek: key.dek, wrapped: [key.wrapped], locked: false });
      sim.model.addVolume(name, sizeBytes, idUnknown, name);
    },
  };
}

function write(name: string, offsetBytes: number, data: () => Buffer): Step {
  return {
    run: (sim) => sim.e.write(sim.e.resolve(name).id, offsetBytes, data()),
    change: (sim) => {
      const t = sim.model.get(name);
      commitPlan(sim, t, planWrite(sim, t, offsetBytes, data()), false);
    },
  };
}

function catalog(run: (sim: Simulator) => Promise<unknown>, change: (m: Model) => void): Step {
  return { run, change: (sim) => { sim.model.durablePoint(); change(sim.model); } };
}

/** An op of several steps; `stages` are the models after each step but the last (apply gives that one). */
function stepsOp(name: string, steps: Step[]): SweepOp {
  return {
    name,
    kind: 'catalog',
    run: async (sim) => { for (const step of steps) await step.run(sim); },
    apply: (sim) => { for (const step of steps) step.change(sim); return null; },
    stages: (sim, pre) => {
      const saved = sim.model;
      const out: Model[] = [];
      sim.model = pre.clone();
      for (const step of steps.slice(0, -1)) {
        step.change(sim);
        out.push(sim.model.clone());
      }
      sim.model = saved;
      return out;
    },
  };
}

export const keySweepOps: SweepOp[] = [
  stepsOp('encryptedLineage', [
    // The pool's first encrypted volume: the keyring is made (a commit of its own), then the slot.
    create('e1', MiB, keyA),
    // 20 blocks: one run, encrypted on the thread-pool path (inline in the simulator: inline-crypto.ts).
    write('e1', 0, () => payload(1, 20 * B)),
    catalog((sim) => sim.e.createSnapshots(['e1@s']), (m) => { m.addCopy(m.get('e1'), 'e1@s', 'snapshot', idUnknown); }),
    catalog((sim) => sim.e.cloneVolume('ec', 'e1@s'), (m) => { m.addCopy(m.get('e1@s'), 'ec', 'volume', idUnknown); }),
    // Unaligned: read-modify-write of encrypted blocks the clone shares with its origin.
    write('ec', 4 * B + 100, () => payload(2, 3 * B)),
    // The volume goes, its snapshot and the clone keep the key.
    catalog((sim) => sim.e.deleteVolume('e1'), (m) => { m.targets.delete('e1'); }),
    create('e2', MiB, keyB),
    write('e2', 0, () => payload(3, 2 * B)),
    // The last member of the second lineage: its key is destroyed before the delete resolves.
    catalog((sim) => sim.e.deleteVolume('e2'), (m) => { m.targets.delete('e2'); }),
  ]),
  {
    name: 'rewrap',
    kind: 'key',
    prepare: async (sim) => {
      const info = sim.must(await sim.attempt(() => sim.e.createVolume('e3', MiB, { encryption: keyC })), 'prepare: create e3');
      sim.model.durablePoint();
      sim.model.keys.set('e3', { keyId: info.encryption?.keyId ?? keyIdUnknown, dek: keyC.dek, wrapped: [keyC.wrapped], locked: false });
      const t = sim.model.addVolume('e3', MiB, info.id, 'e3');
      const data = payload(4, 4 * B);
      const plan = planWrite(sim, t, 0, data);
      sim.must(await sim.attempt(() => sim.e.write(t.id, 0, data)), 'prepare: write e3');
      commitPlan(sim, t, plan, false);
    },
    run: (sim) => sim.e.rewrapKey(sim.model.keys.get('e3')?.keyId ?? keyIdUnknown, wrappedC2),
    apply: (sim, durable) => {
      const k = sim.model.keys.get('e3');
      if (k === undefined) throw new Error('sweep rewrap: no key e3 in the model');
      k.wrapped = durable ? [wrappedC2] : [keyC.wrapped, wrappedC2];
      return null;
    },
  },
];
