// TLS for NBD_OPT_STARTTLS: X.509 certificates and/or TLS-PSK (psk file lines "identity:hexkey", the
// format of gnutls psktool, qemu and nbdkit, and/or a lookup the caller provides, asked on every
// handshake). The upgrade hands the plain socket to a tls.Server that never listens, so Node's own
// server code enforces client-certificate checks and PSK lookup; it resolves with who the client
// proved to be (a PSK identity, a verified client certificate, or nobody in particular).
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { InvalidArgument } from '../engine/index.js';

/** A PSK the caller's lookup knows: its key, and an owner label passed on in the PeerIdentity. */
export interface PskEntry { key: Buffer; owner: string }

export interface TlsConfig {
  certFile?: string; keyFile?: string; caFile?: string; pskFile?: string; required?: boolean;
  /**
   * Keys beyond the psk file, asked on each handshake (so a key added or removed takes effect for the
   * next connection). The psk file is asked first. Returning null refuses the identity.
   */
  pskLookup?: (identity: string) => PskEntry | null;
}

/** What a client proved about itself during the handshake (secrets never appear here). */
export type PeerIdentity =
  /** No TLS. */
  | { kind: 'plain' }
  /** TLS with no client credential (server certificate only). */
  | { kind: 'anonymous' }
  /** TLS-PSK; `owner` is the lookup's label, null for a key of the psk file. */
  | { kind: 'psk'; identity: string; owner: string | null }
  /** A client certificate the configured CA verified. `uris`: its subjectAltName URI entries. */
  | { kind: 'cert'; subject: Record<string, string>; uris: string[]; fingerprint256: string };

/** A short, secret-free description for logs: "plain", "psk:IDENTITY", "cert:CN=...". */
export function describePeer(peer: PeerIdentity): string {
  switch (peer.kind) {
    case 'plain': case 'anonymous': return peer.kind;
    case 'psk': return `psk:${peer.identity}`;
    case 'cert': return `cert:${Object.entries(peer.subject).map(([k, v]) => `${k}=${v}`).join(',')}`;
  }
}

/** PSK identities and keys loaded from a psk file. */
export function parsePskFile(text: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.lastIndexOf(':');
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) throw new InvalidArgument('psk file: expected lines "identity:hexkey"');
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new InvalidArgument('psk file holds no keys');
  return keys;
}

