// ClusterNode through its public interface: 3 nodes in one process over the simulator's MemKv,
// SimNetwork and SimClock. Placement, the replicated data path, snapshots in the stream, dropping a
// member, the min-in-sync wait, takeover after a primary dies, fencing, NotPrimary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Harness, block } from './cluster-harness.js';
import { volumeKey } from '../src/cluster/records.js';
import { ForwardingEngine } from '../src/decorators/forwarding-engine.js';
import { IoError, type WriteData, type WriteOptions } from '../src/engine/index.js';
import { SimDevice } from '../src/engine/device/sim-device.js';
import { createPool } from '../src/engine/pool.js';
import { POOL_BLOCKS } from './cluster-harness.js';

/** A pool whose writes fail on demand (a primary's own disk failing under a replicated write). */
class FailingWrites extends ForwardingEngine {
  failing = false;
  override write(id: number, offsetBytes: number, data: WriteData, opts?: WriteOptions): Promise<void> {
    return this.failing ? Promise.reject(new IoError('simulated write failure')) : super.write(id, offsetBytes, data, opts);
  }
}

async function three(seed: number, zones: Array<string | null> = ['z1', 'z2', 'z3']): Promise<Harness> {
  const h = new Harness(seed);
  await h.add('n1', zones[0]!);
  await h.add('n2', zones[1]!);
  await h.add('n3', zones[2]!);
  await h.advance(50);
  return h;
}

test('create places replicas on distinct nodes; writes reach every member; snapshots are identical', async () => {
  const h = await three(1);
  try {
    const n1 = h.get('n1').node;
    const rec = await h.run(n1.createVolume('v3', 1 << 20, 3));
    assert.deepEqual(rec.members.map((m) => m.node).sort(), ['n1', 'n2', 'n3']);
    assert.equal(rec.minInSync, 2);
    const rec2 = await h.run(n1.createVolume('v2', 1 << 20, 2));
    assert.equal(new Set(rec2.members.map((m) => m.node)).size, 2);
    await h.advance(10);
    for (const name of ['n1', 'n2', 'n3']) assert.ok(h.get(name).local.listVolumes().some((v) => v.name === 'v3'), `v3 on ${name}`);
    const primary = rec.primary;
    await h.write(primary, 'v3', 8192, block(7));
    await h.run(h.get(primary).node.engine.flush());
    for (const name of ['n1', 'n2', 'n3']) assert.deepEqual(await h.readLocal(name, 'v3', 8192, 4096), block(7), `data on ${name}`);
    await h.run(h.get(primary).node.engine.createSnapshots(['v3@s1']));
    await h.write(primary, 'v3', 8192, block(8));
    for (const name of ['n1', 'n2', 'n3']) {
      assert.deepEqual(await h.readLocal(name, 'v3@s1', 8192, 4096), block(7), `snapshot on ${name}`);
      assert.deepEqual(await h.readLocal(name, 'v3', 8192, 4096), block(8));
    }
    // Every node sees the record; a non-primary refuses data I/O.
    const other = rec.members.find((m) => m.node !== primary)!.node;
    const e = h.get(other).node.engine;
    await assert.rejects(h.run(e.write(e.resolve('v3').id, 0, block(1))), (err: Error & { code?: string }) => err.code === 'not_primary');
    // A catalog call on a non-primary runs on the primary.
    await h.run(e.createSnapshots(['v3@s2']));
    assert.ok(h.get(primary).local.findSnapshot('v3@s2') !== null);
  } finally {
    await h.close();
  }
});

test('placement prefers distinct zones and refuses more replicas than nodes', async () => {
  const h = await three(2, ['a', 'a', 'b']);
  try {
    const n1 = h.get('n1').node;
    const rec = await h.run(n1.createVolume('v', 1 << 20, 2));
    const zones = rec.members.map((m) => h.get(m.node).zone);
    assert.deepEqual([...new Set(zones)].sort(), ['a', 'b']);
    await assert.rejects(h.run(n1.createVolume('w', 1 << 20, 4)), /replicas must be/);
    await h.kill('n3');
    await h.advance(3000);
    await assert.rejects(h.run(n1.createVolume('w', 1 << 20, 3)), /alive/);
  } finally {
    await h.close();
  }
});

