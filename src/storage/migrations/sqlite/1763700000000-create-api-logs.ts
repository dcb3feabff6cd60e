import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateApiLogsSqlite1763700000000 implements MigrationInterface {
  name = 'CreateApiLogsSqlite1763700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_logs" (
        "id" varchar(64) PRIMARY KEY NOT NULL,
        "created_at" datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
        "model" varchar(200) NOT NULL,
        "provider" varchar(100),
        "endpoint" varchar(200),
        "stream" boolean NOT NULL DEFAULT (0),
        "status_code" integer NOT NULL,
        "error" text,
        "error_code" varchar(100),
        "finish_reason" varchar(32),
        "ttft_ms" integer,
        "latency_ms" integer NOT NULL,
        "prompt_tokens" integer NOT NULL DEFAULT (0),
        "completion_tokens" integer NOT NULL DEFAULT (0),
        "total_tokens" integer NOT NULL DEFAULT (0),
        "cached_tokens" integer NOT NULL DEFAULT (0),
        "cache_write_tokens" integer NOT NULL DEFAULT (0),
        "reasoning_tokens" integer NOT NULL DEFAULT (0),
        "usage_estimated" boolean NOT NULL DEFAULT (0),
        "cost_usd" decimal(24,12) NOT NULL DEFAULT (0),
        "upstream_cost_usd" decimal(24,12),
        "api_key_id" varchar(64),
        "user_id" varchar(256),
        "metadata" text,
        "request_content" text,
        "response_content" text
      )`);
    await q.query(`CREATE INDEX "IDX_api_logs_created_at" ON "api_logs" ("created_at")`);
    await q.query(`CREATE INDEX "IDX_api_logs_model_created_at" ON "api_logs" ("model", "created_at")`);
    await q.query(`CREATE INDEX "IDX_api_logs_api_key_created_at" ON "api_logs" ("api_key_id", "created_at")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_logs"`);
  }
}