/** The SAN URI entries of a certificate ("URI:cairn:tenant:acme, DNS:x" → ["cairn:tenant:acme"]). */
export function subjectAltUris(subjectaltname: string | undefined): string[] {
  if (subjectaltname === undefined || subjectaltname === '') return [];
  // Node joins entries with ", " and quotes a value holding one (JSON string syntax).
  const out: string[] = [];
  for (const m of subjectaltname.matchAll(/(?:^|, )URI:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const raw = m[1]!;
    out.push(raw.startsWith('"') ? JSON.parse(raw) as string : raw);
  }
  return out;
}

/** A lookup that throws (say the pool is closing) refuses the identity: the handshake fails, and is logged. */
function lookupSafely(lookup: TlsConfig['pskLookup'], identity: string): PskEntry | null {
  try {
    return lookup?.(identity) ?? null;
  } catch {
    return null; // refused; the client's failed handshake is logged as nbd_handshake_failed
  }
}

// PSK cipher suites (TLS 1.2; Node does not offer PSK with TLS 1.3) ahead of the certificate suites.
export const pskCiphers = [
  'ECDHE-PSK-CHACHA20-POLY1305', 'DHE-PSK-AES256-GCM-SHA384', 'DHE-PSK-AES128-GCM-SHA256',
  'ECDHE-PSK-AES256-CBC-SHA384', 'ECDHE-PSK-AES128-CBC-SHA256', 'PSK-AES256-GCM-SHA384', 'PSK-AES128-GCM-SHA256',
].join(':');

export class TlsUpgrader {
  readonly required: boolean;
  private readonly server: tls.Server;
  private readonly verifiesClients: boolean;
  private readonly pending = new Map<net.Socket, { resolve: (s: Upgraded) => void; reject: (e: Error) => void }>();
  /** The PSK identity each TLS socket's handshake accepted (set by the PSK callback, read once settled). */
  private readonly pskPeers = new WeakMap<tls.TLSSocket, PeerIdentity>();

  constructor(config: TlsConfig, handshakeTimeoutMs: number) {
    this.required = config.required === true;
    const hasCert = config.certFile !== undefined && config.keyFile !== undefined;
    const hasPsk = config.pskFile !== undefined || config.pskLookup !== undefined;
    if (!hasCert && !hasPsk) throw new InvalidArgument('tls needs certFile+keyFile, pskFile or pskLookup');
    const options: tls.TlsOptions = { handshakeTimeout: handshakeTimeoutMs, minVersion: 'TLSv1.2' };
    if (hasCert) {
      options.cert = readFileSync(config.certFile as string);
      options.key = readFileSync(config.keyFile as string);
    }
    this.verifiesClients = config.caFile !== undefined;
    if (config.caFile !== undefined) {
      // A CA file means clients must present a certificate it signed.
      options.ca = readFileSync(config.caFile);
      options.requestCert = true;
      options.rejectUnauthorized = true;
    }
    if (hasPsk) {
      const fileKeys = config.pskFile !== undefined ? parsePskFile(readFileSync(config.pskFile, 'utf8')) : new Map<string, Buffer>();
      const lookup = config.pskLookup;
      options.pskCallback = (socket, identity) => {
        const fileKey = fileKeys.get(identity);
        const entry = fileKey !== undefined ? { key: fileKey, owner: null } : lookupSafely(lookup, identity);
        if (entry === null) return null;
        this.pskPeers.set(socket, { kind: 'psk', identity, owner: entry.owner });
        return entry.key;
      };
      options.ciphers = hasCert ? `${pskCiphers}:${tls.DEFAULT_CIPHERS}` : pskCiphers;
      options.maxVersion = 'TLSv1.2';
    }
    this.server = tls.createServer(options);
    this.server.on('secureConnection', (secure) => this.settle(secure, null));
    this.server.on('tlsClientError', (error, secure) => this.settle(secure, error));
  }

  /** Runs the server side of a TLS handshake on `raw`; resolves with the encrypted socket and its peer. */
  upgrade(raw: net.Socket): Promise<Upgraded> {
    return new Promise((resolve, reject) => {
      this.pending.set(raw, { resolve, reject });
      const onClose = (): void => this.fail(raw, new Error('connection closed during TLS handshake'));
      raw.once('close', onClose);
      this.server.emit('connection', raw);
    });
  }

  private settle(secure: tls.TLSSocket, error: Error | null): void {
    // Node keeps the wrapped plain socket as `_parent`; it is how a handshake finds its caller.
    const raw = (secure as unknown as { _parent: net.Socket | null })._parent;
    if (raw === null) return;
    const waiter = this.pending.get(raw);
    if (!waiter) return;
    this.pending.delete(raw);
    if (error) { secure.destroy(); waiter.reject(error); } else waiter.resolve({ socket: secure, peer: this.peerOf(secure) });
  }

  private peerOf(secure: tls.TLSSocket): PeerIdentity {
    const psk = this.pskPeers.get(secure);
    if (psk !== undefined) return psk;
    // With a CA file, rejectUnauthorized has already refused any certificate it did not sign.
    if (!this.verifiesClients || !secure.authorized) return { kind: 'anonymous' };
    const cert = secure.getPeerCertificate();
    if (cert === null || Object.keys(cert).length === 0) return { kind: 'anonymous' };
    const subject: Record<string, string> = {};
    for (const [k, v] of Object.entries(cert.subject ?? {})) subject[k] = Array.isArray(v) ? v.join('+') : String(v);
    return { kind: 'cert', subject, uris: subjectAltUris(cert.subjectaltname), fingerprint256: cert.fingerprint256 };
  }

  private fail(raw: net.Socket, error: Error): void {
    const waiter = this.pending.get(raw);
    if (!waiter) return;
    this.pending.delete(raw);
    waiter.reject(error);
  }
}

export interface Upgraded { socket: tls.TLSSocket; peer: PeerIdentity }