test('a member that stops answering is dropped (epoch+1) and writes go on', async () => {
  const h = await three(3);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const primary = rec.primary;
    const member = rec.members.find((m) => m.node !== primary)!.node;
    await h.write(primary, 'v', 0, block(1));
    await h.kill(member);
    await h.write(primary, 'v', 4096, block(2));
    const after = h.get(primary).node.volume('v')!;
    assert.equal(after.epoch, rec.epoch + 1);
    assert.equal(after.members.find((m) => m.node === member)!.state, 'down');
    assert.equal(h.get(primary).node.counters().membersDropped, 1);
    await h.write(primary, 'v', 8192, block(3));
    await h.run(h.get(primary).node.engine.flush());
  } finally {
    await h.close();
  }
});

test('below min-in-sync a write waits, then fails with EIO', async () => {
  const h = new Harness(4, { degradedWaitMs: 2000 });
  for (const n of ['n1', 'n2', 'n3']) await h.add(n);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 3));
    const others = rec.members.filter((m) => m.node !== rec.primary).map((m) => m.node);
    await h.kill(others[0]!);
    await h.kill(others[1]!);
    const e = h.get(rec.primary).node.engine;
    const t0 = h.clock.nowMs();
    await assert.rejects(h.run(e.write(e.resolve('v').id, 0, block(1))), (err: Error & { code?: string }) => err.code === 'io_error');
    assert.ok(h.clock.nowMs() - t0 >= 2000, 'the write waited for a rebuild first');
  } finally {
    await h.close();
  }
});

test('primary killed: a member takes over in the next epoch; the old epoch is fenced', async () => {
  const h = await three(5);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 3));
    const old = rec.primary;
    await h.write(old, 'v', 0, block(1));
    await h.run(h.get(old).node.engine.flush());
    await h.kill(old);
    const survivors = ['n1', 'n2', 'n3'].filter((n) => n !== old);
    await h.clock.runUntil(() => {
      const r = h.get(survivors[0]!).node.volume('v');
      return r !== null && r.primary !== old;
    }, 10_000, 'takeover');
    const now = h.get(survivors[0]!).node.volume('v')!;
    assert.equal(now.epoch, rec.epoch + 1);
    assert.ok(survivors.includes(now.primary));
    assert.equal(h.get(now.primary).node.counters().failovers, 1);
    assert.deepEqual(await h.readLocal(now.primary, 'v', 0, 4096), block(1));
    // A request of the old epoch is refused by a member (fencing).
    const member = survivors.find((n) => n !== now.primary)!;
    const reply = await h.run(h.net.endpoint('spy').request(member, {
      t: 'write', vol: 'v', epoch: rec.epoch, seq: 99, incarnation: h.get(member).node.incarnation(), offsetBytes: 0, data: block(9), fua: false,
    }, 1000));
    assert.equal(reply.ok, false);
    assert.equal(!reply.ok && reply.code, 'stale_epoch');
    // The other survivor may hold writes the old primary never acknowledged: it is rebuilt, not kept in sync.
    assert.equal(now.members.find((m) => m.node === member)!.state, 'rebuilding');
    assert.ok(h.store.entry(volumeKey('v')) !== null);
    // It is rebuilt from the newest common checkpoint (none here: a full copy), then writes go on at 2 in sync.
    await h.clock.runUntil(() => h.get(now.primary).node.volume('v')!.members.filter((m) => m.state === 'in-sync').length === 2, 10_000, 'rebuild');
    await h.write(now.primary, 'v', 4096, block(2));
    assert.deepEqual(await h.readLocal(member, 'v', 0, 8192), Buffer.concat([block(1), block(2)]));
    assert.ok(h.get(now.primary).node.volume('v')!.epoch > now.epoch);
  } finally {
    await h.close();
  }
});

