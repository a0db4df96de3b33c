// Child process for test/nbd-durability.test.ts: opens (or creates) a pool, makes sure volume "d"
// exists, serves it over NBD on an ephemeral port and prints "port N". The test kills it with SIGKILL.
import { existsSync } from 'node:fs';
import { createPoolFile, openPoolFile } from '../src/engine/index.js';
import { startNbdServer } from '../src/nbd/server.js';

const poolPath = process.argv[2];
if (poolPath === undefined) throw new Error('usage: nbd-server-child POOL');
const engine = existsSync(poolPath) ? await openPoolFile(poolPath) : await createPoolFile(poolPath, 1024 * 1024 * 1024);
if (!engine.listVolumes().some((v) => v.name === 'd')) await engine.createVolume('d', 64 * 1024 * 1024);
const server = await startNbdServer(engine, { host: '127.0.0.1', port: 0 });
console.log(`port ${server.port}`);
