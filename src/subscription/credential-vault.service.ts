import { Injectable } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import { SubscriptionUnavailableError } from './subscription.errors';
import type { AccountCredentials } from './subscription.types';
import { TokenCipher } from './token-cipher';

/**
 * Seals and opens account credentials with SUBSCRIPTION_ENCRYPTION_KEY. Without the key nothing
 * is stored: `require()` throws, and the admin API and the import say why.
 */
@Injectable()
export class CredentialVault {
  readonly cipher?: TokenCipher;

  constructor(config: AppConfig) {
    const key = config.env.SUBSCRIPTION_ENCRYPTION_KEY;
    this.cipher = key ? TokenCipher.fromText(key) : undefined;
  }

  get configured(): boolean {
    return this.cipher !== undefined;
  }

  require(): TokenCipher {
    if (!this.cipher) {
      throw new SubscriptionUnavailableError(
        'Subscription tokens are stored encrypted and SUBSCRIPTION_ENCRYPTION_KEY is not set; set it (openssl rand -base64 32) and restart',
        'encryption_key_missing',
      );
    }
    return this.cipher;
  }

  seal(acc: { provider: string; id: string }, creds: AccountCredentials): string {
    return this.require().seal(JSON.stringify(creds), aad(acc));
  }

  /** Throws `CipherError` when the value was sealed with another key or altered. */
  open(acc: { provider: string; id: string }, sealed: string): AccountCredentials {
    return JSON.parse(this.require().open(sealed, aad(acc))) as AccountCredentials;
  }

  /**
   * The fingerprint logins were recorded under before `loginFingerprint`: an HMAC under this key.
   * Only recognises rows written while this same key was configured.
   */
  legacyFingerprint(secret: string): string {
    return this.require().fingerprint(secret);
  }
}

/** Binds a sealed value to its account (the cipher's additional authenticated data). */
function aad(acc: { provider: string; id: string }): string {
  return `${acc.provider}:${acc.id}`;
}
