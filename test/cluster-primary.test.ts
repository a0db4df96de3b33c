// VolumePrimary (src/cluster/primary.ts) against a scripted host: what happens when a data request is
// applied here and then cannot reach a member (this node lost its lease for a moment, the control plane
// was away when a member's stale_epoch answer had to be checked). The member must not stay in sync
// while lacking a write this node holds: the next request drops it first (epoch+1), so it is rebuilt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VolumePrimary, type PrimaryHost } from '../src/cluster/primary.js';
import { KvUnavailable } from '../src/cluster/kv.js';
import { realClock } from '../src/cluster/clock.js';
import type { ReplReply, ReplRequest } from '../src/cluster/messages.js';
import type { VolumeRecord } from '../src/cluster/records.js';
import type { Engine } from '../src/engine/index.js';

class ScriptedHost implements PrimaryHost {
  readonly self = 'n1';
  readonly clock = realClock;
  readonly local = {} as Engine;
  readonly replicaTimeoutMs = 1000;
  readonly degradedWaitMs = 0;
  rec: VolumeRecord = {
    name: 'v', sizeBytes: 1 << 20, replicas: 3, minInSync: 1, epoch: 5, primary: 'n1', createdMs: 0,
    members: ['n1', 'n2', 'n3'].map((node) => ({ node, state: 'in-sync' as const, incarnation: `i-${node}` })),
  };
  serving = true;
  kvUp = true;
  /** Requests each member applied, in order. */
  readonly applied = new Map<string, ReplRequest[]>([['n2', []], ['n3', []]]);
  /** The next answer of each member (then ok again): a member that saw a newer epoch. */
  readonly answerOnce = new Map<string, ReplReply>();
  /** Runs when a member answers (a lease that lapses meanwhile). */
  onAnswer: () => void = () => undefined;
  readonly logged: string[] = [];

  record(): VolumeRecord { return this.rec; }
  servesAsPrimary(): boolean { return this.serving; }
  async refreshRecord(): Promise<VolumeRecord> {
    if (!this.kvUp) throw new KvUnavailable('the control plane is away');
    return this.rec;
  }
  async dropMember(_vol: string, node: string): Promise<void> {
    if (!this.kvUp) throw new KvUnavailable('the control plane is away');
    const m = this.rec.members.find((x) => x.node === node);
    if (m === undefined || m.state !== 'in-sync') return;
    this.rec = { ...this.rec, epoch: this.rec.epoch + 1, members: this.rec.members.map((x) => x.node === node ? { ...x, state: 'down' as const } : x) };
  }
  async request(node: string, request: ReplRequest): Promise<ReplReply> {
    await new Promise((resolve) => setImmediate(resolve));
    this.onAnswer();
    const once = this.answerOnce.get(node);
    if (once !== undefined) { this.answerOnce.delete(node); return once; }
    this.applied.get(node)!.push(request);
    return { ok: true };
  }
  async waitRecordChange(): Promise<void> { await new Promise((resolve) => setImmediate(resolve)); }
  inflightChanged(): void { /* counted by the real node */ }
  log(event: string): void { this.logged.push(event); }
  state(node: string): string { return this.rec.members.find((m) => m.node === node)!.state; }
}

function write(vp: VolumePrimary, offsetBytes: number, local: Buffer[]): Promise<void> {
  const data = Buffer.alloc(4096, offsetBytes / 4096 + 1);
  return vp.data(offsetBytes, 4096, async () => { local.push(data); },
    (epoch, m, seq) => ({ t: 'write', vol: 'v', epoch, seq: seq(), incarnation: m.incarnation, offsetBytes, data, fua: false }));
}

test('a stale_epoch answer that cannot be checked (control plane away) leaves the members pending drop; the next write drops them first', async () => {
  const host = new ScriptedHost();
  const vp = new VolumePrimary(host, 'v');
  const local: Buffer[] = [];
  await write(vp, 0, local);
  assert.equal(host.applied.get('n2')!.length, 1);
  for (const node of ['n2', 'n3']) host.answerOnce.set(node, { ok: false, code: 'stale_epoch', epoch: 6, message: 'epoch 6 seen' });
  host.kvUp = false;
  await assert.rejects(write(vp, 4096, local), KvUnavailable);
  assert.equal(local.length, 2, 'the primary applied the failed write');
  assert.equal(host.applied.get('n2')!.length, 1, 'the members did not');
  // While the drops cannot be recorded, nothing more goes out to the members.
  await assert.rejects(write(vp, 8192, local), KvUnavailable);
  assert.equal(host.applied.get('n2')!.length + host.applied.get('n3')!.length, 2);
  host.kvUp = true;
  const epoch = host.rec.epoch;
  await write(vp, 8192, local);
  assert.equal(host.state('n2'), 'down');
  assert.equal(host.state('n3'), 'down');
  assert.equal(host.rec.epoch, epoch + 2, 'each drop is an epoch');
  assert.equal(host.applied.get('n2')!.length, 1, 'a dropped member gets nothing more');
});

