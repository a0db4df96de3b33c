// Attaching an NBD export as a block device on this node. With the kernel NBD client
// (/dev/nbd* present, as on a Kubernetes node) `nbd-client` binds the export to /dev/nbdN, or
// `qemu-nbd --connect` over TLS-PSK (nbd-client has no PSK). Without it (this machine, CI):
// `nbdfuse DIR nbd://...` (or nbds://...?tls-psk-file=F) exposes the export as the file DIR/nbd,
// and `losetup` turns that file into /dev/loopN. Detach undoes every step, also for attachments
// made by an earlier plugin process (their pids and devices come from state).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { nbdfuseStartTimeoutMs } from './constants.js';
import { run, runRaw } from './exec.js';
import { isMountPoint } from './mounts.js';

export interface AttachedDevice {
  method: 'fuse' | 'kernel';
  device: string;
  fuseDir: string | null;
  nbdfusePid: number | null;
  /** Kernel attachments: the tool that connected /dev/nbdN (absent: nbd-client, as before TLS). */
  kernelTool?: 'nbd-client' | 'qemu-nbd';
}

export const nbdUri = (nbdAddress: string, exportName: string): string =>
  `nbd://${nbdAddress}/${encodeURIComponent(exportName)}`;

export function kernelNbdAvailable(): boolean {
  return readdirSync('/dev').some((name) => /^nbd\d+$/.test(name));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** True when `pid` is an nbdfuse serving `fuseDir` (so a recycled pid is never killed). */
export function isOurNbdfuse(pid: number, fuseDir: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('nbdfuse')) && argv.some((a) => a.startsWith(fuseDir));
  } catch {
    return false;
  }
}

