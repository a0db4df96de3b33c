// The cluster simulator's fakes against the semantics they stand for: SimClock (timer order, virtual
// time), MemKv (etcd's revisions, txn compares, leases and their expiry, watches in revision order,
// a node cut from the control plane) and SimNetwork (delay and reorder, partition, duplicate, lost
// reply after the request applied, down node, restart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimClock, SimTimeout } from '../sim/cluster/sim-clock.js';
import { MemKv, KvRequestError } from '../sim/cluster/mem-kv.js';
import { SimNetwork } from '../sim/cluster/sim-network.js';
import { KvUnavailable, type KvWatchEvent } from '../src/cluster/kv.js';
import { TransportError } from '../src/cluster/transport.js';
import type { ReplRequest } from '../src/cluster/messages.js';
import { Prng } from '../src/engine/device/prng.js';

const status = (vol: string): ReplRequest => ({ t: 'status', vol });

test('SimClock: timers run by due time then insertion order; cancel; advance moves time', async () => {
  const clock = new SimClock(1);
  const t0 = clock.nowMs();
  const ran: string[] = [];
  clock.setTimer(20, () => ran.push('b20'));
  clock.setTimer(10, () => ran.push('a10'));
  clock.setTimer(20, () => ran.push('c20'));
  const cancel = clock.setTimer(15, () => ran.push('cancelled'));
  cancel();
  await clock.advance(15);
  assert.deepEqual(ran, ['a10']);
  assert.equal(clock.nowMs(), t0 + 15);
  await clock.advance(5);
  assert.deepEqual(ran, ['a10', 'b20', 'c20']);
  // A timer set by a timer at the same instant runs after the ones already queued for it.
  clock.setTimer(1, () => { ran.push('x'); clock.setTimer(0, () => ran.push('y')); });
  clock.setTimer(1, () => ran.push('z'));
  await clock.advance(1);
  assert.deepEqual(ran.slice(3), ['x', 'z', 'y']);
});

test('SimClock: run() drives time until a promise settles, and calls a hang a SimTimeout', async () => {
  const clock = new SimClock(2);
  const t0 = clock.nowMs();
  const value = await clock.run((async () => { await clock.sleep(250); await clock.sleep(250); return 7; })());
  assert.equal(value, 7);
  assert.equal(clock.nowMs(), t0 + 500);
  await assert.rejects(clock.run(new Promise(() => undefined), 1000, 'never'), SimTimeout);
  // Same seed, same draws.
  assert.equal(new SimClock(9).random(), new SimClock(9).random());
});

test('MemKv: revisions, createRevision/modRevision, compares, failure branch, unchanged txn keeps the revision', async () => {
  const kv = new MemKv(new SimClock(3));
  const r0 = kv.revision;
  const put1 = await kv.txn([{ key: '/a', target: 'mod', equals: 0 }], [{ op: 'put', key: '/a', value: '1' }, { op: 'put', key: '/b', value: 'x' }]);
  assert.deepEqual(put1, { succeeded: true, revision: r0 + 1 });
  const a1 = (await kv.get('/a'))!;
  assert.equal(a1.modRevision, r0 + 1);
  assert.equal(a1.createRevision, r0 + 1);
  assert.equal((await kv.get('/b'))!.modRevision, r0 + 1, 'one revision for the whole transaction');
  // mod == 0 fails now that the key exists; the failure branch runs.
  const again = await kv.txn([{ key: '/a', target: 'mod', equals: 0 }], [{ op: 'put', key: '/a', value: 'no' }], [{ op: 'put', key: '/c', value: 'f' }]);
  assert.equal(again.succeeded, false);
  assert.equal(again.revision, r0 + 2);
  assert.equal((await kv.get('/a'))!.value, '1');
  assert.equal((await kv.get('/c'))!.value, 'f');
  // A compare on the current modRevision holds; createRevision stays, modRevision moves.
  const upd = await kv.txn([{ key: '/a', target: 'mod', equals: a1.modRevision }, { key: '/a', target: 'value', equals: '1' }], [{ op: 'put', key: '/a', value: '2' }]);
  assert.equal(upd.succeeded, true);
  const a2 = (await kv.get('/a'))!;
  assert.equal(a2.createRevision, r0 + 1);
  assert.equal(a2.modRevision, r0 + 3);
  // Value compare on an absent key fails; a failed txn with no failure ops keeps the revision.
  const absent = await kv.txn([{ key: '/zz', target: 'value', equals: '' }], [{ op: 'put', key: '/zz', value: 'v' }]);
  assert.deepEqual(absent, { succeeded: false, revision: r0 + 3 });
  // Deleting an absent key changes nothing: no new revision.
  const noop = await kv.txn([], [{ op: 'delete', key: '/nothing' }]);
  assert.deepEqual(noop, { succeeded: true, revision: r0 + 3 });
  await kv.txn([], [{ op: 'delete', key: '/a' }]);
  assert.equal(await kv.get('/a'), null);
  // Re-created: a new createRevision.
  await kv.txn([{ key: '/a', target: 'mod', equals: 0 }], [{ op: 'put', key: '/a', value: '3' }]);
  assert.equal((await kv.get('/a'))!.createRevision, r0 + 5);
  assert.deepEqual((await kv.range('/')).map((e) => e.key), ['/a', '/b', '/c']);
  await assert.rejects(kv.txn([], [{ op: 'put', key: '/d', value: '1' }, { op: 'delete', key: '/d' }]), KvRequestError);
  await assert.rejects(kv.txn([], [{ op: 'put', key: '/d', value: '1', lease: 'ffff' }]), KvRequestError);
});

