// Replay time of a full intent log: the worst an open after a power cut pays. A 4 GiB pool (a 16 MiB
// log, the largest) takes random 4 KiB writes with a flush after every `writesPerFlush`, its background
// commits held back so the records fill the whole region; then a second engine opens the same file
// (what a restart after kill -9 sees) and the time to open, which replays every record, is printed.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPoolFile, openPoolFile } from '../src/engine/index.js';
import type { CairnEngine } from '../src/engine/engine.js';
import { LOG_ROUND_BLOCKS_MAX } from '../src/engine/constants.js';

const MiB = 1024 * 1024;

export interface LogReplayResult { records: number; logBlocks: number; openMs: number }

export async function runLogReplayBench(writesPerFlush = 2000): Promise<LogReplayResult> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-log-replay-'));
  try {
    const path = join(dir, 'pool');
    const engine = await createPoolFile(path, 4096 * MiB, { commitIntervalMs: 0 }) as CairnEngine;
    await engine.createVolume('v', 256 * MiB);
    const id = engine.resolve('v').id;
    const core = engine.core, log = core.intentLog!;
    // Held back: no commit retires the log, so it fills (the engine starts one at half full).
    core.commitInBackground = () => undefined;
    core.dirtyMax = Number.MAX_SAFE_INTEGER;
    const data = Buffer.alloc(4096, 0x5a);
    let x = 12345, records = 0;
    const blocks = (256 * MiB) / 4096;
    while (log.blocksInUse + LOG_ROUND_BLOCKS_MAX <= core.sb.logBlocks) {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < writesPerFlush; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        data.writeUInt32LE(x, 0);
        writes.push(engine.write(id, (x % blocks) * 4096, Buffer.from(data)));
      }
      await Promise.all(writes);
      await engine.flush();
      records += writesPerFlush;
    }
    const logBlocks = log.blocksInUse;
    const started = performance.now();
    const reopened = await openPoolFile(path, { commitIntervalMs: 0 });
    const openMs = performance.now() - started;
    await reopened.close();
    await core.device.close(); // the abandoned engine's file handle (it writes nothing more)
    return { records, logBlocks, openMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1]?.endsWith('log-replay.js')) {
  const r = await runLogReplayBench();
  console.log(`full intent log: ${r.logBlocks} blocks, ${r.records} records of random 4 KiB writes; open with replay ${r.openMs.toFixed(0)} ms`);
}
