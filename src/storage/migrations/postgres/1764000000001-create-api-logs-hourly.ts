import type { MigrationInterface, QueryRunner } from 'typeorm';
import { backfillRollup } from '../../api-log-rollup';

export class CreateApiLogsHourly1764000000001 implements MigrationInterface {
  name = 'CreateApiLogsHourly1764000000001';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_logs_hourly" (
        "dimension" varchar(16) NOT NULL,
        "hour" timestamptz NOT NULL,
        "value" varchar(200) NOT NULL,
        "requests" integer NOT NULL DEFAULT 0,
        "errors" integer NOT NULL DEFAULT 0,
        "cancelled" integer NOT NULL DEFAULT 0,
        "prompt_tokens" bigint NOT NULL DEFAULT 0,
        "completion_tokens" bigint NOT NULL DEFAULT 0,
        "cached_tokens" bigint NOT NULL DEFAULT 0,
        "cache_write_tokens" bigint NOT NULL DEFAULT 0,
        "reasoning_tokens" bigint NOT NULL DEFAULT 0,
        "cost_usd" numeric(24,12) NOT NULL DEFAULT 0,
        "upstream_cost_usd" numeric(24,12) NOT NULL DEFAULT 0,
        "latency_ms_sum" bigint NOT NULL DEFAULT 0,
        "ttft_count" integer NOT NULL DEFAULT 0,
        "ttft_ms_sum" bigint NOT NULL DEFAULT 0,
        "latency_hist" jsonb NOT NULL DEFAULT '{}',
        "ttft_hist" jsonb NOT NULL DEFAULT '{}',
        CONSTRAINT "PK_api_logs_hourly" PRIMARY KEY ("dimension", "hour", "value")
      )`);
    await q.query(`CREATE INDEX "IDX_api_logs_hourly_value_hour" ON "api_logs_hourly" ("dimension", "value", "hour")`);
    // Rows logged before the rollup existed.
    await backfillRollup(q, 'postgres');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_logs_hourly"`);
  }
}
