// Issue 22, "Proving it" (real processes): Cairn nodes and a 3-member etcd cluster, each in its own
// network namespace on a bridge, a libnbd client writing numbered, checksummed blocks with flushes,
// and a seeded schedule of SIGKILL/restart, SIGSTOP/SIGCONT, iptables partitions, link delay and
// etcd member stops. Then heal, wait for rebuilds, and check every acknowledged flushed write through
// the primary and that every replica (each node's pool, opened with the engine) is identical.
// CAIRN_NETNS_SEED replays a schedule; CAIRN_NETNS_STEPS runs a longer one, CAIRN_NETNS_NODES (3..5) on more nodes.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPoolFile } from '../src/engine/index.js';
import { EtcdCluster, TestNetwork, netnsUnavailable, sleep } from './netns-harness.js';
import { WriteModel, Writer, readVersions } from './netns-workload.js';
import { CairnNodes, clusterSupported, logProblems, nodesFromEnv, runSchedule, seedFromEnv, stepsFromEnv, verifyReplicas } from './netns-cluster.js';

const skipReason = netnsUnavailable();

/** Retries `fn` while the cluster elects a leader or a member restarts (bounded). */
async function retrying<T>(what: string, fn: () => Promise<T>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try { return await fn(); } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${(e as Error).message}`);
      await sleep(250);
    }
  }
}

/** The etcd v3 JSON gateway (etcd 3.4: /v3/kv/...), keys and values base64. */
function etcdPut(endpoint: string, key: string, value: string): Promise<void> {
  return retrying(`put ${key} via ${endpoint}`, () => etcdPutOnce(endpoint, key, value));
}

function etcdGet(endpoint: string, key: string): Promise<string | null> {
  return retrying(`get ${key} via ${endpoint}`, () => etcdGetOnce(endpoint, key));
}

async function etcdPutOnce(endpoint: string, key: string, value: string): Promise<void> {
  const res = await fetch(`${endpoint}/v3/kv/put`, {
    method: 'POST', body: JSON.stringify({ key: b64(key), value: b64(value) }), signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `put via ${endpoint}: ${text}`);
}

async function etcdGetOnce(endpoint: string, key: string): Promise<string | null> {
  const res = await fetch(`${endpoint}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: b64(key) }), signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  assert.equal(res.status, 200, `get via ${endpoint}: ${text}`);
  const body = JSON.parse(text) as { kvs?: Array<{ value: string }> };
  return body.kvs?.[0] === undefined ? null : Buffer.from(body.kvs[0].value, 'base64').toString();
}

function b64(s: string): string { return Buffer.from(s).toString('base64'); }

/** Log lines shown per process when a test fails (the temp dir with the whole logs is deleted). */
const LOG_TAIL_LINES = 25;
const LOG_LINE_CHARS_MAX = 400;

/**
 * Runs `body` on a fresh test network in a temp dir; always tears it down. On failure prints the tail
 * of every process's log, and keeps the dir when CAIRN_NETNS_KEEP=1.
 */