async function startNbdfuse(uri: string, fuseDir: string, readOnly: boolean): Promise<number> {
  mkdirSync(fuseDir, { recursive: true });
  const pidFile = join(fuseDir, '..', `${fuseDir.split('/').pop()}.pid`);
  const logFile = join(fuseDir, '..', `${fuseDir.split('/').pop()}.log`);
  rmSync(pidFile, { force: true });
  const logFd = openSync(logFile, 'w');
  // Detached and unref'd: the export must outlive a plugin restart between stage and unstage.
  const args = [...(readOnly ? ['-r'] : []), '-P', pidFile, fuseDir, ...nbdfuseSourceArgs(uri, readOnly)];
  const child = spawn('nbdfuse', args, { detached: true, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('nbdfuse did not start');
  const deadline = Date.now() + nbdfuseStartTimeoutMs;
  // nbdfuse writes its pid file once the FUSE file is being served.
  while (Date.now() < deadline) {
    if (existsSync(pidFile) && existsSync(join(fuseDir, 'nbd'))) return pid;
    if (!processAlive(pid) || child.exitCode !== null) {
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim() : '';
      await stopNbdfuse(null, fuseDir); // leave no mount dir, pid or log file behind
      throw new Error(`nbdfuse ${uri} exited: ${log.slice(0, 400)}`);
    }
    await sleep(50);
  }
  await stopNbdfuse(pid, fuseDir);
  throw new Error(`nbdfuse ${uri} did not come up within ${nbdfuseStartTimeoutMs} ms`);
}

async function stopNbdfuse(pid: number | null, fuseDir: string): Promise<void> {
  if (isMountPoint(fuseDir)) {
    const result = await runRaw('fusermount3', ['-u', fuseDir]);
    if (result.code !== 0 && isMountPoint(fuseDir)) await runRaw('umount', ['-l', fuseDir]);
  }
  if (pid !== null && isOurNbdfuse(pid, fuseDir)) {
    // nbdfuse exits by itself once unmounted; wait briefly, then make sure.
    for (let i = 0; i < 100 && processAlive(pid); i++) await sleep(20);
    if (processAlive(pid) && isOurNbdfuse(pid, fuseDir)) process.kill(pid, 'SIGTERM');
  }
  rmSync(fuseDir, { recursive: true, force: true });
  const base = join(fuseDir, '..', fuseDir.split('/').pop()!);
  rmSync(`${base}.pid`, { force: true });
  rmSync(`${base}.log`, { force: true });
}

/** The backing file of a loop device, or null when the device is not attached. */
async function loopBackingFile(device: string): Promise<string | null> {
  const result = await runRaw('losetup', ['-n', '-O', 'BACK-FILE', device]);
  if (result.code !== 0) return null;
  const file = result.stdout.trim();
  return file === '' ? null : file;
}

async function attachFuse(uri: string, fuseDir: string, readOnly: boolean): Promise<AttachedDevice> {
  const pid = await startNbdfuse(uri, fuseDir, readOnly);
  try {
    // --direct-io=off: the FUSE file has no O_DIRECT; the page cache sits in nbdfuse's path.
    const args = ['--direct-io=off', ...(readOnly ? ['-r'] : []), '-f', '--show', join(fuseDir, 'nbd')];
    const device = (await run('losetup', args)).trim();
    return { method: 'fuse', device, fuseDir, nbdfusePid: pid };
  } catch (err) {
    await stopNbdfuse(pid, fuseDir);
    throw err;
  }
}

/** qemu option values double their commas (QemuOpts). */
const qemuValue = (value: string): string => value.replaceAll(',', ',,');

/**
 * qemu-nbd arguments opening an nbds:// URI with a tls-psk-file as its image (qemu's tls-creds-psk
 * reads DIR/keys.psk). qemu-nbd then re-exports it: to /dev/nbdN (--connect) or, socket-activated,
 * to nbdfuse (libnbd refuses a URI's tls-psk-file unless the program allows local files, and
 * nbdfuse does not).
 */
function qemuTlsImageArgs(url: URL): string[] {
  const pskFile = url.searchParams.get('tls-psk-file');
  if (pskFile === null || !pskFile.endsWith('/keys.psk')) throw new Error('an nbds:// attach needs tls-psk-file=DIR/keys.psk');
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const image = [
    'driver=nbd', 'server.type=inet', `server.host=${qemuValue(host)}`, `server.port=${url.port || '10809'}`,
    `export=${qemuValue(decodeURIComponent(url.pathname.slice(1)))}`, 'tls-creds=cairn-tls0',
  ].join(',');
  const creds = `tls-creds-psk,id=cairn-tls0,endpoint=client,dir=${qemuValue(pskFile.slice(0, -'/keys.psk'.length))},`
    + `username=${qemuValue(decodeURIComponent(url.username))}`;
  return ['--object', creds, '--image-opts', image];
}

/** nbdfuse's arguments after the mount point: the URI itself, or for nbds:// a socket-activated qemu-nbd. */
function nbdfuseSourceArgs(uri: string, readOnly: boolean): string[] {
  const url = new URL(uri);
  if (url.protocol !== 'nbds:') return [uri];
  return ['[', 'qemu-nbd', ...qemuTlsImageArgs(url), '--discard=unmap', ...(readOnly ? ['--read-only'] : []), ']'];
}

async function attachKernel(uri: string, readOnly: boolean): Promise<AttachedDevice> {
  const url = new URL(uri);
  const exportName = decodeURIComponent(url.pathname.slice(1));
  const tls = url.protocol === 'nbds:';
  for (const name of readdirSync('/dev').filter((n) => /^nbd\d+$/.test(n)).sort()) {
    const pidPath = `/sys/block/${name}/pid`;
    if (existsSync(pidPath)) continue; // in use
    const device = `/dev/${name}`;
    const result = tls
      ? await runRaw('qemu-nbd', ['--connect', device, ...qemuTlsImageArgs(url), ...(readOnly ? ['--read-only'] : [])])
      : await runRaw('nbd-client', [url.hostname, url.port || '10809', device, '-N', exportName, ...(readOnly ? ['-readonly'] : [])]);
    if (result.code === 0) {
      return { method: 'kernel', device, fuseDir: null, nbdfusePid: null, kernelTool: tls ? 'qemu-nbd' : 'nbd-client' };
    }
  }
  throw new Error(`no free /dev/nbd* device could attach ${uri.replace(/\?.*$/, '')}`);
}

/** Attaches `uri` as a block device; read-only all the way down when `readOnly`. */
export async function attach(uri: string, fuseDir: string, readOnly = false): Promise<AttachedDevice> {
  return kernelNbdAvailable() ? attachKernel(uri, readOnly) : attachFuse(uri, fuseDir, readOnly);
}

/** Undoes attach; every step is skipped when already undone (idempotent, restart-safe). */
export async function detach(att: AttachedDevice): Promise<void> {
  if (att.method === 'kernel') {
    if (existsSync(`/sys/block/${att.device.replace('/dev/', '')}/pid`)) {
      await (att.kernelTool === 'qemu-nbd' ? run('qemu-nbd', ['--disconnect', att.device]) : run('nbd-client', ['-d', att.device]));
    }
    return;
  }
  const fuseDir = att.fuseDir!;
  const backing = await loopBackingFile(att.device);
  // Only detach the loop device if it is still ours (a reboot may have reused the number).
  if (backing !== null && backing === join(fuseDir, 'nbd')) await run('losetup', ['-d', att.device]);
  // losetup -d is lazy: wait until the kernel lets go of the FUSE file before unmounting it.
  for (let i = 0; i < 100 && (await loopBackingFile(att.device)) === join(fuseDir, 'nbd'); i++) await sleep(20);
  await stopNbdfuse(att.nbdfusePid, fuseDir);
}

/** True when the attachment still works (nbdfuse alive and its loop device bound). */
export async function attachmentHealthy(att: AttachedDevice): Promise<string | null> {
  if (att.method === 'kernel') {
    return existsSync(`/sys/block/${att.device.replace('/dev/', '')}/pid`) ? null : `${att.device} is disconnected`;
  }
  if (att.nbdfusePid === null || !isOurNbdfuse(att.nbdfusePid, att.fuseDir!)) return 'nbdfuse is not running';
  if ((await loopBackingFile(att.device)) !== join(att.fuseDir!, 'nbd')) return `${att.device} is not bound`;
  return null;
}
