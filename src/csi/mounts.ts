// Filesystem and mount helpers of the node plugin: which paths are mount points (from
// /proc/self/mountinfo), probing a device for a filesystem (blkid), mkfs on a blank device
// only, mounting, bind mounts, and growing a mounted filesystem.
import { openSync, readSync, closeSync, readFileSync, realpathSync } from 'node:fs';
import { run, runRaw } from './exec.js';
import { failedPrecondition } from './errors.js';
import type { FsType } from './capabilities.js';

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));

export interface MountEntry { mountPoint: string; source: string; fsType: string; options: string }

export function mountTable(): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0 || fields.length < dash + 3) continue;
    entries.push({
      mountPoint: unescape(fields[4]!), options: fields[5]!,
      fsType: fields[dash + 1]!, source: unescape(fields[dash + 2]!),
    });
  }
  return entries;
}

function canonical(path: string): string {
  try { return realpathSync(path); } catch { return path; }
}

export function isMountPoint(path: string): boolean {
  const want = canonical(path);
  return mountTable().some((m) => m.mountPoint === want);
}

/** Unmounts `path` until nothing is mounted there (stacked mounts); no-op when not mounted. */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 8 && isMountPoint(path); i++) await run('umount', [canonical(path)]);
  if (isMountPoint(path)) throw new Error(`${path} is still mounted after 8 unmounts`);
}

/** The filesystem type on `device` ('' when blkid finds none). */
export async function probeFsType(device: string): Promise<string> {
  // -p: low-level probe of the device itself, not blkid's cache. Exit 2: nothing found.
  const result = await runRaw('blkid', ['-p', '-o', 'value', '-s', 'TYPE', device]);
  if (result.code === 2) return '';
  if (result.code !== 0) throw new Error(`blkid -p ${device} failed: ${result.stderr.trim()}`);
  return result.stdout.trim();
}

/** True when blkid finds no signature of any kind (fs, partition table, raid, swap). */
async function hasNoSignature(device: string): Promise<boolean> {
  const result = await runRaw('blkid', ['-p', device]);
  return result.code === 2;
}

/** True when the first `bytes` of the device read as zeroes. */
function leadingZeroes(device: string, bytes: number): boolean {
  const fd = openSync(device, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const got = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, got).every((b) => b === 0);
  } finally {
    closeSync(fd);
  }
}

/** Bytes probed for "blank" before mkfs: covers every superblock/partition-table location. */
const blankProbeBytes = 1 << 20;

/**
 * Makes sure `device` holds a filesystem of `fsType`: formats it only when it is blank (no
 * signature and zeroes at the start), never otherwise. Returns the type found or made.
 */
export async function ensureFilesystem(device: string, fsType: FsType, readOnly = false): Promise<string> {
  const found = await probeFsType(device);
  if (found !== '') {
    if (found !== fsType) {
      throw failedPrecondition(`${device} holds a ${found} filesystem, not ${fsType}; refusing to reformat it`);
    }
    return found;
  }
  if (readOnly) throw failedPrecondition(`${device} holds no filesystem and is attached read-only; cannot format it`);
  if (!(await hasNoSignature(device)) || !leadingZeroes(device, blankProbeBytes)) {
    throw failedPrecondition(`${device} holds data blkid does not recognise; refusing to format it`);
  }
  if (fsType === 'xfs') await run('mkfs.xfs', ['-q', '-K', device]);
  // nodiscard: a Cairn volume reads as zeroes already; lazy init keeps mkfs O(1) on thin storage.
  else await run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', device]);
  return fsType;
}

/** Mount options for a filesystem of the given type. */
export function mountOptionsFor(fsType: string, flags: string[], readonly: boolean): string[] {
  const options = [...flags];
  // A clone or snapshot carries its source's XFS UUID; nouuid lets both mount on one node.
  if (fsType === 'xfs' && !options.includes('nouuid')) options.push('nouuid');
  if (readonly) {
    if (!options.includes('ro')) options.push('ro');
    // A read-only mount must not replay the journal either (that writes the device).
    if (fsType === 'ext4' && !options.includes('noload')) options.push('noload');
    if (fsType === 'xfs' && !options.includes('norecovery')) options.push('norecovery');
  }
  return options;
}

/**
 * Mounts `device`. CSI spec, MountVolume.mount_flags: the flags MAY hold secrets and MUST NOT
 * leak, so a failure reports mount's stderr but never the option string.
 */
export async function mountDevice(device: string, target: string, fsType: string, options: string[]): Promise<void> {
  const args = ['-t', fsType];
  if (options.length > 0) args.push('-o', options.join(','));
  const result = await runRaw('mount', [...args, device, target]);
  if (result.code !== 0) {
    const stderr = result.stderr.split(options.join(',')).join('<options>').trim().slice(0, 400);
    throw new Error(`mount -t ${fsType} ${device} ${target} failed (exit ${result.code}): ${stderr}`);
  }
}

/** Bind mount; read-only needs a second remount (the kernel ignores ro on the first bind). */
export async function bindMount(source: string, target: string, readonly: boolean): Promise<void> {
  await run('mount', ['--bind', source, target]);
  if (readonly) await run('mount', ['-o', 'remount,bind,ro', target]);
}

/** Grows the filesystem mounted at `mountPoint` on `device` to fill the device (online). */
export async function growFilesystem(device: string, mountPoint: string, fsType: string): Promise<void> {
  if (fsType === 'xfs') await run('xfs_growfs', [mountPoint]);
  // Online ext4 resize needs CAP_SYS_RESOURCE (a privileged pod has it).
  else await run('resize2fs', [device]);
}

/** Grows an unmounted ext4 filesystem: resize2fs insists on a fresh check first. */
export async function growExt4Offline(device: string): Promise<void> {
  const check = await runRaw('e2fsck', ['-f', '-p', device]);
  // e2fsck: 0 clean, 1 errors corrected; anything else needs a human.
  if (check.code > 1) throw new Error(`e2fsck -f -p ${device} exit ${check.code}: ${(check.stderr || check.stdout).trim().slice(0, 400)}`);
  await run('resize2fs', [device]);
}

/** Size of the ext4 filesystem on `device` (from its superblock). */
export async function ext4SizeBytes(device: string): Promise<number> {
  const out = await run('dumpe2fs', ['-h', device]);
  const count = /^Block count:\s+(\d+)/m.exec(out);
  const size = /^Block size:\s+(\d+)/m.exec(out);
  if (!count || !size) throw new Error(`dumpe2fs -h ${device}: no block count/size`);
  return Number(count[1]) * Number(size[1]);
}

export async function deviceSizeBytes(device: string): Promise<number> {
  return Number((await run('blockdev', ['--getsize64', device])).trim());
}
