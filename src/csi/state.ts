// What this node plugin has attached, kept in <state-dir>/attachments.json so that an unstage
// after a plugin restart still finds the nbdfuse process, loop device and mounts to clean up.
// Written atomically (temp file, fsync, rename) so a crash never leaves half a file.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface PublishRecord { targetPath: string; readonly: boolean }

export interface Attachment {
  volumeId: string;
  /** nbd://HOST:PORT/VOL that was attached, or nbds://IDENTITY@HOST:PORT/NAME?tls-psk-file=F (the key stays in F). */
  uri: string;
  /** 'fuse': nbdfuse + loop device; 'kernel': nbd-client on /dev/nbdN. */
  method: 'fuse' | 'kernel';
  /** The block device the volume is: /dev/loopN or /dev/nbdN. */
  device: string;
  fuseDir: string | null;
  nbdfusePid: number | null;
  /** Kernel attachments: the tool that connected the device (absent: nbd-client). */
  kernelTool?: 'nbd-client' | 'qemu-nbd';
  stagingPath: string;
  /** Access type staged: 'mount' mounts `fsType` at stagingPath; 'block' only attaches. */
  accessType: 'mount' | 'block';
  fsType: string | null;
  mountFlags: string[];
  /** Staged read-only (a *_READER_ONLY access mode): attached and mounted without writes. */
  readOnly?: boolean;
  published: PublishRecord[];
}

interface StateFile { version: 1; attachments: Attachment[] }

export class AttachmentState {
  private readonly path: string;
  private attachments = new Map<string, Attachment>();

  constructor(readonly stateDir: string) {
    mkdirSync(stateDir, { recursive: true });
    this.path = join(stateDir, 'attachments.json');
    this.load();
  }

  private load(): void {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      return; // first start
    }
    const parsed = JSON.parse(text) as StateFile;
    if (parsed.version !== 1 || !Array.isArray(parsed.attachments)) {
      throw new Error(`${this.path}: unknown state file version`);
    }
    this.attachments = new Map(parsed.attachments.map((a) => [a.volumeId, a]));
  }

  get(volumeId: string): Attachment | undefined {
    return this.attachments.get(volumeId);
  }

  all(): Attachment[] {
    return [...this.attachments.values()];
  }

  put(attachment: Attachment): void {
    this.attachments.set(attachment.volumeId, attachment);
    this.save();
  }

  remove(volumeId: string): void {
    if (this.attachments.delete(volumeId)) this.save();
  }

  private save(): void {
    const body: StateFile = { version: 1, attachments: this.all() };
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(body, null, 2) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}
