import { EntitySchema } from 'typeorm';
import type { Dialect } from '../../storage/dialect';
import type { SubscriptionProvider } from '../subscription.types';

/**
 * Every login ever applied to an account name: the fingerprint of its refresh token, never the
 * token (`loginFingerprint`; rows written by earlier versions hold an HMAC under
 * SUBSCRIPTION_ENCRYPTION_KEY, recognised while that key is configured). An import file is read
 * at every start of every process, and refresh tokens are single-use, so a login the file still
 * holds after it was applied is older than what is stored
 * (rotated since, replaced through the admin API) or was deleted on purpose: the file's entry is
 * skipped. Kept by name rather than by account id, so that it outlives a deleted account.
 */
export class SubscriptionAccountImport {
  provider!: SubscriptionProvider;
  name!: string;
  fingerprint!: string;
  imported_at!: Date;
}

/** Per dialect, like `subscription_accounts`; the migrations own the schema. */
export function subscriptionAccountImportSchema(dialect: Dialect): EntitySchema<SubscriptionAccountImport> {
  const pg = dialect === 'postgres';
  return new EntitySchema<SubscriptionAccountImport>({
    name: 'SubscriptionAccountImport',
    tableName: 'subscription_account_imports',
    target: SubscriptionAccountImport,
    columns: {
      provider: { type: 'varchar', length: 16, primary: true },
      name: { type: 'varchar', length: 200, primary: true },
      fingerprint: { type: 'varchar', length: 64, primary: true },
      imported_at: { type: pg ? 'timestamptz' : 'datetime', default: () => (pg ? 'now()' : "strftime('%Y-%m-%d %H:%M:%f', 'now')") },
    },
  });
}
