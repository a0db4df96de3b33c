// QoS end to end: a real `cairn serve`, limits set with the real `cairn` CLI, and fio's nbd engine as
// the client. The one place in the suite that asserts rates, because issue 19 demands an accuracy
// band (±5 % of the limit after the first second): each window is a few seconds long and excludes the
// start (fio --ramp_time, or counters read after a settling time), and every limit is far below what
// this machine serves unlimited, so a busy host slows the measure only by its noise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { assertBuilt, authHeaders, cairn, cairnJson, startServe, tempDir, type DaemonProcess } from './cli-helpers.js';

const MiB = 1024 * 1024;
const BAND = 0.05;

interface FioSide { iops: number; bw_bytes: number; total_ios: number }
interface FioResult { jobs: { error: number; read: FioSide; write: FioSide }[] }

/** Runs fio's nbd engine; resolves with its JSON report. */
function fio(uri: string, args: string[]): Promise<FioResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('fio', ['--name=qos', '--ioengine=nbd', `--uri=${uri}`, '--size=48M', '--randrepeat=0',
      '--time_based', '--group_reporting', '--output-format=json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000); // a hang bound
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) { reject(new Error(`fio exited ${code}: ${err}`)); return; }
      const result = JSON.parse(out.slice(out.indexOf('{'))) as FioResult;
      if (result.jobs.some((j) => j.error !== 0)) { reject(new Error(`fio job error: ${out}`)); return; }
      resolve(result);
    });
  });
}

function assertWithin(measured: number, limit: number, what: string): void {
  const off = measured / limit - 1;
  console.log(`${what}: ${measured.toFixed(1)} against ${limit} (${(off * 100).toFixed(2)} %)`); // the figures, for the record
  assert.ok(Math.abs(off) <= BAND, `${what}: measured ${measured.toFixed(1)} against a limit of ${limit} (${(off * 100).toFixed(1)} %)`);
}

async function cli(d: DaemonProcess, args: string[]): Promise<void> {
  const r = await cairn(d.api, args);
  assert.equal(r.code, 0, `cairn ${args.join(' ')}: ${r.stderr}`);
}