test('MemKv: a lease expires on the sim clock unless kept alive; its keys go with delete events', async () => {
  const clock = new SimClock(4);
  const kv = new MemKv(clock);
  const events: KvWatchEvent[] = [];
  await kv.watch('/n/', (e) => events.push(e));
  const lease = await kv.grantLease(2);
  await kv.txn([], [{ op: 'put', key: '/n/x', value: 'x', lease }, { op: 'put', key: '/n/y', value: 'y', lease }]);
  assert.equal((await kv.get('/n/x'))!.lease, lease);
  await clock.advance(1500);
  assert.equal(await kv.keepAlive(lease), true);
  await clock.advance(1500);
  assert.notEqual(await kv.get('/n/x'), null, 'kept alive: still there 3 s after the grant');
  await clock.advance(600);
  assert.equal(await kv.get('/n/x'), null);
  assert.equal(await kv.get('/n/y'), null);
  assert.equal(await kv.keepAlive(lease), false);
  await clock.settle();
  assert.deepEqual(events.map((e) => `${e.type} ${e.key}`), ['put /n/x', 'put /n/y', 'delete /n/x', 'delete /n/y']);
  assert.equal(events[2]!.modRevision, events[3]!.modRevision, 'the expiry deletes every key at one revision');
  assert.ok(events[2]!.modRevision > events[1]!.modRevision);
  // Revoke deletes at once; a put without the lease detaches the key.
  const l2 = await kv.grantLease(5);
  await kv.txn([], [{ op: 'put', key: '/n/z', value: '1', lease: l2 }, { op: 'put', key: '/n/w', value: '1', lease: l2 }]);
  await kv.txn([], [{ op: 'put', key: '/n/w', value: '2' }]);
  await kv.revokeLease(l2);
  assert.equal(await kv.get('/n/z'), null);
  assert.equal((await kv.get('/n/w'))!.value, '2');
});

test('MemKv: watch events come in revision order, after the txn returns, never inside it', async () => {
  const clock = new SimClock(5);
  const kv = new MemKv(clock);
  const seen: number[] = [];
  const stop = await kv.watch('/v/', (e) => seen.push(e.modRevision));
  kv.txnNow([], [{ op: 'put', key: '/v/a', value: '1' }], []);
  assert.deepEqual(seen, [], 'no event delivered synchronously inside the transaction');
  kv.txnNow([], [{ op: 'put', key: '/v/b', value: '1' }, { op: 'put', key: '/other', value: '1' }], []);
  kv.txnNow([], [{ op: 'delete', key: '/v/a' }], []);
  await clock.settle();
  assert.equal(seen.length, 3);
  assert.deepEqual([...seen].sort((a, b) => a - b), seen);
  stop();
  await kv.txn([], [{ op: 'put', key: '/v/c', value: '1' }]);
  await clock.settle();
  assert.equal(seen.length, 3, 'a stopped watch hears nothing');
});

test('MemKv: a node cut from the control plane gets KvUnavailable, loses its lease, then catches up on watch events', async () => {
  const clock = new SimClock(6);
  const kv = new MemKv(clock);
  const n1 = kv.client('n1');
  const n2 = kv.client('n2');
  const heard: string[] = [];
  await n2.watch('/cairn/', (e) => heard.push(`${e.type} ${e.key}`));
  const lease = await n1.grantLease(2);
  await n1.txn([], [{ op: 'put', key: '/cairn/nodes/n1', value: '{}', lease }]);
  kv.setAvailable('n2', false);
  await assert.rejects(n2.get('/cairn/nodes/n1'), KvUnavailable);
  await assert.rejects(n2.txn([], [{ op: 'put', key: '/x', value: '1' }]), KvUnavailable);
  kv.setAvailable('n1', false);
  await assert.rejects(n1.keepAlive(lease), KvUnavailable);
  await clock.advance(2100);
  assert.equal(await kv.get('/cairn/nodes/n1'), null, 'the cut node lease expired');
  await clock.settle();
  assert.deepEqual(heard, ['put /cairn/nodes/n1'], 'n2 hears nothing while cut off');
  kv.setAvailable('n2', true);
  await clock.settle();
  assert.deepEqual(heard, ['put /cairn/nodes/n1', 'delete /cairn/nodes/n1']);
  assert.equal(kv.client('n1'), n1, 'one client per node');
  kv.setAvailable('n1', true);
  assert.equal(await n1.keepAlive(lease), false);
  await n1.close();
  assert.equal(kv.client('n1').available, true);
  assert.notEqual(kv.client('n1'), n1, 'a closed client is replaced');
});

