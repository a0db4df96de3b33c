// The CSI Node service: stage = attach the NBD export as a block device (+ mkfs when blank and
// mount, for the mount access type); publish = bind mount (the device itself for block);
// unpublish/unstage undo it. Every RPC is idempotent (CSI spec: a repeated call succeeds and
// leaves one mount) and what is attached is recorded in the state file for restarts.
import { existsSync, mkdirSync, rmSync, rmdirSync, statSync, writeFileSync, promises as fsp } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { attach, attachmentHealthy, detach, type AttachedDevice } from './attach.js';
import { exportUriOf, type NbdSource } from './nbd-address.js';
import { checkCapabilityShape, fsTypeOf, isBlock, isReaderOnly, publishableAtManyTargets, unsupportedReason } from './capabilities.js';
import { nodeVolumesMax } from './constants.js';
import {
  CsiError, Status, alreadyExists, failedPrecondition, internal, invalidArgument, notFound, permissionDenied, resourceExhausted, unavailable,
} from './errors.js';
import { OperationLocks } from './locks.js';
import type { NodePublishVolumeRequest, NodeStageVolumeRequest, VolumeCondition } from './messages.js';
import {
  bindMount, deviceSizeBytes, ensureFilesystem, ext4SizeBytes, growExt4Offline, growFilesystem, isMountPoint, mountDevice,
  mountOptionsFor, unmountAll,
} from './mounts.js';
import { AttachmentState, type Attachment, type PublishRecord } from './state.js';
import { parseVolumeId } from './names.js';
import { nbdKeyOf, removePskFile, writePskFile, type NbdPsk } from './nbd-keys.js';
import { DEFAULT_TENANT } from '../tenancy/names.js';

/** Whether a key identity may be `tenant`'s: Cairn's keys are TENANT-8HEX; other identities (a psk file's) only the default tenant's. */
export function keyFitsTenant(identity: string, tenant: string): boolean {
  const m = /^([a-z0-9][a-z0-9-]*)-[0-9a-f]{8}$/.exec(identity);
  return m === null ? tenant === DEFAULT_TENANT : m[1] === tenant;
}

const need = (value: string, what: string): string => {
  if (value === '') throw invalidArgument(`${what} is required`);
  return value;
};

