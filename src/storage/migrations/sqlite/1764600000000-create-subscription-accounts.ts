import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateSubscriptionAccountsSqlite1764600000000 implements MigrationInterface {
  name = 'CreateSubscriptionAccountsSqlite1764600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "subscription_accounts" (
        "id" varchar(64) PRIMARY KEY NOT NULL,
        "provider" varchar(16) NOT NULL,
        "name" varchar(200) NOT NULL,
        "status" varchar(16) NOT NULL DEFAULT ('active'),
        "credentials" text NOT NULL,
        "token_version" integer NOT NULL DEFAULT (1),
        "import_fingerprint" varchar(64),
        "external_account_id" varchar(200),
        "email" varchar(320),
        "plan_type" varchar(64),
        "expires_at" datetime,
        "last_refresh_at" datetime,
        "cooldown_until" datetime,
        "failures" integer NOT NULL DEFAULT (0),
        "last_error" text,
        "last_error_at" datetime,
        "refresh_lock_owner" varchar(64),
        "refresh_lock_until" datetime,
        "created_at" datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
        "updated_at" datetime NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
      )`);
    await q.query(`CREATE UNIQUE INDEX "UQ_subscription_accounts_provider_name" ON "subscription_accounts" ("provider", "name")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "subscription_accounts"`);
  }
}
