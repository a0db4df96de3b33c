// StorageClass / VolumeSnapshotClass parameters. Cairn volumes have no per-volume tunables yet,
// so the only keys accepted are the metadata keys the Kubernetes sidecars add themselves
// ("csi.storage.k8s.io/..."; external-provisioner --extra-create-metadata). Anything else is
// refused with INVALID_ARGUMENT rather than silently ignored.
import { invalidArgument } from './errors.js';
import type { StringMap } from './messages.js';

const sidecarPrefix = 'csi.storage.k8s.io/';

export function checkParameters(parameters: StringMap | undefined, what: string): void {
  const unknown = Object.keys(parameters ?? {}).filter((key) => !key.startsWith(sidecarPrefix));
  if (unknown.length > 0) {
    throw invalidArgument(`${what}: unknown parameter(s) ${unknown.join(', ')} (Cairn accepts none; see docs/kubernetes.md)`);
  }
}
