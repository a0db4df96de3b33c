// Concurrent sub-block writes to neighbouring pieces of a fresh volume: every acknowledged piece is
// there afterwards. A 512-byte write is a read-modify-write of its 4 KiB block, and its read walks the
// tree without the pool lock; a write to a neighbouring block whose edit split a leaf (truncating it
// before the node taking its tail existed) let that read see the block as a hole, and the merge wrote
// zeros over pieces already acknowledged (found by nbd-tester-client's integrity test, 1 KiB writes at
// queue depth > 2; reproduced here in the engine alone). Readers now wait for such an edit
// (Trees.lookupStable).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MiB, tempPool } from './engine-helpers.js';

const B = 4096;
const PIECE = 512;
const BLOCKS = 4096; // 16 MiB written in 512-byte pieces: enough leaves split while pieces land
const WORKERS = 8;

/** The byte every byte of piece j of block b holds (never 0, so a lost piece reads differently). */
const fillOf = (b: number, j: number): number => 1 + ((b * 8 + j) % 251);

for (const fastPaths of [true, false]) {
  test(`${WORKERS} writers of 512-byte pieces, every piece of every block acknowledged and read back (fast paths ${fastPaths ? 'on' : 'off'})`, async () => {
    const pool = await tempPool(2048 * MiB, { fastPaths });
    try {
      const info = await pool.engine.createVolume('v', 64 * MiB);
      const id = info.id;
      // Each worker takes the next piece of a shared queue in address order: the writers in flight
      // are pieces of one block and of its neighbours, as a client writing 512-byte sectors at depth 8.
      const queue: Array<[number, number]> = [];
      for (let b = 0; b < BLOCKS; b++) for (let j = 0; j < B / PIECE; j++) queue.push([b, j]);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < queue.length) {
          const [b, j] = queue[next++]!;
          await pool.engine.write(id, b * B + j * PIECE, Buffer.alloc(PIECE, fillOf(b, j)));
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, worker));
      const lost: string[] = [];
      const data = await pool.engine.read(id, 0, BLOCKS * B);
      for (let b = 0; b < BLOCKS; b++) {
        for (let j = 0; j < B / PIECE; j++) {
          const at = b * B + j * PIECE;
          const piece = data.subarray(at, at + PIECE);
          if (!piece.equals(Buffer.alloc(PIECE, fillOf(b, j)))) lost.push(`block ${b} piece ${j} (first byte ${piece[0]})`);
        }
      }
      assert.deepEqual(lost.slice(0, 10), [], `${lost.length} acknowledged pieces lost`);
    } finally {
      await pool.cleanup();
    }
  });
}
