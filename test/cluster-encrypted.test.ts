// Encrypted volumes across storage nodes (issue 22 with issue 20): each node encrypts its copy under a
// data key of its own (wrapped by its own KEK of the tenant), the stream carries plaintext to members
// that encrypt it, and every copy made later (takeover, rebuild from nothing, replacement, clone) stays
// encrypted. Placement only uses nodes that hold the tenant's KEK. Simulated nodes (cluster-harness).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Harness } from './cluster-harness.js';
import type { ClusterDataKeys } from '../src/cluster/node.js';
import type { DataKey } from '../src/engine/index.js';

/** 4 KiB of a text no ciphertext contains by chance: what a disk must never hold in the clear. */
const MARKER = 'cairn-encrypted-replica-plaintext';
function plaintext(i: number): Buffer { return Buffer.from(`${MARKER}-${i}|`.repeat(200).slice(0, 4096)); }

/** Data keys as a node's key manager would make them: the "wrap" names the node, so a copy's key tells where it was made. */
class TestKeys {
  readonly issued: string[] = [];
  /** Every data key made here, by volume (the newest last): what a key manager would unwrap at unlock. */
  readonly deks = new Map<string, Buffer[]>();
  constructor(private readonly node: string, public kek = true) {}
  readonly api: ClusterDataKeys = {
    newDataKey: (vol) => {
      if (!this.kek) return Promise.reject(new Error(`no KEK on ${this.node}`));
      this.issued.push(vol);
      const k = this.key();
      this.deks.set(vol, [...(this.deks.get(vol) ?? []), k.dek]);
      return Promise.resolve(k);
    },
    refusal: () => (this.kek ? null : `tenant default has no key-encryption key on ${this.node}`),
  };
  key(): DataKey {
    let dek = randomBytes(64);
    while (dek.subarray(0, 32).equals(dek.subarray(32))) dek = randomBytes(64);
    return { dek, wrapped: Buffer.concat([Buffer.from(`wrapped-by-${this.node}:`), randomBytes(24)]) };
  }
}

async function cluster(seed: number, names: string[], extra: { replaceAfterMs?: number } = {}): Promise<{ h: Harness; keys: Map<string, TestKeys> }> {
  const keys = new Map(names.map((n) => [n, new TestKeys(n)]));
  const h = new Harness(seed, extra, (name) => ({ dataKeys: keys.get(name)!.api }));
  for (const n of names) await h.add(n);
  await h.advance(50);
  return { h, keys };
}

/** The node each of `target`'s copy keys was made on (from the fake wrap). */
function keyNodes(h: Harness, node: string, target: string): string[] {
  const vol = target.split('@')[0]!;
  return h.get(node).local.listKeys().filter((k) => k.members.includes(target) || k.members.includes(vol))
    .map((k) => /^wrapped-by-([^:]+):/.exec(k.wrapped[0]!.toString('latin1'))?.[1] ?? '?');
}

/** Whether any block the node's disk holds contains the marker (the device's latest contents). */
function diskHoldsPlaintext(h: Harness, node: string): boolean {
  const dev = h.devices.get(node)!;
  return dev.storedBlocks().some((b) => dev.peek(b).includes(MARKER));
}

