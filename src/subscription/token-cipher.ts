import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A key that does not fit, or a stored value that this key cannot open. */
export class CipherError extends Error {}

/** Parses SUBSCRIPTION_ENCRYPTION_KEY: 32 bytes written as 64 hex characters or as base64 / base64url. */
export function parseEncryptionKey(text: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (key.length !== 32) throw new CipherError(`the encryption key must be 32 bytes, got ${key.length}`);
  return key;
}

/**
 * AES-256-GCM for account tokens at rest. A stored value is `v1:<key id>:<base64 iv|tag|ciphertext>`;
 * the key id (a hash prefix of the key, not the key) says which key sealed it, so a wrong key is
 * reported as such rather than as corruption. Each value is bound to its row through the
 * additional authenticated data: a ciphertext copied into another account's row does not open.
 */
export class TokenCipher {
  readonly keyId: string;

  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new CipherError('AES-256-GCM needs a 32-byte key');
    this.keyId = createHash('sha256').update(key).digest('hex').slice(0, 8);
  }

  static fromText(text: string): TokenCipher {
    return new TokenCipher(parseEncryptionKey(text));
  }

  seal(plaintext: string, aad: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${VERSION}:${this.keyId}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  open(sealed: string, aad: string): string {
    const parts = sealed.split(':');
    if (parts.length !== 3 || parts[0] !== VERSION) throw new CipherError('not a value sealed by this gateway');
    if (parts[1] !== this.keyId) throw new CipherError(`sealed with another key (key id ${parts[1]}, the configured key is ${this.keyId})`);
    const raw = Buffer.from(parts[2], 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new CipherError('sealed value is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new CipherError('sealed value failed authentication (altered, or moved from another account)');
    }
  }

  /**
   * A keyed fingerprint of a secret: recognises a token seen before (an import file read again)
   * without storing anything from which the token could be recovered or guessed offline.
   */
  fingerprint(secret: string): string {
    return createHmac('sha256', this.key).update(secret, 'utf8').digest('hex');
  }
}