/** Completed write operations of `volume` so far, from the daemon's /metrics. */
async function writesDone(d: DaemonProcess, volume: string): Promise<number> {
  const text = await (await fetch(`${d.api}/metrics`, { headers: authHeaders(d.api) })).text();
  const m = new RegExp(`^cairn_io_operations_total\\{volume="${volume}",op="write"\\} (\\d+)`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

/** Write IOPS of `volume` over the next `seconds`, from the daemon's counters (each read at the middle of its fetch). */
async function writeRate(d: DaemonProcess, volume: string, seconds: number): Promise<number> {
  const sample = async (): Promise<[number, number]> => {
    const t0 = performance.now();
    const n = await writesDone(d, volume);
    return [n, (t0 + performance.now()) / 2];
  };
  const [before, startMs] = await sample();
  await sleep(seconds * 1000);
  const [after, endMs] = await sample();
  return (after - before) / ((endMs - startMs) / 1000);
}

function sleep(ms: number): Promise<void> { return new Promise((resolve) => setTimeout(resolve, ms)); }

const randwrite = (qd: number, seconds: number) => ['--rw=randwrite', '--bs=4k', `--iodepth=${qd}`, `--runtime=${seconds}`];

test('QoS with fio: IOPS and bytes/s limits, live changes, a tenant limit, a multi-conn client', { timeout: 600_000 }, async (t) => {
  assertBuilt();
  const dir = await tempDir(t, 'cairn-qos-');
  const d = await startServe(t, join(dir, 'pool'), ['--pool-size', '2G']);
  const uri = (name: string) => `${d.nbd}/${name}`;

  await t.test('the CLI: bad values are usage errors; set shows the limits; --json gives the API object', async () => {
    await cli(d, ['volume', 'create', 'c', '--size', '16M', '--iops-max', '100', '--write-bps-max', '10M', '--burst-seconds', '2']);
    for (const args of [['volume', 'set', 'c', '--iops-max', 'lots'], ['volume', 'set', 'c', '--bps-max', '-1'], ['volume', 'set', 'c'],
      ['tenant', 'set', 'default', '--weight', 'x'], ['volume', 'create', 'c2', '--size', '16M', '--iops-max', '1.5']]) {
      const r = await cairn(d.api, args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
    const shown = await cairn(d.api, ['volume', 'show', 'c']);
    assert.match(shown.stdout, /qos: +100 IOPS, write 10M\/s, burst 2s/);
    const set = await cairnJson<{ iopsMax: number | null; readIopsMax: number }>(d.api, ['volume', 'set', 'c', '--iops-max', 'none', '--read-iops-max', '50']);
    assert.deepEqual([set.iopsMax, set.readIopsMax], [null, 50]);
    const tenant = await cairn(d.api, ['tenant', 'set', 'default', '--weight', '200']);
    assert.match(tenant.stdout, /weight 200/);
    await cli(d, ['tenant', 'set', 'default', '--weight', '0']);
    const missing = await cairn(d.api, ['tenant', 'set', 'nobody', '--iops-max', '5']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /tenant_not_found/);
  });

  await t.test('a volume limited to N IOPS runs at N (±5 %) at QD 32', async () => {
    await cli(d, ['volume', 'create', 'iops', '--size', '64M', '--iops-max', '500']);
    for (const n of [500, 2000, 5000]) {
      await cli(d, ['volume', 'set', 'iops', '--iops-max', String(n)]);
      const r = await fio(uri('iops'), [...randwrite(32, 4), '--ramp_time=2']);
      assertWithin(r.jobs[0]!.write.iops, n, `--iops-max ${n}`);
    }
    const shown = await cairnJson<{ qos: { iopsMax: number } }>(d.api, ['volume', 'show', 'iops']);
    assert.equal(shown.qos.iopsMax, 5000);
  });

  await t.test('a client only a little faster than the limit gets the limit after the first second', async () => {
    // A fresh limit starts with a full 1 s burst; fio paced at 2 500 IOPS would take 4 s to spend the
    // 2 000 extra tokens at 500/s and measure ~2 375 after its 1 s ramp. The burst lasts 1 s instead.
    await cli(d, ['volume', 'create', 'paced', '--size', '64M', '--iops-max', '2000']);
    const r = await fio(uri('paced'), [...randwrite(32, 4), '--ramp_time=1', '--rate_iops=2500']);
    assertWithin(r.jobs[0]!.write.iops, 2000, 'fio paced at 2 500 IOPS against --iops-max 2000');
  });

  await t.test('a volume limited in bytes/s runs at that rate (±5 %) with 1 MiB I/O', async () => {
    await cli(d, ['volume', 'create', 'bps', '--size', '64M', '--bps-max', '24M']);
    const w = await fio(uri('bps'), ['--rw=write', '--bs=1M', '--iodepth=8', '--runtime=5', '--ramp_time=2']);
    assertWithin(w.jobs[0]!.write.bw_bytes, 24 * MiB, 'writes at --bps-max 24M');
    await cli(d, ['volume', 'set', 'bps', '--bps-max', 'none', '--read-bps-max', '40M']);
    const r = await fio(uri('bps'), ['--rw=read', '--bs=1M', '--iodepth=8', '--runtime=5', '--ramp_time=2']);
    assertWithin(r.jobs[0]!.read.bw_bytes, 40 * MiB, 'reads at --read-bps-max 40M');
  });

  await t.test('a limit changed while fio runs applies at once, without a reconnect', async () => {
    await cli(d, ['volume', 'create', 'live', '--size', '64M', '--write-iops-max', '1000']);
    // fio runs longer than the steps below take on a slow machine; the last one lifts the limit.
    const running = fio(uri('live'), randwrite(32, 26));
    await sleep(2500);
    assertWithin(await writeRate(d, 'live', 4), 1000, 'before the change');
    await cli(d, ['volume', 'set', 'live', '--write-iops-max', '3000']);
    await sleep(500);
    assertWithin(await writeRate(d, 'live', 4), 3000, 'after raising the limit');
    await cli(d, ['volume', 'set', 'live', '--write-iops-max', '600']);
    await sleep(1000);
    assertWithin(await writeRate(d, 'live', 4), 600, 'after lowering the limit');
    await cli(d, ['volume', 'set', 'live', '--write-iops-max', '0']);
    await running;
    const metrics = await (await fetch(`${d.api}/metrics`, { headers: authHeaders(d.api) })).text();
    assert.match(metrics, /^cairn_qos_volume_wait_seconds_total\{volume="live"\} [0-9.e+-]+$/m);
    assert.match(metrics, /^cairn_qos_tenant_wait_seconds_total\{tenant="default"\} [0-9.e+-]+$/m);
  });

  await t.test('a tenant limit holds across two volumes together', async () => {
    await cli(d, ['volume', 'create', 'ta', '--size', '64M']);
    await cli(d, ['volume', 'create', 'tb', '--size', '64M']);
    await cli(d, ['tenant', 'set', 'default', '--iops-max', '2000']);
    // One window for both volumes, from the daemon's counters: two fio processes' own windows are not
    // aligned (one measuring while the other has stopped would see the whole tenant budget).
    const both = Promise.all([fio(uri('ta'), randwrite(16, 10)), fio(uri('tb'), randwrite(16, 10))]);
    await sleep(2500);
    const [ia, ib] = await Promise.all([writeRate(d, 'ta', 5), writeRate(d, 'tb', 5)]);
    assertWithin(ia + ib, 2000, `two volumes under one tenant limit (${ia.toFixed(0)} + ${ib.toFixed(0)})`);
    assert.ok(Math.min(ia, ib) > 0.3 * 2000, 'both volumes get a share');
    await both;
    await cli(d, ['tenant', 'set', 'default', '--iops-max', 'none']);
  });

  await t.test('a multi-conn client (two connections to one volume) shares the volume limit', async () => {
    await cli(d, ['volume', 'create', 'mc', '--size', '64M', '--iops-max', '1500']);
    const r = await fio(uri('mc'), [...randwrite(16, 5), '--ramp_time=2', '--numjobs=2']);
    assertWithin(r.jobs[0]!.write.iops, 1500, 'two connections together');
  });
});
