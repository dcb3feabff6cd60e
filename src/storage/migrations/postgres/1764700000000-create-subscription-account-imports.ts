import type { MigrationInterface, QueryRunner } from 'typeorm';

export class CreateSubscriptionAccountImports1764700000000 implements MigrationInterface {
  name = 'CreateSubscriptionAccountImports1764700000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE "subscription_account_imports" (
        "provider" varchar(16) NOT NULL,
        "name" varchar(200) NOT NULL,
        "fingerprint" varchar(64) NOT NULL,
        "imported_at" timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT "PK_subscription_account_imports" PRIMARY KEY ("provider", "name", "fingerprint")
      )`);
    // The logins applied before this table existed: only the last one of each account was kept.
    await q.query(`
      INSERT INTO "subscription_account_imports" ("provider", "name", "fingerprint", "imported_at")
      SELECT "provider", "name", "import_fingerprint", "updated_at" FROM "subscription_accounts" WHERE "import_fingerprint" IS NOT NULL`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP TABLE "subscription_account_imports"`);
  }
}
