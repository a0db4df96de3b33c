// NBD forwarding on a cluster node (src/daemon/nbd-forward.ts): a client connects to a node that is
// not the volume's primary and its requests reach the primary (qemu-io and nbdinfo through node b,
// data checked in node a's engine); the relay follows a primary move within one client connection;
// a primary nobody can reach fails requests with EIO and closes the connection so the client reconnects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startFixture, runOk, MiB } from './nbd-harness.js';
import { FakeCluster } from './cluster-fake.js';
import { ForwardingExports, RELAYED_EXPORT_SUFFIX } from '../src/daemon/nbd-forward.js';
import { NbdClient, NbdClientError } from '../src/nbd/client.js';
import { NBD_EIO } from '../src/nbd/constants.js';
import net from 'node:net';

const RECONNECT_MS_MAX = 1500;

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('NBD forwarding to the primary', { timeout: 120_000 }, async (t) => {
  // Every node serves through ForwardingExports, as a cluster daemon does (a relayed export name is
  // served by the primary, or refused, never relayed again).
  let fa: FakeCluster | null = null, fc: FakeCluster | null = null;
  const a = await startFixture(t, { exportsFor: () => new ForwardingExports(a.engine, fa!, null, () => {}, undefined, RECONNECT_MS_MAX) });
  const c = await startFixture(t, { exportsFor: () => new ForwardingExports(c.engine, fc!, null, () => {}, undefined, RECONNECT_MS_MAX) });
  await a.engine.createVolume('db', 16 * MiB);
  await c.engine.createVolume('db', 16 * MiB);
  let cluster: FakeCluster | null = null;
  const events: string[] = [];
  const b = await startFixture(t, {
    exportsFor: () => new ForwardingExports(b.engine, cluster!, null, (event) => events.push(event), undefined, RECONNECT_MS_MAX),
  });
  const dead = await closedPort();
  const fake = new FakeCluster('b', b.engine, [
    { name: 'a', addresses: { api: null, nbd: `127.0.0.1:${a.server.port}`, nvmf: null, repl: 'a:1' } },
    { name: 'b', addresses: { api: null, nbd: `127.0.0.1:${b.server.port}`, nvmf: null, repl: 'b:1' } },
    { name: 'c', addresses: { api: null, nbd: `127.0.0.1:${c.server.port}`, nvmf: null, repl: 'c:1' } },
    { name: 'd', addresses: { api: null, nbd: `127.0.0.1:${dead}`, nvmf: null, repl: 'd:1' } },
  ]);
  cluster = fake;
  fa = new FakeCluster('a', a.engine, fake.nodes());
  fc = new FakeCluster('c', c.engine, fake.nodes());
  const fakes = [fake, fa, fc];
  const setRecord = (record: Parameters<FakeCluster['setRecord']>[0]): void => { for (const f of fakes) f.setRecord(record); };
  const movePrimary = (volume: string, node: string): void => { for (const f of fakes) f.movePrimary(volume, node); };
  setRecord({ name: 'db', sizeBytes: 16 * MiB, replicas: 2, minInSync: 1, epoch: 1, primary: 'a', createdMs: 1,
    members: [{ node: 'a', state: 'in-sync', incarnation: 'inc-a' }, { node: 'c', state: 'in-sync', incarnation: 'inc-c' }] });

  await t.test('qemu-io and nbdinfo through a node that is not the primary', async () => {
    const info = await runOk('nbdinfo', ['--size', b.uri('db')]);
    assert.equal(Number(info.trim()), 16 * MiB, 'the size comes from the record (b holds no replica)');
    await runOk('qemu-io', ['-f', 'raw', b.uri('db'),
      '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd -f 2M 64k', '-c', 'write -P 0x77 3M 64k', '-c', 'write -z 3M 64k',
      '-c', 'write -P 0x66 4M 64k', '-c', 'discard 4M 64k', '-c', 'flush']);
    const id = a.engine.resolve('db').id;
    assert.ok((await a.engine.read(id, 0, MiB)).every((x) => x === 0xab), 'the write reached the primary');
    assert.ok((await a.engine.read(id, 2 * MiB, 65536)).every((x) => x === 0xcd), 'the FUA write reached the primary');
    assert.ok((await a.engine.read(id, 3 * MiB, 65536)).every((x) => x === 0), 'write-zeroes reached the primary');
    assert.ok((await a.engine.read(id, 4 * MiB, 65536)).every((x) => x === 0), 'trim reached the primary');
    assert.ok((await c.engine.read(c.engine.resolve('db').id, 0, MiB)).every((x) => x === 0), 'nothing went to c (not primary)');
    await runOk('qemu-io', ['-f', 'raw', '-r', b.uri('db'), '-c', 'read -P 0xab 0 1M', '-c', 'read -P 0xcd 2M 64k', '-c', 'read -P 0 3M 64k']);
    assert.throws(() => b.engine.resolve('db'), 'b still holds nothing');
    const list = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${b.server.port}`]);
    assert.deepEqual((JSON.parse(list) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']), ['db'],
      'LIST on b names the volume it only forwards');
  });

  await t.test('a relayed connection is served by the primary or refused, never relayed again', async () => {
    // c is not db's primary (a is): a connection marked relayed must not bounce on.
    await assert.rejects(NbdClient.open('127.0.0.1', c.server.port!, `db${RELAYED_EXPORT_SUFFIX}`));
    const relayed = await NbdClient.open('127.0.0.1', a.server.port!, `db${RELAYED_EXPORT_SUFFIX}`);
    t.after(() => relayed.close());
    assert.ok((await relayed.read(0, 4096)).every((x) => x === 0xab), 'the primary serves a relayed connection itself');
  });

  await t.test('a volume whose primary is this node is served locally', async () => {
    await b.engine.createVolume('here', 4 * MiB);
    setRecord({ name: 'here', sizeBytes: 4 * MiB, replicas: 1, minInSync: 1, epoch: 1, primary: 'b', createdMs: 1,
      members: [{ node: 'b', state: 'in-sync', incarnation: 'inc-b' }] });
    await runOk('qemu-io', ['-f', 'raw', b.uri('here'), '-c', 'write -P 0x42 0 64k']);
    assert.ok((await b.engine.read(b.engine.resolve('here').id, 0, 65536)).every((x) => x === 0x42));
    // A client served locally is disconnected when the primary moves away, so it reconnects and is forwarded.
    const client = await NbdClient.open('127.0.0.1', b.server.port!, 'here');
    t.after(() => client.close());
    assert.ok((await client.read(0, 4096)).every((x) => x === 0x42));
    movePrimary('here', 'c');
    await client.closed;
  });

  await t.test('one client connection follows the primary when it moves; EIO and close when none answers', async () => {
    const client = await NbdClient.open('127.0.0.1', b.server.port!, 'db');
    t.after(() => client.close());
    await client.write(0, Buffer.alloc(4096, 0x11), false);
    assert.ok((await a.engine.read(a.engine.resolve('db').id, 0, 4096)).every((x) => x === 0x11));
    movePrimary('db', 'c');
    await client.write(4096, Buffer.alloc(4096, 0x22), true);
    assert.ok((await c.engine.read(c.engine.resolve('db').id, 4096, 4096)).every((x) => x === 0x22), 'the write after the move went to c');
    assert.ok((await a.engine.read(a.engine.resolve('db').id, 4096, 4096)).every((x) => x === 0xab), 'and not to a');
    assert.ok((await client.read(4096, 4096)).every((x) => x === 0x22), 'reads follow too');
    assert.ok(events.filter((e) => e === 'nbd_forward_connected').length >= 2, 'the relay reconnected');
    movePrimary('db', 'd');
    await assert.rejects(client.write(0, Buffer.alloc(4096, 0x33), false),
      (e: unknown) => e instanceof NbdClientError && e.errorNumber === NBD_EIO, 'EIO when the primary cannot be reached');
    await client.closed; // the server closed the connection so the client reconnects
    assert.ok(events.includes('nbd_forward_lost'));
  });
});
