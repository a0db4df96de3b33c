// Tenants, API tokens and NBD keys as engine settings (one small catalog record each, committed like
// everything else in the pool). Tokens are stored only as a salted SHA-256 of their secret: the secret
// is 256 random bits, so a slow hash adds nothing, and verification compares in constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Engine, SettingChange } from '../engine/index.js';
import { DEFAULT_TENANT, TENANT_NAME_BYTES_MAX, splitQualified, tenantNameProblem } from './names.js';
import { TenancyError } from './errors.js';

export type Role = 'admin' | 'tenant' | 'reader';
export const ROLES: readonly Role[] = ['admin', 'tenant', 'reader'];

export interface TenantInfo { name: string; createdMs: number; volumes: number }

/** Who a request acts as. `tenant` is null for an admin (every tenant). */
export interface Principal { tokenId: string; tokenName: string; role: Role; tenant: string | null }

export interface TokenInfo { id: string; name: string; role: Role; tenant: string | null; createdMs: number; expiresMs: number | null }

export interface NbdKeyInfo { identity: string; tenant: string; createdMs: number }

/** A host NQN a tenant's NVMe/TCP subsystem admits (src/nvmf/host-access.ts validates and asks). */
export interface NvmeHostInfo { tenant: string; nqn: string; createdMs: number }

const TENANT_PREFIX = 'tenant/';
const TOKEN_PREFIX = 'token/';
const NBD_KEY_PREFIX = 'nbdkey/';
const TOKEN_RE = /^cairn_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const TOKEN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;
const NBD_KEY_BYTES = 32;
// An NVMe host record is keyed by a hash of (tenant, NQN): an NQN (up to 223 bytes) does not fit in a
// setting key. Its value "TENANT\nCREATED_MS\nNQN" may pass what one setting holds (key and value at
// most 248 bytes), so the rest goes to a second setting whose key adds NVME_HOST_MORE_SUFFIX.
const NVME_HOST_PREFIX = 'nvmehost/';
const NVME_HOST_HASH_CHARS = 24;
const NVME_HOST_MORE_SUFFIX = '+';
const SETTING_BYTES_MAX = 248;

interface TenantRecord { c: number }
interface TokenRecord { n: string; r: Role; t: string | null; s: string; h: string; c: number; e: number }
interface NbdKeyRecord { t: string; k: string; c: number }

function hashSecret(salt: Buffer, secret: string): Buffer {
  return createHash('sha256').update(salt).update(secret).digest();
}

function json<T>(value: Buffer | null): T | null {
  return value === null ? null : JSON.parse(value.toString('utf8')) as T;
}

function put(key: string, value: object | null): SettingChange {
  return { key, value: value === null ? null : Buffer.from(JSON.stringify(value)) };
}

/** An NVMe host record "TENANT\nCREATED_MS\nNQN" from its one or two settings, or null if malformed. */
function nvmeHostOf(head: Buffer, tail: Buffer): NvmeHostInfo | null {
  const text = Buffer.concat([head, tail]).toString('utf8');
  const first = text.indexOf('\n');
  const second = text.indexOf('\n', first + 1);
  if (first < 0 || second < 0) return null;
  return { tenant: text.slice(0, first), createdMs: Number(text.slice(first + 1, second)), nqn: text.slice(second + 1) };
}

export class TenantStore {
  constructor(private readonly engine: Engine, private readonly nowMs: () => number = Date.now) {}

  // ---- tenants ----

  /** Every tenant, the default one first, with how many live volumes it owns. */
  listTenants(): TenantInfo[] {
    const counts = new Map<string, number>();
    for (const v of this.engine.listVolumes()) {
      const { tenant } = splitQualified(v.name);
      counts.set(tenant, (counts.get(tenant) ?? 0) + 1);
    }
    const out: TenantInfo[] = [{ name: DEFAULT_TENANT, createdMs: 0, volumes: counts.get(DEFAULT_TENANT) ?? 0 }];
    for (const s of this.engine.listSettings(TENANT_PREFIX)) {
      const name = s.key.slice(TENANT_PREFIX.length);
      out.push({ name, createdMs: json<TenantRecord>(s.value)?.c ?? 0, volumes: counts.get(name) ?? 0 });
    }
    return out;
  }

