// EtcdKv against a real etcd-server: transactions (mod/value compares, create-only), leases (expiry
// deletes keys, the watch sees the delete, keepAlive then says false), watch order, an etcd restart
// (KvUnavailable while down, then recovery with the watch resuming without losing or repeating an
// event), and a 3-member cluster that survives one member and refuses with two gone.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdKv } from '../src/cluster/kv-etcd.js';
import { KvUnavailable, type KvWatchEvent } from '../src/cluster/kv.js';
import { WATCH_SILENCE_MS_MAX } from '../src/cluster/kv-etcd-watch.js';
import { etcdAvailable, startEtcd, ETCD_BIN, type EtcdCluster } from './etcd-harness.js';

const skip = etcdAvailable() ? false : `${ETCD_BIN} is missing (apt-get install etcd-server)`;
const CALL_TIMEOUT_MS = 800;
const clusters: EtcdCluster[] = [];
const clients: EtcdKv[] = [];
after(async () => {
  for (const c of clients) await c.close();
  for (const c of clusters) await c.close();
});

async function cluster(members = 1): Promise<EtcdCluster> {
  const c = await startEtcd({ members: Array.from({ length: members }, () => ({})) });
  clusters.push(c);
  return c;
}
type LogLine = { event: string; fields: Record<string, unknown> };
function kvFor(c: EtcdCluster, logs: LogLine[] = []): EtcdKv {
  const kv = new EtcdKv({ hosts: c.endpoints, callTimeoutMs: CALL_TIMEOUT_MS, log: (event, fields) => logs.push({ event, fields }) });
  clients.push(kv);
  return kv;
}
/** Hang bounds, not speeds: a CI host running qemu guests beside this slows etcd's elections several-fold. */
const WAIT_MS_MAX = 30_000;
async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = WAIT_MS_MAX, detail?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail === undefined ? '' : `: ${detail()}`}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
async function eventually<T>(fn: () => Promise<T>, timeoutMs = WAIT_MS_MAX): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { return await fn(); } catch (error) {
      if (!(error instanceof KvUnavailable) || Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test('etcd: transactions, ranges, leases, watch order, restart and recovery', { skip, timeout: 60_000 }, async (t) => {
  const etcd = await cluster(1);
  const logs: LogLine[] = [];
  const kv = kvFor(etcd, logs);

  await t.test('txn: create-only, mod and value compares, failure ops, key-ordered range', async () => {
    const created = await kv.txn([{ key: '/t/a', target: 'mod', equals: 0 }], [{ op: 'put', key: '/t/a', value: 'one' }]);
    assert.equal(created.succeeded, true);
    const again = await kv.txn([{ key: '/t/a', target: 'mod', equals: 0 }], [{ op: 'put', key: '/t/a', value: 'two' }]);
    assert.equal(again.succeeded, false, 'mod == 0 is create-only');
    assert.equal(again.revision, created.revision, 'a failed txn changes nothing');
    const a = await kv.get('/t/a');
    assert.equal(a?.value, 'one');
    assert.equal(a?.modRevision, created.revision);
    assert.equal(a?.createRevision, created.revision);
    assert.equal(a?.lease, null);
    const cas = await kv.txn([{ key: '/t/a', target: 'mod', equals: a!.modRevision }], [{ op: 'put', key: '/t/a', value: 'three' }, { op: 'put', key: '/t/c', value: 'c' }]);
    assert.equal(cas.succeeded, true);
    assert.equal((await kv.get('/t/c'))?.modRevision, cas.revision, 'both puts in one revision');
    const stale = await kv.txn([{ key: '/t/a', target: 'mod', equals: a!.modRevision }], [{ op: 'put', key: '/t/a', value: 'lost' }], [{ op: 'put', key: '/t/b', value: 'failure-branch' }]);
    assert.equal(stale.succeeded, false);
    assert.equal((await kv.get('/t/a'))?.value, 'three');
    assert.equal((await kv.get('/t/b'))?.value, 'failure-branch');
    assert.equal((await kv.txn([{ key: '/t/a', target: 'value', equals: 'three' }], [{ op: 'delete', key: '/t/c' }])).succeeded, true);
    assert.equal(await kv.get('/t/c'), null);
    assert.equal((await kv.txn([{ key: '/t/missing', target: 'value', equals: '' }], [])).succeeded, false, 'value compare fails on an absent key');
    await kv.txn([], [{ op: 'put', key: '/t0', value: 'outside' }, { op: 'put', key: '/t/\u00e9', value: 'utf8' }]);
    assert.deepEqual((await kv.range('/t/')).map((e) => e.key), ['/t/a', '/t/b', '/t/\u00e9']);
    assert.equal((await kv.range('')).length >= 4, true, 'the empty prefix is every key');
  });

  await t.test('lease: keys vanish at expiry, the watch sees the delete, keepAlive says false', async () => {
    const events: KvWatchEvent[] = [];
    const stop = await kv.watch('/l/', (e) => events.push(e));
    const lease = await kv.grantLease(1);
    assert.match(lease, /^[1-9][0-9]*$/, 'a decimal lease id');
    await kv.txn([], [{ op: 'put', key: '/l/node', value: 'alive', lease }]);
    assert.equal((await kv.get('/l/node'))?.lease, lease);
    assert.equal(await kv.keepAlive(lease), true);
    await until('the lease to expire', () => events.some((e) => e.type === 'delete'), 5000);
    assert.deepEqual(events.map((e) => [e.type, e.key, e.value]), [['put', '/l/node', 'alive'], ['delete', '/l/node', null]]);
    assert.equal(await kv.get('/l/node'), null);
    assert.equal(await kv.keepAlive(lease), false);
    await kv.revokeLease(lease); // already gone: no error
    const revoked = await kv.grantLease(5);
    await kv.txn([], [{ op: 'put', key: '/l/other', value: 'x', lease: revoked }]);
    await kv.revokeLease(revoked);
    assert.equal(await kv.get('/l/other'), null, 'revoke deletes the lease keys');
    assert.equal(await kv.keepAlive(revoked), false);
    stop();
  });

  await t.test('watch: every change under the prefix once, in revision order, nothing after stop', async () => {
    const events: KvWatchEvent[] = [];
    const stop = await kv.watch('/w/', (e) => events.push(e));
    for (let i = 0; i < 50; i++) {
      await kv.txn([], [{ op: 'put', key: `/w/${i % 7}`, value: String(i) }, { op: 'put', key: '/x/ignored', value: String(i) }]);
      if (i % 10 === 9) await kv.txn([], [{ op: 'delete', key: `/w/${i % 7}` }]);
    }
    await until('50 puts and 5 deletes', () => events.length === 55);
    const revisions = events.map((e) => e.modRevision);
    assert.deepEqual(revisions, [...revisions].sort((x, y) => x - y));
    assert.deepEqual(events.filter((e) => e.type === 'put').map((e) => e.value), Array.from({ length: 50 }, (_, i) => String(i)));
    assert.equal(events.filter((e) => e.type === 'delete').length, 5);
    // Idle longer than WATCH_SILENCE_MS_MAX: the member answers progress requests, so the stream stays.
    await new Promise((r) => setTimeout(r, WATCH_SILENCE_MS_MAX + 600));
    assert.deepEqual(logs.filter((l) => l.event === 'etcd_watch_retry'), [], 'an idle healthy watch is kept');
    await kv.txn([], [{ op: 'put', key: '/w/idle', value: 'x' }]);
    await until('the put after the idle time', () => events.length === 56);
    stop();
    await kv.txn([], [{ op: 'put', key: '/w/after', value: 'x' }]);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(events.length, 56);
  });

  await t.test('restart: KvUnavailable while etcd is down, then recovery; the watch loses nothing', async () => {
    const seen: number[] = [];
    const stop = await kv.watch('/r/', (e) => { if (e.type === 'put') seen.push(Number(e.value)); });
    await kv.txn([], [{ op: 'put', key: '/r/k', value: '0' }]);
    await until('the first event', () => seen.length === 1);
    await etcd.members[0]!.stop();
    const started = Date.now();
    await assert.rejects(kv.get('/r/k'), (e: unknown) => e instanceof KvUnavailable && /etcd get/.test(e.message));
    await assert.rejects(kv.keepAlive('1'), KvUnavailable);
    assert.ok(Date.now() - started < CALL_TIMEOUT_MS * 4, 'calls fail within their bound');
    const health = await kv.health();
    assert.equal(health.healthy, false);
    assert.equal(health.endpoints[0]!.healthy, false);
    assert.ok(health.error);
    etcd.members[0]!.start();
    // A second client writes at once: these land while the watch stream is still reconnecting.
    const writer = kvFor(etcd);
    for (let i = 1; i <= 100; i++) {
      await eventually(() => writer.txn([], [{ op: 'put', key: '/r/k', value: String(i) }]));
    }
    await until('100 more events', () => seen.length >= 101);
    assert.deepEqual(seen, Array.from({ length: 101 }, (_, i) => i), 'every put once, in order');
    const healthy = await kv.health();
    assert.equal(healthy.healthy, true);
    assert.equal(healthy.endpoints[0]!.healthy, true);
    assert.match(healthy.endpoints[0]!.version ?? '', /^3\./);
    stop();
  });
});

test('etcd: a 3-member cluster works with one member down, refuses with two down', { skip, timeout: 180_000 }, async () => {
  const etcd = await cluster(3);
  const logs: LogLine[] = [];
  const kv = kvFor(etcd, logs);
  const seen: string[] = [];
  const stop = await kv.watch('/c/', (e) => seen.push(e.value ?? 'deleted'));
  await kv.txn([], [{ op: 'put', key: '/c/k', value: 'a' }]);

  // Freeze the member the watch streams from: it keeps its connections open and says nothing. The
  // watch notices the silence, moves to another member and replays from where it stopped.
  const connected = logs.find((l) => l.event === 'etcd_watch_connected')!.fields['endpoint'];
  const frozen = etcd.members.find((m) => `${m.host}:${m.clientPort}` === connected)!;
  frozen.pause();
  const writer = kvFor(etcd);
  for (let i = 0; i < 10; i++) await eventually(() => writer.txn([], [{ op: 'put', key: '/c/k', value: `f${i}` }]));
  // Reads and keepalives (safe to repeat) go around the frozen member within one call.
  const frozenLease = await eventually(() => writer.grantLease(5));
  for (let i = 0; i < 20; i++) {
    assert.equal((await kv.get('/c/k'))?.value, 'f9');
    assert.equal(await kv.keepAlive(frozenLease), true);
  }
  await until('the watch to move off the frozen member', () => seen.length === 11, WAIT_MS_MAX, () => `seen ${JSON.stringify(seen)}`);
  assert.deepEqual(seen, ['a', ...Array.from({ length: 10 }, (_, i) => `f${i}`)]);
  assert.ok(logs.some((l) => l.event === 'etcd_watch_retry' && /silent/.test(String(l.fields['error']))));
  frozen.resume();
  await etcd.waitHealthy();
  seen.length = 1;
  await etcd.members[0]!.stop();
  // Calls that pick the dead member move to a live one: every call below must succeed.
  for (let i = 0; i < 20; i++) {
    const r = await eventually(() => kv.txn([], [{ op: 'put', key: '/c/k', value: `b${i}` }]), 3000);
    assert.equal(r.succeeded, true);
  }
  assert.equal((await kv.get('/c/k'))?.value, 'b19');
  const lease = await kv.grantLease(2);
  assert.equal(await kv.keepAlive(lease), true);
  const watchLog = (): string => `seen ${JSON.stringify(seen)}; watch log ${JSON.stringify(logs.filter((l) => l.event.startsWith('etcd_watch')).slice(-10))}`;
  await until('the watch to see every put', () => seen.length === 21, WAIT_MS_MAX, watchLog);
  assert.deepEqual(seen, ['a', ...Array.from({ length: 20 }, (_, i) => `b${i}`)]);
  const oneDown = await kv.health();
  assert.equal(oneDown.healthy, true);
  assert.deepEqual(oneDown.endpoints.map((e) => e.healthy), [false, true, true]);

  await etcd.members[1]!.stop();
  await assert.rejects(kv.txn([], [{ op: 'put', key: '/c/k', value: 'no quorum' }]), KvUnavailable);
  await assert.rejects(kv.get('/c/k'), KvUnavailable);
  assert.equal((await kv.health()).healthy, false);

  etcd.members[0]!.start();
  etcd.members[1]!.start();
  await etcd.waitHealthy();
  await eventually(() => kv.txn([], [{ op: 'put', key: '/c/k', value: 'back' }]));
  await until('the watch to see the write after quorum returned', () => seen.at(-1) === 'back');
  // The write refused for want of quorum may still commit once quorum returns (etcd had proposed
  // it): KvUnavailable means "unknown outcome", which is why every cluster change is a compare-and-swap.
  stop();
});
