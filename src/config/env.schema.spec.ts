import 'reflect-metadata';
import { MAX_TIMER_MS } from '../common/deadline';
import { validateEnv } from './env.schema';
import { MAX_WORKERS, workerCount } from './workers';

describe('validateEnv', () => {
  it('takes an empty number as not set (the default), as it does for text', () => {
    const env = validateEnv({ PORT: '', SHUTDOWN_GRACE_MS: ' ', DB_POOL_SIZE: '' });
    const defaults = validateEnv({});
    expect(env.PORT).toBe(defaults.PORT);
    expect(env.SHUTDOWN_GRACE_MS).toBe(defaults.SHUTDOWN_GRACE_MS);
    expect(env.SHUTDOWN_GRACE_MS).toBeGreaterThan(0);
    expect(env.DB_POOL_SIZE).toBe(defaults.DB_POOL_SIZE);
    expect(env.DB_POOL_SIZE).toBeGreaterThan(0);
  });

  it('says a value that is no number is no number, not that it is out of range both ways', () => {
    expect(() => validateEnv({ PORT: 'abc' })).toThrow(/^Invalid environment:\n {2}PORT="abc": PORT must be an integer number$/);
    expect(() => validateEnv({ PORT: '70000' })).toThrow(/PORT="70000": PORT must not be greater than 65535$/);
  });

  it('refuses a time longer than a Node timer holds, which would fire at once', () => {
    expect(() => validateEnv({ UPSTREAM_FIRST_TOKEN_TIMEOUT_MS: '3000000000' })).toThrow(
      `UPSTREAM_FIRST_TOKEN_TIMEOUT_MS="3000000000": UPSTREAM_FIRST_TOKEN_TIMEOUT_MS must be at most ${MAX_TIMER_MS}`,
    );
    expect(() => validateEnv({ STREAM_KEEPALIVE_MS: String(MAX_TIMER_MS + 1), SHUTDOWN_GRACE_MS: '3000000000' })).toThrow(
      /STREAM_KEEPALIVE_MS=.*\n.*SHUTDOWN_GRACE_MS=/,
    );
    expect(validateEnv({ UPSTREAM_TOTAL_TIMEOUT_MS: String(MAX_TIMER_MS) }).UPSTREAM_TOTAL_TIMEOUT_MS).toBe(MAX_TIMER_MS);
    // Lengths only compared with the clock are no timers: a 30-day cooldown cap stays valid.
    expect(validateEnv({ SUBSCRIPTION_MAX_COOLDOWN_MS: '2592000000' }).SUBSCRIPTION_MAX_COOLDOWN_MS).toBe(2_592_000_000);
  });

  it('accepts exactly the WORKERS that main.ts can start', () => {
    for (const ok of ['1', '2', String(MAX_WORKERS), 'auto']) {
      expect(validateEnv({ WORKERS: ok }).WORKERS).toBe(ok);
      expect(workerCount(ok)).toBeGreaterThanOrEqual(1);
    }
    for (const bad of ['0', String(MAX_WORKERS + 1), '300', '999', '1.5', 'many']) {
      expect(() => validateEnv({ WORKERS: bad })).toThrow(/WORKERS/);
      expect(() => workerCount(bad)).toThrow(`must be a whole number from 1 to ${MAX_WORKERS}, or "auto"`);
    }
    expect(() => validateEnv({ WORKERS: '300' })).toThrow(`WORKERS must be a whole number from 1 to ${MAX_WORKERS}, or "auto"`);
    // auto: one per CPU, within the same limit on a machine with more.
    expect(workerCount('auto', 8)).toBe(8);
    expect(workerCount('auto', 512)).toBe(MAX_WORKERS);
  });

  it('names a bad URL without its credentials', () => {
    expect(() => validateEnv({ DATABASE_URL: 'postgresql+asyncpg://app:S3cretDBPW@db:5432/hi' })).toThrow(/DATABASE_URL=.*\*\*\*@db/);
    expect(() => validateEnv({ DATABASE_URL: 'postgresql+asyncpg://app:S3cretDBPW@db:5432/hi' })).not.toThrow(/S3cretDBPW/);
  });

  it('refuses an ADMIN_TOKEN no client could send in a header', () => {
    expect(validateEnv({ ADMIN_TOKEN: 'admin-token-0123456789' }).ADMIN_TOKEN).toBe('admin-token-0123456789');
    expect(validateEnv({ ADMIN_TOKEN: 'admin token 0123456789' }).ADMIN_TOKEN).toBe('admin token 0123456789');
    for (const bad of ['admintökén-0123456789abc', 'admin-token-0123456789 '])
      expect(() => validateEnv({ ADMIN_TOKEN: bad })).toThrow(/ADMIN_TOKEN must be printable ASCII/);
  });

  it('holds HEAP_GROWTH_PERCENT to 0 or 10-300, as documented', () => {
    for (const ok of ['0', '10', '300']) expect(validateEnv({ HEAP_GROWTH_PERCENT: ok }).HEAP_GROWTH_PERCENT).toBe(Number(ok));
    for (const bad of ['5', '301', '900']) expect(() => validateEnv({ HEAP_GROWTH_PERCENT: bad })).toThrow(/HEAP_GROWTH_PERCENT/);
  });

  it('holds UPSTREAM_BODY_LIMIT below the longest string V8 makes, which an answer is read into', () => {
    for (const ok of ['1kb', '64mb', '511mb']) expect(validateEnv({ UPSTREAM_BODY_LIMIT: ok }).UPSTREAM_BODY_LIMIT).toBe(ok);
    for (const bad of ['512mb', '1gb', '100'])
      expect(() => validateEnv({ UPSTREAM_BODY_LIMIT: bad })).toThrow(/UPSTREAM_BODY_LIMIT.*must be from 1kb/);
    expect(() => validateEnv({ UPSTREAM_BODY_LIMIT: 'lots' })).toThrow(/UPSTREAM_BODY_LIMIT must look like 64mb/);
  });

  it('holds DB_STORE_CONTENT_LIMIT to 1kb-32mb, with units as BODY_LIMIT', () => {
    for (const ok of ['1kb', '10mb', '32mb', '2048']) expect(validateEnv({ DB_STORE_CONTENT_LIMIT: ok }).DB_STORE_CONTENT_LIMIT).toBe(ok);
    for (const bad of ['512', '33mb', '1gb', 'lots'])
      expect(() => validateEnv({ DB_STORE_CONTENT_LIMIT: bad })).toThrow(/DB_STORE_CONTENT_LIMIT/);
    expect(() => validateEnv({ DB_STORE_CONTENT_LIMIT: '1gb' })).toThrow(/from 1kb to 32mb/);
  });
});
