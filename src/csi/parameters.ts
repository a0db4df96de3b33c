// StorageClass, VolumeAttributesClass and (group) snapshot class parameters. Volumes take QoS limits
// (the keys below, as the daemon's QoS API names them) and `encrypted` (StorageClass only: fixed at
// creation); every class also passes the metadata keys the Kubernetes sidecars add themselves
// ("csi.storage.k8s.io/..."). Anything else is refused with INVALID_ARGUMENT rather than silently
// ignored. docs/kubernetes.md lists the keys.
import type { ApiQos } from './api-client.js';
import { qosBurstSecondsMax, qosBytesPerSecondMax, qosIopsMax } from './constants.js';
import { invalidArgument } from './errors.js';
import type { StringMap } from './messages.js';

const sidecarPrefix = 'csi.storage.k8s.io/';
/** StorageClass key: "true" creates volumes encrypted at rest with their tenant's KEK; "false" (the default) plain ones. */
export const encryptedParameterKey = 'encrypted';
/** StorageClass key: how many storage nodes hold the volume (1..3; absent: the daemon's default). */
export const replicasParameterKey = 'replicas';
const replicasMax = 3;
// Keys a user might expect to name the KEK: refused with where the KEK really comes from.
const kekParameterKeys = ['kek', 'kekRef', 'keyEncryptionKey'];

type QosKey = keyof ApiQos;
type Kind = 'iops' | 'bytes' | 'seconds';
const qosKinds: Record<QosKey, Kind> = {
  iopsMax: 'iops', readIopsMax: 'iops', writeIopsMax: 'iops',
  bpsMax: 'bytes', readBpsMax: 'bytes', writeBpsMax: 'bytes',
  burstSeconds: 'seconds',
};
export const qosParameterKeys = Object.keys(qosKinds) as QosKey[];
const isQosKey = (key: string): key is QosKey => Object.hasOwn(qosKinds, key);

// Kubernetes quantity suffixes: binary (Ki, Mi, ...) and decimal (k, M, ...).
const sizeUnits: Record<string, number> = {
  '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
};

/** One parameter's value as the QoS API takes it; "0" or "none" removes the limit. */
function qosValue(key: QosKey, raw: string, what: string): number {
  const value = raw.trim();
  if (value === 'none') return 0;
  const bad = (why: string) => invalidArgument(`${what}: parameter ${key}=${JSON.stringify(raw)}: ${why}`);
  const kind = qosKinds[key];
  if (kind === 'iops') {
    if (!/^\d+$/.test(value)) throw bad('expected a whole number of operations per second, or none');
    const n = Number(value);
    if (n > qosIopsMax) throw bad(`more than ${qosIopsMax}`);
    return n;
  }
  if (kind === 'seconds') {
    if (!/^\d+(\.\d+)?$/.test(value)) throw bad('expected a number of seconds');
    const n = Number(value);
    if (n > qosBurstSecondsMax) throw bad(`more than ${qosBurstSecondsMax} seconds`);
    return n;
  }
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/.exec(value);
  if (m === null) throw bad('expected bytes per second, as a number or with a unit (100Mi, 1G), or none');
  const n = Math.round(Number(m[1]) * sizeUnits[m[2] ?? '']!);
  if (n > qosBytesPerSecondMax) throw bad(`more than ${qosBytesPerSecondMax} bytes per second`);
  return n;
}

function qosOf(parameters: StringMap, what: string): ApiQos | null {
  const qos: ApiQos = {};
  let any = false;
  for (const [key, raw] of Object.entries(parameters)) {
    if (!isQosKey(key)) continue;
    qos[key] = qosValue(key, raw, what);
    any = true;
  }
  return any ? qos : null;
}

function refuseUnknown(parameters: StringMap, allowed: (key: string) => boolean, what: string, accepts: string): void {
  const unknown = Object.keys(parameters).filter((key) => !allowed(key));
  if (unknown.length > 0) throw invalidArgument(`${what}: unknown parameter(s) ${unknown.join(', ')} (Cairn accepts ${accepts}; see docs/kubernetes.md)`);
}

/** Snapshot and group snapshot classes: only the sidecars' own keys. */
export function checkParameters(parameters: StringMap | undefined, what: string): void {
  refuseUnknown(parameters ?? {}, (key) => key.startsWith(sidecarPrefix), what, 'none here');
}

