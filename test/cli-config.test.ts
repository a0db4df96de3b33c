// The daemon's configuration merge (src/daemon/config.ts): defaults < config file < CAIRN_* env <
// flags, listen-address and size parsing, and one clear error per invalid value. Also the CLI's
// size parsing and printing (src/cli/sizes.ts), which the config shares.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, defaultConfig, loadConfig, parseListen } from '../src/daemon/config.js';
import { formatSize, parseSize } from '../src/cli/sizes.js';

test('config precedence: defaults < file < env < flags', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-cfg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  assert.deepEqual(loadConfig({}, {}, undefined), defaultConfig);
  const yamlPath = join(dir, 'c.yaml');
  await writeFile(yamlPath, 'pool: /file/pool\npoolSize: 2G\nnbd: 0.0.0.0:20000\napi: 127.0.0.1:20001\nlogLevel: debug\n');
  const fromFile = loadConfig({}, {}, yamlPath);
  assert.equal(fromFile.poolPath, '/file/pool');
  assert.equal(fromFile.poolSizeBytes, 2 * 2 ** 30);
  assert.deepEqual(fromFile.nbd, { host: '0.0.0.0', port: 20000 });
  assert.deepEqual(fromFile.api, { host: '127.0.0.1', port: 20001 });
  const env = { CAIRN_POOL: '/env/pool', CAIRN_API: 'http://127.0.0.1:30001', CAIRN_CONFIG: yamlPath, CAIRN_NBD: 'off' };
  const fromEnv = loadConfig({}, env, undefined);
  assert.equal(fromEnv.poolPath, '/env/pool');
  assert.deepEqual(fromEnv.api, { host: '127.0.0.1', port: 30001 });
  assert.equal(fromEnv.nbd, null);
  assert.equal(fromEnv.logLevel, 'debug', 'the file (named by CAIRN_CONFIG) still applies below env');
  const fromFlags = loadConfig({ pool: '/flag/pool', api: ':0', nbd: '[::1]:10809' }, env, undefined);
  assert.equal(fromFlags.poolPath, '/flag/pool');
  assert.deepEqual(fromFlags.api, { host: '127.0.0.1', port: 0 });
  assert.deepEqual(fromFlags.nbd, { host: '::1', port: 10809 });
  const jsonPath = join(dir, 'c.json');
  await writeFile(jsonPath, JSON.stringify({ nbdTls: { pskFile: '/k.psk', required: true }, commitIntervalMs: 50 }));
  const fromJson = loadConfig({}, {}, jsonPath);
  assert.deepEqual(fromJson.nbdTls, { pskFile: '/k.psk', required: true });
  assert.equal(fromJson.commitIntervalMs, 50);
  assert.equal(fromJson.nbdBusyPollMicros, null, 'busy polling: server default unless set');
  assert.equal(loadConfig({ nbdBusyPollMicros: '0' }, { CAIRN_NBD_BUSY_POLL_US: '50' }, undefined).nbdBusyPollMicros, 0);
  assert.equal(loadConfig({}, { CAIRN_NBD_BUSY_POLL_US: '50' }, undefined).nbdBusyPollMicros, 50);
  assert.equal(fromJson.poolPreallocate, 'off', 'a new pool file is sparse unless asked');
  assert.equal(loadConfig({}, { CAIRN_POOL_PREALLOCATE: 'full' }, undefined).poolPreallocate, 'full');
  assert.equal(loadConfig({ poolPreallocate: 'off' }, { CAIRN_POOL_PREALLOCATE: 'full' }, undefined).poolPreallocate, 'off');
});

test('config errors are one clear line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-cfg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bad = (fn: () => unknown, message: RegExp) => assert.throws(fn, (e: unknown) => e instanceof ConfigError && message.test(e.message));
  bad(() => loadConfig({ poolSize: '12Q' }, {}, undefined), /^invalid poolSize \(command line\): 12Q$/);
  bad(() => loadConfig({}, { CAIRN_NBD: 'host:99999' }, undefined), /invalid nbd \(environment\) address "host:99999"/);
  bad(() => loadConfig({ api: 'off' }, {}, undefined), /the API cannot be off/);
  bad(() => loadConfig({ logLevel: 'loud' }, {}, undefined), /invalid logLevel \(command line\): loud/);
  bad(() => loadConfig({}, { CAIRN_POOL_PREALLOCATE: 'thick' }, undefined), /^invalid poolPreallocate \(environment\): thick \(off or full\)$/);
  bad(() => loadConfig({}, {}, join(dir, 'missing.yaml')), /^cannot read config file /);
  await writeFile(join(dir, 'list.yaml'), '- a\n- b\n');
  bad(() => loadConfig({}, {}, join(dir, 'list.yaml')), /is not a mapping/);
  await writeFile(join(dir, 'tls.yaml'), 'nbdTls:\n  certFile: /c.pem\n');
  bad(() => loadConfig({}, {}, join(dir, 'tls.yaml')), /certFile and keyFile go together/);
});