  tenantExists(name: string): boolean {
    return name === DEFAULT_TENANT || this.engine.getSetting(TENANT_PREFIX + name) !== null;
  }

  getTenant(name: string): TenantInfo {
    const t = this.listTenants().find((x) => x.name === name);
    if (t === undefined) throw new TenancyError('tenant_not_found', `tenant not found: ${name}`);
    return t;
  }

  async createTenant(name: string): Promise<TenantInfo> {
    const problem = tenantNameProblem(name);
    if (problem !== null) throw new TenancyError('invalid_argument', `invalid tenant name ${JSON.stringify(name)}: ${problem}`);
    if (this.tenantExists(name)) throw new TenancyError('name_taken', `tenant already exists: ${name}`);
    await this.engine.putSettings([put(TENANT_PREFIX + name, { c: this.nowMs() } satisfies TenantRecord)]);
    return this.getTenant(name);
  }

  /**
   * Removes a tenant with its tokens, NBD keys and NVMe host NQNs. Refused while it owns volumes (the caller deletes
   * them first for --force); the default tenant cannot be removed.
   */
  async deleteTenant(name: string): Promise<void> {
    if (name === DEFAULT_TENANT) throw new TenancyError('invalid_argument', 'the default tenant cannot be deleted');
    const t = this.getTenant(name);
    if (t.volumes > 0) throw new TenancyError('tenant_not_empty', `tenant ${name} owns ${t.volumes} volume(s): delete them first or use --force`);
    const changes: SettingChange[] = [{ key: TENANT_PREFIX + name, value: null }];
    for (const tok of this.listTokens()) if (tok.tenant === name) changes.push({ key: TOKEN_PREFIX + tok.id, value: null });
    for (const k of this.listNbdKeys(name)) changes.push({ key: NBD_KEY_PREFIX + k.identity, value: null });
    for (const h of this.listNvmeHosts(name)) changes.push(...this.nvmeHostRemoval(h.tenant, h.nqn));
    await this.engine.putSettings(changes);
  }

  // ---- tokens ----