test('a member that comes back is rebuilt from the checkpoint diff: only the changed blocks travel', async () => {
  const h = await three(6);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 4 << 20, 2));
    const primary = rec.primary;
    const member = rec.members.find((m) => m.node !== primary)!.node;
    for (let i = 0; i < 16; i++) await h.write(primary, 'v', i * 4096, block(100 + i));
    await h.run(h.get(primary).node.checkpointNow('v'));
    assert.deepEqual(h.get(member).local.listSnapshots('v').map((s) => s.name), ['cairn-ckpt-1-1'], 'the checkpoint is on the member');
    assert.deepEqual(h.get(member).node.engine.listSnapshots('v'), [], 'and hidden from users');
    await h.kill(member);
    await h.write(primary, 'v', 3 * 4096, block(200));
    await h.write(primary, 'v', 9 * 4096, block(201));
    assert.equal(h.get(primary).node.volume('v')!.members.find((m) => m.node === member)!.state, 'down');
    await h.restart(member);
    const before = h.resyncBytes.get(member) ?? 0;
    await h.clock.runUntil(() => h.get(primary).node.volume('v')!.members.every((m) => m.state === 'in-sync'), 20_000, 'rebuild');
    assert.equal((h.resyncBytes.get(member) ?? 0) - before, 2 * 4096, 'only the two changed blocks were sent');
    const want = await h.readLocal(primary, 'v', 0, 16 * 4096);
    assert.deepEqual(await h.readLocal(member, 'v', 0, 16 * 4096), want);
    assert.equal(h.get(primary).node.counters().rebuildsCompleted, 1);
    // Back in sync: new writes reach it again.
    await h.write(primary, 'v', 0, block(300));
    assert.deepEqual(await h.readLocal(member, 'v', 0, 4096), block(300));
  } finally {
    await h.close();
  }
});

test('catalog calls run in the stream on every member: clone, resize, revert, delete (a member away deletes its copy on return)', async () => {
  const h = await three(7);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 3));
    const p = rec.primary;
    const e = h.get(p).node.engine;
    await h.write(p, 'v', 0, block(1));
    await h.run(e.createSnapshots(['v@a']));
    await h.write(p, 'v', 0, block(2));
    const clone = await h.run(e.cloneVolume('c', 'v@a'));
    assert.equal(clone.name, 'c');
    const crec = h.get(p).node.volume('c')!;
    assert.deepEqual(crec.members.map((m) => m.node).sort(), ['n1', 'n2', 'n3']);
    for (const n of ['n1', 'n2', 'n3']) assert.deepEqual(await h.readLocal(n, 'c', 0, 4096), block(1), `clone on ${n}`);
    await h.run(e.resizeVolume('v', 2 << 20));
    for (const n of ['n1', 'n2', 'n3']) assert.equal(h.get(n).local.getVolume('v').sizeBytes, 2 << 20);
    assert.equal(h.get(p).node.volume('v')!.sizeBytes, 2 << 20);
    await h.run(e.revertVolume('v', 'a'));
    for (const n of ['n1', 'n2', 'n3']) assert.deepEqual(await h.readLocal(n, 'v', 0, 4096), block(1), `reverted on ${n}`);
    // Writes after the revert still reach everyone (the epoch moved on).
    await h.write(p, 'v', 4096, block(3));
    for (const n of ['n1', 'n2', 'n3']) assert.deepEqual(await h.readLocal(n, 'v', 4096, 4096), block(3));
    // Delete while one member is away: it finds no record when it returns and deletes its copy.
    const away = crec.members.find((m) => m.node !== p)!.node;
    await h.kill(away);
    await h.run(e.deleteVolume('c'));
    assert.equal(h.get(p).node.volume('c'), null);
    assert.ok(!h.get(p).local.listVolumes().some((v) => v.name === 'c'));
    await h.restart(away);
    await h.advance(2000);
    await h.idle();
    assert.ok(!h.get(away).local.listVolumes().some((v) => v.name === 'c'), 'the returning member deleted its copy');
  } finally {
    await h.close();
  }
});

