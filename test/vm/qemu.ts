// The real-kernel harness (test/vm/README.md): builds (or finds in its cache) the guest image with
// build-image.sh, boots it under qemu with one guest script, and collects the CAIRN-RESULT lines the
// guest prints on its serial console. The guest asks the host to act mid-run (snapshot, resize) with
// CAIRN-ASK lines; the host answers on the console's input.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { appendFile, rm } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import { root } from '../cli-helpers.js';

const vmDir = join(root, 'test', 'vm');
/** Building the image: the first run on a fresh machine downloads ~80 MB of packages. A hang bound. */
const BUILD_TIMEOUT_MS = 600_000;
/** Guest RAM: the kernel, the initramfs (unpacked in RAM) and the page cache of mkfs runs. */
const GUEST_MEMORY_MIB = 1024;
/**
 * The KVM probe's bound. Under KVM the guest's init runs within seconds; where nested virtualisation
 * is broken (the machines this was written on) the kernel hangs in early boot, or qemu aborts at once.
 */
const KVM_PROBE_TIMEOUT_MS = 20_000;

export interface GuestImage { dir: string; kernel: string; initrd: string; kver: string }

export interface GuestResult {
  name: string;
  pass: boolean;
  detail: string;
}

export interface GuestRun {
  results: GuestResult[];
  /** CAIRN-VALUE NAME VALUE lines: what the guest measured for the host to check (hashes). */
  values: Map<string, string>;
  /** The guest's exit status of its script (CAIRN-DONE), null when it never got there. */
  done: number | null;
  /** Seconds from qemu's start to the guest's CAIRN-BOOTED line (kernel boot + module loads). */
  bootSeconds: number | null;
  totalSeconds: number;
  /** The serial console's whole output, kept on disk. */
  log: string;
  logPath: string;
}

/** Why the VM tests cannot run here, or null when they can. */
export function vmUnavailable(): string | null {
  for (const tool of ['qemu-system-x86_64', 'apt-get', 'dpkg-deb', 'cpio', 'modprobe', 'depmod']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      return `${tool} is not installed (scripts/install-deps.sh installs what the real-kernel tests need)`;
    }
  }
  return null;
}

let image: GuestImage | null = null;

/** Builds the guest image once per process (build-image.sh caches it across runs). */
export function guestImage(): GuestImage {
  if (image !== null) return image;
  const r = spawnSync('bash', [join(vmDir, 'build-image.sh')], { encoding: 'utf8', timeout: BUILD_TIMEOUT_MS });
  if (r.status !== 0) throw new Error(`test/vm/build-image.sh failed (${r.status ?? r.signal}): ${r.stderr}`);
  const dir = r.stdout.trim().split('\n').pop()!;
  image = { dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'base.cpio.gz'), kver: readFileSync(join(dir, 'kver'), 'utf8').trim() };
  return image;
}

type Accel = 'kvm' | 'tcg';
let accel: Accel | null = null;

const accelArgs = (a: Accel): string[] => (a === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max']);

/**
 * KVM when a probe boot under it reaches the end of its script, else TCG. CAIRN_VM_ACCEL=tcg|kvm
 * skips the probe. The verdict is kept in the cache per host kernel, so a machine probes once.
 */
async function chooseAccel(t: TestContext, img: GuestImage): Promise<Accel> {
  if (accel !== null) return accel;
  const forced = process.env.CAIRN_VM_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return (accel = forced);
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return (accel = 'tcg'); // no usable /dev/kvm: nothing to probe
  }
  const verdictFile = join(dirname(img.dir), `kvm-probe-${release()}`);
  try {
    const cached = readFileSync(verdictFile, 'utf8').trim();
    if (cached === 'kvm' || cached === 'tcg') return (accel = cached);
  } catch {
    // No verdict yet on this host kernel: probe below.
  }
  const probe = await boot(t, img, { script: 'probe', env: {}, timeoutMs: KVM_PROBE_TIMEOUT_MS }, 'kvm');
  accel = probe.done === 0 ? 'kvm' : 'tcg';
  rmSync(dirname(probe.logPath), { recursive: true, force: true });
  writeFileSync(verdictFile, `${accel}\n`);
  t.diagnostic(`KVM probe: ${accel === 'kvm' ? 'the guest boots under KVM' : 'no guest under KVM here, TCG it is'} (verdict kept in ${verdictFile})`);
  return accel;
}

export interface BootOptions {
  /** The guest script's name: guest/NAME.sh in this folder. */
  script: string;
  /** Written to /cairn/env in the guest (shell assignments). */
  env: Record<string, string | number>;
  /** The hard bound on the whole boot; qemu is killed after it. */
  timeoutMs: number;
  /** Shares the host's / read-only over 9p (tag "host"): the guest runs the host's node and this tree. */
  shareHostRoot?: boolean;
  /** Answers a CAIRN-ASK line (its words after the marker); the answer goes back as one line. */
  onAsk?: (words: string[]) => Promise<string>;
  /** Called for each result as it arrives (progress in the test's log). */
  onResult?: (r: GuestResult) => void;
}