test('an encrypted volume is replicated: each copy under its own node\'s key, no plaintext on any disk; takeover and rebuild keep it so', async () => {
  const { h, keys } = await cluster(41, ['n1', 'n2', 'n3']);
  try {
    const n1 = h.get('n1').node;
    await h.run(n1.engine.createReplicated('v', 1 << 20, 3, { encryption: keys.get('n1')!.key() }));
    const rec = n1.volume('v')!;
    assert.equal(rec.encrypted, true);
    assert.deepEqual(rec.members.map((m) => m.node).sort(), ['n1', 'n2', 'n3']);
    await h.idle();
    for (const n of ['n1', 'n2', 'n3']) {
      assert.notEqual(h.get(n).local.getVolume('v').encryption, null, `the copy on ${n} is encrypted`);
      assert.deepEqual(keyNodes(h, n, 'v'), [n], `the copy on ${n} is under a key made there`);
    }
    const p = rec.primary;
    for (let i = 0; i < 8; i++) await h.write(p, 'v', i * 4096, plaintext(i));
    await h.run(h.get(p).node.engine.flush());
    for (const n of ['n1', 'n2', 'n3']) {
      assert.deepEqual(await h.readLocal(n, 'v', 0, 4096), plaintext(0), `${n} reads its copy back`);
      assert.equal(diskHoldsPlaintext(h, n), false, `no plaintext on ${n}'s disk`);
    }
    // A snapshot in the stream shares its volume's key on every member.
    await h.run(h.get(p).node.engine.createSnapshots(['v@s1']));
    for (const n of ['n1', 'n2', 'n3']) assert.notEqual(h.get(n).local.getSnapshot('v@s1').encryption, null);

    // The primary dies: a member takes over and serves the same plaintext from its own ciphertext.
    await h.kill(p);
    await h.clock.runUntil(() => { const r = h.get(p === 'n1' ? 'n2' : 'n1').node.volume('v'); return r !== null && r.primary !== p; }, 10_000, 'takeover');
    const q = h.get(p === 'n1' ? 'n2' : 'n1').node.volume('v')!.primary;
    const qe = h.get(q).node.engine;
    assert.deepEqual(await h.run(qe.read(qe.resolve('v').id, 4096, 4096)), plaintext(1));
    await h.write(q, 'v', 8 * 4096, plaintext(8));
    // The old primary returns and is rebuilt (a diff of plaintext, encrypted by its own key).
    await h.restart(p);
    await h.clock.runUntil(() => h.get(q).node.volume('v')!.members.every((m) => m.state === 'in-sync'), 30_000, 'rebuild');
    await h.idle();
    assert.deepEqual(await h.readLocal(p, 'v', 8 * 4096, 4096), plaintext(8));
    assert.deepEqual(keyNodes(h, p, 'v'), [p]);
    for (const n of ['n1', 'n2', 'n3']) assert.equal(diskHoldsPlaintext(h, n), false, `no plaintext on ${n}'s disk after the rebuild`);
  } finally {
    await h.close();
  }
});

test('placement uses only nodes holding the tenant\'s KEK, and says which do not', async () => {
  const { h, keys } = await cluster(42, ['n1', 'n2', 'n3']);
  try {
    keys.get('n3')!.kek = false;
    const e = h.get('n1').node.engine;
    await assert.rejects(h.run(e.createReplicated('three', 1 << 20, 3, { encryption: keys.get('n1')!.key() })),
      (err: Error & { code?: string }) => err.code === 'invalid_argument' && /3 replicas of an encrypted volume need 3 alive nodes holding its tenant's key-encryption key; 2 do/.test(err.message) &&
        /n3: tenant default has no key-encryption key on n3/.test(err.message));
    assert.equal(h.get('n1').node.volume('three'), null, 'nothing was created');
    assert.ok(!h.get('n1').local.listVolumes().some((v) => v.name === 'three'));
    await h.run(e.createReplicated('two', 1 << 20, 2, { encryption: keys.get('n1')!.key() }));
    assert.deepEqual(h.get('n1').node.volume('two')!.members.map((m) => m.node).sort(), ['n1', 'n2']);
    // Plain volumes still go anywhere.
    const plain = await h.run(h.get('n1').node.createVolume('plain', 1 << 20, 3));
    assert.equal(plain.encrypted, undefined);
    // The search finds plaintext where there is some (what makes the encrypted checks mean something).
    await h.write(plain.primary, 'plain', 0, plaintext(9));
    await h.run(h.get(plain.primary).node.engine.flush());
    for (const m of plain.members) assert.equal(diskHoldsPlaintext(h, m.node), true, `a plain copy on ${m.node} holds its plaintext`);
    // A node without a key manager at all refuses to replicate encrypted volumes, clearly.
    const bare = new Harness(43);
    await bare.add('b1'); await bare.add('b2'); await bare.advance(50);
    try {
      await assert.rejects(bare.run(bare.get('b1').node.engine.createReplicated('x', 1 << 20, 2, { encryption: keys.get('n1')!.key() })),
        /node b1 has no key manager: its encrypted volumes cannot be replicated/);
    } finally {
      await bare.close();
    }
  } finally {
    await h.close();
  }
});