async function withNetwork(t: TestContext, opts: { nodes: number; etcdMembers: number }, body: (net: TestNetwork) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-netns-'));
  const net = new TestNetwork({ ...opts, dir });
  let keep = false;
  try {
    await body(net);
  } catch (e) {
    for (const name of readdirSync(dir).filter((f) => f.endsWith('.log'))) {
      const lines = readFileSync(join(dir, name), 'utf8').trimEnd().split('\n');
      // One diagnostic per line: the TAP reporter escapes the newlines inside one.
      t.diagnostic(`--- ${name} (last ${LOG_TAIL_LINES} lines)`);
      for (const line of lines.slice(-LOG_TAIL_LINES)) t.diagnostic(line.slice(0, LOG_LINE_CHARS_MAX));
    }
    keep = process.env.CAIRN_NETNS_KEEP === '1';
    if (keep) t.diagnostic(`kept ${dir}`);
    throw e;
  } finally {
    await net.destroy();
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

test('the write model flags lost, stale, foreign and damaged blocks (so the cluster check can fail)', () => {
  const model = new WriteModel();
  for (const line of ['{"w":0,"v":1}', '{"w":1,"v":2}', '{"f":2}', '{"w":0,"v":3}', '{"x":2,"v":4,"err":"EIO"}', '{"w":3,"v":5}', '{"f":5}', '{"w":1,"v":6}', '{"err":"gone","op":"flush"}', '{"f":6}', '{"w":0,"v":7}', '{"f":7}']) {
    model.apply(line);
  }
  assert.deepEqual(model.check([7, 2, 0, 5]), []);
  assert.deepEqual(model.check([7, 6, 4, 5]), [], 'a write acknowledged without a flush after it, or failed, may have landed');
  assert.deepEqual(model.check([3, 2, 0, 5]), ['block 0: version 3 older than the flushed 7']);
  assert.deepEqual(model.check([7, 0, 0, 5]), ['block 1: zeros, flushed version 2 lost']);
  assert.deepEqual(model.check([7, 2, 0, 6]), ['block 3: version 6 was never written to it']);
  assert.deepEqual(model.check([null, 2, 0, 5]), ['block 0: damaged or foreign content']);
});

test('harness: a 3-member etcd cluster in namespaces survives a kill, a pause and a partition; cleanup leaves nothing', { skip: skipReason ?? false, timeout: 120_000 }, async (t) => withNetwork(t, { nodes: 2, etcdMembers: 3 }, async (net) => {
  const etcd = new EtcdCluster(net);
  await etcd.waitHealthy(30_000);
  const [e1, e2, e3] = etcd.endpoints as [string, string, string];
  await etcdPut(e1, 'k', 'v1');
  assert.equal(await etcdGet(e3, 'k'), 'v1');

  // SIGKILL one member: the other two keep a quorum; the restarted one catches up from its data dir.
  await etcd.member('e1').stop('SIGKILL');
  await etcdPut(e2, 'k', 'v2');
  etcd.member('e1').start();
  await etcd.waitHealthy(30_000);
  assert.equal(await etcdGet(e1, 'k'), 'v2');

  // SIGSTOP one member: writes go on through the others.
  etcd.member('e2').signal('SIGSTOP');
  await etcdPut(e1, 'k', 'v3');
  etcd.member('e2').signal('SIGCONT');

  // Isolate e3 (iptables inside its namespace): it loses its leader and its health; the majority writes.
  net.isolate(net.host('e3'));
  const end = Date.now() + 20_000;
  while (await etcd.healthy(e3)) {
    assert.ok(Date.now() < end, 'an isolated etcd member still reports healthy after 20 s');
    await sleep(250);
  }
  await etcdPut(e1, 'k', 'v4');
  net.heal(net.host('e3'));
  await etcd.waitHealthy(30_000);
  assert.equal(await etcdGet(e3, 'k'), 'v4');

  // Link delay (netem, or a tbf throttle where the kernel has no netem), applied and removed.
  const kind = net.slow(net.host('n1'), 50);
  t.diagnostic(`link delay by ${kind}`);
  assert.ok(net.canConnect(net.host('n1'), net.host('e1').ip, 2379), 'n1 reaches e1 through its slowed link');
  net.unslow(net.host('n1'));

  // A partition between two namespaces cuts exactly that pair.
  net.partition(net.host('n2'), net.host('e2'));
  assert.ok(!net.canConnect(net.host('n2'), net.host('e2').ip, 2379), 'n2 is cut from e2');
  assert.ok(net.canConnect(net.host('n2'), net.host('e1').ip, 2379), 'n2 still reaches e1');
  assert.ok(net.canConnect(null, net.host('e2').ip, 2379), 'the root namespace still reaches e2');
  net.heal(net.host('n2'));
  assert.ok(net.canConnect(net.host('n2'), net.host('e2').ip, 2379), 'healed');

  await net.destroy();
  assert.deepEqual(net.leftovers(), []);
}));

test('workload: the libnbd writer survives SIGKILL/restart of a single cairn serve in a namespace; flushed writes read back', { skip: skipReason ?? false, timeout: 150_000 }, async (t) => withNetwork(t, { nodes: 1, etcdMembers: 0 }, async (net) => {
  const nodes = new CairnNodes(net, { cluster: null });
  await nodes.startAll();
  await nodes.createVolume('n1', 'vol', 64 << 20, null);
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed}`);
  const writer = new Writer({ uris: nodes.nbdUris('vol'), tag: 7, blocks: 256, flushEvery: 8, seed, writesMax: 1_000_000, timeoutS: 5, giveUpS: 60 });
  t.after(() => writer.kill());
  await waitFor(() => writer.model.flushes >= 5, 30_000, 'the writer flushes');
  await nodes.node('n1').proc.stop('SIGKILL');
  const flushesAtKill = writer.model.flushes;
  await sleep(500);
  await nodes.restart('n1');
  await waitFor(() => writer.model.flushes >= flushesAtKill + 5, 60_000, 'the writer flushes after the restart');
  const model = await writer.stop();
  assert.ok(model.errors > 0, 'the kill was seen by the client');
  const versions = await readVersions({ uris: nodes.nbdUris('vol'), tag: 7, blocks: 256, timeoutS: 5, giveUpS: 30 });
  assert.deepEqual(model.check(versions), []);
  // The same blocks read as another volume's (another tag) are all foreign: the read-back's decoding can fail.
  const foreign = await readVersions({ uris: nodes.nbdUris('vol'), tag: 8, blocks: 256, timeoutS: 5, giveUpS: 30 });
  assert.equal(model.check(foreign).length, versions.filter((v) => v !== 0).length);
  assert.ok(versions.filter((v) => v !== 0).length > 0);
  t.diagnostic(`acked ${model.acked} writes, ${model.flushes} flushes, ${model.errors} errors, ${model.reconnects} connections`);
}));

const steps = stepsFromEnv();
const nodeCount = nodesFromEnv();

test(`cluster: seeded faults against ${nodeCount} nodes + 3 etcd members; flushed writes survive, replicas identical`, {
  // A hang bound: setup, a minute and a half per step at most, the final checks.
  skip: skipReason ?? clusterSupported() ?? false, timeout: 300_000 + steps * 90_000,
}, async (t) => {
  const seed = seedFromEnv();
  t.diagnostic(`seed ${seed} (CAIRN_NETNS_SEED=${seed} replays), ${steps} steps, ${nodeCount} nodes`);
  await withNetwork(t, { nodes: nodeCount, etcdMembers: 3 }, async (net) => {
    const etcd = new EtcdCluster(net);
    await etcd.waitHealthy(30_000);
    // A cluster secret, as production runs: the replication links are TLS-PSK through every fault below.
    const secretFile = join(net.opts.dir, 'cluster.secret');
    writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const nodes = new CairnNodes(net, { cluster: etcd.endpoints.join(','), secretFile });
    await nodes.startAll();
    await nodes.waitNodesAlive('n1');
    await nodes.createVolume('n1', 'vol', 64 << 20, 3);
    await nodes.waitQuiesced('vol');
    t.diagnostic(`created: ${await nodes.describeVolume('vol')}`);
    const blocks = 512;
    const writer = new Writer({ uris: nodes.nbdUris('vol'), tag: 22, blocks, flushEvery: 8, seed, writesMax: 10_000_000, timeoutS: 8, giveUpS: 90 });
    t.after(() => writer.kill());
    await waitFor(() => writer.model.flushes >= 5, 60_000, 'the writer flushes');
    await runSchedule({ net, etcd, nodes, seed, steps, flushes: () => writer.model.flushes, note: (line) => t.diagnostic(line) });
    await nodes.waitQuiesced('vol', 120_000);
    const model = await writer.stop();
    const primary = await nodes.primaryOf('vol');
    t.diagnostic(`primary after heal: ${primary}; acked ${model.acked}, flushes ${model.flushes}, errors ${model.errors}, connections ${model.reconnects}`);
    const versions = await readVersions({ uris: nodes.nbdUris('vol', primary), tag: 22, blocks, timeoutS: 8, giveUpS: 60 });
    assert.deepEqual(model.check(versions), [], 'every acknowledged flushed write reads back through the primary');
    await nodes.waitQuiesced('vol', 120_000);
    await nodes.freezeAndKillAll();
    const report = await verifyReplicas(nodes, 'vol', blocks * 4096, versions);
    t.diagnostic(report.summary);
    assert.deepEqual(report.problems, [], 'every replica is identical to the primary');
    assert.deepEqual(logProblems(nodes), [], 'no node relays an export to itself');
    // The comparison can fail: one block changed in one pool is found.
    await scribble(nodes.nodes[nodes.nodes.length - 1]!.pool, 'vol', blocks >> 1);
    assert.equal((await verifyReplicas(nodes, 'vol', blocks * 4096)).problems.length, 1, 'a changed block in one replica is reported');
  });
});

/** Writes one block of 0xa5 into `volume` of the pool at `path` (the daemon stopped). */
async function scribble(path: string, volume: string, block: number): Promise<void> {
  const engine = await openPoolFile(path);
  try {
    await engine.write(engine.resolve(volume).id, block * 4096, Buffer.alloc(4096, 0xa5));
    await engine.flush();
  } finally {
    await engine.close();
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting: ${what}`);
    await sleep(100);
  }
}
