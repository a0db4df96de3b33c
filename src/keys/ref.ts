// KEK references, parsed and checked without I/O: `file:/abs/path`, and PKCS#11 URIs (RFC 7512) with
// Cairn's rules on top: the PIN comes from a file or an environment variable (pin-source), never from
// the reference (pin-value is refused), and the module is named by path (module-path, else the
// environment's CAIRN_PKCS11_MODULE).
import { posix } from 'node:path';
import { REF_CHARS_MAX } from './constants.js';
import { KekRefInvalid } from './errors.js';

export interface FileRef { kind: 'file'; path: string }

export type PinSource = { kind: 'file'; path: string } | { kind: 'env'; name: string };

export interface Pkcs11Ref {
  kind: 'pkcs11';
  /** Token label (CKA_LABEL of the token, blank padding removed). */
  token: string;
  /** Label of the secret key object. */
  object: string;
  /** CKA_ID of the object, when the reference narrows by it. */
  id: Buffer | null;
  /** Optional token attributes that narrow the match (RFC 7512 §2.3). */
  serial: string | null;
  manufacturer: string | null;
  model: string | null;
  pinSource: PinSource;
  modulePath: string;
}

export type KekRef = FileRef | Pkcs11Ref;

/** The environment variable naming the PKCS#11 module when a reference has no module-path. */
export const PKCS11_MODULE_ENV = 'CAIRN_PKCS11_MODULE';

const PATH_ATTRIBUTES = new Set(['token', 'object', 'id', 'type', 'serial', 'manufacturer', 'model']);
const QUERY_ATTRIBUTES = new Set(['module-path', 'pin-source']);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const USAGE = 'a KEK reference is file:/absolute/path or pkcs11:token=LABEL;object=LABEL?module-path=/path/lib.so&pin-source=file:/path';

/** Parses a reference; throws KekRefInvalid. `env` supplies CAIRN_PKCS11_MODULE; nothing else is read. */
export function parseKekRef(ref: string, env: NodeJS.ProcessEnv): KekRef {
  if (typeof ref !== 'string' || ref.length === 0) throw new KekRefInvalid(`empty; ${USAGE}`);
  if (ref.length > REF_CHARS_MAX) throw new KekRefInvalid(`${ref.length} characters, at most ${REF_CHARS_MAX}`);
  // A reference is logged and stored: control characters would forge log lines or hide text.
  if (/[\x00-\x1f\x7f]/.test(ref)) throw new KekRefInvalid('it contains a control character');
  if (ref.startsWith('file:')) return { kind: 'file', path: absolutePath(ref.slice('file:'.length), 'file path') };
  if (ref.startsWith('pkcs11:')) return parsePkcs11(ref.slice('pkcs11:'.length), env);
  throw new KekRefInvalid(`unknown scheme; ${USAGE}`);
}

function absolutePath(path: string, what: string): string {
  // `file://host/...` has an authority; `file:/a/../b` hides where it points: both refused.
  if (!path.startsWith('/') || path.startsWith('//')) throw new KekRefInvalid(`the ${what} must be absolute (file:/dir/name), got ${JSON.stringify(path)}`);
  if (posix.normalize(path) !== path || path.endsWith('/')) throw new KekRefInvalid(`the ${what} ${JSON.stringify(path)} is not in normal form (no ., .., // or trailing /)`);
  return path;
}

