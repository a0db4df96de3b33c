// STARTTLS with X.509 certificates (server cert signed by a test CA made with openssl; optional client
// certificates) and with TLS-PSK; TLS-required mode refuses plaintext clients. Clients: nbdinfo
// (nbds:// URIs with tls-certificates / tls-psk-file) and qemu-io with a tls-creds-x509 object.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { startFixture, runOk, run, defer, waitUntil, MiB } from './nbd-harness.js';
import { makePki } from './pki.js';

interface TlsFiles { ca: string; serverCert: string; serverKey: string; clientDir: string; clientWithCertDir: string }

/** The CA, the server's certificate, a CA-only client directory and one with a client certificate. */
async function makeTlsFiles(base: string): Promise<TlsFiles> {
  const pki = await makePki(base);
  const client = await pki.client('client', '/CN=cairn-client');
  return { ca: pki.ca, serverCert: pki.serverCert, serverKey: pki.serverKey, clientDir: pki.caOnlyDir, clientWithCertDir: client.dir };
}

test('X.509 TLS: required mode serves TLS clients and refuses plaintext', async (t) => {
  const setup = await startFixture(t); // only for its temp dir
  const pki = await makeTlsFiles(setup.dir);
  const f = await startFixture(t, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, required: true } });
  await f.engine.createVolume('secret', 8 * MiB);
  const tlsUri = `nbds://localhost:${f.server.port}/secret?tls-certificates=${pki.clientDir}`;
  const info = await runOk('nbdinfo', [tlsUri]);
  assert.match(info, /with TLS/);
  const connected = f.events.find((e) => e.event === 'nbd_connected');
  assert.deepEqual([connected?.fields.tls, connected?.fields.recvSlabs], [true, false], 'a TLS session is logged as reading through the TLS layer');
  await runOk('qemu-io', ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.clientDir}`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.server.port},export=secret,tls-creds=tls0`,
    '-c', 'write -P 0x3c 0 1M', '-c', 'read -P 0x3c 0 1M']);
  const plain = await run('nbdinfo', [`nbd://localhost:${f.server.port}/secret`]);
  assert.notEqual(plain.code, 0, 'plaintext client refused');
  const plainList = await run('nbdinfo', ['--list', `nbd://localhost:${f.server.port}`]);
  assert.notEqual(plainList.code, 0, 'plaintext LIST refused');
  // A client that does not trust our CA fails the handshake; the server keeps serving.
  const strangerDir = path.join(setup.dir, 'stranger');
  await mkdir(strangerDir);
  await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', path.join(strangerDir, 'k.pem'), '-out', path.join(strangerDir, 'ca-cert.pem'), '-days', '1', '-subj', '/CN=other CA']);
  const untrusted = await run('nbdinfo', [`nbds://localhost:${f.server.port}/secret?tls-certificates=${strangerDir}`]);
  assert.notEqual(untrusted.code, 0);
  await runOk('qemu-io', ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.clientDir}`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.server.port},export=secret,tls-creds=tls0`, '-r', '-c', 'read -P 0x3c 0 1M']);
});

test('X.509 TLS with client certificates: a CA file makes client certificates mandatory', async (t) => {
  const setup = await startFixture(t);
  const pki = await makeTlsFiles(setup.dir);
  const f = await startFixture(t, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, required: true } });
  await f.engine.createVolume('v', 4 * MiB);
  await runOk('nbdinfo', ['--size', `nbds://localhost:${f.server.port}/v?tls-certificates=${pki.clientWithCertDir}`]);
  const noCert = await run('nbdinfo', ['--size', `nbds://localhost:${f.server.port}/v?tls-certificates=${pki.clientDir}`]);
  assert.notEqual(noCert.code, 0, 'a client without a certificate is refused');
});

test('TLS optional: plaintext and TLS clients are both served', async (t) => {
  const setup = await startFixture(t);
  const pki = await makeTlsFiles(setup.dir);
  const f = await startFixture(t, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, required: false } });
  await f.engine.createVolume('v', 4 * MiB);
  assert.match(await runOk('nbdinfo', [`nbd://localhost:${f.server.port}/v`]), /without TLS/);
  assert.match(await runOk('nbdinfo', [`nbds://localhost:${f.server.port}/v?tls-certificates=${pki.clientDir}`]), /with TLS/);
});

test('TLS-PSK: the right key is served, a wrong key is refused', async (t) => {
  const setup = await startFixture(t);
  const pskFile = path.join(setup.dir, 'keys.psk');
  await writeFile(pskFile, `alice:${randomBytes(32).toString('hex')}\n`);
  const wrongFile = path.join(setup.dir, 'wrong.psk');
  await writeFile(wrongFile, `alice:${randomBytes(32).toString('hex')}\n`);
  const f = await startFixture(t, { tls: { pskFile, required: true } });
  await f.engine.createVolume('p', 8 * MiB);
  const uri = (file: string): string => `nbds://alice@localhost:${f.server.port}/p?tls-psk-file=${file}`;
  assert.match(await runOk('nbdinfo', [uri(pskFile)]), /with TLS/);
  const wrong = await run('nbdinfo', [uri(wrongFile)]);
  assert.notEqual(wrong.code, 0);
  await runOk('qemu-io', ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${setup.dir},username=alice`,
    '--image-opts', `driver=nbd,host=localhost,port=${f.server.port},export=p,tls-creds=tls0`,
    '-c', 'write -P 0x99 0 64k', '-c', 'read -P 0x99 0 64k']);
});

test('garbage instead of a TLS handshake after STARTTLS closes that connection only', async (t) => {
  const setup = await startFixture(t);
  const pki = await makeTlsFiles(setup.dir);
  const f = await startFixture(t, { tls: { certFile: pki.serverCert, keyFile: pki.serverKey, required: true } });
  await f.engine.createVolume('v', 4 * MiB);
  const socket = net.connect(f.server.port as number, '127.0.0.1');
  defer(t, () => socket.destroy());
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => { received = Buffer.concat([received, d]); });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const option = Buffer.alloc(16);
  option.writeBigUInt64BE(0x49484156454f5054n, 0);
  option.writeUInt32BE(5, 8); // NBD_OPT_STARTTLS
  socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), option]));
  await waitUntil(() => received.length >= 18 + 20, 'STARTTLS reply');
  assert.equal(received.readUInt32BE(18 + 12), 1, 'NBD_REP_ACK');
  socket.write(randomBytes(4096)); // not a ClientHello
  await closed;
  assert.match(await runOk('nbdinfo', [`nbds://localhost:${f.server.port}/v?tls-certificates=${pki.clientDir}`]), /with TLS/);
});
