// The CSI driver's names, paths and bounds, in one place. The Kubernetes manifests under
// deploy/kubernetes/ must agree with these values (test/csi-manifests.test.ts checks that).

/** CSI driver name (GetPluginInfo.name, CSIDriver object, StorageClass provisioner). */
export const driverName = 'csi.cairn.dev';
/** Spec version of src/csi/csi.proto. */
export const csiSpecVersion = '1.9.0';
export const vendorVersion = '0.1.0';

/** Where the sidecars and the plugin share the socket inside the pods (deploy/kubernetes). */
export const controllerSocketDir = '/csi';
export const controllerSocketPath = '/csi/csi.sock';
/** Node plugin: kubelet finds drivers under /var/lib/kubelet/plugins/<driver name>/. */
export const kubeletDir = '/var/lib/kubelet';
export const nodeSocketDir = `/var/lib/kubelet/plugins/${driverName}`;
export const nodeSocketPath = `${nodeSocketDir}/csi.sock`;
export const registrationDir = '/var/lib/kubelet/plugins_registry';
export const stateDirDefault = '/var/lib/cairn-csi';

/** Cairn allocates in 4 KiB blocks; every CSI capacity is rounded up to this. */
export const blockSizeBytes = 4096;
/** Size of a volume created without a capacity range. */
export const volumeSizeBytesDefault = 1024 ** 3;
/**
 * Below this many free bytes the pool counts as full: CreateVolume and CreateSnapshot answer
 * RESOURCE_EXHAUSTED instead of making objects that could not take a single write (thin pool).
 */
export const poolFreeBytesMin = 16 * 1024 ** 2;
/** CSI spec "Size Limits": strings are at most 128 bytes unless a field says otherwise. */
export const nameBytesMax = 128;
/** Cairn volume and snapshot names we generate stay within this. */
export const cairnNameLengthMax = 63;
/** API clients (one per token from a request's secrets) the controller keeps; the oldest goes first. */
export const apiSessionsMax = 64;
/** Bounds of QoS parameters, as the daemon's QoS API takes them (its IOPS_MAX, BYTES_PER_SECOND_MAX, BURST_SECONDS_MAX). */
export const qosIopsMax = 10_000_000;
export const qosBytesPerSecondMax = 2 ** 44;
export const qosBurstSecondsMax = 60;
/** Volumes in one group snapshot (the API's POST /v1/snapshots takes at most 1024 names). */
export const groupSnapshotVolumesMax = 1024;
/** REST calls to the daemon give up after this long (then UNAVAILABLE). */
export const apiRequestTimeoutMs = 30_000;
/** A long delete (an API job) is polled this often, for at most jobWaitMsMax. */
export const jobPollIntervalMs = 200;
export const jobWaitMsMax = 600_000;
/** External commands (mkfs, mount, losetup, ...) are killed after this long. */
export const commandTimeoutMs = 120_000;
/** How long attach waits for nbdfuse to expose its file. */
export const nbdfuseStartTimeoutMs = 15_000;
/** Most volumes one node plugin attaches at once (NodeGetInfo.max_volumes_per_node). */
export const nodeVolumesMax = 64;
/** On SIGTERM, in-flight RPCs get this long before the server is shut down hard. */
export const shutdownGraceMs = 5_000;
/** In-flight RPCs of one plugin; more are refused with RESOURCE_EXHAUSTED. */
export const rpcsInFlightMax = 256;
