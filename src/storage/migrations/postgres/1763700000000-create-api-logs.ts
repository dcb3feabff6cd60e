import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateApiLogs1763700000000 implements MigrationInterface {
  name = 'CreateApiLogs1763700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_logs" (
        "id" varchar(64) NOT NULL,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "model" varchar(200) NOT NULL,
        "provider" varchar(100),
        "endpoint" varchar(200),
        "stream" boolean NOT NULL DEFAULT false,
        "status_code" integer NOT NULL,
        "error" text,
        "error_code" varchar(100),
        "finish_reason" varchar(32),
        "ttft_ms" integer,
        "latency_ms" integer NOT NULL,
        "prompt_tokens" integer NOT NULL DEFAULT 0,
        "completion_tokens" integer NOT NULL DEFAULT 0,
        "total_tokens" integer NOT NULL DEFAULT 0,
        "cached_tokens" integer NOT NULL DEFAULT 0,
        "cache_write_tokens" integer NOT NULL DEFAULT 0,
        "reasoning_tokens" integer NOT NULL DEFAULT 0,
        "usage_estimated" boolean NOT NULL DEFAULT false,
        "cost_usd" numeric(24,12) NOT NULL DEFAULT 0,
        "upstream_cost_usd" numeric(24,12),
        "api_key_id" varchar(64),
        "user_id" varchar(256),
        "metadata" jsonb,
        "request_content" jsonb,
        "response_content" jsonb,
        CONSTRAINT "PK_api_logs" PRIMARY KEY ("id")
      )`);
    await q.query(`CREATE INDEX "IDX_api_logs_created_at" ON "api_logs" ("created_at")`);
    await q.query(`CREATE INDEX "IDX_api_logs_model_created_at" ON "api_logs" ("model", "created_at")`);
    await q.query(`CREATE INDEX "IDX_api_logs_api_key_created_at" ON "api_logs" ("api_key_id", "created_at")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_logs"`);
  }
}