test('a lease that lapses while a write is out leaves the members it did not reach pending drop, even once the lease is back', async () => {
  const host = new ScriptedHost();
  const vp = new VolumePrimary(host, 'v');
  const local: Buffer[] = [];
  host.answerOnce.set('n3', { ok: false, code: 'stale_epoch', epoch: 6, message: 'epoch 6 seen' });
  host.onAnswer = () => { host.serving = false; };
  await assert.rejects(write(vp, 0, local), /not the primary|primary/i);
  assert.equal(local.length, 1);
  assert.equal(host.applied.get('n2')!.length, 1, 'n2 answered before the lease lapsed');
  assert.equal(host.applied.get('n3')!.length, 0, 'n3 did not get the write');
  // The lease is renewed (etcd extends leases when its leader changes): same node, same epoch.
  host.serving = true;
  host.onAnswer = () => undefined;
  await write(vp, 4096, local);
  assert.equal(host.state('n3'), 'down', 'n3 lacks a write the primary holds: dropped before the next one');
  assert.equal(host.state('n2'), 'in-sync', 'n2 got every write');
  assert.equal(host.applied.get('n2')!.length, 2);
});

test('a local write that fails after the members took it drops them; a control plane away defers the drops, never forgets them', async () => {
  const host = new ScriptedHost();
  const vp = new VolumePrimary(host, 'v');
  host.kvUp = false;
  await assert.rejects(vp.data(0, 4096, async () => { throw new Error('simulated EIO'); },
    (epoch, m, seq) => ({ t: 'write', vol: 'v', epoch, seq: seq(), incarnation: m.incarnation, offsetBytes: 0, data: Buffer.alloc(4096), fua: false })), /simulated EIO/);
  assert.ok(host.logged.includes('cluster.drop_deferred'));
  assert.equal(host.state('n2'), 'in-sync', 'not dropped yet: the control plane is away');
  host.kvUp = true;
  await write(vp, 4096, []);
  assert.equal(host.state('n2'), 'down');
  assert.equal(host.state('n3'), 'down');
  assert.equal(host.applied.get('n2')!.length, 1, 'only the write that failed here reached them');
});

test('each member sees the seqs of its data requests dense from 1, also after a resend to one member in a newer epoch', async () => {
  const host = new ScriptedHost();
  const vp = new VolumePrimary(host, 'v');
  const local: Buffer[] = [];
  const seqsOf = (node: string): number[] => host.applied.get(node)!.flatMap((r) => ('seq' in r && r.epoch === host.rec.epoch ? [r.seq] : [])).sort((a, b) => a - b);
  // Concurrent writes too: a seq is taken once per request and member, not shared by the members.
  for (let i = 0; i < 3; i++) await write(vp, i * 4096, local);
  await Promise.all([3, 4, 5].map((i) => write(vp, i * 4096, local)));
  for (const node of ['n2', 'n3']) assert.deepEqual(seqsOf(node), [1, 2, 3, 4, 5, 6], `${node} saw every seq once`);
  // n2 saw epoch 6 first (another change of the record): its copy is resent in epoch 6, n3's is not.
  host.answerOnce.set('n2', { ok: false, code: 'stale_epoch', epoch: 6, message: 'epoch 6 seen' });
  host.refreshRecord = async () => { host.rec = { ...host.rec, epoch: 6 }; return host.rec; };
  await write(vp, 6 * 4096, local);
  await write(vp, 7 * 4096, local);
  assert.equal(host.rec.epoch, 6);
  assert.deepEqual(seqsOf('n2'), [1, 2], 'n2: the resent write and the next, dense in epoch 6');
  assert.deepEqual(seqsOf('n3'), [1], 'n3: the next write is its first of epoch 6');
  assert.equal(host.state('n2'), 'in-sync');
});