function threeNodes(seed: number, opts: ConstructorParameters<typeof SimNetwork>[2] = {}) {
  const clock = new SimClock(seed);
  const net = new SimNetwork(clock, new Prng(seed + 1000), opts);
  const a = net.endpoint('a');
  const b = net.endpoint('b');
  const c = net.endpoint('c');
  return { clock, net, a, b, c };
}

test('SimNetwork: requests and replies take their delay; independent delays reorder', async () => {
  const { clock, net, a, b } = threeNodes(7, { delayMsMin: 0.1, delayMsMax: 5 });
  const arrived: string[] = [];
  b.serve(async (from, req) => { arrived.push(req.t === 'status' ? req.vol : '?'); return { ok: true, result: { from } }; });
  const t0 = clock.nowMs();
  const sent = Array.from({ length: 20 }, (_, i) => `v${i}`);
  const replies = await clock.run(Promise.all(sent.map((v) => a.request('b', status(v), 1000))));
  assert.ok(replies.every((r) => r.ok && (r.result as { from: string }).from === 'a'));
  assert.deepEqual([...arrived].sort(), [...sent].sort());
  assert.notDeepEqual(arrived, sent, 'twenty messages with independent delays do not all keep their order');
  assert.ok(clock.nowMs() - t0 > 0 && clock.nowMs() - t0 <= 10);
  assert.equal(net.stats.delivered, 40);
});

test('SimNetwork: partition times out both ways, heal restores; down node times out', async () => {
  const { clock, net, a, b, c } = threeNodes(8);
  const serve = async () => ({ ok: true as const });
  a.serve(serve); b.serve(serve); c.serve(serve);
  net.partition(['a'], ['b', 'c']);
  await assert.rejects(clock.run(a.request('b', status('x'), 100)), TransportError);
  await assert.rejects(clock.run(c.request('a', status('x'), 100)), TransportError);
  assert.equal((await clock.run(b.request('c', status('x'), 100))).ok, true, 'b and c still talk');
  net.heal();
  assert.equal((await clock.run(a.request('b', status('x'), 100))).ok, true);
  net.setDown('c', true);
  await assert.rejects(clock.run(a.request('c', status('x'), 100)), /timed out/);
  net.setDown('c', false);
  assert.equal((await clock.run(a.request('c', status('x'), 100))).ok, true);
});

test('SimNetwork: a duplicated request runs twice and answers once; a lost reply still applied the request', async () => {
  const { clock, net, a, b } = threeNodes(9, { duplicateProbability: 1 });
  let applied = 0;
  b.serve(async () => { applied++; return { ok: true }; });
  const reply = await clock.run(a.request('b', status('x'), 100));
  assert.equal(reply.ok, true);
  await clock.advance(50);
  assert.equal(applied, 2, 'both copies reached the handler');
  assert.equal(net.stats.duplicated, 1);
  net.duplicateProbability = 0;
  // The handler applies, then the link breaks before the reply travels: the caller sees a timeout.
  b.serve(async () => { applied++; net.partition(['a'], ['b']); return { ok: true }; });
  await assert.rejects(clock.run(a.request('b', status('x'), 100)), TransportError);
  assert.equal(applied, 3);
});

test('SimNetwork: a restarted endpoint fails its pending calls; a dead server never answers; drop=1 loses all', async () => {
  const { clock, net, a, b } = threeNodes(10);
  b.serve(async () => { await clock.sleep(30); return { ok: true }; });
  const pending = a.request('b', status('x'), 1000);
  pending.catch(() => undefined);
  await clock.advance(10);
  net.endpoint('a');
  await assert.rejects(pending, /closed/);
  const a2 = net.endpoint('a');
  const slow = a2.request('b', status('x'), 200);
  await clock.advance(10);
  net.endpoint('b');
  await assert.rejects(clock.run(slow), /timed out/, 'the crashed server never replies');
  net.dropProbability = 1;
  net.endpointOf('b')!.serve(async () => ({ ok: true }));
  await assert.rejects(clock.run(a2.request('b', status('x'), 50)), TransportError);
  assert.ok(net.stats.dropped >= 1);
});
