// Errors of the KEK layer, with stable codes (as src/tenancy/errors.ts does for tenancy): the API maps
// kek_unavailable to 503 (the key may come back: retry later) and invalid_argument to 400. Messages
// name paths, labels and PKCS#11 return values, never key bytes or PINs.

export type KekErrorCode = 'kek_unavailable' | 'kek_wrong_key' | 'invalid_argument';

export class KekError extends Error {
  readonly code: KekErrorCode;
  constructor(code: KekErrorCode, message: string) {
    super(message);
    this.name = 'KekError';
    this.code = code;
  }
}

/** The KEK cannot be used now: file missing or malformed, module or token absent, PIN refused, HSM gone. */
export class KekUnavailable extends KekError {
  constructor(message: string) { super('kek_unavailable', message); this.name = 'KekUnavailable'; }
}

/** RFC 3394's integrity check failed on unwrap: another KEK wrapped this blob, or the blob is damaged. */
export class KekWrongKey extends KekError {
  constructor(message: string) { super('kek_wrong_key', message); this.name = 'KekWrongKey'; }
}

/** The reference itself is wrong (syntax, a PIN written into it, no module): no retry will help. */
export class KekRefInvalid extends KekError {
  constructor(message: string) { super('invalid_argument', `invalid KEK reference: ${message}`); this.name = 'KekRefInvalid'; }
}