/** Wraps tool failures so the CO sees INTERNAL with the tool's message, and CSI errors pass. */
async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof CsiError) throw err;
    throw internal(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Removes the (now unmounted) publish target: an empty directory or our placeholder file. */
function removeTarget(targetPath: string): void {
  if (!existsSync(targetPath)) return;
  if (statSync(targetPath).isDirectory()) rmdirSync(targetPath); // never recursive: never user data
  else rmSync(targetPath, { force: true });
}

export class NodeService {
  readonly state: AttachmentState;

  constructor(private readonly nodeId: string, stateDir: string, private readonly nbd: NbdSource,
    private readonly locks: OperationLocks,
    /** Where a failure that cannot be returned (a cleanup after another failure) is reported. */
    private readonly warn: (fields: Record<string, unknown>, message: string) => void = () => undefined) {
    this.state = new AttachmentState(stateDir);
  }

  /** A volume's nbdfuse directory: ids hold '/' (TENANT/NAME), which no volume name holds as '~'. */
  private fuseDirFor(volumeId: string): string {
    return join(this.state.stateDir, 'fuse', volumeId.replace('/', '~'));
  }

  async NodeStageVolume(req: NodeStageVolumeRequest): Promise<Record<string, never>> {
    const volumeId = need(req.volume_id, 'NodeStageVolume: volume_id');
    const stagingPath = need(req.staging_target_path, 'NodeStageVolume: staging_target_path');
    const cap = checkCapabilityShape(req.volume_capability, 'NodeStageVolume');
    const reason = unsupportedReason(cap);
    if (reason) throw invalidArgument(`NodeStageVolume: ${reason}`);
    const ref = parseVolumeId(volumeId);
    if (ref === null) throw notFound(`volume ${volumeId} does not exist (not a Cairn volume id)`);
    const key = nbdKeyOf(req.secrets, 'NodeStageVolume');
    if (key === null && ref.tenant !== DEFAULT_TENANT) {
      // docs/nbd.md "TLS and tenants": plain NBD reaches only the default tenant's volumes.
      throw invalidArgument(`NodeStageVolume: volume ${volumeId} belongs to tenant ${ref.tenant}; the node stage secret must `
        + 'carry its NBD key (nbdPsk: IDENTITY:HEXKEY from cairn tenant nbd-key create)');
    }
    if (key !== null && !keyFitsTenant(key.identity, ref.tenant)) {
      // The export name is the tenant's plain name, which another tenant may use too: a key of the
      // wrong tenant would stage that tenant's same-named volume. Cairn names keys TENANT-HEX.
      throw permissionDenied(`NodeStageVolume: the NBD key ${key.identity} in the stage secret is not tenant ${ref.tenant}'s`);
    }
    return this.locks.run([volumeId], async () => {
      const existing = this.state.get(volumeId);
      if (existing) {
        // CSI spec, NodeStageVolume: staged again with the same arguments is success.
        if (existing.stagingPath !== stagingPath) {
          throw alreadyExists(`volume ${volumeId} is already staged at ${existing.stagingPath}`);
        }
        if (existing.accessType !== (isBlock(cap) ? 'block' : 'mount')) {
          throw alreadyExists(`volume ${volumeId} is staged with access type ${existing.accessType}`);
        }
        if ((existing.readOnly === true) !== isReaderOnly(cap)) {
          throw alreadyExists(`volume ${volumeId} is staged ${existing.readOnly ? 'read-only' : 'read-write'}`);
        }
        const problem = await attachmentHealthy(existing);
        if (problem === null) {
          if (existing.accessType === 'mount' && !isMountPoint(stagingPath)) await this.mountStaging(existing);
          return {};
        }
        // The attachment died under us (nbdfuse killed, e.g. with the plugin's container):
        // rebuild it, unless a workload still has it published (that needs its pod restarted).
        const busy = existing.published.filter((p) => isMountPoint(p.targetPath));
        if (busy.length > 0) {
          throw failedPrecondition(`volume ${volumeId}: ${problem}, and it is still published at ${busy[0]!.targetPath}`);
        }
        await this.teardown(existing);
      }
      if (this.state.all().length >= nodeVolumesMax) throw resourceExhausted(`node has ${nodeVolumesMax} volumes staged`);
      const psk = key === null ? null : writePskFile(this.state.stateDir, volumeId, key);
      const dev = await this.attachNew(volumeId, psk, isReaderOnly(cap)).catch((err: unknown) => {
        removePskFile(this.state.stateDir, volumeId);
        throw err;
      });
      const readOnly = isReaderOnly(cap);
      const att: Attachment = {
        volumeId, uri: dev.uri, method: dev.method, device: dev.device, fuseDir: dev.fuseDir, nbdfusePid: dev.nbdfusePid,
        ...(dev.kernelTool === undefined ? {} : { kernelTool: dev.kernelTool }),
        stagingPath, accessType: isBlock(cap) ? 'block' : 'mount', fsType: null,
        mountFlags: cap.mount?.mount_flags ?? [], readOnly, published: [],
      };
      this.state.put(att); // recorded before mkfs/mount: a crash from here on is still cleanable
      if (att.accessType === 'mount') {
        try {
          att.fsType = await step('mkfs', () => ensureFilesystem(att.device, fsTypeOf(cap), readOnly));
          this.state.put(att);
          await this.mountStaging(att);
        } catch (err) {
          // The stage's own error goes to the CO; a failed detach after it leaves a device behind,
          // which the next NodeStageVolume or NodeUnstageVolume retries: say so in the log.
          await this.teardown(att).catch((teardownErr: unknown) => this.warn(
            { event: 'stage_rollback_failed', volumeId, device: att.device, error: teardownErr instanceof Error ? teardownErr.message : String(teardownErr) },
            'detaching after a failed stage failed'));
          throw err;
        }
      }
      return {};
    });
  }

  /** Attaches the volume's export (over TLS-PSK with `psk`), mapping attach failures to CSI codes. */
  private async attachNew(volumeId: string, psk: NbdPsk | null, readOnly: boolean): Promise<AttachedDevice & { uri: string }> {
    const uri = await exportUriOf(this.nbd, volumeId, psk);
    const server = new URL(uri).host;
    const dev = await step(`attach ${uri}`, () => attach(uri, this.fuseDirFor(volumeId), readOnly)).catch((err: CsiError) => {
      if (/no export named|unknown export|No such export|not found/i.test(err.message)) {
        throw notFound(`volume ${volumeId} is not exported by ${server} to this node: ${err.message}`);
      }
      if (/Connection refused|Network is unreachable|No route to host/i.test(err.message)) {
        throw unavailable(`the Cairn NBD server at ${server} is not reachable: ${err.message}`);
      }
      if (psk !== null && /handshake|TLS|gnutls|psk/i.test(err.message)) {
        throw new CsiError(Status.PERMISSION_DENIED, `the Cairn NBD server at ${server} refused the NBD key ${psk.identity}: ${err.message}`);
      }
      throw err;
    });
    return { ...dev, uri };
  }

  private async mountStaging(att: Attachment): Promise<void> {
    mkdirSync(att.stagingPath, { recursive: true });
    const options = mountOptionsFor(att.fsType!, att.mountFlags, att.readOnly === true);
    await step(`mount ${att.device}`, () => mountDevice(att.device, att.stagingPath, att.fsType!, options));
  }

  /** Unmounts publish targets and staging, then detaches; state entry removed at the end. */
  private async teardown(att: Attachment): Promise<void> {
    for (const pub of att.published) await step(`unmount ${pub.targetPath}`, () => unmountAll(pub.targetPath));
    if (att.accessType === 'mount') await step(`unmount ${att.stagingPath}`, () => unmountAll(att.stagingPath));
    await step(`detach ${att.device}`, () => detach(att));
    this.state.remove(att.volumeId);
    removePskFile(this.state.stateDir, att.volumeId);
  }

  async NodeUnstageVolume(req: { volume_id: string; staging_target_path: string }): Promise<Record<string, never>> {
    const volumeId = need(req.volume_id, 'NodeUnstageVolume: volume_id');
    const stagingPath = need(req.staging_target_path, 'NodeUnstageVolume: staging_target_path');
    return this.locks.run([volumeId], async () => {
      const att = this.state.get(volumeId);
      if (!att || att.stagingPath !== stagingPath) {
        // Not staged here (already unstaged, or staged at another path, which stays as it is):
        // clear a leftover mount at this path (a stage cut short before its state was saved), but
        // never one that belongs to another volume (CSI: unstage undoes only this volume's stage).
        if (!att && !this.usedByAnotherVolume(volumeId, stagingPath)) await step(`unmount ${stagingPath}`, () => unmountAll(stagingPath));
        return {};
      }
      const stillPublished = att.published.filter((p) => isMountPoint(p.targetPath));
      if (stillPublished.length > 0) {
        throw failedPrecondition(`volume ${volumeId} is still published at ${stillPublished.map((p) => p.targetPath).join(', ')}`);
      }
      await this.teardown(att);
      return {};
    });
  }

  async NodePublishVolume(req: NodePublishVolumeRequest): Promise<Record<string, never>> {
    const volumeId = need(req.volume_id, 'NodePublishVolume: volume_id');
    const targetPath = need(req.target_path, 'NodePublishVolume: target_path');
    const stagingPath = need(req.staging_target_path, 'NodePublishVolume: staging_target_path');
    const cap = checkCapabilityShape(req.volume_capability, 'NodePublishVolume');
    const reason = unsupportedReason(cap);
    if (reason) throw invalidArgument(`NodePublishVolume: ${reason}`);
    return this.locks.run([volumeId], async () => {
      const att = this.state.get(volumeId);
      if (!att || att.stagingPath !== stagingPath) {
        throw failedPrecondition(`volume ${volumeId} is not staged at ${stagingPath}; call NodeStageVolume first`);
      }
      const wantBlock = isBlock(cap);
      if ((att.accessType === 'block') !== wantBlock) {
        throw invalidArgument(`volume ${volumeId} is staged as ${att.accessType}, publish asks for the other access type`);
      }
      const known = att.published.find((p) => p.targetPath === targetPath);
      if (known && isMountPoint(targetPath)) {
        if (known.readonly !== req.readonly) {
          throw alreadyExists(`volume ${volumeId} is published at ${targetPath} with readonly=${known.readonly}`);
        }
        return {};
      }
      if (!known && isMountPoint(targetPath)) {
        throw alreadyExists(`something else is already mounted at ${targetPath}`);
      }
      // CSI spec, NodePublishVolume (the table for plugins with SINGLE_NODE_MULTI_WRITER): a second
      // target_path is OK only for the MULTI_NODE_* modes and SINGLE_NODE_MULTI_WRITER; every other mode
      // (SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY) is FAILED_PRECONDITION.
      const other = known ? undefined : att.published.find((p) => p.targetPath !== targetPath && isMountPoint(p.targetPath));
      if (other && !publishableAtManyTargets(cap)) {
        throw failedPrecondition(`volume ${volumeId} is already published at ${other.targetPath}, and access mode ${cap.access_mode?.mode} allows one target on a node`);
      }
      if (wantBlock) {
        // CSI spec: for block, the SP places the device at target_path (a file we bind over).
        mkdirSync(dirname(targetPath), { recursive: true });
        if (!existsSync(targetPath)) writeFileSync(targetPath, '');
        await step('bind device', () => bindMount(att.device, targetPath, req.readonly));
      } else {
        mkdirSync(targetPath, { recursive: true });
        await step('bind mount', () => bindMount(stagingPath, targetPath, req.readonly));
      }
      if (known) known.readonly = req.readonly;
      else att.published.push({ targetPath, readonly: req.readonly });
      this.state.put(att);
      return {};
    });
  }

  async NodeUnpublishVolume(req: { volume_id: string; target_path: string }): Promise<Record<string, never>> {
    const volumeId = need(req.volume_id, 'NodeUnpublishVolume: volume_id');
    const targetPath = need(req.target_path, 'NodeUnpublishVolume: target_path');
    return this.locks.run([volumeId], async () => {
      // Another volume's publish target is left alone: unpublish undoes only this volume's publish.
      if (this.usedByAnotherVolume(volumeId, targetPath)) return {};
      await step(`unmount ${targetPath}`, () => unmountAll(targetPath));
      // CSI spec: the SP MUST delete the file or directory it created at target_path.
      removeTarget(targetPath);
      const att = this.state.get(volumeId);
      if (att) {
        att.published = att.published.filter((p) => p.targetPath !== targetPath);
        this.state.put(att);
      }
      return {};
    });
  }

  /** Whether `path` is the staging path or a publish target of a volume other than `volumeId`. */
  private usedByAnotherVolume(volumeId: string, path: string): boolean {
    const wanted = resolve(path);
    return this.state.all().some((att) => att.volumeId !== volumeId && pathsOf(att).includes(wanted));
  }

  async NodeGetCapabilities(): Promise<unknown> {
    const rpcs = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'];
    return { capabilities: rpcs.map((type) => ({ rpc: { type } })) };
  }

  async NodeGetInfo(): Promise<unknown> {
    return { node_id: this.nodeId, max_volumes_per_node: nodeVolumesMax };
  }

  private async conditionOf(volumeId: string): Promise<VolumeCondition> {
    const att = this.state.get(volumeId);
    if (!att) return { abnormal: true, message: `volume ${volumeId} is not staged on this node` };
    const problem = await attachmentHealthy(att);
    if (problem) return { abnormal: true, message: problem };
    if (att.accessType === 'mount' && !isMountPoint(att.stagingPath)) {
      return { abnormal: true, message: `staging path ${att.stagingPath} is not mounted` };
    }
    return { abnormal: false, message: `attached as ${att.device}` };
  }

  async NodeGetVolumeStats(req: { volume_id: string; volume_path: string }): Promise<unknown> {
    const volumeId = need(req.volume_id, 'NodeGetVolumeStats: volume_id');
    const volumePath = need(req.volume_path, 'NodeGetVolumeStats: volume_path');
    if (!existsSync(volumePath)) throw notFound(`volume path ${volumePath} does not exist`);
    const att = this.state.get(volumeId);
    // CSI: NOT_FOUND when the volume does not exist on volume_path (not another volume's usage).
    if (!att || !pathsOf(att).includes(resolve(volumePath))) throw notFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
    const condition = await this.conditionOf(volumeId);
    const st = statSync(volumePath);
    if (st.isBlockDevice() || (att?.accessType === 'block' && !st.isDirectory())) {
      const total = await step('blockdev', () => deviceSizeBytes(volumePath));
      return { usage: [{ unit: 'BYTES', total, available: 0, used: 0 }], volume_condition: condition };
    }
    if (!isMountPoint(volumePath)) throw notFound(`nothing is mounted at ${volumePath}`);
    let fs: Awaited<ReturnType<typeof fsp.statfs>>;
    try {
      fs = await fsp.statfs(volumePath);
    } catch (err) {
      // The device under the mount is gone: no usage, but the condition says why.
      if (condition.abnormal) return { usage: [], volume_condition: condition };
      throw internal(`statfs ${volumePath}: ${(err as Error).message}`);
    }
    const usage = [
      { unit: 'BYTES', total: fs.blocks * fs.bsize, available: fs.bavail * fs.bsize, used: (fs.blocks - fs.bfree) * fs.bsize },
      { unit: 'INODES', total: fs.files, available: fs.ffree, used: fs.files - fs.ffree },
    ];
    return { usage, volume_condition: condition };
  }

  /**
   * Grows the filesystem after ControllerExpandVolume. Neither the kernel NBD client nor a
   * running nbdfuse sees a new export size (both read it once at connect), so the export is
   * re-attached: publish targets and staging are unmounted (flushing everything), the device
   * attached again, ext4 grown offline (online resize2fs needs CAP_SYS_RESOURCE), every mount
   * restored, and xfs grown online. A mount in use makes it FAILED_PRECONDITION (CSI spec,
   * NodeExpandVolume "volume in use") with all mounts as they were.
   */
  async NodeExpandVolume(req: { volume_id: string; volume_path: string; capacity_range: { required_bytes: number } | null }):
    Promise<{ capacity_bytes: number }> {
    const volumeId = need(req.volume_id, 'NodeExpandVolume: volume_id');
    const volumePath = need(req.volume_path, 'NodeExpandVolume: volume_path');
    if (!existsSync(volumePath)) throw notFound(`volume path ${volumePath} does not exist`);
    return this.locks.run([volumeId], async () => {
      const att = this.state.get(volumeId);
      if (!att) throw notFound(`volume ${volumeId} is not staged on this node`);
      const requiredBytes = req.capacity_range?.required_bytes ?? 0;
      let sizeBytes = await step('blockdev', () => deviceSizeBytes(att.device));
      const writable = att.readOnly !== true; // a read-only staging keeps its filesystem as it is
      const ext4 = writable && att.accessType === 'mount' && att.fsType === 'ext4';
      const fsBytes = ext4 ? await step('dumpe2fs', () => ext4SizeBytes(att.device)) : sizeBytes;
      if (sizeBytes < requiredBytes || fsBytes < sizeBytes) {
        await this.reattach(att, ext4);
        sizeBytes = await step('blockdev', () => deviceSizeBytes(att.device));
      }
      if (requiredBytes > sizeBytes) {
        throw failedPrecondition(`device ${att.device} has ${sizeBytes} bytes, less than ${requiredBytes}; grow the volume first`);
      }
      if (writable && att.accessType === 'mount' && att.fsType === 'xfs') {
        await step('grow filesystem', () => growFilesystem(att.device, att.stagingPath, 'xfs'));
      }
      return { capacity_bytes: sizeBytes };
    });
  }

  /** Unmounts every publish target and the staging mount; a busy one puts back what was undone. */
  private async quiesce(att: Attachment): Promise<void> {
    const undone: PublishRecord[] = [];
    const restore = async (): Promise<void> => {
      for (const pub of undone) {
        await bindMount(this.bindSource(att), pub.targetPath, pub.readonly).catch((err: unknown) => this.warn(
          { event: 'publish_restore_failed', volumeId: att.volumeId, targetPath: pub.targetPath, error: err instanceof Error ? err.message : String(err) },
          'putting a publish mount back failed'));
      }
    };
    for (const pub of att.published) {
      if (!isMountPoint(pub.targetPath)) continue;
      try {
        await unmountAll(pub.targetPath);
      } catch (err) {
        await restore();
        throw failedPrecondition(`volume ${att.volumeId} is in use at ${pub.targetPath}; `
          + `nbd exports cannot grow under a mount: ${(err as Error).message}`);
      }
      undone.push(pub);
    }
    if (att.accessType === 'mount') {
      try {
        await unmountAll(att.stagingPath);
      } catch (err) {
        await restore();
        throw failedPrecondition(`volume ${att.volumeId} is in use at ${att.stagingPath}: ${(err as Error).message}`);
      }
    }
  }

  private bindSource(att: Attachment): string {
    return att.accessType === 'mount' ? att.stagingPath : att.device;
  }

  private async reattach(att: Attachment, growExt4: boolean): Promise<void> {
    await this.quiesce(att);
    await step(`detach ${att.device}`, () => detach(att));
    const dev = await step(`attach ${att.uri}`, () => attach(att.uri, this.fuseDirFor(att.volumeId), att.readOnly === true));
    Object.assign(att, { device: dev.device, fuseDir: dev.fuseDir, nbdfusePid: dev.nbdfusePid, method: dev.method, kernelTool: dev.kernelTool });
    this.state.put(att);
    if (growExt4) await step('grow ext4', () => growExt4Offline(att.device));
    if (att.accessType === 'mount') await this.mountStaging(att);
    for (const pub of att.published) {
      await step(`bind ${pub.targetPath}`, () => bindMount(this.bindSource(att), pub.targetPath, pub.readonly));
    }
  }
}

/** The staging path and publish targets of an attachment, resolved. */
function pathsOf(att: Attachment): string[] {
  return [resolve(att.stagingPath), ...att.published.map((p) => resolve(p.targetPath))];
}
