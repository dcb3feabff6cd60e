import { EntitySchema } from 'typeorm';
import type { Dialect } from '../dialect';

/** One row per request served: what was asked, who answered, how fast, how many tokens, what it cost. */
export class ApiLog {
  id!: string;
  created_at!: Date;
  model!: string;
  provider!: string | null;
  endpoint!: string | null;
  stream!: boolean;
  status_code!: number;
  error!: string | null;
  error_code!: string | null;
  finish_reason!: string | null;
  ttft_ms!: number | null;
  latency_ms!: number;
  prompt_tokens!: number;
  completion_tokens!: number;
  total_tokens!: number;
  cached_tokens!: number;
  cache_write_tokens!: number;
  reasoning_tokens!: number;
  /** The gateway estimated the tokens (no usage from upstream, or the client left mid-stream). */
  usage_estimated!: boolean;
  /** USD, exact decimal string (PostgreSQL numeric). */
  cost_usd!: string;
  upstream_cost_usd!: string | null;
  api_key_id!: string | null;
  user_id!: string | null;
  /** Routing path (every attempt), upstream ids, client request id. */
  metadata!: Record<string, unknown> | null;
  /** Only with DB_STORE_FULL_CONTENT=true. */
  request_content!: unknown;
  response_content!: unknown;
}

/**
 * The mapping is built per dialect because PostgreSQL gets `timestamptz`, `jsonb` and exact
 * `numeric`, while SQLite has none of those. Both match the migrations, which own the schema.
 */
export function apiLogSchema(dialect: Dialect): EntitySchema<ApiLog> {
  const pg = dialect === 'postgres';
  const json = pg ? 'jsonb' : 'simple-json';
  const money = { type: pg ? 'numeric' : 'decimal', precision: 24, scale: 12 } as const;
  return new EntitySchema<ApiLog>({
    name: 'ApiLog',
    tableName: 'api_logs',
    target: ApiLog,
    columns: {
      id: { type: 'varchar', length: 64, primary: true },
      created_at: { type: pg ? 'timestamptz' : 'datetime', default: () => (pg ? 'now()' : "strftime('%Y-%m-%d %H:%M:%f', 'now')") },
      model: { type: 'varchar', length: 200 },
      provider: { type: 'varchar', length: 100, nullable: true },
      endpoint: { type: 'varchar', length: 200, nullable: true },
      stream: { type: 'boolean', default: false },
      status_code: { type: 'integer' },
      error: { type: 'text', nullable: true },
      error_code: { type: 'varchar', length: 100, nullable: true },
      finish_reason: { type: 'varchar', length: 32, nullable: true },
      ttft_ms: { type: 'integer', nullable: true },
      latency_ms: { type: 'integer' },
      prompt_tokens: { type: 'integer', default: 0 },
      completion_tokens: { type: 'integer', default: 0 },
      total_tokens: { type: 'integer', default: 0 },
      cached_tokens: { type: 'integer', default: 0 },
      cache_write_tokens: { type: 'integer', default: 0 },
      reasoning_tokens: { type: 'integer', default: 0 },
      usage_estimated: { type: 'boolean', default: false },
      cost_usd: { ...money, default: 0 },
      upstream_cost_usd: { ...money, nullable: true },
      api_key_id: { type: 'varchar', length: 64, nullable: true },
      user_id: { type: 'varchar', length: 256, nullable: true },
      metadata: { type: json, nullable: true },
      request_content: { type: json, nullable: true },
      response_content: { type: json, nullable: true },
    },
    indices: [
      { name: 'IDX_api_logs_created_at', columns: ['created_at'] },
      // Composite indexes are owned by the migrations alone: TypeORM reads PostgreSQL's index
      // columns back in table order and would otherwise rebuild them on every schema diff.
      { name: 'IDX_api_logs_model_created_at', columns: ['model', 'created_at'], synchronize: false },
      { name: 'IDX_api_logs_api_key_created_at', columns: ['api_key_id', 'created_at'], synchronize: false },
    ],
  });
}
