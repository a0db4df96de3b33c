// A KEK held in a file (`file:/path`): 32 raw bytes, or 64 hex characters and an optional newline, read
// at each open. Wrapping is RFC 3394 AES key wrap with the default IV, done by OpenSSL through Node's
// `id-aes256-wrap` cipher, so it gives the same bytes as an HSM's CKM_AES_KEY_WRAP with the same key.
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';
import { assert } from '../engine/index.js';
import { FINGERPRINT_HEX_CHARS, KEK_BYTES, KEK_FILE_BYTES_MAX, KEK_FILE_HEX_CHARS } from './constants.js';
import { KekUnavailable, KekWrongKey } from './errors.js';
import { readBounded } from './read-bounded.js';
import { checkDek, checkWrapped } from './checks.js';
import type { KekProvider } from './provider.js';

/** RFC 3394 §2.2.3.1: the default initial value. */
const RFC3394_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
const FINGERPRINT_CONTEXT = 'cairn kek fingerprint v1';

export async function openFileKek(ref: string, path: string): Promise<KekProvider> {
  const content = await readBounded(path, KEK_FILE_BYTES_MAX, 'KEK file');
  try {
    return new FileKek(ref, parseKeyFile(content, path));
  } finally {
    content.fill(0);
  }
}

function parseKeyFile(content: Buffer, path: string): Buffer {
  if (content.length === KEK_BYTES) return Buffer.from(content);
  const text = content.toString('latin1');
  const hex = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (hex.length === KEK_FILE_HEX_CHARS && /^[0-9A-Fa-f]+$/.test(hex)) return Buffer.from(hex, 'hex');
  const size = content.length > KEK_FILE_BYTES_MAX ? `more than ${KEK_FILE_BYTES_MAX} bytes` : `${content.length} bytes`;
  throw new KekUnavailable(`KEK file ${path}: ${size}; a KEK file holds exactly ${KEK_BYTES} raw bytes, ` +
    `or ${KEK_FILE_HEX_CHARS} hex characters optionally followed by a newline`);
}

class FileKek implements KekProvider {
  readonly fingerprint: string;
  private closed = false;

  constructor(readonly ref: string, private readonly key: Buffer) {
    assert(key.length === KEK_BYTES, 'a file KEK is an AES-256 key');
    this.fingerprint = createHmac('sha256', key).update(FINGERPRINT_CONTEXT).digest('hex').slice(0, FINGERPRINT_HEX_CHARS);
  }

  async wrap(dek: Buffer): Promise<Buffer> {
    assert(!this.closed, 'wrap on a closed KEK provider');
    checkDek(dek);
    const cipher = createCipheriv('id-aes256-wrap', this.key, RFC3394_IV);
    const wrapped = Buffer.concat([cipher.update(dek), cipher.final()]);
    assert(wrapped.length === dek.length + 8, 'RFC 3394 adds one 64-bit block');
    return wrapped;
  }

  async unwrap(wrapped: Buffer): Promise<Buffer> {
    assert(!this.closed, 'unwrap on a closed KEK provider');
    checkWrapped(wrapped);
    const decipher = createDecipheriv('id-aes256-wrap', this.key, RFC3394_IV);
    let dek: Buffer;
    try {
      dek = Buffer.concat([decipher.update(wrapped), decipher.final()]);
    } catch {
      // OpenSSL reports only that the integrity check value did not match (RFC 3394 §2.2.3).
      throw new KekWrongKey(`the wrapped key does not unwrap with KEK ${this.fingerprint}: another KEK wrapped it, or it is damaged`);
    }
    assert(dek.length === wrapped.length - 8, 'RFC 3394 removes one 64-bit block');
    return dek;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.key.fill(0);
  }
}