test('a clone of an encrypted volume is encrypted on every member; a replacement copy (full copy) is encrypted under its new node\'s key', async () => {
  const { h, keys } = await cluster(44, ['n1', 'n2', 'n3'], { replaceAfterMs: 5000 });
  try {
    const n1 = h.get('n1').node;
    await h.run(n1.engine.createReplicated('v', 1 << 20, 2, { encryption: keys.get('n1')!.key() }));
    const rec = n1.volume('v')!;
    const p = rec.primary;
    const pe = h.get(p).node.engine;
    await h.write(p, 'v', 0, plaintext(1));
    await h.run(pe.cloneVolume('c', 'v'));
    const crec = h.get(p).node.volume('c')!;
    assert.equal(crec.encrypted, true);
    await h.idle();
    for (const m of crec.members) assert.notEqual(h.get(m.node).local.getVolume('c').encryption, null, `clone on ${m.node} encrypted`);

    const gone = rec.members.find((m) => m.node !== p)!.node;
    const spare = ['n1', 'n2', 'n3'].find((n) => !rec.members.some((m) => m.node === n))!;
    await h.kill(gone);
    await h.write(p, 'v', 4096, plaintext(2));
    await h.clock.runUntil(() => {
      const r = h.get(p).node.volume('v')!;
      return r.members.length === 2 && r.members.every((m) => m.state === 'in-sync') && r.members.some((m) => m.node === spare);
    }, 30_000, 'replacement');
    assert.deepEqual(await h.readLocal(spare, 'v', 0, 8192), Buffer.concat([plaintext(1), plaintext(2)]));
    assert.deepEqual(keyNodes(h, spare, 'v'), [spare]);
    assert.ok(keys.get(spare)!.issued.includes('v'), 'the spare made its own data key');
    assert.equal(diskHoldsPlaintext(h, spare), false);
  } finally {
    await h.close();
  }
});

test('a member whose copy is locked (its KEK away) is dropped, writes go on, and it is rebuilt once its key is back', async () => {
  const { h, keys } = await cluster(45, ['n1', 'n2', 'n3']);
  try {
    const n1 = h.get('n1').node;
    await h.run(n1.engine.createReplicated('v', 1 << 20, 2, { encryption: keys.get('n1')!.key() }));
    const rec = n1.volume('v')!;
    const p = rec.primary;
    const m = rec.members.find((x) => x.node !== p)!.node;
    await h.write(p, 'v', 0, plaintext(1));
    // The member's KEK goes away: its copy's data key leaves memory (what a restart without the KEK leaves).
    const local = h.get(m).local;
    const slot = local.listKeys().find((k) => k.members.includes('v'))!;
    local.lockKey(slot.keyId);
    keys.get(m)!.kek = false;
    await h.write(p, 'v', 4096, plaintext(2));
    const dropped = h.get(p).node.volume('v')!;
    assert.notEqual(dropped.members.find((x) => x.node === m)!.state, 'in-sync', 'the locked member was dropped');
    assert.ok(dropped.epoch > rec.epoch, 'the drop bumped the epoch');
    await h.write(p, 'v', 8192, plaintext(3));
    await h.advance(5000);
    assert.notEqual(h.get(p).node.volume('v')!.members.find((x) => x.node === m)!.state, 'in-sync', 'no rebuild into a locked copy');
    // The KEK is back (the key manager's retry unlocks the copy): the next rebuild attempt brings it in sync.
    keys.get(m)!.kek = true;
    if (local.listKeys().some((k) => k.keyId === slot.keyId && k.locked)) local.unlockKey(slot.keyId, keys.get(m)!.deks.get('v')!.at(-1)!);
    await h.clock.runUntil(() => h.get(p).node.volume('v')!.members.every((x) => x.state === 'in-sync'), 60_000, 'rebuild after unlock');
    await h.idle();
    assert.deepEqual(await h.readLocal(m, 'v', 0, 3 * 4096), Buffer.concat([plaintext(1), plaintext(2), plaintext(3)]));
    assert.equal(diskHoldsPlaintext(h, m), false);
  } finally {
    await h.close();
  }
});
