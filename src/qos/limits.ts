// QoS limits of a volume or a tenant: what they are, their bounds, and their compact JSON form in an
// engine setting (`qos/v/<volumeId>`, `qos/t/<tenant>`; key and value together at most 248 bytes).
// A limit of null is no limit. Rates are per second; the burst is how many seconds' worth of a rate may
// pass at once after a quiet spell.

/** Bounds on what a limit may say (user input beyond them is refused, never clamped). */
export const IOPS_MAX = 10_000_000;
export const BYTES_PER_SECOND_MAX = 2 ** 44;
export const BURST_SECONDS_MIN = 0.001;
export const BURST_SECONDS_MAX = 60;
export const BURST_SECONDS_DEFAULT = 1;
/** Weights as in cgroup v2 io.weight: 1..10000, default 100. */
export const WEIGHT_MIN = 1;
export const WEIGHT_MAX = 10_000;
export const WEIGHT_DEFAULT = 100;

export const VOLUME_KEY_PREFIX = 'qos/v/';
export const TENANT_KEY_PREFIX = 'qos/t/';
/** The engine's bound on a setting's key and value together. */
export const SETTING_BYTES_MAX = 248;

/** The six rates a volume or tenant may be limited to. */
export const RATE_FIELDS = ['iopsMax', 'readIopsMax', 'writeIopsMax', 'bpsMax', 'readBpsMax', 'writeBpsMax'] as const;
export type RateField = typeof RATE_FIELDS[number];

export type Rates = Record<RateField, number | null>;

/** A volume's limits (weight unused) or a tenant's (weight: its share when the pool is the bottleneck). */
export interface QosLimits extends Rates {
  burstSeconds: number;
  weight: number;
}

/** A change: absent fields stay as they are, 0 or null removes a rate. */
export type QosChange = Partial<Record<RateField, number | null>> & { burstSeconds?: number | null; weight?: number | null };

export class QosInvalid extends Error {
  readonly code = 'invalid_argument';
  constructor(message: string) { super(message); this.name = 'QosInvalid'; }
}

export function noLimits(): QosLimits {
  return { iopsMax: null, readIopsMax: null, writeIopsMax: null, bpsMax: null, readBpsMax: null, writeBpsMax: null,
    burstSeconds: BURST_SECONDS_DEFAULT, weight: WEIGHT_DEFAULT };
}

/** Whether any rate is limited. */
export function hasRates(limits: Rates): boolean {
  for (const f of RATE_FIELDS) if (limits[f] !== null) return true;
  return false;
}

function rateBound(field: RateField): number { return field.endsWith('IopsMax') || field === 'iopsMax' ? IOPS_MAX : BYTES_PER_SECOND_MAX; }

/** `current` with `change` applied; throws QosInvalid naming the first bad field. */
export function applyChange(current: QosLimits, change: QosChange): QosLimits {
  const next: QosLimits = { ...current };
  for (const f of RATE_FIELDS) {
    const v = change[f];
    if (v === undefined) continue;
    if (v === null || v === 0) { next[f] = null; continue; }
    if (!Number.isInteger(v) || v < 0 || v > rateBound(f)) throw new QosInvalid(`${f} must be an integer from 0 (no limit) to ${rateBound(f)}, got ${v}`);
    next[f] = v;
  }
  if (change.burstSeconds !== undefined) {
    const b = change.burstSeconds;
    if (b === null || b === 0) next.burstSeconds = BURST_SECONDS_DEFAULT;
    else if (typeof b !== 'number' || !(b >= BURST_SECONDS_MIN && b <= BURST_SECONDS_MAX)) {
      throw new QosInvalid(`burstSeconds must be from ${BURST_SECONDS_MIN} to ${BURST_SECONDS_MAX} (0 or null: the default ${BURST_SECONDS_DEFAULT}), got ${b}`);
    } else next.burstSeconds = b;
  }
  if (change.weight !== undefined) {
    const w = change.weight;
    if (w === null || w === 0) next.weight = WEIGHT_DEFAULT;
    else if (!Number.isInteger(w) || w < WEIGHT_MIN || w > WEIGHT_MAX) {
      throw new QosInvalid(`weight must be an integer from ${WEIGHT_MIN} to ${WEIGHT_MAX} (0 or null: the default ${WEIGHT_DEFAULT}), got ${w}`);
    } else next.weight = w;
  }
  return next;
}

// Stored form: short keys so that a full record with a 32-byte tenant name fits the 248 bytes.
const SHORT: Record<RateField, string> = { iopsMax: 'i', readIopsMax: 'ri', writeIopsMax: 'wi', bpsMax: 'b', readBpsMax: 'rb', writeBpsMax: 'wb' };

/** The setting's value, or null when the limits are all defaults (the setting is then removed). */
export function encodeLimits(key: string, limits: QosLimits): Buffer | null {
  const out: Record<string, number> = {};
  for (const f of RATE_FIELDS) if (limits[f] !== null) out[SHORT[f]] = limits[f]!;
  if (limits.burstSeconds !== BURST_SECONDS_DEFAULT) out.s = limits.burstSeconds;
  if (limits.weight !== WEIGHT_DEFAULT) out.w = limits.weight;
  if (Object.keys(out).length === 0) return null;
  const value = Buffer.from(JSON.stringify(out));
  if (key.length + value.length > SETTING_BYTES_MAX) throw new QosInvalid(`QoS record for ${key} is ${key.length + value.length} bytes, over ${SETTING_BYTES_MAX}`);
  return value;
}

/** Limits from a stored value; fields it does not know or cannot use are left at their defaults. */
export function decodeLimits(value: Buffer): QosLimits {
  const raw = JSON.parse(value.toString('utf8')) as Record<string, unknown>;
  const change: QosChange = {};
  for (const f of RATE_FIELDS) if (typeof raw[SHORT[f]] === 'number') change[f] = raw[SHORT[f]] as number;
  if (typeof raw.s === 'number') change.burstSeconds = raw.s;
  if (typeof raw.w === 'number') change.weight = raw.w;
  return applyChange(noLimits(), change);
}

/** A cluster volume record's limits (VolumeRecord.qos; null: none); a value this version cannot read limits nothing and is logged. */
export function recordLimits(encoded: string | undefined, log?: (event: string, fields: Record<string, unknown>) => void, vol?: string): QosLimits | null {
  if (encoded === undefined) return null;
  try {
    return decodeLimits(Buffer.from(encoded, 'utf8'));
  } catch (err) {
    log?.('cluster.qos_unreadable', { vol, error: err instanceof Error ? err.message : String(err) });
    return null;
  }
}

/** Limits in the form a cluster volume record keeps them (null: none). */
export function encodedLimits(vol: string, limits: QosLimits): string | null {
  return encodeLimits(`${VOLUME_KEY_PREFIX}${vol}`, limits)?.toString('utf8') ?? null;
}
