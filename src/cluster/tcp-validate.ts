// Shape checks of what arrives on the replication port, before the cluster logic sees it: every
// field of each ReplRequest variant has the type messages.ts gives it (numbers are non-negative safe
// integers, data is a Buffer). The table is keyed by the union's `t`, so a new variant does not
// compile until it is described here.
import type { ReplRequest } from './messages.js';

type FieldKind = 'string' | 'uint' | 'bool' | 'bool?' | 'buffer' | 'string|null' | 'string[]' | 'array' | 'vols';

const FIELDS: { [T in ReplRequest['t']]: Record<string, FieldKind> } = {
  write: { vol: 'string', epoch: 'uint', seq: 'uint', incarnation: 'string', offsetBytes: 'uint', data: 'buffer', fua: 'bool' },
  trim: { vol: 'string', epoch: 'uint', seq: 'uint', incarnation: 'string', offsetBytes: 'uint', lengthBytes: 'uint', fua: 'bool' },
  zero: { vol: 'string', epoch: 'uint', seq: 'uint', incarnation: 'string', offsetBytes: 'uint', lengthBytes: 'uint', fua: 'bool', noHole: 'bool' },
  flush: { vols: 'vols' },
  snapshot: { epoch: 'uint', fullNames: 'string[]' },
  'delete-snapshot': { vol: 'string', epoch: 'uint', fullName: 'string' },
  create: { vol: 'string', epoch: 'uint', sizeBytes: 'uint', encrypted: 'bool?' },
  clone: { vol: 'string', epoch: 'uint', source: 'string' },
  delete: { vol: 'string', epoch: 'uint' },
  resize: { vol: 'string', epoch: 'uint', sizeBytes: 'uint' },
  revert: { vol: 'string', epoch: 'uint', snapshot: 'string' },
  status: { vol: 'string' },
  'resync-begin': { vol: 'string', epoch: 'uint', base: 'string|null', sizeBytes: 'uint', encrypted: 'bool?' },
  'resync-data': { vol: 'string', epoch: 'uint', offsetBytes: 'uint', data: 'buffer' },
  'resync-end': { vol: 'string', epoch: 'uint', checkpoint: 'string' },
  admin: { op: 'string', args: 'array' },
};

function isUint(v: unknown): boolean { return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0; }

function fits(kind: FieldKind, v: unknown): boolean {
  switch (kind) {
    case 'string': return typeof v === 'string';
    case 'uint': return isUint(v);
    case 'bool': return typeof v === 'boolean';
    // Optional: a node of the version before the field sends none.
    case 'bool?': return v === undefined || typeof v === 'boolean';
    case 'buffer': return Buffer.isBuffer(v);
    case 'string|null': return v === null || typeof v === 'string';
    case 'string[]': return Array.isArray(v) && v.every((s) => typeof s === 'string');
    case 'array': return Array.isArray(v);
    case 'vols': return Array.isArray(v) && v.every((e: unknown) => e !== null && typeof e === 'object' &&
      typeof (e as { vol?: unknown }).vol === 'string' && isUint((e as { epoch?: unknown }).epoch));
  }
}

/** Null when `m` is a well-formed ReplRequest, else what is wrong with it. */
export function requestProblem(m: unknown): string | null {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return 'a request must be an object';
  const t = (m as { t?: unknown }).t;
  if (typeof t !== 'string' || !Object.hasOwn(FIELDS, t)) return `unknown request type ${JSON.stringify(t)}`;
  for (const [name, kind] of Object.entries(FIELDS[t as ReplRequest['t']])) {
    if (!fits(kind, (m as Record<string, unknown>)[name])) return `${t}: field ${name} must be ${kind}`;
  }
  return null;
}

/** Null when `m` has the shape of a ReplReply ({ok:true} or {ok:false, code, message}). */
export function replyProblem(m: unknown): string | null {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return 'a reply must be an object';
  const r = m as { ok?: unknown; code?: unknown; message?: unknown };
  if (r.ok === true) return null;
  if (r.ok === false && typeof r.code === 'string' && typeof r.message === 'string') return null;
  return 'a reply needs ok: true, or ok: false with a code and a message';
}
