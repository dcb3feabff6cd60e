import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataSource } from 'typeorm';
import { AppConfig } from '../../src/config/app-config';
import { validateEnv } from '../../src/config/env.schema';
import { dataSourceOptions, SQLITE_CACHE_KIB } from '../../src/storage/data-source.options';
import { SqliteRollup, type RollupDelta } from '../../src/storage/api-log-rollup';
import type Database from 'better-sqlite3';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

/**
 * The migrations own the schema; the entity mappings must describe exactly what they create.
 * After migrating, TypeORM's schema diff (what `migration:generate` would write) must be empty.
 */
describe.each(['sqlite', 'postgres'] as const)('schema on %s', (backend) => {
  let pg: TestDatabase | undefined;
  let ds: DataSource;

  beforeAll(async () => {
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    const env = validateEnv({
      ...(pg?.env ?? { DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(mkdtempSync(join(tmpdir(), 'hi-schema-')), 'db.sqlite') }),
    });
    ds = new DataSource(dataSourceOptions(new AppConfig(env)));
    await ds.initialize();
    await ds.runMigrations();
  });
  afterAll(async () => {
    await ds?.destroy();
    await pg?.drop();
  });

  it('has no difference between the migrations and the entities', async () => {
    const pending = await ds.driver.createSchemaBuilder().log();
    expect(pending.upQueries.map((q) => q.query)).toEqual([]);
  });

  it('has the named indexes the stats queries rely on', async () => {
    const runner = ds.createQueryRunner();
    try {
      const table = await runner.getTable('api_logs');
      expect(table?.indices.map((i) => i.name).sort()).toEqual([
        'IDX_api_logs_api_key_created_at',
        'IDX_api_logs_created_at',
        'IDX_api_logs_model_created_at',
      ]);
    } finally {
      await runner.release();
    }
  });

  it('has the key lookup and the hourly rollup with their indexes', async () => {
    const runner = ds.createQueryRunner();
    try {
      const keys = await runner.getTable('api_keys');
      expect(keys?.indices.map((i) => ({ name: i.name, unique: i.isUnique, columns: i.columnNames }))).toEqual([
        { name: 'IDX_api_keys_key_hash', unique: true, columns: ['key_hash'] },
      ]);
      const hourly = await runner.getTable('api_logs_hourly');
      expect(hourly?.primaryColumns.map((c) => c.name).sort()).toEqual(['dimension', 'hour', 'value']);
      expect(hourly?.indices.map((i) => i.name)).toEqual(['IDX_api_logs_hourly_value_hour']);
    } finally {
      await runner.release();
    }
  });
});

describe('the embedded SQLite connection', () => {
  it('keeps its page cache bounded (better-sqlite3 would give it 16 MB)', async () => {
    const env = validateEnv({ DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(mkdtempSync(join(tmpdir(), 'hi-cache-')), 'db.sqlite') });
    const ds = new DataSource(dataSourceOptions(new AppConfig(env)));
    await ds.initialize();
    try {
      expect(await ds.query('PRAGMA cache_size')).toEqual([{ cache_size: -SQLITE_CACHE_KIB }]);
      expect(await ds.query('PRAGMA journal_mode')).toEqual([{ journal_mode: 'wal' }]);
    } finally {
      await ds.destroy();
    }
  });

  it("keeps an hour's cost exact to the pico-dollar however many flushes added to it (below $1,000)", async () => {
    const env = validateEnv({ DB_BACKEND: 'sqlite', DB_SQLITE_PATH: join(mkdtempSync(join(tmpdir(), 'hi-rollup-')), 'db.sqlite') });
    const ds = new DataSource(dataSourceOptions(new AppConfig(env)));
    await ds.initialize();
    try {
      await ds.runMigrations();
      const rollup = new SqliteRollup((ds.driver as unknown as { databaseConnection: Database.Database }).databaseConnection);
      const hour = new Date(Date.UTC(2026, 11, 6, 10));
      const delta = (): RollupDelta => ({
        dimension: 'key',
        hour,
        value: 'k1',
        requests: 1,
        errors: 0,
        cancelled: 0,
        promptTokens: 1,
        completionTokens: 1,
        cachedTokens: 0,
        cacheWriteTokens: 0,
        reasoningTokens: 0,
        costPico: 123_456_789_012n,
        upstreamCostPico: 0n,
        latencySum: 1,
        ttftCount: 0,
        ttftSum: 0,
        latencyHist: new Map(),
        ttftHist: new Map(),
      });
      // One flush each, as a busy key's rows come in small batches.
      for (let i = 0; i < 6000; i++) rollup.apply([delta()]);
      const [row] = await ds.query<Array<{ cost: string; requests: number }>>(
        `SELECT printf('%.12f', "cost_usd") AS cost, "requests" FROM "api_logs_hourly"`,
      );
      // Added up as floating point, 6,000 additions drifted 44 pico-dollars (740.740734072044).
      expect(row).toEqual({ cost: '740.740734072000', requests: 6000 });
    } finally {
      await ds.destroy();
    }
  });

  it('creates its files readable by the gateway user only, whatever the umask', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'hi-mode-')), 'data');
    const file = join(dir, 'db.sqlite');
    const ds = new DataSource(dataSourceOptions(new AppConfig(validateEnv({ DB_BACKEND: 'sqlite', DB_SQLITE_PATH: file }))));
    await ds.initialize();
    try {
      await ds.runMigrations();
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      for (const f of readdirSync(dir)) expect([f, statSync(join(dir, f)).mode & 0o777]).toEqual([f, 0o600]);
      expect(readdirSync(dir)).toContain('db.sqlite-wal');
    } finally {
      await ds.destroy();
    }
  });
});