test('a member down longer than replaceAfterMs is replaced on another node (full copy), then removed', async () => {
  const h = new Harness(9, { replaceAfterMs: 5000 });
  for (const n of ['n1', 'n2', 'n3']) await h.add(n);
  try {
    await h.advance(50);
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const p = rec.primary;
    const gone = rec.members.find((m) => m.node !== p)!.node;
    const spare = ['n1', 'n2', 'n3'].find((n) => !rec.members.some((m) => m.node === n))!;
    await h.write(p, 'v', 0, block(1));
    await h.kill(gone);
    await h.write(p, 'v', 4096, block(2));
    await h.clock.runUntil(() => {
      const r = h.get(p).node.volume('v')!;
      return r.members.length === 2 && r.members.every((m) => m.state === 'in-sync') && r.members.some((m) => m.node === spare);
    }, 30_000, 'replacement');
    assert.deepEqual(await h.readLocal(spare, 'v', 0, 8192), Buffer.concat([block(1), block(2)]));
  } finally {
    await h.close();
  }
});

test('drain moves every replica off a node, its primaries handed over', async () => {
  const h = await three(10);
  try {
    const n1 = h.get('n1').node;
    const rec = await h.run(n1.createVolume('v', 1 << 20, 2));
    const p = rec.primary;
    await h.write(p, 'v', 0, block(5));
    await h.run(h.get('n3').node.drain(p, 30_000), 'drain');
    const after = h.get('n3').node.volume('v')!;
    assert.ok(!after.members.some((m) => m.node === p));
    assert.notEqual(after.primary, p);
    assert.equal(after.members.length, 2);
    assert.ok(after.members.every((m) => m.state === 'in-sync'));
    await h.idle();
    for (const m of after.members) assert.deepEqual(await h.readLocal(m.node, 'v', 0, 4096), block(5));
    assert.ok(!h.get(p).local.listVolumes().some((v) => v.name === 'v'), 'the drained node deleted its copy');
    await h.write(after.primary, 'v', 4096, block(6));
  } finally {
    await h.close();
  }
});

test('a primary cut from everyone acknowledges nothing; a member takes over; it comes back as a rebuilt member', async () => {
  const h = await three(11);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const p = rec.primary;
    const m = rec.members.find((x) => x.node !== p)!.node;
    await h.write(p, 'v', 0, block(1));
    h.net.isolate(p, ['n1', 'n2', 'n3']);
    h.get(p).kv.setAvailable(false);
    const e = h.get(p).node.engine;
    await assert.rejects(h.run(e.write(e.resolve('v').id, 4096, block(2))));
    await h.clock.runUntil(() => h.get(m).node.volume('v')!.primary === m, 10_000, 'takeover');
    await h.write(m, 'v', 8192, block(3));
    h.net.heal();
    h.get(p).kv.setAvailable(true);
    await h.clock.runUntil(() => {
      const r = h.get(m).node.volume('v')!;
      return r.members.every((x) => x.state === 'in-sync');
    }, 20_000, 'rebuild of the old primary');
    const want = await h.readLocal(m, 'v', 0, 3 * 4096);
    assert.deepEqual(await h.readLocal(p, 'v', 0, 3 * 4096), want, 'the old primary holds the new primary\'s data');
    assert.deepEqual(want.subarray(4096, 8192), Buffer.alloc(4096), 'the unacknowledged write is gone');
    await assert.rejects(h.run(e.write(e.resolve('v').id, 0, block(4))), (err: Error & { code?: string }) => err.code === 'not_primary');
  } finally {
    await h.close();
  }
});

