import { EntitySchema } from 'typeorm';
import type { Dialect } from '../dialect';

export const API_KEY_STATUSES = ['active', 'suspended', 'revoked'] as const;
export type ApiKeyStatus = (typeof API_KEY_STATUSES)[number];
/** How a key is listed: its stored status, or `expired` for an active key past its expires_at. */
export const LISTED_KEY_STATUSES = [...API_KEY_STATUSES, 'expired'] as const;
export type ListedKeyStatus = (typeof LISTED_KEY_STATUSES)[number];

/**
 * A client's API key. The secret itself is never stored: `key_hash` is its HMAC-SHA256 under
 * API_KEY_SECRET (never selected unless asked for), `key_prefix` the first characters shown to
 * people so they can tell keys apart. Limits left null do not apply.
 */
export class ApiKey {
  id!: string;
  name!: string;
  key_hash!: string;
  key_prefix!: string;
  status!: ApiKeyStatus;
  rpm_limit!: number | null;
  tpm_limit!: number | null;
  max_concurrency!: number | null;
  /** USD, exact decimal string. */
  daily_budget_usd!: string | null;
  monthly_budget_usd!: string | null;
  expires_at!: Date | null;
  notes!: string | null;
  created_at!: Date;
  updated_at!: Date;
  revoked_at!: Date | null;
}

export function apiKeySchema(dialect: Dialect): EntitySchema<ApiKey> {
  const pg = dialect === 'postgres';
  const time = pg ? 'timestamptz' : 'datetime';
  const now = () => (pg ? 'now()' : "strftime('%Y-%m-%d %H:%M:%f', 'now')");
  const money = { type: pg ? 'numeric' : 'decimal', precision: 24, scale: 12, nullable: true } as const;
  return new EntitySchema<ApiKey>({
    name: 'ApiKey',
    tableName: 'api_keys',
    target: ApiKey,
    columns: {
      id: { type: 'varchar', length: 64, primary: true },
      name: { type: 'varchar', length: 200 },
      key_hash: { type: 'varchar', length: 64, select: false },
      key_prefix: { type: 'varchar', length: 16 },
      status: { type: 'varchar', length: 16, default: 'active' },
      rpm_limit: { type: 'integer', nullable: true },
      tpm_limit: { type: 'integer', nullable: true },
      max_concurrency: { type: 'integer', nullable: true },
      daily_budget_usd: money,
      monthly_budget_usd: money,
      expires_at: { type: time, nullable: true },
      notes: { type: 'text', nullable: true },
      created_at: { type: time, default: now },
      updated_at: { type: time, default: now },
      revoked_at: { type: time, nullable: true },
    },
    indices: [{ name: 'IDX_api_keys_key_hash', columns: ['key_hash'], unique: true }],
  });
}
