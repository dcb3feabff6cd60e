import type { MigrationInterface, QueryRunner } from 'typeorm';
import { backfillRollup } from '../../api-log-rollup';

export class CreateApiLogsHourlySqlite1764000000001 implements MigrationInterface {
  name = 'CreateApiLogsHourlySqlite1764000000001';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_logs_hourly" (
        "dimension" varchar(16) NOT NULL,
        "hour" datetime NOT NULL,
        "value" varchar(200) NOT NULL,
        "requests" integer NOT NULL DEFAULT (0),
        "errors" integer NOT NULL DEFAULT (0),
        "cancelled" integer NOT NULL DEFAULT (0),
        "prompt_tokens" integer NOT NULL DEFAULT (0),
        "completion_tokens" integer NOT NULL DEFAULT (0),
        "cached_tokens" integer NOT NULL DEFAULT (0),
        "cache_write_tokens" integer NOT NULL DEFAULT (0),
        "reasoning_tokens" integer NOT NULL DEFAULT (0),
        "cost_usd" decimal(24,12) NOT NULL DEFAULT (0),
        "upstream_cost_usd" decimal(24,12) NOT NULL DEFAULT (0),
        "latency_ms_sum" integer NOT NULL DEFAULT (0),
        "ttft_count" integer NOT NULL DEFAULT (0),
        "ttft_ms_sum" integer NOT NULL DEFAULT (0),
        "latency_hist" text NOT NULL DEFAULT ('{}'),
        "ttft_hist" text NOT NULL DEFAULT ('{}'),
        PRIMARY KEY ("dimension", "hour", "value")
      )`);
    await q.query(`CREATE INDEX "IDX_api_logs_hourly_value_hour" ON "api_logs_hourly" ("dimension", "value", "hour")`);
    // Rows logged before the rollup existed.
    await backfillRollup(q, 'sqlite');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_logs_hourly"`);
  }
}