test('checkpoints on a timer: taken when written, the newest two kept on every member, hidden from users', async () => {
  const h = new Harness(12, { checkpointIntervalMs: 1000 });
  for (const n of ['n1', 'n2', 'n3']) await h.add(n);
  try {
    await h.advance(50);
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 3));
    const p = rec.primary;
    for (let i = 0; i < 4; i++) {
      await h.write(p, 'v', i * 4096, block(i + 1));
      await h.advance(1000);
    }
    await h.advance(3000);
    await h.idle();
    const names = (n: string): string[] => h.get(n).local.listSnapshots('v').map((s) => s.name);
    const onPrimary = names(p);
    assert.equal(onPrimary.length, 2, `two checkpoints kept: ${onPrimary.join(',')}`);
    assert.ok(onPrimary.every((s) => s.startsWith('cairn-ckpt-')));
    for (const n of ['n1', 'n2', 'n3']) {
      assert.deepEqual(names(n), onPrimary, `same checkpoints on ${n}`);
      for (const s of onPrimary) assert.deepEqual(await h.readLocal(n, `v@${s}`, 0, 4 * 4096), await h.readLocal(p, `v@${s}`, 0, 4 * 4096));
      const e = h.get(n).node.engine;
      assert.deepEqual(e.listSnapshots('v'), []);
      assert.equal(e.getVolume('v').snapshotCount, 0);
      assert.deepEqual(e.getVolume('v').snapshots, []);
      assert.equal(e.findSnapshot(`v@${onPrimary[0]}`), null);
      assert.deepEqual(e.listSnapshotsPage({ volume: 'v', limit: 10 }).snapshots, []);
    }
    // An idle volume takes no more checkpoints.
    await h.advance(5000);
    assert.deepEqual(names(p), onPrimary);
  } finally {
    await h.close();
  }
});

test('a consistency-group snapshot of volumes with one primary is taken at one point on every member', async () => {
  const h = await three(13);
  try {
    const a = await h.run(h.get('n1').node.createVolume('a', 1 << 20, 3));
    const b = await h.run(h.get('n1').node.createVolume('b', 1 << 20, 3));
    assert.equal(a.primary, b.primary, 'every node holds one replica of each: the same first choice');
    const p = a.primary;
    await h.write(p, 'a', 0, block(1));
    await h.write(p, 'b', 0, block(2));
    await h.run(h.get(p).node.engine.createSnapshots(['a@g', 'b@g']));
    for (const m of a.members) {
      assert.deepEqual(await h.readLocal(m.node, 'a@g', 0, 4096), block(1));
      assert.deepEqual(await h.readLocal(m.node, 'b@g', 0, 4096), block(2));
    }
    await h.run(h.get(p).node.engine.deleteSnapshot('a@g'));
    for (const m of a.members) assert.equal(h.get(m.node).local.findSnapshot('a@g'), null);
  } finally {
    await h.close();
  }
});

test('a volume whose only in-sync member restarts is taken back by it (new incarnation, next epoch)', async () => {
  const h = await three(14);
  try {
    const rec = await h.run(h.get('n2').node.createVolume('one', 1 << 20, 1));
    const p = rec.primary;
    await h.write(p, 'one', 0, block(1));
    await h.run(h.get(p).node.engine.flush());
    await h.kill(p);
    await h.advance(3000);
    assert.equal(h.get(['n1', 'n2', 'n3'].find((n) => n !== p)!).node.primaryOf('one'), null, 'no primary while it is down');
    await h.restart(p);
    await h.clock.runUntil(() => h.get(p).node.primaryOf('one')?.local === true, 10_000, 'self takeover');
    assert.equal(h.get(p).node.volume('one')!.epoch, rec.epoch + 1);
    assert.deepEqual(await h.readLocal(p, 'one', 0, 4096), block(1));
    await h.write(p, 'one', 4096, block(2));
  } finally {
    await h.close();
  }
});

