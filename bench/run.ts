// `npm run bench`: the engine benchmark (engine API on a real file, against plain fs writes), then the
// NBD benchmark (fio against Cairn, qemu-nbd raw/qcow2 and nbdkit in one run). Ratios are printed;
// absolute figures drift between runs, ratios within one run do not. Nothing here is asserted.
// Then the snapshot-scale table (create/delete latency, open time and RSS at 1 000 to 100 000 snapshots).
// Then the replay time of a full intent log. Then QoS: fairness between tenants and the decorator's cost. Then
// encryption at rest: an encrypted volume against a plain one in one daemon (encryption-bench.ts). Then NVMe/TCP
// against NBD: the daemon's CPU per I/O while a real kernel in a qemu guest drives each (nvmf-bench.ts).
// Then storage nodes: writes with 1, 2 and 3 replicas, failover time, rebuild from a diff (cluster-bench.ts).
// Flags: --only=engine|log|nbd|snapshots|qos|encryption|nvmf|cluster, --runtime-s=N (NBD, QoS and encryption per-row seconds), --sparse (NBD: files not laid down first),
// --rows=a,b (NBD: only rows whose name contains one of these), --servers=cairn,nbdkit (NBD: only these servers).
import { parseArgs } from 'node:util';
import { runEngineBench } from './engine-bench.js';
import { runNbdBench, type NbdBenchOptions } from './nbd-bench.js';
import { runSnapshotScaleBench } from './snapshot-scale.js';
import { runLogReplayBench } from './log-replay.js';
import { runQosBench } from './qos-bench.js';
import { runEncryptionBench } from './encryption-bench.js';
import { runNvmfBench } from './nvmf-bench.js';
import { runClusterBench } from './cluster-bench.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, 'runtime-s': { type: 'string' }, sparse: { type: 'boolean' }, rows: { type: 'string' }, servers: { type: 'string' } }, strict: false });
  const only = typeof values.only === 'string' ? values.only : undefined;
  const runtime = typeof values['runtime-s'] === 'string' ? Number(values['runtime-s']) : undefined;
  if (only === undefined || only === 'engine') {
    console.log('== engine (through the Engine API on a pool file) ==');
    await runEngineBench();
  }
  if (only === undefined || only === 'engine' || only === 'log') {
    console.log('\n== intent log replay (open after a power cut with a full log) ==');
    const r = await runLogReplayBench();
    console.log(`full intent log: ${r.logBlocks} blocks, ${r.records} records of random 4 KiB writes; open with replay ${r.openMs.toFixed(0)} ms`);
  }
  if (only === undefined || only === 'nbd') {
    console.log('\n== NBD (fio --ioengine=nbd; Cairn vs qemu-nbd vs nbdkit) ==');
    await runNbdBench({
      ...(runtime === undefined ? {} : { runtimeSeconds: runtime }), preallocate: values.sparse !== true,
      ...(typeof values.rows === 'string' ? { rows: values.rows.split(',') } : {}),
      ...(typeof values.servers === 'string' ? { servers: values.servers.split(',') as NonNullable<NbdBenchOptions['servers']> } : {}),
    });
  }
  if (only === undefined || only === 'snapshots') {
    console.log('\n== snapshot scale (one volume, through the Engine API) ==');
    await runSnapshotScaleBench();
  }
  if (only === undefined || only === 'qos') {
    console.log('\n== QoS (fair sharing between tenants; the decorator on an unlimited volume) ==');
    await runQosBench(runtime === undefined ? {} : { runtimeSeconds: runtime });
  }
  if (only === undefined || only === 'encryption') {
    console.log('\n== encryption at rest (one daemon: an encrypted volume against a plain one, fio --ioengine=nbd) ==');
    await runEncryptionBench(runtime === undefined ? {} : { runtimeSeconds: runtime });
  }
  if (only === undefined || only === 'nvmf') {
    console.log('\n== NVMe/TCP against NBD (a real kernel in a qemu guest; the daemon\'s CPU per I/O) ==');
    await runNvmfBench(runtime === undefined ? {} : { runtimeSeconds: runtime });
  }
  if (only === undefined || only === 'cluster') {
    console.log('\n== storage nodes (etcd + 3 nodes on loopback: replicas 1/2/3, failover, rebuild) ==');
    await runClusterBench(runtime === undefined ? {} : { runtimeSeconds: runtime });
  }
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
