import { Client } from 'pg';

const ADMIN = {
  host: process.env.TEST_PG_HOST ?? '127.0.0.1',
  port: Number(process.env.TEST_PG_PORT ?? 5432),
  user: process.env.TEST_PG_USER ?? 'postgres',
  password: process.env.TEST_PG_PASSWORD ?? '',
  database: 'postgres',
};

export interface TestDatabase {
  name: string;
  url: string;
  env: Record<string, string>;
  drop(): Promise<void>;
}

/**
 * A fresh database on the local PostgreSQL server for one test file, dropped afterwards. Tests
 * run against the real server; if it is not there, they fail rather than pretend.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `hi_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new Client(ADMIN);
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = `postgres://${ADMIN.user}${ADMIN.password ? `:${ADMIN.password}` : ''}@${ADMIN.host}:${ADMIN.port}/${name}`;
  return {
    name,
    url,
    env: { DB_BACKEND: 'postgres', DATABASE_URL: url },
    async drop() {
      const c = new Client(ADMIN);
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export const PG_ADMIN = ADMIN;