test('listen addresses and sizes', () => {
  assert.deepEqual(parseListen('10809', 'nbd'), { host: '127.0.0.1', port: 10809 });
  assert.deepEqual(parseListen('0.0.0.0:1', 'nbd'), { host: '0.0.0.0', port: 1 });
  assert.deepEqual(parseListen('http://localhost:8080/', 'api'), { host: 'localhost', port: 8080 });
  assert.equal(parseListen('off', 'nbd'), null);
  assert.throws(() => parseListen('a:b', 'nbd'), ConfigError);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('10G'), 10 * 2 ** 30);
  assert.equal(parseSize('1.5t'), 1.5 * 2 ** 40);
  assert.equal(parseSize('64MiB'), 64 * 2 ** 20);
  assert.equal(parseSize('12Q'), null);
  assert.equal(parseSize('-1'), null);
  assert.equal(parseSize(''), null);
  assert.equal(formatSize(0), '0B');
  assert.equal(formatSize(4096), '4K');
  assert.equal(formatSize(1.5 * 2 ** 30), '1.5G');
  assert.equal(formatSize(2 ** 30 - 4096), '1G', 'rounds up to the next unit, not "1024M"');
  assert.equal(formatSize(123 * 2 ** 20), '123M');
  assert.equal(formatSize(null), '-');
});

test('cluster settings: flags, file and env; --node and --advertise required with --cluster; none without it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-cfg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  assert.equal(defaultConfig.cluster, null, 'a single node unless --cluster');
  const c = loadConfig({ cluster: 'http://10.0.0.1:2379,10.0.0.2:2379', node: 'n1', advertise: '10.0.1.1', zone: 'z1', replPort: '12000', replicasDefault: '2' }, {}, undefined);
  assert.deepEqual(c.cluster, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
  assert.equal(c.node, 'n1');
  assert.equal(c.advertise, '10.0.1.1');
  assert.equal(c.zone, 'z1');
  assert.equal(c.replPort, 12000);
  assert.equal(c.replicasDefault, 2);
  assert.equal(loadConfig({ cluster: 'http://e:2379', node: 'n', advertise: 'h' }, {}, undefined).replPort, 10811, 'default replication port');
  const yamlPath = join(dir, 'c.yaml');
  await writeFile(yamlPath, 'cluster: [http://e1:2379, http://e2:2379]\nnode: a\nadvertise: "[fd00::1]"\nreplPort: 13000\n');
  const fromFile = loadConfig({}, {}, yamlPath);
  assert.deepEqual(fromFile.cluster, ['http://e1:2379', 'http://e2:2379']);
  assert.equal(fromFile.advertise, 'fd00::1');
  assert.equal(fromFile.replPort, 13000);
  const fromEnv = loadConfig({}, { CAIRN_CLUSTER: 'http://e:2379', CAIRN_NODE: 'b', CAIRN_ADVERTISE: 'node-b.local', CAIRN_ZONE: 'z2' }, undefined);
  assert.equal(fromEnv.node, 'b');
  assert.equal(fromEnv.zone, 'z2');
  assert.throws(() => loadConfig({ cluster: 'http://e:2379' }, {}, undefined), (e: Error) => e instanceof ConfigError && /--cluster needs --node NAME and --advertise HOST/.test(e.message));
  assert.throws(() => loadConfig({ cluster: 'http://e:2379', node: 'n' }, {}, undefined), /--cluster needs --advertise HOST/);
  assert.throws(() => loadConfig({ node: 'n' }, {}, undefined), /node is set but --cluster is not/);
  assert.throws(() => loadConfig({ cluster: 'http://e', node: 'n', advertise: 'h' }, {}, undefined), /has no port/);
  assert.throws(() => loadConfig({ cluster: 'ftp://e:21', node: 'n', advertise: 'h' }, {}, undefined), /http:\/\/ or https:\/\//);
  assert.throws(() => loadConfig({ cluster: 'http://e:2379', node: 'bad name', advertise: 'h' }, {}, undefined), /invalid node/);
  assert.throws(() => loadConfig({ cluster: 'http://e:2379', node: 'n', advertise: 'h:10' }, {}, undefined), /no port/);
  assert.throws(() => loadConfig({ cluster: 'http://e:2379', node: 'n', advertise: 'h', replicasDefault: '4' }, {}, undefined), /1\.\.3/);
  assert.throws(() => loadConfig({ cluster: 'http://e:2379', node: 'n', advertise: 'h', replPort: '70000' }, {}, undefined), /1\.\.65535/);
});
