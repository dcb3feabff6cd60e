import { randomBytes } from 'node:crypto';
import { CipherError, parseEncryptionKey, TokenCipher } from './token-cipher';

describe('TokenCipher', () => {
  const hexKey = randomBytes(32).toString('hex');
  const cipher = TokenCipher.fromText(hexKey);

  it('round-trips a value, and the sealed text does not contain it', () => {
    const secret = 'sk-ant-ort01-very-secret-refresh-token';
    const sealed = cipher.seal(secret, 'acc_1');
    expect(sealed).not.toContain(secret);
    expect(sealed).not.toContain(Buffer.from(secret).toString('base64'));
    expect(sealed.startsWith(`v1:${cipher.keyId}:`)).toBe(true);
    expect(cipher.open(sealed, 'acc_1')).toBe(secret);
  });

  it('uses a fresh IV each time', () => {
    expect(cipher.seal('same', 'a')).not.toBe(cipher.seal('same', 'a'));
  });

  it('refuses a value moved to another row (additional authenticated data)', () => {
    const sealed = cipher.seal('token', 'acc_1');
    expect(() => cipher.open(sealed, 'acc_2')).toThrow(CipherError);
  });

  it('refuses an altered value', () => {
    const sealed = cipher.seal('token-token-token', 'acc_1');
    const [v, kid, body] = sealed.split(':');
    const raw = Buffer.from(body, 'base64');
    raw[raw.length - 1] ^= 1;
    expect(() => cipher.open(`${v}:${kid}:${raw.toString('base64')}`, 'acc_1')).toThrow(/failed authentication/);
  });

  it('names a wrong key as such', () => {
    const other = new TokenCipher(randomBytes(32));
    expect(() => other.open(cipher.seal('x', 'a'), 'a')).toThrow(/sealed with another key/);
  });

  it('accepts hex, base64 and base64url keys of 32 bytes, and nothing else', () => {
    const raw = randomBytes(32);
    expect(parseEncryptionKey(raw.toString('hex')).equals(raw)).toBe(true);
    expect(parseEncryptionKey(raw.toString('base64')).equals(raw)).toBe(true);
    expect(parseEncryptionKey(raw.toString('base64url')).equals(raw)).toBe(true);
    expect(() => parseEncryptionKey(randomBytes(16).toString('base64'))).toThrow(/32 bytes/);
  });

  it('fingerprints deterministically per key, without revealing the secret', () => {
    const f = cipher.fingerprint('refresh-1');
    expect(f).toMatch(/^[0-9a-f]{64}$/);
    expect(cipher.fingerprint('refresh-1')).toBe(f);
    expect(cipher.fingerprint('refresh-2')).not.toBe(f);
    expect(new TokenCipher(randomBytes(32)).fingerprint('refresh-1')).not.toBe(f);
  });
});
