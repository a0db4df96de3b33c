// Encryption keys per tenant: each tenant's key-encryption key (KEK) reference, kept as a setting, and
// the data keys (DEKs) of its encrypted lineages, which the engine stores only wrapped by that KEK. At
// start every DEK is unwrapped and offered to the engine; a tenant whose KEK is unavailable (HSM down,
// key file missing) keeps its encrypted volumes locked, retried in the background until it is back.
// Rotation re-wraps every DEK of the tenant under a new KEK, resumable after a crash at any step.
import { randomBytes } from 'node:crypto';
import type { Engine } from '../engine/index.js';
import { KekUnavailable, KekWrongKey, openKek, validateKekRef, type KekProvider } from '../keys/provider.js';
import { splitQualified } from './names.js';
import { TenancyError } from './errors.js';

/** Setting keys: the tenant's KEK reference, and the new one while a rotation is under way. */
const KEK_PREFIX = 'kek/';
const KEK_NEXT_PREFIX = 'kek-next/';
/** A wrapped DEK as the engine stores it: version, the KEK's fingerprint (which KEK to ask), the RFC 3394 wrap. */
const WRAPPED_VERSION = 1;
const FINGERPRINT_BYTES = 8;
/** AES-256-XTS: two AES-256 keys. */
const DATA_KEY_BYTES = 64;
/** How often locked tenants are retried while their KEK is unavailable. */
export const KEK_RETRY_MS_DEFAULT = 5_000;

export type KekState = 'none' | 'available' | 'unavailable';

export interface TenantKeyStatus {
  tenant: string;
  /** The KEK reference (nothing secret in it), or null when the tenant has none. */
  kek: string | null;
  state: KekState;
  /** Why the KEK is unavailable (the provider's message), when it is. */
  error: string | null;
  /** The new KEK while a rotation is under way (resumed at start after a crash). */
  rotatingTo: string | null;
  encryptedLineages: number;
  lockedLineages: number;
}

export interface KeyManagerOptions {
  env?: NodeJS.ProcessEnv;
  retryMs?: number;
  log?: (event: string, fields: Record<string, unknown>) => void;
}

function encodeWrapped(kek: KekProvider, wrapped: Buffer): Buffer {
  const head = Buffer.alloc(1 + FINGERPRINT_BYTES);
  head.writeUInt8(WRAPPED_VERSION, 0);
  Buffer.from(kek.fingerprint, 'hex').copy(head, 1);
  return Buffer.concat([head, wrapped]);
}

function decodeWrapped(blob: Buffer): { fingerprint: string; wrapped: Buffer } | null {
  if (blob.length <= 1 + FINGERPRINT_BYTES || blob.readUInt8(0) !== WRAPPED_VERSION) return null;
  return { fingerprint: blob.subarray(1, 1 + FINGERPRINT_BYTES).toString('hex'), wrapped: blob.subarray(1 + FINGERPRINT_BYTES) };
}

/** The tenant owning a key: its members' (all of one tenant: a clone never crosses tenants). */
function tenantOfMembers(members: string[]): string | null {
  const first = members[0];
  return first === undefined ? null : splitQualified(first.split('@')[0]!).tenant;
}