/** RFC 7512 §2.3: `pk11-path [ "?" pk11-query ]`, path attributes split by ';', query attributes by '&'. */
function parsePkcs11(rest: string, env: NodeJS.ProcessEnv): Pkcs11Ref {
  const queryAt = rest.indexOf('?');
  const pathPart = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const queryPart = queryAt < 0 ? '' : rest.slice(queryAt + 1);
  const path = attributes(pathPart, ';', PATH_ATTRIBUTES, 'path');
  const query = attributes(queryPart, '&', QUERY_ATTRIBUTES, 'query');

  const token = textOf(path, 'token');
  const object = textOf(path, 'object');
  if (token === null) throw new KekRefInvalid('the pkcs11: reference names no token (token=LABEL)');
  if (object === null) throw new KekRefInvalid('the pkcs11: reference names no key object (object=LABEL)');
  const type = textOf(path, 'type');
  if (type !== null && type !== 'secret-key') throw new KekRefInvalid(`type=${type}: a KEK is a secret key (type=secret-key)`);
  const idRaw = path.get('id');
  const id = idRaw === undefined ? null : percentDecode(idRaw, 'id');
  if (id !== null && id.length === 0) throw new KekRefInvalid('id= is empty');

  const pinRaw = textOf(query, 'pin-source');
  if (pinRaw === null) throw new KekRefInvalid('the pkcs11: reference has no pin-source (pin-source=file:/path or pin-source=env:NAME)');
  const moduleRaw = textOf(query, 'module-path') ?? env[PKCS11_MODULE_ENV] ?? null;
  if (moduleRaw === null || moduleRaw === '') {
    throw new KekRefInvalid(`no PKCS#11 module: give module-path=/path/lib.so in the reference or set ${PKCS11_MODULE_ENV}`);
  }
  return {
    kind: 'pkcs11', token, object, id,
    serial: textOf(path, 'serial'), manufacturer: textOf(path, 'manufacturer'), model: textOf(path, 'model'),
    pinSource: pinSourceOf(pinRaw),
    modulePath: absolutePath(moduleRaw, 'module path'),
  };
}

/** `name=value` pairs, each name known and given once (RFC 7512: an attribute MUST NOT repeat in the path). */
function attributes(part: string, separator: string, known: Set<string>, where: string): Map<string, string> {
  const out = new Map<string, string>();
  if (part === '') return out;
  for (const item of part.split(separator)) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (eq < 0) throw new KekRefInvalid(`${where} attribute ${JSON.stringify(name)} has no value (name=value)`);
    if (name === 'pin-value') {
      // Never echo the value: it is a PIN.
      throw new KekRefInvalid('pin-value is refused: a PIN written in the reference would be stored and logged with it; ' +
        'use pin-source=file:/path or pin-source=env:NAME');
    }
    if (!known.has(name)) throw new KekRefInvalid(`${where} attribute ${JSON.stringify(name)} is not supported (supported: ${[...known].join(', ')})`);
    if (out.has(name)) throw new KekRefInvalid(`attribute ${name} is given twice`);
    out.set(name, item.slice(eq + 1));
  }
  return out;
}

/** An attribute as UTF-8 text, percent-decoded (RFC 7512 §2.3); null when absent. */
function textOf(attrs: Map<string, string>, name: string): string | null {
  const raw = attrs.get(name);
  if (raw === undefined) return null;
  const bytes = percentDecode(raw, name);
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  if (text.includes('\uFFFD') || /[\x00-\x1f\x7f]/.test(text)) throw new KekRefInvalid(`${name}= is not printable UTF-8 text`);
  if (text === '') throw new KekRefInvalid(`${name}= is empty`);
  return text;
}

function percentDecode(raw: string, name: string): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at < raw.length) {
    const pct = raw.indexOf('%', at);
    const end = pct < 0 ? raw.length : pct;
    // Text between escapes is taken whole, so a character outside the BMP stays one UTF-8 sequence.
    if (end > at) parts.push(Buffer.from(raw.slice(at, end), 'utf8'));
    if (pct < 0) break;
    const hex = raw.slice(pct + 1, pct + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new KekRefInvalid(`${name}= has a malformed percent-encoding at ${JSON.stringify(raw.slice(pct, pct + 3))}`);
    parts.push(Buffer.of(parseInt(hex, 16)));
    at = pct + 3;
  }
  return Buffer.concat(parts);
}

function pinSourceOf(raw: string): PinSource {
  if (raw.startsWith('env:')) {
    const name = raw.slice('env:'.length);
    if (!ENV_NAME.test(name)) throw new KekRefInvalid(`pin-source=env:${name}: not an environment variable name`);
    return { kind: 'env', name };
  }
  // RFC 7512's pin-source is a URI (file:) or, as p11-kit also takes it, a plain absolute path.
  if (raw.startsWith('file:')) return { kind: 'file', path: absolutePath(raw.slice('file:'.length), 'pin-source path') };
  if (raw.startsWith('/')) return { kind: 'file', path: absolutePath(raw, 'pin-source path') };
  throw new KekRefInvalid('pin-source must be file:/absolute/path or env:NAME');
}
