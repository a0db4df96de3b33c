import { SimDevice, type CrashMode } from '../src/engine/device/sim-device.js';
import { Prng } from '../src/engine/device/prng.js';
import { createPool, openPool } from '../src/engine/pool.js';
import { pattern, MiB } from './engine-helpers.js';
import type { Engine } from '../src/engine/index.js';
async function fill(engine: Engine, name: string, off: number, len: number, seed: number) {
  const id = engine.resolve(name).id;
  for (let o = 0; o < len; o += MiB) await engine.write(id, off + o, pattern(seed * 1000 + o / MiB, MiB));
}
const oldBlocks = 4096, newBlocks = 6000;
for (const mode of ['clean', 'some', 'torn'] as CrashMode[]) for (let run = 0; run < 60; run++) {
  const seeds = mode === 'clean' ? 1 : 3;
  const cut = Math.floor(run / seeds);
  const device = new SimDevice(oldBlocks, new Prng(100 + run));
  const logs: string[] = [];
  const engine = await createPool(device, { commitIntervalMs: 0, log: (e, f) => logs.push(`${e} ${JSON.stringify(f)}`) });
  await engine.createVolume('v', 32 * MiB);
  await fill(engine, 'v', 0, 6 * MiB, 5);
  await engine.createSnapshots(['v@s']);
  await fill(engine, 'v', 2 * MiB, 2 * MiB, 6);
  await engine.flush();
  device.armCrash(cut, mode);
  await engine.growPool(newBlocks * 4096);
  const image = device.takeArmedImage();
  await engine.close();
  if (image === null) break;
  try { const r = await openPool(image, { commitIntervalMs: 0, log: (e, f) => logs.push(`OPEN ${e} ${JSON.stringify(f)}`) }); await r.close(); }
  catch (err) { console.log(mode, cut, run, String(err)); console.log(logs.join('\n')); process.exit(1); }
}
console.log('all ok');
