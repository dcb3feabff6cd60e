import { EntitySchema } from 'typeorm';
import type { Dialect } from '../dialect';

export const ROLLUP_DIMENSIONS = ['model', 'provider', 'key'] as const;
export type StatsDimension = (typeof ROLLUP_DIMENSIONS)[number];
/** `model` etc.: a row per UTC hour; `model@day` etc.: a row per UTC day (`hour` is its midnight). */
export type RollupDimension = StatsDimension | `${StatsDimension}@day`;

/**
 * The rollup of `api_logs`: per UTC hour, and again per UTC day, one row for each model, each
 * provider and each API key seen in it (`dimension` says which and how long; `value` is '' for
 * no provider / anonymous), kept up to date by the request-log writer in the same transaction as
 * the rows it sums. Keyed by one dimension at a time, its size grows with the number of models +
 * providers + keys, not their product. Statistics read whole days from the daily rows, whole
 * hours from the hourly ones and only partial hours from `api_logs`; percentiles come from the
 * latency and time-to-first-token histograms (see latency-histogram.ts).
 */
export class ApiLogHourly {
  dimension!: RollupDimension;
  hour!: Date;
  value!: string;
  requests!: number;
  /** Status >= 400, except 499 (the client left). */
  errors!: number;
  /** Status 499. */
  cancelled!: number;
  prompt_tokens!: string | number;
  completion_tokens!: string | number;
  cached_tokens!: string | number;
  cache_write_tokens!: string | number;
  reasoning_tokens!: string | number;
  cost_usd!: string;
  upstream_cost_usd!: string;
  latency_ms_sum!: string | number;
  ttft_count!: number;
  ttft_ms_sum!: string | number;
  latency_hist!: Record<string, number>;
  ttft_hist!: Record<string, number>;
}

export function apiLogHourlySchema(dialect: Dialect): EntitySchema<ApiLogHourly> {
  const pg = dialect === 'postgres';
  const big = { type: pg ? 'bigint' : 'integer', default: 0 } as const;
  const money = { type: pg ? 'numeric' : 'decimal', precision: 24, scale: 12, default: 0 } as const;
  const hist = pg ? ({ type: 'jsonb', default: () => "'{}'" } as const) : ({ type: 'simple-json', default: () => "'{}'" } as const);
  return new EntitySchema<ApiLogHourly>({
    name: 'ApiLogHourly',
    tableName: 'api_logs_hourly',
    target: ApiLogHourly,
    columns: {
      dimension: { type: 'varchar', length: 16, primary: true },
      hour: { type: pg ? 'timestamptz' : 'datetime', primary: true },
      value: { type: 'varchar', length: 200, primary: true },
      requests: { type: 'integer', default: 0 },
      errors: { type: 'integer', default: 0 },
      cancelled: { type: 'integer', default: 0 },
      prompt_tokens: big,
      completion_tokens: big,
      cached_tokens: big,
      cache_write_tokens: big,
      reasoning_tokens: big,
      cost_usd: money,
      upstream_cost_usd: money,
      latency_ms_sum: big,
      ttft_count: { type: 'integer', default: 0 },
      ttft_ms_sum: big,
      latency_hist: hist,
      ttft_hist: hist,
    },
    indices: [{ name: 'IDX_api_logs_hourly_value_hour', columns: ['dimension', 'value', 'hour'], synchronize: false }],
  });
}
