// TLS for NBD_OPT_STARTTLS: X.509 certificates and/or TLS-PSK (psk file lines "identity:hexkey", the
// format of gnutls psktool, qemu and nbdkit). The upgrade hands the plain socket to a tls.Server that
// never listens, so Node's own server code enforces client-certificate checks and PSK lookup.
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { InvalidArgument } from '../engine/index.js';

export interface TlsConfig {
  certFile?: string; keyFile?: string; caFile?: string; pskFile?: string; required?: boolean;
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

// PSK cipher suites (TLS 1.2; Node does not offer PSK with TLS 1.3) ahead of the certificate suites.
const pskCiphers = [
  'ECDHE-PSK-CHACHA20-POLY1305', 'DHE-PSK-AES256-GCM-SHA384', 'DHE-PSK-AES128-GCM-SHA256',
  'ECDHE-PSK-AES256-CBC-SHA384', 'ECDHE-PSK-AES128-CBC-SHA256', 'PSK-AES256-GCM-SHA384', 'PSK-AES128-GCM-SHA256',
].join(':');

export class TlsUpgrader {
  readonly required: boolean;
  private readonly server: tls.Server;
  private readonly pending = new Map<net.Socket, { resolve: (s: tls.TLSSocket) => void; reject: (e: Error) => void }>();

  constructor(config: TlsConfig, handshakeTimeoutMs: number) {
    this.required = config.required === true;
    const hasCert = config.certFile !== undefined && config.keyFile !== undefined;
    if (!hasCert && config.pskFile === undefined) throw new InvalidArgument('tls needs certFile+keyFile or pskFile');
    const options: tls.TlsOptions = { handshakeTimeout: handshakeTimeoutMs, minVersion: 'TLSv1.2' };
    if (hasCert) {
      options.cert = readFileSync(config.certFile as string);
      options.key = readFileSync(config.keyFile as string);
    }
    if (config.caFile !== undefined) {
      // A CA file means clients must present a certificate it signed.
      options.ca = readFileSync(config.caFile);
      options.requestCert = true;
      options.rejectUnauthorized = true;
    }
    if (config.pskFile !== undefined) {
      const keys = parsePskFile(readFileSync(config.pskFile, 'utf8'));
      options.pskCallback = (_socket, identity) => keys.get(identity) ?? null;
      options.ciphers = hasCert ? `${pskCiphers}:${tls.DEFAULT_CIPHERS}` : pskCiphers;
      options.maxVersion = 'TLSv1.2';
    }
    this.server = tls.createServer(options);
    this.server.on('secureConnection', (secure) => this.settle(secure, null));
    this.server.on('tlsClientError', (error, secure) => this.settle(secure, error));
  }

  /** Runs the server side of a TLS handshake on `raw`; resolves with the encrypted socket. */
  upgrade(raw: net.Socket): Promise<tls.TLSSocket> {
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
    if (error) { secure.destroy(); waiter.reject(error); } else waiter.resolve(secure);
  }

  private fail(raw: net.Socket, error: Error): void {
    const waiter = this.pending.get(raw);
    if (!waiter) return;
    this.pending.delete(raw);
    waiter.reject(error);
  }
}