/** What a StorageClass (plus the VolumeAttributesClass a volume is created with) asks a new volume to be. */
export interface VolumeParameters {
  /** QoS limits to create it with (mutable ones win), or null when none is given. */
  qos: ApiQos | null;
  /** Encrypted at rest with a data key wrapped by its tenant's KEK. */
  encrypted: boolean;
  /** Replicas on distinct storage nodes (a clustered daemon), or null for the daemon's default. */
  replicas: number | null;
}

/** The `replicas` parameter: a whole number 1..3 as a StorageClass writes it ("2"), absent is null. */
function replicasOf(params: StringMap, what: string): number | null {
  if (!Object.hasOwn(params, replicasParameterKey)) return null;
  const raw = params[replicasParameterKey]!;
  const n = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > replicasMax) {
    throw invalidArgument(`${what}: parameter ${replicasParameterKey}=${JSON.stringify(raw)}: expected a whole number from 1 to ${replicasMax}`);
  }
  return n;
}

/** The `encrypted` parameter: exactly "true" or "false" (as a StorageClass writes it), absent is false. */
function encryptedOf(params: StringMap, what: string): boolean {
  if (!Object.hasOwn(params, encryptedParameterKey)) return false;
  const raw = params[encryptedParameterKey]!;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw invalidArgument(`${what}: parameter ${encryptedParameterKey}=${JSON.stringify(raw)}: expected "true" or "false"`);
}

/** The KEK is the tenant's, configured in Cairn; a class (a Kubernetes object) never names one. */
function refuseKekKeys(params: StringMap, what: string): void {
  const named = kekParameterKeys.filter((key) => Object.hasOwn(params, key));
  if (named.length === 0) return;
  throw invalidArgument(`${what}: parameter ${named.join(', ')}: the key-encryption key is not a class parameter; it is the `
    + 'tenant\'s own, set in Cairn (cairn tenant set TENANT --kek file:/path or --kek pkcs11:...), and used for every volume '
    + `of a class with ${encryptedParameterKey}: "true"`);
}

/** A volume's parameters (StorageClass) and mutable parameters (the VolumeAttributesClass it is created with). */
export function volumeParametersOf(parameters: StringMap | undefined, mutable: StringMap | undefined, what: string): VolumeParameters {
  const params = parameters ?? {};
  refuseKekKeys(params, what);
  refuseUnknown(params, (key) => key.startsWith(sidecarPrefix) || isQosKey(key) || key === encryptedParameterKey || key === replicasParameterKey, what,
    `${encryptedParameterKey}, ${replicasParameterKey} and the QoS keys ${qosParameterKeys.join(', ')}`);
  const encrypted = encryptedOf(params, what);
  const replicas = replicasOf(params, what);
  const fixed = qosOf(params, what);
  const changeable = mutable === undefined || Object.keys(mutable).length === 0 ? null : mutableQosOf(mutable, what);
  return { qos: fixed === null && changeable === null ? null : { ...fixed, ...changeable }, encrypted, replicas };
}

/** The QoS limits of volumeParametersOf alone (the parameters checked the same way). */
export function volumeQosOf(parameters: StringMap | undefined, mutable: StringMap | undefined, what: string): ApiQos | null {
  return volumeParametersOf(parameters, mutable, what).qos;
}

/**
 * ControllerModifyVolume's mutable_parameters: QoS keys only. CSI spec: a parameter the plugin
 * does not know, or one it cannot change, is INVALID_ARGUMENT.
 */
export function mutableQosOf(mutable: StringMap | undefined, what: string): ApiQos {
  const params = mutable ?? {};
  // Encryption is the volume's for life: its blocks are written under its data key, or not.
  const immutable = Object.keys(params).filter((key) => key.startsWith(sidecarPrefix) || key === encryptedParameterKey || key === replicasParameterKey);
  if (immutable.length > 0) throw invalidArgument(`${what}: parameter(s) ${immutable.join(', ')} cannot be changed after creation`);
  refuseUnknown(params, isQosKey, what, `only the QoS keys ${qosParameterKeys.join(', ')} as mutable parameters`);
  const qos = qosOf(params, what);
  if (qos === null) throw invalidArgument(`${what}: mutable_parameters is required`);
  return qos;
}
