import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateApiKeysSqlite1764000000000 implements MigrationInterface {
  name = 'CreateApiKeysSqlite1764000000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "api_keys" (
        "id" varchar(64) PRIMARY KEY NOT NULL,
        "name" varchar(200) NOT NULL,
        "key_hash" varchar(64) NOT NULL,
        "key_prefix" varchar(16) NOT NULL,
        "status" varchar(16) NOT NULL DEFAULT ('active'),
        "rpm_limit" integer,
        "tpm_limit" integer,
        "max_concurrency" integer,
        "daily_budget_usd" decimal(24,12),
        "monthly_budget_usd" decimal(24,12),
        "expires_at" datetime,
        "notes" text,
        "created_at" datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
        "updated_at" datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
        "revoked_at" datetime
      )`);
    await q.query(`CREATE UNIQUE INDEX "IDX_api_keys_key_hash" ON "api_keys" ("key_hash")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "api_keys"`);
  }
}
