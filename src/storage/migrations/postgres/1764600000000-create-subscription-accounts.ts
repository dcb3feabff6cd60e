import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateSubscriptionAccounts1764600000000 implements MigrationInterface {
  name = 'CreateSubscriptionAccounts1764600000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "subscription_accounts" (
        "id" varchar(64) NOT NULL,
        "provider" varchar(16) NOT NULL,
        "name" varchar(200) NOT NULL,
        "status" varchar(16) NOT NULL DEFAULT 'active',
        "credentials" text NOT NULL,
        "token_version" integer NOT NULL DEFAULT 1,
        "import_fingerprint" varchar(64),
        "external_account_id" varchar(200),
        "email" varchar(320),
        "plan_type" varchar(64),
        "expires_at" timestamptz,
        "last_refresh_at" timestamptz,
        "cooldown_until" timestamptz,
        "failures" integer NOT NULL DEFAULT 0,
        "last_error" text,
        "last_error_at" timestamptz,
        "refresh_lock_owner" varchar(64),
        "refresh_lock_until" timestamptz,
        "created_at" timestamptz NOT NULL DEFAULT now(),
        "updated_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "PK_subscription_accounts" PRIMARY KEY ("id")
      )`);
    await q.query(`CREATE UNIQUE INDEX "UQ_subscription_accounts_provider_name" ON "subscription_accounts" ("provider", "name")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "subscription_accounts"`);
  }
}