export class KeyManager {
  private readonly env: NodeJS.ProcessEnv;
  private readonly retryMs: number;
  private readonly log: NonNullable<KeyManagerOptions['log']>;
  /** Last failure per tenant (cleared when its KEK opens). */
  private readonly failures = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** One key operation at a time (unlock rounds, rotations, KEK changes). */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly engine: Engine, opts: KeyManagerOptions = {}) {
    this.env = opts.env ?? process.env;
    this.retryMs = opts.retryMs ?? KEK_RETRY_MS_DEFAULT;
    this.log = opts.log ?? (() => undefined);
  }

  /** Unlocks what it can, resumes an interrupted rotation, and keeps retrying locked tenants. */
  async start(): Promise<void> {
    await this.unlockAll();
    for (const s of this.engine.listSettings(KEK_NEXT_PREFIX)) {
      const tenant = s.key.slice(KEK_NEXT_PREFIX.length);
      this.log('kek_rotation_resumed', { tenant, kek: s.value.toString() });
      await this.rotateKek(tenant, s.value.toString()).catch((err: unknown) => this.log('kek_rotation_failed', { tenant, error: messageOf(err) }));
    }
    this.schedule();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  kekOf(tenant: string): string | null { return this.engine.getSetting(KEK_PREFIX + tenant)?.toString() ?? null; }
  private nextKekOf(tenant: string): string | null { return this.engine.getSetting(KEK_NEXT_PREFIX + tenant)?.toString() ?? null; }

  /** A fresh data key for a new encrypted volume of `tenant`, wrapped by its KEK (which must be available). */
  async newDataKey(tenant: string): Promise<{ dek: Buffer; wrapped: Buffer }> {
    const ref = this.kekOf(tenant);
    if (ref === null) throw new TenancyError('invalid_argument', `tenant ${tenant} has no key-encryption key: set one first (cairn tenant set ${tenant} --kek file:/path or --kek pkcs11:...)`);
    if (this.nextKekOf(tenant) !== null) throw new TenancyError('tenant_busy', `tenant ${tenant}'s key-encryption key is being rotated: try again when it is done`);
    const kek = await this.open(tenant, ref);
    try {
      let dek = randomBytes(DATA_KEY_BYTES);
      // XTS refuses a key whose halves are equal: with random bytes that is 2^-256, but it is checked anyway.
      while (dek.subarray(0, 32).equals(dek.subarray(32))) dek = randomBytes(DATA_KEY_BYTES);
      return { dek, wrapped: encodeWrapped(kek, await kek.wrap(dek)) };
    } finally {
      await kek.close();
    }
  }

  /**
   * The data key of a raw stream (its wrapped form as the sender's pool stored it), for `tenant`:
   * unwrapped by the tenant's KEK (or the rotation's new one), so only a tenant holding the KEK that
   * wrapped it can import it, and wrapped again by the tenant's current KEK for the new lineage.
   */
  async streamKey(tenant: string, blob: Buffer): Promise<{ dek: Buffer; wrapped: Buffer }> {
    const ref = this.kekOf(tenant);
    if (ref === null) throw new TenancyError('invalid_argument', `tenant ${tenant} has no key-encryption key: a raw stream can only be imported by a tenant holding the KEK that wrapped its key`);
    const keks: KekProvider[] = [await this.open(tenant, ref)];
    const next = this.nextKekOf(tenant);
    try {
      if (next !== null) keks.push(await this.openRaw(next));
      let dek: Buffer;
      try {
        dek = await this.unwrapAny([blob], keks);
      } catch (err) {
        if (err instanceof KekUnavailable) throw err;
        throw new KekWrongKey(`the stream's data key is wrapped by a key-encryption key tenant ${tenant} does not hold`);
      }
      return { dek, wrapped: encodeWrapped(keks[0]!, await keks[0]!.wrap(dek)) };
    } finally {
      for (const k of keks) await k.close();
    }
  }

  /** Key status of one tenant (or of every tenant that has a KEK or encrypted volumes). */
  status(tenant: string): TenantKeyStatus {
    const keys = this.engine.listKeys().filter((k) => tenantOfMembers(k.members) === tenant);
    const kek = this.kekOf(tenant);
    const failure = this.failures.get(tenant) ?? null;
    return {
      tenant, kek, state: kek === null ? 'none' : failure === null ? 'available' : 'unavailable', error: failure,
      rotatingTo: this.nextKekOf(tenant), encryptedLineages: keys.length, lockedLineages: keys.filter((k) => k.locked).length,
    };
  }

  /** Null when this node can make a data key for `tenant` now (a cluster placing an encrypted copy asks), else why not. */
  copyRefusal(tenant: string): string | null {
    const st = this.status(tenant);
    if (st.state === 'none') return `tenant ${tenant} has no key-encryption key on this node`;
    if (st.state === 'unavailable') return `tenant ${tenant}'s key-encryption key is unavailable here (${st.error ?? 'unknown'})`;
    if (st.rotatingTo !== null) return `tenant ${tenant}'s key-encryption key is being rotated here`;
    return null;
  }

  /**
   * Sets a tenant's KEK. A tenant with encrypted volumes already has one: changing it is a rotation
   * (rotateKek), since every data key must be re-wrapped. The KEK must open now (a typo is refused).
   */
  setKek(tenant: string, ref: string): Promise<TenantKeyStatus> {
    return this.serial(async () => {
      validateKekRef(ref, this.env);
      const current = this.kekOf(tenant);
      const keys = this.engine.listKeys().filter((k) => tenantOfMembers(k.members) === tenant);
      if (current !== null && current !== ref && keys.length > 0) {
        throw new TenancyError('invalid_argument', `tenant ${tenant} has encrypted volumes under its current key-encryption key: use cairn tenant rotate-kek ${tenant} --kek NEW to re-wrap their keys`);
      }
      const kek = await this.open(tenant, ref);
      await kek.close();
      await this.engine.putSettings([{ key: KEK_PREFIX + tenant, value: Buffer.from(ref) }]);
      this.log('kek_set', { tenant, kek: ref });
      await this.unlockTenant(tenant);
      return this.status(tenant);
    });
  }

  /** Unlocks a tenant's locked lineages now (its KEK may be back), without waiting for the retry. */
  unlock(tenant: string): Promise<TenantKeyStatus> {
    return this.serial(async () => {
      if (this.kekOf(tenant) === null) throw new TenancyError('invalid_argument', `tenant ${tenant} has no key-encryption key`);
      await this.unlockTenant(tenant);
      return this.status(tenant);
    });
  }

  /** Forgets a deleted tenant's KEK settings (its volumes, and so their keys, are gone). */
  async forget(tenant: string): Promise<void> {
    await this.engine.putSettings([{ key: KEK_PREFIX + tenant, value: null }, { key: KEK_NEXT_PREFIX + tenant, value: null }]);
    this.failures.delete(tenant);
  }

  /**
   * Re-wraps every data key of `tenant` under the KEK `ref`, online. The new reference is recorded
   * first (kek-next), then each slot is re-wrapped (the engine writes one copy, syncs, then the other),
   * then the reference becomes the tenant's KEK: after a crash at any step each key is wrapped by the
   * old KEK or the new one, both are tried at start, and the rotation resumes.
   */
  rotateKek(tenant: string, ref: string): Promise<TenantKeyStatus> {
    return this.serial(async () => {
      validateKekRef(ref, this.env);
      const oldRef = this.kekOf(tenant);
      if (oldRef === null) throw new TenancyError('invalid_argument', `tenant ${tenant} has no key-encryption key to rotate: set one with cairn tenant set ${tenant} --kek REF`);
      const next = await this.open(tenant, ref);
      const old = oldRef === ref ? null : await this.open(tenant, oldRef).catch((err: unknown) => { void next.close(); throw err; });
      try {
        await this.engine.putSettings([{ key: KEK_NEXT_PREFIX + tenant, value: Buffer.from(ref) }]);
        let rewrapped = 0;
        for (const key of this.engine.listKeys().filter((k) => tenantOfMembers(k.members) === tenant)) {
          if (key.wrapped.length === 1 && decodeWrapped(key.wrapped[0]!)?.fingerprint === next.fingerprint) continue; // done before a crash
          const dek = await this.unwrapAny(key.wrapped, old === null ? [next] : [old, next]);
          try {
            await this.engine.rewrapKey(key.keyId, encodeWrapped(next, await next.wrap(dek)));
          } finally {
            dek.fill(0);
          }
          rewrapped++;
        }
        await this.engine.putSettings([{ key: KEK_PREFIX + tenant, value: Buffer.from(ref) }, { key: KEK_NEXT_PREFIX + tenant, value: null }]);
        this.failures.delete(tenant);
        this.log('kek_rotated', { tenant, from: oldRef, to: ref, rewrapped });
      } finally {
        await next.close();
        await old?.close();
      }
      await this.unlockTenant(tenant);
      return this.status(tenant);
    });
  }

  // ---- unlocking ----

  private unlockAll(): Promise<void> {
    return this.serial(async () => {
      const tenants = new Set<string>();
      for (const k of this.engine.listKeys()) {
        const t = tenantOfMembers(k.members);
        if (k.locked && t !== null) tenants.add(t);
      }
      for (const t of tenants) await this.unlockTenant(t);
    });
  }

  /** Offers every locked key of the tenant its DEK, unwrapped by the tenant's KEK (and the rotation's new one). */
  private async unlockTenant(tenant: string): Promise<void> {
    const locked = this.engine.listKeys().filter((k) => k.locked && tenantOfMembers(k.members) === tenant);
    const refs = [this.kekOf(tenant), this.nextKekOf(tenant)].filter((r): r is string => r !== null);
    if (locked.length === 0 || refs.length === 0) {
      if (refs.length === 0 && locked.length > 0) this.failures.set(tenant, 'the tenant has no key-encryption key configured');
      return;
    }
    const keks: KekProvider[] = [];
    const errors: string[] = [];
    for (const ref of refs) {
      try { keks.push(await this.openRaw(ref)); } catch (err) { errors.push(messageOf(err)); }
    }
    try {
      if (keks.length === 0) {
        this.noteFailure(tenant, errors.join('; '));
        return;
      }
      let unlocked = 0;
      for (const key of locked) {
        try {
          const dek = await this.unwrapAny(key.wrapped, keks);
          try { this.engine.unlockKey(key.keyId, dek); unlocked++; } finally { dek.fill(0); }
        } catch (err) {
          errors.push(`key slot ${key.keyId}: ${messageOf(err)}`);
        }
      }
      if (errors.length > 0 && unlocked < locked.length) this.noteFailure(tenant, errors.join('; '));
      else this.failures.delete(tenant);
      if (unlocked > 0) this.log('tenant_unlocked', { tenant, lineages: unlocked });
    } finally {
      for (const k of keks) await k.close();
    }
  }

  private noteFailure(tenant: string, message: string): void {
    if (this.failures.get(tenant) !== message) this.log('tenant_locked', { tenant, error: message });
    this.failures.set(tenant, message);
  }

  /** The DEK from whichever wrapped form a KEK can open (matching fingerprints first). */
  private async unwrapAny(wrapped: Buffer[], keks: KekProvider[]): Promise<Buffer> {
    let last: unknown = new KekUnavailable('no key-encryption key matches this key');
    for (const blob of wrapped) {
      const decoded = decodeWrapped(blob);
      if (decoded === null) continue;
      const ordered = [...keks].sort((a, b) => Number(b.fingerprint === decoded.fingerprint) - Number(a.fingerprint === decoded.fingerprint));
      for (const kek of ordered) {
        try { return await kek.unwrap(decoded.wrapped); } catch (err) { last = err; }
      }
    }
    throw last;
  }

  private async open(tenant: string, ref: string): Promise<KekProvider> {
    try {
      const kek = await this.openRaw(ref);
      this.failures.delete(tenant);
      return kek;
    } catch (err) {
      if (err instanceof KekUnavailable) this.noteFailure(tenant, err.message);
      throw err;
    }
  }

  private openRaw(ref: string): Promise<KekProvider> { return openKek(ref, this.env); }

  private schedule(): void {
    if (this.closed || this.retryMs <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      const anyLocked = this.engine.listKeys().some((k) => k.locked);
      const round = anyLocked ? this.unlockAll() : Promise.resolve();
      void round.catch((err: unknown) => this.log('unlock_round_failed', { error: messageOf(err) })).finally(() => this.schedule());
    }, this.retryMs);
    this.timer.unref();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    // The chain only orders key operations: each one's failure reaches its caller through `run`.
    this.chain = run.catch(() => undefined);
    return run;
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