  /** Creates a token; the secret is in the returned `token` only (never stored, never shown again). */
  async createToken(opts: { role: Role; tenant?: string | null; name?: string; expiresMs?: number | null }): Promise<{ token: string; info: TokenInfo }> {
    if (!ROLES.includes(opts.role)) throw new TenancyError('invalid_argument', `role must be one of ${ROLES.join(', ')}, got ${String(opts.role)}`);
    const tenant = opts.role === 'admin' ? null : (opts.tenant ?? null);
    if (opts.role === 'admin' && opts.tenant != null) throw new TenancyError('invalid_argument', 'an admin token is for every tenant: give no tenant');
    if (opts.role !== 'admin' && tenant === null) throw new TenancyError('invalid_argument', `a ${opts.role} token needs a tenant`);
    if (tenant !== null && !this.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
    const id = randomBytes(6).toString('hex');
    const name = opts.name ?? `token-${id}`;
    if (!TOKEN_NAME_RE.test(name)) throw new TenancyError('invalid_argument', `invalid token name ${JSON.stringify(name)}: 1-32 letters, digits, . _ - (starting with a letter or digit)`);
    if (this.listTokens().some((t) => t.name === name)) throw new TenancyError('name_taken', `a token named ${name} exists`);
    const expiresMs = opts.expiresMs ?? null;
    if (expiresMs !== null && !(Number.isSafeInteger(expiresMs) && expiresMs > this.nowMs())) throw new TenancyError('invalid_argument', 'a token must expire in the future');
    const secret = randomBytes(32).toString('base64url');
    const salt = randomBytes(16);
    const record: TokenRecord = { n: name, r: opts.role, t: tenant, s: salt.toString('base64url'), h: hashSecret(salt, secret).toString('base64url'), c: this.nowMs(), e: expiresMs ?? 0 };
    await this.engine.putSettings([put(TOKEN_PREFIX + id, record)]);
    return { token: `cairn_${id}_${secret}`, info: this.tokenInfo(id, record) };
  }

  /** The principal a presented token stands for, or null (unknown, revoked, expired or malformed). */
  verifyToken(presented: string): Principal | null {
    const m = TOKEN_RE.exec(presented);
    if (m === null) return null;
    const [, id, secret] = m as unknown as [string, string, string];
    const record = json<TokenRecord>(this.engine.getSetting(TOKEN_PREFIX + id));
    if (record === null) return null;
    const want = Buffer.from(record.h, 'base64url');
    const got = hashSecret(Buffer.from(record.s, 'base64url'), secret);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
    if (record.e !== 0 && record.e <= this.nowMs()) return null;
    // A tenant token outlives nothing: its tenant deleted, it is gone too (deleteTenant removes it).
    return { tokenId: id, tokenName: record.n, role: record.r, tenant: record.t };
  }

  listTokens(): TokenInfo[] {
    return this.engine.listSettings(TOKEN_PREFIX).map((s) => this.tokenInfo(s.key.slice(TOKEN_PREFIX.length), json<TokenRecord>(s.value)!));
  }

  /** Revokes by id or name; takes effect on the next request (verification reads the catalog). */
  async revokeToken(idOrName: string): Promise<TokenInfo> {
    const tok = this.listTokens().find((t) => t.id === idOrName || t.name === idOrName);
    if (tok === undefined) throw new TenancyError('token_not_found', `token not found: ${idOrName}`);
    await this.engine.putSettings([{ key: TOKEN_PREFIX + tok.id, value: null }]);
    return tok;
  }

  private tokenInfo(id: string, r: TokenRecord): TokenInfo {
    return { id, name: r.n, role: r.r, tenant: r.t, createdMs: r.c, expiresMs: r.e === 0 ? null : r.e };
  }

  // ---- NBD keys (TLS-PSK) ----

  /** A new PSK for the tenant: identity and hex key, as psktool/qemu/nbdkit psk files hold them. */
  async createNbdKey(tenant: string): Promise<{ identity: string; key: string; info: NbdKeyInfo }> {
    if (!this.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
    const identity = `${tenant}-${randomBytes(4).toString('hex')}`;
    const key = randomBytes(NBD_KEY_BYTES).toString('hex');
    const record: NbdKeyRecord = { t: tenant, k: key, c: this.nowMs() };
    await this.engine.putSettings([put(NBD_KEY_PREFIX + identity, record)]);
    return { identity, key, info: { identity, tenant, createdMs: record.c } };
  }

  listNbdKeys(tenant?: string): NbdKeyInfo[] {
    const out: NbdKeyInfo[] = [];
    for (const s of this.engine.listSettings(NBD_KEY_PREFIX)) {
      const r = json<NbdKeyRecord>(s.value)!;
      if (tenant === undefined || r.t === tenant) out.push({ identity: s.key.slice(NBD_KEY_PREFIX.length), tenant: r.t, createdMs: r.c });
    }
    return out;
  }

  async deleteNbdKey(identity: string): Promise<void> {
    if (this.engine.getSetting(NBD_KEY_PREFIX + identity) === null) throw new TenancyError('nbd_key_not_found', `NBD key not found: ${identity}`);
    await this.engine.putSettings([{ key: NBD_KEY_PREFIX + identity, value: null }]);
  }

  /** The tenant and key of a TLS-PSK identity, or null: what the NBD server's PSK callback asks. */
  pskLookup(identity: string): { tenant: string; key: Buffer } | null {
    if (identity.length === 0 || identity.length > TENANT_NAME_BYTES_MAX + 9 || !/^[\x21-\x7e]+$/.test(identity)) return null;
    const r = json<NbdKeyRecord>(this.engine.getSetting(NBD_KEY_PREFIX + identity));
    return r === null ? null : { tenant: r.t, key: Buffer.from(r.k, 'hex') };
  }

  // ---- NVMe/TCP host allow-list ----

  /** The host NQNs a tenant admits (every tenant's without `tenant`), by tenant then NQN. */
  listNvmeHosts(tenant?: string): NvmeHostInfo[] {
    const parts = new Map<string, Buffer[]>();
    for (const s of this.engine.listSettings(NVME_HOST_PREFIX)) {
      const more = s.key.endsWith(NVME_HOST_MORE_SUFFIX);
      const id = more ? s.key.slice(0, -NVME_HOST_MORE_SUFFIX.length) : s.key;
      const entry = parts.get(id) ?? [Buffer.alloc(0), Buffer.alloc(0)];
      entry[more ? 1 : 0] = s.value;
      parts.set(id, entry);
    }
    const out: NvmeHostInfo[] = [];
    for (const [head, tail] of parts.values()) {
      const info = nvmeHostOf(head!, tail!);
      if (info !== null && (tenant === undefined || info.tenant === tenant)) out.push(info);
    }
    return out.sort((a, b) => a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : a.nqn < b.nqn ? -1 : a.nqn > b.nqn ? 1 : 0);
  }

  /** Whether the tenant admits `nqn`: one or two lookups, the record compared in full (not only its hash). */
  hasNvmeHost(tenant: string, nqn: string): boolean {
    const key = this.nvmeHostKey(tenant, nqn);
    const head = this.engine.getSetting(key);
    if (head === null) return false;
    const info = nvmeHostOf(head, this.engine.getSetting(key + NVME_HOST_MORE_SUFFIX) ?? Buffer.alloc(0));
    return info !== null && info.tenant === tenant && info.nqn === nqn;
  }

  /** Admits `nqn` to the tenant's subsystem (the caller validated it: src/nvmf/host-access.ts). */
  async addNvmeHost(tenant: string, nqn: string): Promise<NvmeHostInfo> {
    if (!this.tenantExists(tenant)) throw new TenancyError('tenant_not_found', `tenant not found: ${tenant}`);
    if (this.hasNvmeHost(tenant, nqn)) throw new TenancyError('name_taken', `host ${nqn} is already on tenant ${tenant}'s NVMe host list`);
    const createdMs = this.nowMs();
    const key = this.nvmeHostKey(tenant, nqn);
    const value = Buffer.from(`${tenant}\n${createdMs}\n${nqn}`, 'utf8');
    const headBytes = SETTING_BYTES_MAX - key.length;
    const changes: SettingChange[] = [{ key, value: value.subarray(0, headBytes) }];
    if (value.length > headBytes) {
      const moreKey = key + NVME_HOST_MORE_SUFFIX;
      if (value.length - headBytes > SETTING_BYTES_MAX - moreKey.length) throw new TenancyError('invalid_argument', `host NQN too long: ${nqn.length} bytes`);
      changes.push({ key: moreKey, value: value.subarray(headBytes) });
    }
    await this.engine.putSettings(changes);
    return { tenant, nqn, createdMs };
  }

  async removeNvmeHost(tenant: string, nqn: string): Promise<void> {
    if (!this.hasNvmeHost(tenant, nqn)) throw new TenancyError('nvme_host_not_found', `host ${nqn} is not on tenant ${tenant}'s NVMe host list`);
    await this.engine.putSettings(this.nvmeHostRemoval(tenant, nqn));
  }

  private nvmeHostKey(tenant: string, nqn: string): string {
    const hash = createHash('sha256').update(tenant).update('\n').update(nqn).digest('hex');
    return NVME_HOST_PREFIX + hash.slice(0, NVME_HOST_HASH_CHARS);
  }

  private nvmeHostRemoval(tenant: string, nqn: string): SettingChange[] {
    const key = this.nvmeHostKey(tenant, nqn);
    const changes: SettingChange[] = [{ key, value: null }];
    if (this.engine.getSetting(key + NVME_HOST_MORE_SUFFIX) !== null) changes.push({ key: key + NVME_HOST_MORE_SUFFIX, value: null });
    return changes;
  }
}