const shellQuote = (v: string): string => `'${v.replaceAll("'", `'\\''`)}'`;

/**
 * The per-boot initrd: the cached base image followed by a second cpio archive with the guest
 * scripts and their env (the kernel unpacks concatenated archives in order, so nothing is rebuilt).
 */
function bootInitrd(dir: string, img: GuestImage, env: BootOptions['env']): string {
  const overlay = join(dir, 'overlay');
  mkdirSync(join(overlay, 'cairn'), { recursive: true });
  for (const f of readdirSync(join(vmDir, 'guest'))) {
    if (f.endsWith('.sh')) copyFileSync(join(vmDir, 'guest', f), join(overlay, 'cairn', f));
  }
  writeFileSync(join(overlay, 'cairn', 'env'), Object.entries(env).map(([k, v]) => `${k}=${shellQuote(String(v))}\n`).join(''));
  const initrd = join(dir, 'initrd.cpio.gz');
  const r = spawnSync('sh', ['-c', `cat ${shellQuote(img.initrd)} > initrd.cpio.gz && (cd overlay && find . | cpio -o -H newc --quiet | gzip -1) >> initrd.cpio.gz`], { cwd: dir });
  if (r.status !== 0) throw new Error(`overlay cpio: ${r.stderr.toString()}`);
  return initrd;
}

/** Boots the guest with one script and returns its results (keepLogOnFailure keeps or removes its log). */
export async function bootGuest(t: TestContext, opts: BootOptions): Promise<GuestRun> {
  const img = guestImage();
  const a = await chooseAccel(t, img);
  const run = await boot(t, img, opts, a);
  t.diagnostic(`guest under ${a}: booted in ${run.bootSeconds ?? '?'} s, whole run ${run.totalSeconds} s`);
  return run;
}

async function boot(t: TestContext, img: GuestImage, opts: BootOptions, a: Accel): Promise<GuestRun> {
  const dir = mkdtempSync(join(tmpdir(), `cairn-vm-${opts.script}-`));
  const logPath = join(dir, 'serial.log');
  const initrd = bootInitrd(dir, img, opts.env);
  const started = Date.now();
  const child = spawn('qemu-system-x86_64', [
    '-machine', 'q35', ...accelArgs(a), '-smp', '2', '-m', String(GUEST_MEMORY_MIB),
    '-nographic', '-no-reboot', '-kernel', img.kernel, '-initrd', initrd,
    // panic=-1 with -no-reboot: a guest panic ends qemu at once instead of waiting for the timeout.
    '-append', `console=ttyS0 panic=-1 loglevel=4 cairn_script=${opts.script}`,
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
    ...(opts.shareHostRoot === true ? ['-virtfs', 'local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap'] : []),
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const results: GuestResult[] = [];
  const values = new Map<string, string>();
  let done: number | null = null;
  let bootSeconds: number | null = null;
  let log = '';
  let pending = '';
  let asking = Promise.resolve();
  const timer = setTimeout(() => { log += `\n[host] timeout after ${opts.timeoutMs} ms: qemu killed\n`; child.kill('SIGKILL'); }, opts.timeoutMs);
  const onLine = (line: string): void => {
    const m = /CAIRN-(RESULT|ASK|DONE|BOOTED|VALUE)\s?(.*)$/.exec(line.replace(/\r$/, ''));
    if (m === null) return;
    const [, kind, rest = ''] = m;
    if (kind === 'BOOTED') bootSeconds = (Date.now() - started) / 1000;
    else if (kind === 'DONE') done = Number.parseInt(rest, 10);
    else if (kind === 'VALUE') { const [k = '', v = ''] = rest.split(' '); values.set(k, v); }
    else if (kind === 'RESULT') {
      const [name = '', verdict = '', ...detail] = rest.split(' ');
      const r = { name, pass: verdict === 'PASS', detail: detail.join(' ') };
      results.push(r);
      opts.onResult?.(r);
    } else if (kind === 'ASK') {
      const words = rest.split(' ').filter((w) => w !== '');
      asking = asking.then(async () => {
        let answer: string;
        try {
          answer = await (opts.onAsk ?? (async () => 'no-handler'))(words);
        } catch (e) {
          // The guest waits on a line: it gets the error and fails its check instead of hanging.
          answer = `error ${(e as Error).message.replaceAll('\n', ' ')}`;
        }
        child.stdin.write(`${answer}\n`);
      });
    }
  };
  child.stdout.on('data', (b: Buffer) => {
    const s = b.toString('utf8');
    log += s;
    void appendFile(logPath, s);
    pending += s;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) { onLine(pending.slice(0, nl)); pending = pending.slice(nl + 1); }
  });
  child.stderr.on('data', (b: Buffer) => { log += b.toString('utf8'); });
  child.stdin.on('error', () => { /* qemu gone: its exit is reported below */ });
  t.after(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } });
  await exited;
  clearTimeout(timer);
  await asking;
  if (pending !== '') onLine(pending);
  writeFileSync(logPath, log);
  const run: GuestRun = { results, values, done, bootSeconds, totalSeconds: (Date.now() - started) / 1000, log, logPath };
  return run;
}

/** Keeps the serial log on failure (prints its path and tail), removes it on success. */
export function keepLogOnFailure(t: TestContext, run: GuestRun): void {
  const failed = run.done !== 0 || run.results.some((r) => !r.pass);
  if (failed) {
    t.diagnostic(`serial log kept: ${run.logPath}`);
    const tail = run.log.split('\n').slice(-40).join('\n');
    t.diagnostic(tail);
  } else {
    const dir = run.logPath.slice(0, run.logPath.lastIndexOf('/'));
    t.after(() => rm(dir, { recursive: true, force: true }));
  }
}