test('a rebuild brings the user snapshots over: taken while the member was away, deleted while away', async () => {
  const h = await three(15);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const p = rec.primary;
    const member = rec.members.find((m) => m.node !== p)!.node;
    const e = h.get(p).node.engine;
    await h.write(p, 'v', 0, block(1));
    await h.run(e.createSnapshots(['v@old']));
    await h.run(e.createSnapshots(['v@gone']));
    await h.run(h.get(p).node.checkpointNow('v'));
    await h.kill(member);
    await h.write(p, 'v', 0, block(2));
    await h.run(e.createSnapshots(['v@s1']));
    await h.write(p, 'v', 0, block(3));
    await h.run(e.resizeVolume('v', 2 << 20));
    await h.write(p, 'v', (1 << 20) + 4096, block(4));
    await h.run(e.createSnapshots(['v@s2']));
    await h.write(p, 'v', 0, block(5));
    await h.run(e.deleteSnapshot('v@gone'));
    await h.restart(member);
    await h.clock.runUntil(() => h.get(p).node.volume('v')!.members.every((m) => m.state === 'in-sync'), 20_000, 'rebuild');
    const userSnaps = (n: string): string[] => h.get(n).node.engine.listSnapshots('v').map((s) => s.name);
    assert.deepEqual(userSnaps(member), userSnaps(p));
    assert.deepEqual(userSnaps(p), ['old', 's1', 's2']);
    for (const s of ['v@old', 'v@s1', 'v@s2', 'v']) {
      const size = h.get(p).local.resolve(s).sizeBytes;
      assert.equal(h.get(member).local.resolve(s).sizeBytes, size, `${s} size`);
      assert.ok((await h.readLocal(member, s, 0, size)).equals(await h.readLocal(p, s, 0, size)), `${s} identical on the rebuilt member`);
    }
  } finally {
    await h.close();
  }
});

test('close() revokes the lease: the others take over without waiting for it to expire; addressOf reads node records', async () => {
  const h = await three(16);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const p = rec.primary;
    const m = rec.members.find((x) => x.node !== p)!.node;
    assert.equal(h.get(m).node.addressOf(p), `${p}:7000`);
    await h.run(h.get(p).node.close());
    h.net.setDown(p, true);
    // Well inside the 2 s lease: only the revoke can have told them.
    await h.advance(500);
    assert.equal(h.get(m).node.volume('v')!.primary, m);
    assert.equal(h.get(m).node.addressOf(p), null);
    assert.equal(h.get(m).node.primaryOf('v')?.local, true);
  } finally {
    await h.close();
  }
});

test('the primary applies a write here and on the members at once; when its own write fails, the members that took it are dropped', async () => {
  const h = new Harness(11);
  const pools = new Map<string, FailingWrites>();
  for (const n of ['n1', 'n2']) {
    const pool = new FailingWrites(await createPool(new SimDevice(POOL_BLOCKS, h.clock.prng.fork()), { nowMs: () => h.clock.nowMs(), commitIntervalMs: 0 }));
    pools.set(n, pool);
    await h.start(n, null, pool);
  }
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 2));
    const member = rec.members.find((m) => m.node !== rec.primary)!.node;
    await h.write(rec.primary, 'v', 0, block(1));
    // Out of range: the local engine's own error, and nothing reaches the member (it stays in sync).
    await assert.rejects(h.write(rec.primary, 'v', 1 << 20, block(9)), (e: Error & { code?: string }) => e.code === 'out_of_range');
    assert.equal(h.get(rec.primary).node.volume('v')!.members.find((m) => m.node === member)!.state, 'in-sync');
    pools.get(rec.primary)!.failing = true;
    await assert.rejects(h.write(rec.primary, 'v', 4096, block(2)), /simulated write failure/);
    const after = h.get(rec.primary).node.volume('v')!;
    assert.equal(after.members.find((m) => m.node === member)!.state, 'down', 'the member that applied the write is dropped');
    assert.ok(after.epoch > rec.epoch);
  } finally {
    await h.close();
  }
});

