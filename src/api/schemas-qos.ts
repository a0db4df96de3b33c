// TypeBox schemas of QoS in the REST API: a volume's or a tenant's limits as shown, and the change a
// PUT (or a volume create's `qos`) makes. Rates are per second; 0 or null removes a limit.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { BURST_SECONDS_MAX, BYTES_PER_SECOND_MAX, IOPS_MAX, WEIGHT_MAX } from '../qos/limits.js';

/**
 * An integer or null, written with OpenAPI 3.0's `nullable` (ajv knows it): a TypeBox union with null
 * would be rewritten that way in openapi.json, and the document must show the validating schema as is.
 */
const Nullable = (schema: TSchema) => Type.Unsafe<number | null>({ ...schema, nullable: true });
const Iops = (what: string) => Nullable(Type.Integer({ minimum: 0, maximum: IOPS_MAX, description: `${what} operations per second; 0 or null: no limit` }));
const Bps = (what: string) => Nullable(Type.Integer({ minimum: 0, maximum: BYTES_PER_SECOND_MAX, description: `${what} bytes per second; 0 or null: no limit` }));
const Burst = Nullable(Type.Number({ minimum: 0, maximum: BURST_SECONDS_MAX, description: 'seconds\' worth of each rate that may pass at once after a quiet spell (default 1; 0 or null: the default)' }));
const Weight = Nullable(Type.Integer({ minimum: 0, maximum: WEIGHT_MAX, description: 'share of the pool when it is the bottleneck, 1..10000 (default 100; 0 or null: the default)' }));

const rateFields = {
  iopsMax: Type.Optional(Iops('read and write')), readIopsMax: Type.Optional(Iops('read')), writeIopsMax: Type.Optional(Iops('write (trim and write-zeroes count as writes)')),
  bpsMax: Type.Optional(Bps('read and write')), readBpsMax: Type.Optional(Bps('read')), writeBpsMax: Type.Optional(Bps('written')),
  burstSeconds: Type.Optional(Burst),
};

export const VolumeQosBody = Type.Object(rateFields, { additionalProperties: false, description: 'fields left out stay as they are' });
export type VolumeQosBody = Static<typeof VolumeQosBody>;
export const TenantQosBody = Type.Object({ ...rateFields, weight: Type.Optional(Weight) }, { additionalProperties: false, description: 'fields left out stay as they are' });
export type TenantQosBody = Static<typeof TenantQosBody>;

const shownRates = {
  iopsMax: Type.Union([Type.Integer(), Type.Null()]), readIopsMax: Type.Union([Type.Integer(), Type.Null()]),
  writeIopsMax: Type.Union([Type.Integer(), Type.Null()]), bpsMax: Type.Union([Type.Integer(), Type.Null()]),
  readBpsMax: Type.Union([Type.Integer(), Type.Null()]), writeBpsMax: Type.Union([Type.Integer(), Type.Null()]),
  burstSeconds: Type.Number(),
};
export const VolumeQos = Type.Object(shownRates, { description: 'null: no limit' });
export const TenantQos = Type.Object({ tenant: Type.String(), ...shownRates, weight: Type.Integer() }, { description: 'null: no limit' });
export const TenantParams = Type.Object({ tenant: Type.String({ minLength: 1, maxLength: 64, description: 'tenant name' }) });
