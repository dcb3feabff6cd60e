import { EntitySchema } from 'typeorm';
import type { Dialect } from '../../storage/dialect';
import type { AccountStatus } from '../account-state';
import type { SubscriptionProvider } from '../subscription.types';

/**
 * One OAuth subscription login. The tokens live in `credentials`, sealed with AES-256-GCM
 * (SUBSCRIPTION_ENCRYPTION_KEY) and not selected unless asked for. The rest is the state every
 * replica shares: status, cooldown, failures, the last error, and a short lease that makes one
 * process at a time refresh the tokens (refresh tokens are single-use).
 */
export class SubscriptionAccount {
  id!: string;
  provider!: SubscriptionProvider;
  name!: string;
  status!: AccountStatus;
  /** Sealed JSON of `AccountCredentials`. */
  credentials!: string;
  /** Bumped whenever the tokens change, so other processes know to re-read them. */
  token_version!: number;
  /** Fingerprint (`loginFingerprint`) of the refresh token last imported (every one applied is in `subscription_account_imports`). */
  import_fingerprint!: string | null;
  /** Codex: the ChatGPT account id (`chatgpt-account-id`). */
  external_account_id!: string | null;
  email!: string | null;
  plan_type!: string | null;
  expires_at!: Date | null;
  last_refresh_at!: Date | null;
  cooldown_until!: Date | null;
  failures!: number;
  last_error!: string | null;
  last_error_at!: Date | null;
  refresh_lock_owner!: string | null;
  refresh_lock_until!: Date | null;
  created_at!: Date;
  updated_at!: Date;
}

/** Per dialect, like `api_logs`: `timestamptz` on PostgreSQL, `datetime` on SQLite; the migrations own the schema. */
export function subscriptionAccountSchema(dialect: Dialect): EntitySchema<SubscriptionAccount> {
  const pg = dialect === 'postgres';
  const time = pg ? 'timestamptz' : 'datetime';
  const now = () => (pg ? 'now()' : "strftime('%Y-%m-%d %H:%M:%f', 'now')");
  return new EntitySchema<SubscriptionAccount>({
    name: 'SubscriptionAccount',
    tableName: 'subscription_accounts',
    target: SubscriptionAccount,
    columns: {
      id: { type: 'varchar', length: 64, primary: true },
      provider: { type: 'varchar', length: 16 },
      name: { type: 'varchar', length: 200 },
      status: { type: 'varchar', length: 16, default: 'active' },
      credentials: { type: 'text', select: false },
      token_version: { type: 'integer', default: 1 },
      import_fingerprint: { type: 'varchar', length: 64, nullable: true },
      external_account_id: { type: 'varchar', length: 200, nullable: true },
      email: { type: 'varchar', length: 320, nullable: true },
      plan_type: { type: 'varchar', length: 64, nullable: true },
      expires_at: { type: time, nullable: true },
      last_refresh_at: { type: time, nullable: true },
      cooldown_until: { type: time, nullable: true },
      failures: { type: 'integer', default: 0 },
      last_error: { type: 'text', nullable: true },
      last_error_at: { type: time, nullable: true },
      refresh_lock_owner: { type: 'varchar', length: 64, nullable: true },
      refresh_lock_until: { type: time, nullable: true },
      created_at: { type: time, default: now },
      updated_at: { type: time, default: now },
    },
    indices: [
      // Composite, so owned by the migrations alone (see api_logs for why).
      { name: 'UQ_subscription_accounts_provider_name', columns: ['provider', 'name'], unique: true, synchronize: false },
    ],
  });
}