test('a member applies each seq of an epoch once, across a gap in the seqs and in any order', async () => {
  const h = await three(11);
  try {
    const rec = await h.run(h.get('n1').node.createVolume('v', 1 << 20, 3));
    await h.write(rec.primary, 'v', 0, block(1)); // seq 1 of this epoch
    const member = rec.members.find((m) => m.node !== rec.primary)!.node;
    const epoch = h.get(rec.primary).node.volume('v')!.epoch;
    const send = async (seq: number, offsetBytes: number, data: Buffer): Promise<void> => {
      const reply = await h.run(h.net.endpoint('spy').request(member, {
        t: 'write', vol: 'v', epoch, seq, incarnation: h.get(member).node.incarnation(), offsetBytes, data, fua: false,
      }, 1000));
      assert.equal(reply.ok, true, `seq ${seq}`);
    };
    await send(3, 4096, block(7)); // seq 2 not seen yet: a gap
    await send(3, 4096, block(8)); // a duplicate: answered, not applied again
    await send(2, 8192, block(9)); // the gap fills late
    await send(2, 8192, block(10));
    await send(4, 12288, block(11));
    await send(1, 0, block(12)); // below the floor now
    assert.deepEqual(await h.readLocal(member, 'v', 0, 16384), Buffer.concat([block(1), block(7), block(9), block(11)]));
  } finally {
    await h.close();
  }
});

test('a node started while the control plane is unreachable backs off and joins once it answers; a stop while it waits ends the start at once; past joinWaitMs it fails', async () => {
  const { KvUnavailable } = await import('../src/cluster/kv.js');
  const { StartAbandoned } = await import('../src/cluster/node.js');
  const aborts = new Map<string, AbortController>();
  const waits: Array<{ node: string; atMs: number; retryInMs: number }> = [];
  const h = new Harness(71, { joinWaitMs: 5000 }, (name) => ({
    startAbort: aborts.get(name)!.signal,
    log: (event, fields) => { if (event === 'cluster.etcd_wait') waits.push({ node: name, atMs: h.clock.nowMs(), retryInMs: fields['retryInMs'] as number }); },
  }));
  const track = <T>(p: Promise<T>) => {
    const state: { done: boolean; error: unknown } = { done: false, error: null };
    p.then(() => { state.done = true; }, (err: unknown) => { state.done = true; state.error = err; });
    return state;
  };
  try {
    // Joins once the control plane answers, having backed off 250, 500, 1000 ms.
    aborts.set('n1', new AbortController());
    h.store.setAvailable('n1', false);
    const t0 = h.clock.nowMs();
    const n1 = track(h.launch('n1', null, await h.pool('n1')));
    await h.advance(1200);
    assert.equal(n1.done, false, 'the start waits while etcd is away');
    assert.deepEqual(waits.map((w) => [w.atMs - t0, w.retryInMs]), [[0, 250], [250, 500], [750, 1000]]);
    h.store.setAvailable('n1', true);
    await h.clock.runUntil(() => n1.done, 10_000, 'n1 started');
    assert.equal(n1.error, null);
    assert.deepEqual(h.get('n1').node.nodes().map((n) => [n.name, n.alive]), [['n1', true]]);

    // A stop while it sleeps between tries: the start ends without any timer firing.
    aborts.set('n2', new AbortController());
    h.store.setAvailable('n2', false);
    const n2 = track(h.launch('n2', null, await h.pool('n2')));
    await h.advance(100);
    assert.equal(n2.done, false);
    const before = h.clock.nowMs();
    aborts.get('n2')!.abort();
    await h.clock.settle();
    assert.equal(n2.done, true, 'the abort ends the back-off sleep');
    assert.ok(n2.error instanceof StartAbandoned, String(n2.error));
    assert.equal(h.clock.nowMs(), before);

    // Still away after joinWaitMs: the start fails with the control plane's error.
    aborts.set('n3', new AbortController());
    h.store.setAvailable('n3', false);
    const t3 = h.clock.nowMs();
    const n3 = track(h.launch('n3', null, await h.pool('n3')));
    await h.clock.runUntil(() => n3.done, 20_000, 'n3 gave up');
    assert.ok(n3.error instanceof KvUnavailable, String(n3.error));
    assert.ok(h.clock.nowMs() - t3 <= 5000, 'no try starts past the bound');
  } finally {
    await h.close();
  }
});
