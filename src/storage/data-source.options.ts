import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Database } from 'better-sqlite3';
import type { DataSourceOptions } from 'typeorm';
import type { AppConfig } from '../config/app-config';
import type { Dialect } from './dialect';
import { apiLogSchema } from './entities/api-log.entity';
import { apiKeySchema } from './entities/api-key.entity';
import { apiLogHourlySchema } from './entities/api-log-hourly.entity';
import { ResettingPgClient } from './pg-client';
import { CreateApiLogs1763700000000 } from './migrations/postgres/1763700000000-create-api-logs';
import { CreateApiLogsSqlite1763700000000 } from './migrations/sqlite/1763700000000-create-api-logs';
import { CreateApiKeys1764000000000 } from './migrations/postgres/1764000000000-create-api-keys';
import { CreateApiLogsHourly1764000000001 } from './migrations/postgres/1764000000001-create-api-logs-hourly';
import { CreateApiKeysSqlite1764000000000 } from './migrations/sqlite/1764000000000-create-api-keys';
import { CreateApiLogsHourlySqlite1764000000001 } from './migrations/sqlite/1764000000001-create-api-logs-hourly';
import { subscriptionAccountSchema } from '../subscription/entities/subscription-account.entity';
import { subscriptionAccountImportSchema } from '../subscription/entities/subscription-account-import.entity';
import { CreateSubscriptionAccounts1764600000000 } from './migrations/postgres/1764600000000-create-subscription-accounts';
import { CreateSubscriptionAccountsSqlite1764600000000 } from './migrations/sqlite/1764600000000-create-subscription-accounts';
import { CreateSubscriptionAccountImports1764700000000 } from './migrations/postgres/1764700000000-create-subscription-account-imports';
import { CreateSubscriptionAccountImportsSqlite1764700000000 } from './migrations/sqlite/1764700000000-create-subscription-account-imports';

/** Entity mappings for a dialect. Modules with entities of their own add them here. */
export function entitiesFor(dialect: Dialect) {
  return [
    apiLogSchema(dialect),
    apiKeySchema(dialect),
    apiLogHourlySchema(dialect),
    subscriptionAccountSchema(dialect),
    subscriptionAccountImportSchema(dialect),
  ];
}

const MIGRATIONS: Record<Dialect, DataSourceOptions['migrations']> = {
  postgres: [
    CreateApiLogs1763700000000,
    CreateApiKeys1764000000000,
    CreateApiLogsHourly1764000000001,
    CreateSubscriptionAccounts1764600000000,
    CreateSubscriptionAccountImports1764700000000,
  ],
  sqlite: [
    CreateApiLogsSqlite1763700000000,
    CreateApiKeysSqlite1764000000000,
    CreateApiLogsHourlySqlite1764000000001,
    CreateSubscriptionAccountsSqlite1764600000000,
    CreateSubscriptionAccountImportsSqlite1764700000000,
  ],
};

/** SQLite's page cache per connection, in KiB (SQLite's stock default). */
export const SQLITE_CACHE_KIB = 2000;

/**
 * PostgreSQL in production, an embedded SQLite file otherwise. The schema is owned by migrations
 * on both: `synchronize` stays off.
 */
export function dataSourceOptions(config: AppConfig): DataSourceOptions {
  const dialect = config.dbBackend;
  if (dialect === 'postgres') {
    const pg = config.postgres;
    return {
      type: 'postgres',
      ...('url' in pg ? { url: pg.url } : pg),
      entities: entitiesFor('postgres'),
      migrations: MIGRATIONS.postgres,
      migrationsTableName: 'migrations',
      synchronize: false,
      logging: false, // the writer reports failures itself; TypeORM would print every parameter
      extra: {
        max: config.env.DB_POOL_SIZE,
        connectionTimeoutMillis: 5000,
        idleTimeoutMillis: 30_000,
        // Client-side: also bounds a query whose connection went silent (no answer, no close).
        query_timeout: config.env.DB_QUERY_TIMEOUT_MS,
        // ...and closes that connection, which node-postgres would keep, stuck (pg-client.ts).
        Client: ResettingPgClient,
      },
    };
  }
  const file = config.sqlitePath;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    // Created readable by the gateway's user only (SQLite gives its -wal and -shm files the same
    // mode): the log holds prompts and answers when DB_STORE_FULL_CONTENT is on.
    closeSync(openSync(file, 'a', 0o600));
  } catch (err) {
    // A path through a file, or one that is a directory: the start says which variable to fix.
    throw new Error(`DB_SQLITE_PATH=${file}: cannot create or open the database file (${(err as Error).message})`, { cause: err });
  }
  return {
    type: 'better-sqlite3',
    database: file,
    entities: entitiesFor('sqlite'),
    migrations: MIGRATIONS.sqlite,
    migrationsTableName: 'migrations',
    synchronize: false,
    enableWAL: true,
    timeout: 5000,
    logging: false,
    // better-sqlite3 builds SQLite with a 16 MB page cache per connection (SQLite's own default
    // is 2 MB). The request log only appends, so the cache mostly fills with index pages that
    // are never read again: under the benchmark it grew to 11 MB of resident memory that the
    // process kept. The OS page cache still holds the file, so a miss costs a read(), not a seek.
    prepareDatabase: (db: Database) => {
      db.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
    },
  };
}
