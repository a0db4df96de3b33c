// A KEK inside a PKCS#11 token (`pkcs11:` references): an AES-256 secret key object that never leaves
// the token. Wrapping happens inside it: the DEK is imported as a session object, wrapped with
// CKM_AES_KEY_WRAP (RFC 3394, default IV: the same bytes as a file KEK holding the same key) and
// destroyed; unwrapping makes an extractable session object whose value is read and which is then
// destroyed. Each call opens a session, logs in, works and closes it, so nothing held across calls
// goes stale when the token is removed, and a token that comes back serves the next call.
import { createHash, randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { assert, fail } from '../engine/index.js';
import { checkDek, checkWrapped } from './checks.js';
import { FIND_OBJECTS_MAX, FINGERPRINT_HEX_CHARS, KEK_BYTES, PIN_BYTES_MAX, DEK_BYTES_MIN } from './constants.js';
import { KekUnavailable, KekWrongKey } from './errors.js';
import { ckrOf, pkcs11Module, type Binding, type Pkcs11Lib, type Pkcs11Module } from './pkcs11-module.js';
import type { Template } from 'pkcs11js';
import type { KekProvider } from './provider.js';
import { readBounded } from './read-bounded.js';
import type { PinSource, Pkcs11Ref } from './ref.js';

type Handle = Buffer;

/** What one call works with: an open, logged-in session and the KEK object found in it. */
interface KeySession { lib: Pkcs11Lib; session: Handle; key: Handle; serial: string; idHex: string }

/** Return values that say the wrapped blob itself is bad (PKCS#11 v2.40 §5.18 C_UnwrapKey). */
const BLOB_REFUSED = new Set(['CKR_WRAPPED_KEY_INVALID', 'CKR_WRAPPED_KEY_LEN_RANGE', 'CKR_ENCRYPTED_DATA_INVALID', 'CKR_ENCRYPTED_DATA_LEN_RANGE']);

export async function openPkcs11Kek(ref: string, parsed: Pkcs11Ref, env: NodeJS.ProcessEnv): Promise<KekProvider> {
  const pin = await readPin(parsed.pinSource, env);
  const module = await pkcs11Module(parsed.modulePath);
  const kek = new Pkcs11Kek(ref, parsed, pin, module);
  kek.verify();
  return kek;
}

async function readPin(source: PinSource, env: NodeJS.ProcessEnv): Promise<string> {
  if (source.kind === 'env') {
    const pin = env[source.name];
    if (pin === undefined || pin === '') throw new KekUnavailable(`the PIN variable ${source.name} is not set`);
    return pin;
  }
  const content = await readBounded(source.path, PIN_BYTES_MAX, 'PIN file');
  const text = content.toString('utf8').replace(/\r?\n$/, '');
  content.fill(0);
  if (content.length > PIN_BYTES_MAX) throw new KekUnavailable(`PIN file ${source.path}: more than ${PIN_BYTES_MAX} bytes`);
  if (text === '') throw new KekUnavailable(`PIN file ${source.path}: empty`);
  return text;
}

class Pkcs11Kek implements KekProvider {
  private closed = false;
  /** Token serial and object id as found at open: every later call must find the same token. */
  private opened: { serial: string; idHex: string } | null = null;
  private readonly binding: Binding;
  private readonly name: string;

  constructor(readonly ref: string, private readonly parsed: Pkcs11Ref, private readonly pin: string, private readonly module: Pkcs11Module) {
    this.binding = module.binding;
    this.name = `token ${JSON.stringify(parsed.token)} object ${JSON.stringify(parsed.object)}`;
  }

  get fingerprint(): string {
    assert(this.opened !== null, 'a PKCS#11 KEK is verified before it is handed out');
    const { serial, idHex } = this.opened;
    return createHash('sha256').update(`${serial}|${this.parsed.object}|${idHex}`).digest('hex').slice(0, FINGERPRINT_HEX_CHARS);
  }

  /** At open: the token, the PIN and the key object all answer, and the object is an AES-256 wrapping key. */
  verify(): void {
    this.opened = this.module.run(`opening KEK ${this.name}`, (lib) => this.withKey(lib, (k) => ({ serial: k.serial, idHex: k.idHex })));
  }

  async wrap(dek: Buffer): Promise<Buffer> {
    assert(!this.closed, 'wrap on a closed KEK provider');
    checkDek(dek);
    const wrapped = this.module.run(`wrapping with KEK ${this.name}`, (lib) => this.withKey(lib, (k) => this.wrapIn(k, dek)));
    assert(wrapped.length === dek.length + 8, 'RFC 3394 adds one 64-bit block');
    return wrapped;
  }

  async unwrap(wrapped: Buffer): Promise<Buffer> {
    assert(!this.closed, 'unwrap on a closed KEK provider');
    checkWrapped(wrapped);
    const dek = this.module.run(`unwrapping with KEK ${this.name}`, (lib) => this.withKey(lib, (k) => this.unwrapIn(k, wrapped)));
    assert(dek.length === wrapped.length - 8, 'RFC 3394 removes one 64-bit block');
    return dek;
  }

  async close(): Promise<void> {
    // The module stays loaded: other providers of this process share it (one C_Initialize per process).
    this.closed = true;
  }

  /** Opens a session on the token, logs in, finds the key, runs fn, and closes the session whatever happens. */
  private withKey<T>(lib: Pkcs11Lib, fn: (k: KeySession) => T): T {
    const b = this.binding;
    const { slot, serial } = this.findToken(lib);
    const session = lib.C_OpenSession(slot, b.CKF_SERIAL_SESSION);
    try {
      lib.C_Login(session, b.CKU_USER, this.pin);
      const { key, idHex } = this.findKey(lib, session);
      return fn({ lib, session, key, serial, idHex });
    } finally {
      try {
        // Closing the application's last session on the token also logs it out (PKCS#11 v2.40 §5.6).
        lib.C_CloseSession(session);
      } catch {
        // The token went away with the session in it: the error the caller sees is the one thrown above.
      }
    }
  }

  private findToken(lib: Pkcs11Lib): { slot: Handle; serial: string } {
    const p = this.parsed;
    const matches: Array<{ slot: Handle; serial: string }> = [];
    for (const slot of lib.C_GetSlotList(true)) {
      const info = lib.C_GetTokenInfo(slot);
      // Token info strings are blank-padded (PKCS#11 v2.40 §3.2 CK_TOKEN_INFO).
      const serial = info.serialNumber.trimEnd();
      if (info.label.trimEnd() !== p.token) continue;
      if (p.serial !== null && serial !== p.serial) continue;
      if (p.manufacturer !== null && info.manufacturerID.trimEnd() !== p.manufacturer) continue;
      if (p.model !== null && info.model.trimEnd() !== p.model) continue;
      matches.push({ slot, serial });
    }
    if (matches.length === 0) {
      // A token plugged in (or a SoftHSM token directory restored) later is seen only after C_Initialize.
      this.module.markStale();
      throw new KekUnavailable(`no token labelled ${JSON.stringify(p.token)}${p.serial === null ? '' : ` with serial ${p.serial}`} is present (PKCS#11 module ${p.modulePath})`);
    }
    if (matches.length > 1) throw new KekUnavailable(`${matches.length} tokens are labelled ${JSON.stringify(p.token)}: add serial= to the reference`);
    const match = matches[0]!;
    if (this.opened !== null && match.serial !== this.opened.serial) {
      throw new KekUnavailable(`token ${JSON.stringify(p.token)} now has serial ${match.serial}, not ${this.opened.serial} as when the KEK was opened: open the KEK again`);
    }
    return match;
  }

  private findKey(lib: Pkcs11Lib, session: Handle): { key: Handle; idHex: string } {
    const b = this.binding;
    const template: Template = [{ type: b.CKA_CLASS, value: b.CKO_SECRET_KEY }, { type: b.CKA_LABEL, value: this.parsed.object }];
    if (this.parsed.id !== null) template.push({ type: b.CKA_ID, value: this.parsed.id });
    lib.C_FindObjectsInit(session, template);
    let found: Handle[];
    try {
      found = lib.C_FindObjects(session, FIND_OBJECTS_MAX);
    } finally {
      lib.C_FindObjectsFinal(session);
    }
    const idText = this.parsed.id === null ? '' : ` and id ${this.parsed.id.toString('hex')}`;
    if (found.length === 0) throw new KekUnavailable(`token ${JSON.stringify(this.parsed.token)} has no secret key labelled ${JSON.stringify(this.parsed.object)}${idText}`);
    if (found.length > 1) throw new KekUnavailable(`token ${JSON.stringify(this.parsed.token)} has several secret keys labelled ${JSON.stringify(this.parsed.object)}${idText}: add id= to the reference`);
    const key = found[0]!;
    const [keyType, valueLen, canWrap, canUnwrap, id] = lib.C_GetAttributeValue(session, key, [
      { type: b.CKA_KEY_TYPE }, { type: b.CKA_VALUE_LEN }, { type: b.CKA_WRAP }, { type: b.CKA_UNWRAP }, { type: b.CKA_ID },
    ]).map((a) => a.value);
    if (ulongOf(keyType!) !== b.CKK_AES || ulongOf(valueLen!) !== KEK_BYTES) {
      throw new KekUnavailable(`${this.name} is not an AES-256 key (a KEK is CKK_AES of ${KEK_BYTES} bytes)`);
    }
    if (!boolOf(canWrap!) || !boolOf(canUnwrap!)) throw new KekUnavailable(`${this.name} may not wrap and unwrap (CKA_WRAP and CKA_UNWRAP must be true)`);
    return { key, idHex: id!.toString('hex') };
  }

  private wrapIn(k: KeySession, dek: Buffer): Buffer {
    const b = this.binding;
    const dekObject = k.lib.C_CreateObject(k.session, this.sessionSecret(dek));
    try {
      return k.lib.C_WrapKey(k.session, { mechanism: b.CKM_AES_KEY_WRAP }, k.key, dekObject, Buffer.alloc(dek.length + 8));
    } finally {
      destroyQuietly(k, dekObject);
    }
  }

  private unwrapIn(k: KeySession, wrapped: Buffer): Buffer {
    const b = this.binding;
    let dekObject: Handle;
    try {
      dekObject = k.lib.C_UnwrapKey(k.session, { mechanism: b.CKM_AES_KEY_WRAP }, k.key, wrapped, this.sessionSecret(null));
    } catch (err) {
      const ckr = ckrOf(b, err);
      // SoftHSM answers a failed integrity check with CKR_GENERAL_ERROR, which a dying token may also
      // return: when the KEK still wraps and unwraps a fresh key, the blob was at fault.
      if (ckr !== null && (BLOB_REFUSED.has(ckr) || this.keyWorks(k))) {
        throw new KekWrongKey(`the wrapped key does not unwrap with KEK ${this.fingerprint} (${ckr}): another KEK wrapped it, or it is damaged`);
      }
      throw err;
    }
    try {
      const [value] = k.lib.C_GetAttributeValue(k.session, dekObject, [{ type: b.CKA_VALUE }]);
      if (value === undefined) fail('C_GetAttributeValue returns the attribute asked for');
      return Buffer.from(value.value);
    } finally {
      destroyQuietly(k, dekObject);
    }
  }

  /** A known-answer check: the KEK wraps a fresh random key and unwraps it to the same bytes. */
  private keyWorks(k: KeySession): boolean {
    try {
      const probe = randomBytes(DEK_BYTES_MIN);
      const back = this.unwrapOnce(k, this.wrapIn(k, probe));
      return back.equals(probe);
    } catch {
      // The probe failing is the answer: the token, not the blob, is what fails.
      return false;
    }
  }

  private unwrapOnce(k: KeySession, wrapped: Buffer): Buffer {
    const b = this.binding;
    const object = k.lib.C_UnwrapKey(k.session, { mechanism: b.CKM_AES_KEY_WRAP }, k.key, wrapped, this.sessionSecret(null));
    try {
      return Buffer.from(k.lib.C_GetAttributeValue(k.session, object, [{ type: b.CKA_VALUE }])[0]!.value);
    } finally {
      destroyQuietly(k, object);
    }
  }

  /** A session (not token) secret the application may read: the form a DEK takes inside the token. */
  private sessionSecret(value: Buffer | null): Template {
    const b = this.binding;
    const template: Template = [
      { type: b.CKA_CLASS, value: b.CKO_SECRET_KEY }, { type: b.CKA_KEY_TYPE, value: b.CKK_GENERIC_SECRET },
      { type: b.CKA_TOKEN, value: false }, { type: b.CKA_EXTRACTABLE, value: true }, { type: b.CKA_SENSITIVE, value: false },
    ];
    if (value !== null) template.push({ type: b.CKA_VALUE, value });
    return template;
  }
}

function destroyQuietly(k: KeySession, object: Handle): void {
  try {
    k.lib.C_DestroyObject(k.session, object);
  } catch {
    // A session object dies with its session, which withKey closes next; the DEK does not outlive it.
  }
}

/** A CK_ULONG attribute value, in the machine's byte order (PKCS#11 passes native structures). */
function ulongOf(value: Buffer): number {
  const le = endianness() === 'LE';
  if (value.length === 8) return Number(le ? value.readBigUInt64LE() : value.readBigUInt64BE());
  if (value.length === 4) return le ? value.readUInt32LE() : value.readUInt32BE();
  return fail(`a CK_ULONG attribute of ${value.length} bytes`);
}

function boolOf(value: Buffer): boolean {
  if (value.length !== 1) fail(`a CK_BBOOL attribute of ${value.length} bytes`);
  return value[0] !== 0;
}
