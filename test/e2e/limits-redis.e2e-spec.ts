import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { picoToUsd, usdToPico } from '../../src/common/money';
import { nano } from '../../src/gateway/usage-limiter.service';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import Redis from 'ioredis';
import { Client } from 'pg';
import { ACCESS_ENV, adminApi, chat, clearRedisPrefix, REDIS_URL, redisPrefix, waitFor } from '../helpers/access';
import { spawnGateway } from '../helpers/child-gateway';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';
import { TcpProxy } from '../helpers/tcp-proxy';
import { RedisService } from '../../src/redis/redis.service';
import { AppConfig } from '../../src/config/app-config';

/**
 * Two gateways sharing PostgreSQL and Redis (as two replicas would) hold a key to its limits
 * together; a gateway that loses Redis goes on with per-process limits and says so.
 */
const models = (upstream: string) => `
models:
  - id: acme/chat
    context_length: 8192
    pricing: { prompt: "10000", completion: "10000" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: ok }]
  - id: acme/slow
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-headers:3000" }]
  - id: acme/slower
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-headers:8000" }]
  - id: acme/slow-priced
    context_length: 8192
    pricing: { prompt: "10000", completion: "10000" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-headers:2000" }]
`;
const ask = (model: string, max_tokens?: number) => ({
  model,
  messages: [{ role: 'user', content: 'hi' }],
  ...(max_tokens ? { max_tokens } : {}),
});

/**
 * Two gateways sharing one PostgreSQL database, one Redis key prefix and one stand-in upstream,
 * as two replicas would; started before the describe block's tests and stopped after them.
 */
function twoReplicas(env: Record<string, string> = {}): { a: TestGateway; b: TestGateway; upstream: OpenAiUpstream; models: string } {
  const upstream = new OpenAiUpstream();
  const prefix = redisPrefix();
  let db: TestDatabase | undefined;
  const pair = { upstream } as { a: TestGateway; b: TestGateway; upstream: OpenAiUpstream; models: string };
  beforeAll(async () => {
    const base = await upstream.start();
    pair.models = models(base);
    db = await createTestDatabase();
    const shared = { ...db.env, ...ACCESS_ENV, REDIS_URL, REDIS_KEY_PREFIX: prefix, ...env };
    pair.a = await startGateway({ models: models(base), env: shared });
    pair.b = await startGateway({ models: models(base), env: shared });
  });
  afterAll(async () => {
    await pair.a?.close();
    await pair.b?.close();
    await upstream.stop();
    await db?.drop();
    await clearRedisPrefix(prefix);
  });
  return pair;
}

/** A gateway of its own process (dist/main.js), to be killed as a crash would: no settlement. */
async function launchGateway(env: Record<string, string>, models: string): Promise<{ url: string; kill(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'hi-crash-'));
  writeFileSync(join(dir, 'models.yaml'), models);
  const { child, url } = await spawnGateway(dir, {
    ...env,
    MODELS_CONFIG_PATH: join(dir, 'models.yaml'),
    ROUTING_CONFIG_PATH: join(dir, 'none.yaml'),
    REQUEST_LOG_SPOOL_DIR: join(dir, 'spool'),
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    url,
    async kill() {
      child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('limits shared through Redis', () => {
  const replicas = twoReplicas();

  it('admits no more than rpm_limit requests a minute across both gateways', async () => {
    const { a, b } = replicas;
    const { key } = await adminApi(a).createKey({ name: 'shared rpm', rpm_limit: 5 });
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => chat(i % 2 === 0 ? a : b, key, ask('acme/chat'))));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
    // (Each gateway got 6 requests: on its own, each would have admitted 5.)
    for (const r of results.filter((x) => x.status === 429)) expect(r.body.error).toMatchObject({ code: 'rpm_limit_exceeded' });
  });

  it('shares requests in flight and spend between the gateways', async () => {
    const { a, b, upstream } = replicas;
    const admin = adminApi(b);
    const { key } = await admin.createKey({ name: 'shared concurrency', max_concurrency: 1 });
    upstream.reset();
    const slow = chat(a, key, ask('acme/slow'));
    await upstream.waitForRequests(1);
    const refused = await chat(b, key, ask('acme/chat'));
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'concurrency_limit_exceeded' });
    expect((await slow).status).toBe(200);
    expect((await chat(b, key, ask('acme/chat'))).status).toBe(200);

    const budget = await admin.createKey({ name: 'shared budget', daily_budget_usd: '0.5' });
    const spend = await chat(a, budget.key, ask('acme/chat', 10));
    expect(spend.status).toBe(200);
    const row = (await a.rows()).find((r) => `gen-${r.id}` === spend.body.id)!;
    // b has not seen the row (nothing read the database since), but Redis has the spend.
    const over = await chat(b, budget.key, ask('acme/chat', 45));
    expect(over.status).toBe(429);
    expect(over.body.error!.message).toContain(`$${picoToUsd(usdToPico(row.cost_usd))} is spent`);
  });

  it('refuses a request larger than the whole tpm_limit as such, without a wait, though the rpm window is full', async () => {
    const { a } = replicas;
    const { key } = await adminApi(a).createKey({ name: 'rpm full, tpm too small', rpm_limit: 1, tpm_limit: 100 });
    expect((await chat(a, key, ask('acme/chat', 10))).status).toBe(200);
    const big = await chat(a, key, ask('acme/chat', 5000));
    expect([big.status, big.body.error]).toEqual([429, expect.objectContaining({ code: 'tpm_limit_exceeded' })]);
    expect(big.headers.get('x-should-retry')).toBe('false');
  });

  it('says to retry in a second when requests in flight fill a budget, and names the later of two spent budgets', async () => {
    const { a, b, upstream } = replicas;
    const admin = adminApi(a);
    // Each request reserves about $0.2 (a dozen prompt tokens and 10 completion tokens at $0.01).
    const { key } = await admin.createKey({ name: 'reserved budget', daily_budget_usd: '0.3' });
    upstream.reset();
    const slow = chat(a, key, ask('acme/slow-priced', 10));
    await upstream.waitForRequests(1);
    const refused = await chat(b, key, ask('acme/chat', 10));
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'daily_budget_exceeded' });
    expect(refused.body.error!.message).toContain('reserved by requests in flight');
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await slow).status).toBe(200);

    const both = await admin.createKey({ name: 'both budgets', daily_budget_usd: '0.3', monthly_budget_usd: '0.3' });
    // Spent until the next request's reservation no longer fits (a request dearer than the whole
    // budget names no wait at all).
    while ((await chat(a, both.key, ask('acme/chat', 10))).status === 200);
    const over = await chat(b, both.key, ask('acme/chat', 10));
    expect(over.status).toBe(429);
    // Both are spent; the daily one frees at midnight, the monthly one only on the 1st.
    expect(over.body.error).toMatchObject({ code: 'monthly_budget_exceeded' });
    const now = Date.now();
    const nextMonth = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth() + 1, 1);
    expect(Math.abs(Number(over.headers.get('retry-after')) - (nextMonth - now) / 1000)).toBeLessThan(5);
  });
});

describe('key changes shared through Redis', () => {
  // Ten minutes: a replica that was not told would keep the old key state for the whole test.
  // Keys required: an old secret is then refused, not admitted anonymously.
  const replicas = twoReplicas({ API_KEY_CACHE_TTL_MS: '600000', USER_AUTH_ENABLED: 'true' });

  it('lets a call that costs nothing through a budget already overspent', async () => {
    const { a, b } = replicas;
    const admin = adminApi(a);
    const { id, key } = await admin.createKey({ name: 'shared overspent', daily_budget_usd: '1' });
    expect((await chat(a, key, ask('acme/chat', 5))).status).toBe(200);
    expect((await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: '0.000000001' })).status).toBe(200);
    const paid = await chat(b, key, ask('acme/chat', 5));
    expect([paid.status, paid.body.error?.code]).toEqual([429, 'daily_budget_exceeded']);
    expect((await chat(b, key, ask('acme/slow', 5))).status).toBe(200); // no pricing: free
  });

  it('a replica stops admitting a key revoked, or regenerated, on another, and applies its new limits', async () => {
    const { a, b } = replicas;
    const admin = adminApi(a);
    const revoked = await admin.createKey({ name: 'revoked elsewhere' });
    const renewed = await admin.createKey({ name: 'regenerated elsewhere' });
    const limited = await admin.createKey({ name: 'limited elsewhere' });
    for (const k of [revoked, renewed, limited]) expect((await chat(b, k.key, ask('acme/chat'))).status).toBe(200); // b caches them

    await admin.call('POST', `/admin/api-keys/${revoked.id}/revoke`);
    await admin.call('POST', `/admin/api-keys/${renewed.id}/regenerate`);
    await admin.call('PATCH', `/admin/api-keys/${limited.id}`, { rpm_limit: 1 });
    await waitFor(async () => (await chat(b, revoked.key, ask('acme/chat'))).status === 401, 'b to refuse the revoked key', 5000);
    await waitFor(async () => (await chat(b, renewed.key, ask('acme/chat'))).status === 401, 'b to refuse the old secret', 5000);
    // One request a minute, the one made above before the change included: no more now.
    await waitFor(async () => (await chat(b, limited.key, ask('acme/chat'))).status === 429, 'b to apply the new limit', 5000);
  });
});

describe('key changes a replica missed while cut off from Redis', () => {
  const upstream = new OpenAiUpstream();
  const prefix = redisPrefix();
  const target = new URL(REDIS_URL);
  const proxy = new TcpProxy(target.hostname, Number(target.port || 6379));
  let db: TestDatabase;
  let a: TestGateway | undefined;
  let b: TestGateway | undefined;

  beforeAll(async () => {
    const base = await upstream.start();
    db = await createTestDatabase();
    const port = await proxy.start();
    // Ten minutes: a replica that did not read the key again would admit it for the whole test.
    const shared = { ...db.env, ...ACCESS_ENV, REDIS_KEY_PREFIX: prefix, API_KEY_CACHE_TTL_MS: '600000', USER_AUTH_ENABLED: 'true' };
    a = await startGateway({ models: models(base), env: { ...shared, REDIS_URL } });
    // b reaches Redis through the proxy, which can cut it off.
    b = await startGateway({ models: models(base), env: { ...shared, REDIS_URL: `redis://127.0.0.1:${port}${target.pathname}` } });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await proxy.stop();
    await upstream.stop();
    await db?.drop();
    await clearRedisPrefix(prefix);
  });

  it('a replica reads its cached keys again when Redis is back, and refuses a key revoked meanwhile', async () => {
    const admin = adminApi(a!);
    const revoked = await admin.createKey({ name: 'revoked while b was cut off' });
    expect((await chat(b!, revoked.key, ask('acme/chat'))).status).toBe(200); // b caches it
    const bRedis = b!.app.get(RedisService);
    await waitFor(() => bRedis.status === 'ready', 'b to be connected to Redis');

    await proxy.stop();
    await waitFor(() => bRedis.status === 'down', 'b to see Redis gone');
    // Revoked on a, which tells every replica through Redis: b does not hear it.
    expect((await admin.call('POST', `/admin/api-keys/${revoked.id}/revoke`)).status).toBe(200);
    expect((await chat(b!, revoked.key, ask('acme/chat'))).status).toBe(200);

    await proxy.start();
    await waitFor(() => bRedis.status === 'ready', 'b to be connected to Redis again');
    await waitFor(async () => (await chat(b!, revoked.key, ask('acme/chat'))).status === 401, 'b to refuse the revoked key', 10_000);
  });

  it('a change made on a replica cut off from Redis reaches the others when it is back', async () => {
    const revoked = await adminApi(a!).createKey({ name: 'revoked by b while cut off' });
    expect((await chat(a!, revoked.key, ask('acme/chat'))).status).toBe(200); // a caches it
    const bRedis = b!.app.get(RedisService);
    await waitFor(() => bRedis.status === 'ready', 'b to be connected to Redis');

    await proxy.stop();
    await waitFor(() => bRedis.status === 'down', 'b to see Redis gone');
    // Revoked on b, which cannot tell anyone yet: a still admits the key it cached.
    expect((await adminApi(b!).call('POST', `/admin/api-keys/${revoked.id}/revoke`)).status).toBe(200);
    expect((await chat(a!, revoked.key, ask('acme/chat'))).status).toBe(200);

    await proxy.start();
    await waitFor(async () => (await chat(a!, revoked.key, ask('acme/chat'))).status === 401, 'a to refuse the key b revoked', 10_000);
  });
});

describe('budgets and spend the counters missed', () => {
  const upstream = new OpenAiUpstream();
  let base: string;
  let db: TestDatabase;
  const prefix = redisPrefix();

  beforeAll(async () => {
    base = await upstream.start();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await upstream.stop();
    await db?.drop();
    await clearRedisPrefix(prefix);
  });

  it.each([
    ['shared through Redis', true],
    ['per process', false],
  ])('%s: spend made while the key had no budget counts once the budget is back', async (_name, redis) => {
    const gw = await startGateway({
      models: models(base),
      env: { ...db.env, ...ACCESS_ENV, ...(redis ? { REDIS_URL, REDIS_KEY_PREFIX: prefix } : {}) },
    });
    try {
      const admin = adminApi(gw);
      const { id, key } = await admin.createKey({ name: `budget off and on ${String(redis)}`, daily_budget_usd: '100' });
      expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200); // the day's counter now exists
      await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: null });
      for (let i = 0; i < 4; i++) expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200);
      const spent = (await gw.rows()).filter((r) => r.api_key_id === id).reduce((n, r) => n + usdToPico(r.cost_usd), 0n);
      // The budget back at exactly what was spent: nothing more fits today.
      await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: picoToUsd(spent) });
      const over = await chat(gw, key, ask('acme/chat', 10));
      expect(over.status).toBe(429);
      expect(over.body.error!.message).toContain(`$${picoToUsd(spent)} is spent`);
    } finally {
      await gw.close();
    }
  });

  it('Redis losing its counters (FLUSHALL, a restart without persistence) neither refunds spend nor grants tokens', async () => {
    const own = redisPrefix();
    // Keys cached for ten minutes: the baseline a key was loaded with (nothing spent) stays.
    const gw = await startGateway({
      models: models(base),
      env: { ...db.env, ...ACCESS_ENV, REDIS_URL, REDIS_KEY_PREFIX: own, API_KEY_CACHE_TTL_MS: '600000' },
    });
    const redis = new Redis(REDIS_URL);
    try {
      const admin = adminApi(gw);
      const budget = await admin.createKey({ name: 'budget across a flush', daily_budget_usd: '0.5' });
      let admitted = 0;
      while ((await chat(gw, budget.key, ask('acme/chat', 10))).status === 200) admitted++;
      expect(admitted).toBeGreaterThan(0);
      await clearRedisPrefix(own);
      const after = await chat(gw, budget.key, ask('acme/chat', 10));
      expect(after.status).toBe(429);
      expect(after.body.error).toMatchObject({ code: 'daily_budget_exceeded' });

      // A request's unused token estimate, settled after its bucket was lost, leaves no negative count.
      const tokens = await admin.createKey({ name: 'tpm across a flush', tpm_limit: 2000 });
      upstream.reset();
      const slow = chat(gw, tokens.key, ask('acme/slow', 1500));
      await upstream.waitForRequests(1);
      await clearRedisPrefix(own);
      expect((await slow).status).toBe(200);
      const counts = Object.values(await redis.hgetall(`${own}lim:{${tokens.id}}:tpm`)).map(Number);
      expect(counts.filter((n) => n < 0)).toEqual([]);

      // A request admitted before the loss, settling after it, starts the counter again from the
      // request log (its own row perhaps in it already: counted twice then, never missed), not
      // from the baseline it was admitted with (nothing spent then).
      const both = await admin.createKey({ name: 'settled across a flush', daily_budget_usd: '100' });
      upstream.reset();
      const first = chat(gw, both.key, ask('acme/slow-priced', 10));
      await upstream.waitForRequests(1);
      expect((await chat(gw, both.key, ask('acme/chat', 10))).status).toBe(200);
      await clearRedisPrefix(own);
      expect((await first).status).toBe(200);
      const costs = (await gw.rows()).filter((r) => r.api_key_id === both.id).map((r) => nano(usdToPico(r.cost_usd)));
      const spent = costs.reduce((n, c) => n + c, 0);
      const counter = `${own}lim:{${both.id}}:spent:d:${Math.floor(Date.now() / 86_400_000)}`;
      await waitFor(async () => Number(await redis.get(counter)) >= spent, `the day's counter to hold both requests' ${spent}`, 3000);
      expect(Number(await redis.get(counter))).toBeLessThanOrEqual(spent + Math.max(...costs));
    } finally {
      redis.disconnect();
      await gw.close();
      await clearRedisPrefix(own);
    }
  });

  it("holds a key to its budget when Redis lost its spend counter and the replica admitting has a stale view of the key's spend", async () => {
    const own = redisPrefix();
    // Keys cached for ten minutes on both: b's view of the key is from before a spent the budget.
    const env = { ...db.env, ...ACCESS_ENV, REDIS_URL, REDIS_KEY_PREFIX: own, API_KEY_CACHE_TTL_MS: '600000' };
    const a = await startGateway({ models: models(base), env });
    const b = await startGateway({ models: models(base), env });
    try {
      const { id, key } = await adminApi(a).createKey({ name: 'budget seen stale', daily_budget_usd: '0.5' });
      expect((await chat(b, key, ask('acme/chat', 10))).status).toBe(200);
      while ((await chat(a, key, ask('acme/chat', 10))).status === 200);
      // One database for both: a's view of it has every row.
      const spent = async () => (await a.rows()).filter((r) => r.api_key_id === id).reduce((n, r) => n + Number(r.cost_usd), 0);
      const before = await spent();
      expect(before).toBeGreaterThan(0.25);
      // Redis loses the counters (a restart without persistence, an eviction).
      await clearRedisPrefix(own);
      const results = await Promise.all(Array.from({ length: 12 }, () => chat(b, key, ask('acme/chat', 10))));
      // b started the counter again from the request log, not from the spend it cached: what was
      // left of the budget is admitted (each call reserving $0.14, costing $0.06), not about $0.4
      // more, as from b's view ($0.06).
      expect(results.filter((r) => r.status === 200).length).toBeLessThanOrEqual(3);
      await new Promise((r) => setTimeout(r, 300)); // the rows written
      expect(await spent()).toBeLessThanOrEqual(0.5);
    } finally {
      await a.close();
      await b.close();
      await clearRedisPrefix(own);
    }
  });

  it('holds a key to its budget when a request settles on a stale replica after Redis lost its spend counter', async () => {
    const own = redisPrefix();
    const env = { ...db.env, ...ACCESS_ENV, REDIS_URL, REDIS_KEY_PREFIX: own, API_KEY_CACHE_TTL_MS: '600000' };
    const a = await startGateway({ models: models(base), env });
    const b = await startGateway({ models: models(base), env });
    try {
      const { id, key } = await adminApi(a).createKey({ name: 'settled on a stale replica', daily_budget_usd: '1' });
      expect((await chat(b, key, ask('acme/chat', 10))).status).toBe(200);
      upstream.reset();
      const slow = chat(b, key, ask('acme/slow-priced', 10));
      await upstream.waitForRequests(1);
      while ((await chat(a, key, ask('acme/chat', 10))).status === 200);
      await clearRedisPrefix(own);
      // b's call settles with b's old view of the key: that must not start the counter again.
      expect((await slow).status).toBe(200);
      await new Promise((r) => setTimeout(r, 300)); // its row made (after the answer)
      await Promise.all(Array.from({ length: 16 }, () => chat(b, key, ask('acme/chat', 10))));
      await new Promise((r) => setTimeout(r, 300)); // the rows written
      // Each call reserves more than it costs ($0.14, $0.06): the budget holds exactly. From b's old
      // view ($0.12 against $0.72 spent), the counter let about $0.6 more through.
      const spent = (await a.rows()).filter((r) => r.api_key_id === id).reduce((n, r) => n + Number(r.cost_usd), 0);
      expect(spent).toBeGreaterThan(0.7);
      expect(spent).toBeLessThanOrEqual(1);
    } finally {
      await a.close();
      await b.close();
      await clearRedisPrefix(own);
    }
  });

  it('counts spend settled on another replica while the counter was lost, and starts nothing from a stale view when the log is slow', async () => {
    const own = redisPrefix();
    const env = {
      ...db.env,
      ...ACCESS_ENV,
      REDIS_URL,
      REDIS_KEY_PREFIX: own,
      API_KEY_CACHE_TTL_MS: '600000',
      REQUEST_LOG_FLUSH_MS: '1000',
    };
    const a = await startGateway({ models: models(base), env });
    const b = await startGateway({ models: models(base), env });
    const pg = new Client(db.url);
    await pg.connect();
    try {
      const { id, key } = await adminApi(a).createKey({ name: 'settled while lost', daily_budget_usd: '1' });
      expect((await chat(a, key, ask('acme/chat', 10))).status).toBe(200);
      upstream.reset();
      const slow = Promise.all(Array.from({ length: 5 }, () => chat(b, key, ask('acme/slow-priced', 10))));
      await upstream.waitForRequests(5);
      await clearRedisPrefix(own);
      expect((await slow).map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
      // b's five settled with the counter lost, their rows not written yet (flushed each second).
      while ((await chat(a, key, ask('acme/chat', 10))).status === 200);
      const spent = async () => (await a.rows()).filter((r) => r.api_key_id === id).reduce((n, r) => n + Number(r.cost_usd), 0);
      await new Promise((r) => setTimeout(r, 1500));
      expect(await spent()).toBeLessThanOrEqual(1);

      // The request log too slow to read (a lock held 1.5 s) while the counter is lost: the call
      // waits at most a second, and no counter starts from b's old view of the key.
      const second = await adminApi(a).createKey({ name: 'lost while the log is slow', daily_budget_usd: '1' });
      expect((await chat(b, second.key, ask('acme/chat', 10))).status).toBe(200);
      while ((await chat(a, second.key, ask('acme/chat', 10))).status === 200);
      await new Promise((r) => setTimeout(r, 1200)); // a's rows written
      await clearRedisPrefix(own);
      await pg.query('BEGIN');
      await pg.query('LOCK TABLE api_logs_hourly IN ACCESS EXCLUSIVE MODE');
      const started = performance.now();
      await chat(b, second.key, ask('acme/chat', 10));
      expect(performance.now() - started).toBeLessThan(1400);
      await new Promise((r) => setTimeout(r, 300));
      await pg.query('COMMIT');
      while ((await chat(b, second.key, ask('acme/chat', 10))).status === 200);
      await new Promise((r) => setTimeout(r, 1500));
      const spentSecond = (await a.rows()).filter((r) => r.api_key_id === second.id).reduce((n, r) => n + Number(r.cost_usd), 0);
      expect(spentSecond).toBeLessThanOrEqual(1.06); // at most the one call admitted while the log was locked
    } finally {
      await pg.query('ROLLBACK').catch(() => undefined);
      await pg.end();
      await a.close();
      await b.close();
      await clearRedisPrefix(own);
    }
  });

  it('holds a key to its budget when Redis lost its spend counter while many requests start at once', async () => {
    const own = redisPrefix();
    // Keys read again within 200 ms: the baseline comes from the request log.
    const gw = await startGateway({
      models: models(base),
      env: { ...db.env, ...ACCESS_ENV, REDIS_URL, REDIS_KEY_PREFIX: own, API_KEY_CACHE_TTL_MS: '200' },
    });
    try {
      const { id, key } = await adminApi(gw).createKey({ name: 'budget after a lost counter', daily_budget_usd: '1' });
      const long = { model: 'acme/slow-priced', messages: [{ role: 'user', content: 'w '.repeat(40) }], max_tokens: 10 };
      const spent = async () => (await gw.rows()).filter((r) => r.api_key_id === id).reduce((n, r) => n + Number(r.cost_usd), 0);
      while ((await spent()) < 0.5) expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200);
      // Redis loses the counter (a restart without persistence, an eviction); the key is read again.
      await clearRedisPrefix(own);
      await new Promise((r) => setTimeout(r, 400));
      const results = await Promise.all(Array.from({ length: 12 }, () => chat(gw, key, long)));
      // About half the budget was spent and each costs about half of it: one fits, not twelve (the
      // requests in flight counted as well as the request log's spend, not instead of part of it).
      expect(results.filter((r) => r.status === 200).length).toBeLessThanOrEqual(1);
      expect(results.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(11);
      // Within the budget but for the difference between a request's estimate and its cost.
      expect(await spent()).toBeLessThan(1.1);
    } finally {
      await gw.close();
      await clearRedisPrefix(own);
    }
  });
});

describe('limits when Redis goes away', () => {
  const upstream = new OpenAiUpstream();
  let proxy: TcpProxy;
  let gw: TestGateway;
  const prefix = redisPrefix();

  beforeAll(async () => {
    const base = await upstream.start();
    const url = new URL(REDIS_URL);
    proxy = new TcpProxy(url.hostname, Number(url.port || 6379));
    const port = await proxy.start();
    gw = await startGateway({
      models: models(base),
      env: { ...ACCESS_ENV, REDIS_URL: `redis://127.0.0.1:${port}${url.pathname}`, REDIS_KEY_PREFIX: prefix },
    });
  });
  afterAll(async () => {
    await gw?.close();
    await proxy.stop();
    await upstream.stop();
    await clearRedisPrefix(prefix);
  });

  it('keeps serving on per-process limits and reports Redis as degraded', async () => {
    const { key } = await adminApi(gw).createKey({ name: 'fallback', rpm_limit: 2 });
    expect(await (await fetch(`${gw.url}/health`)).json()).toMatchObject({ info: { redis: { mode: 'shared' } } });
    await proxy.stop();
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await chat(gw, key, ask('acme/chat'))).status);
    expect(statuses).toEqual([200, 200, 429]);
    const health = await fetch(`${gw.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'degraded', details: { redis: { status: 'degraded', mode: 'per-process' } } });
  });

  it('goes on from the spend Redis last counted, not from what the key knew when it was loaded', async () => {
    await proxy.stop();
    await proxy.start();
    await waitFor(
      async () =>
        ((await (await fetch(`${gw.url}/health`)).json()) as { info?: { redis?: { mode?: string } } }).info?.redis?.mode === 'shared',
      'Redis to be back',
    );
    const admin = adminApi(gw);
    const { id, key } = await admin.createKey({ name: 'budget across the outage', daily_budget_usd: '1000' });
    // One request for its cost; then a budget of four and a half such requests (each is admitted
    // on a reservation of a third more than it costs).
    expect((await chat(gw, key, ask('acme/chat', 4))).status).toBe(200);
    const cost = usdToPico((await gw.rows()).at(-1)!.cost_usd);
    expect(cost).toBeGreaterThan(0n);
    const budget = (cost * 9n) / 2n;
    expect((await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: picoToUsd(budget) })).status).toBe(200);
    // The key is loaded again (spend so far: one request) and spends two more through Redis;
    // the loaded key still thinks one request was spent.
    for (let i = 0; i < 2; i++) expect((await chat(gw, key, ask('acme/chat', 4))).status).toBe(200);
    await proxy.stop();
    const after: number[] = [];
    for (let i = 0; i < 4; i++) after.push((await chat(gw, key, ask('acme/chat', 4))).status);
    // Per process, from the spend Redis had counted (three requests): one more fits. From the
    // loaded key's (one request), three more did: 133% of the budget.
    const spent = (await gw.rows()).filter((r) => r.api_key_id === id).reduce((sum, r) => sum + usdToPico(r.cost_usd), 0n);
    expect({ after, withinBudget: spent <= budget }).toEqual({ after: [200, 429, 429, 429], withinBudget: true });
  });

  const shared = async () =>
    ((await (await fetch(`${gw.url}/health`)).json()) as { info?: { redis?: { mode?: string } } }).info?.redis?.mode === 'shared';
  const redisBack = async () => {
    proxy.release();
    await proxy.stop();
    await proxy.start();
    await waitFor(shared, 'Redis to be back');
  };

  it('does not hold requests while Redis stalls with its connection open, and shares again once it answers', async () => {
    await redisBack();
    const { key } = await adminApi(gw).createKey({ name: 'stalled redis', rpm_limit: 100 });
    expect((await chat(gw, key, ask('acme/chat'))).status).toBe(200);
    proxy.hold(); // connections stay open, nothing answers: no close for the client to see
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      expect((await chat(gw, key, ask('acme/chat'))).status).toBe(200);
      times.push(performance.now() - started);
    }
    // The first waits out REDIS_COMMAND_TIMEOUT_MS (500 ms); then Redis counts as down.
    expect(times[0]).toBeLessThan(2000);
    expect(Math.max(times[1], times[2])).toBeLessThan(300);
    expect(await shared()).toBe(false);
    proxy.release();
    await waitFor(shared, 'Redis to answer again');
  });

  it('settles in Redis, once it is back, the requests that ended while it was away: their slots are free', async () => {
    await redisBack();
    const { key } = await adminApi(gw).createKey({ name: 'slot across a cut', max_concurrency: 1 });
    const slow = chat(gw, key, ask('acme/slow')); // admitted through Redis; 3 s to answer
    await new Promise((r) => setTimeout(r, 500));
    await proxy.stop(); // the answer comes while Redis is away: its settlement cannot be made
    expect((await slow).status).toBe(200);
    await proxy.start();
    await waitFor(shared, 'Redis to be back');
    // Left to its lease, the slot held the key at its limit for the whole-request timeout + 60 s.
    await waitFor(async () => (await chat(gw, key, ask('acme/chat'))).status === 200, 'the slot to be free', 3000);
  });

  it('makes a settlement that timed out while Redis stalled once, though Redis made it when it answered again', async () => {
    await redisBack();
    const redis = new Redis(REDIS_URL);
    try {
      const { id, key } = await adminApi(gw).createKey({ name: 'settled across a stall', daily_budget_usd: '100' });
      upstream.reset();
      const slow = chat(gw, key, ask('acme/slow-priced', 10));
      await upstream.waitForRequests(1);
      proxy.hold(); // the settlement is sent, and waits in the stalled connection
      expect((await slow).status).toBe(200);
      await new Promise((r) => setTimeout(r, 800)); // past REDIS_COMMAND_TIMEOUT_MS: kept to be made again
      proxy.release(); // Redis runs the stalled settlement now
      await waitFor(shared, 'Redis to answer again');
      const cost = nano(usdToPico((await gw.rows()).find((r) => r.api_key_id === id)!.cost_usd));
      const counter = `${prefix}lim:{${id}}:spent:d:${Math.floor(Date.now() / 86_400_000)}`;
      await waitFor(async () => Number(await redis.get(counter)) === cost, 'the stalled settlement to be made', 3000);
      await new Promise((r) => setTimeout(r, 1500)); // the replay, had it counted again
      expect(Number(await redis.get(counter))).toBe(cost);
    } finally {
      redis.disconnect();
    }
  });

  it('makes once a settlement whose answer was lost with its connection, though the connection is made again', async () => {
    await redisBack();
    const redis = new Redis(REDIS_URL);
    try {
      const { id, key } = await adminApi(gw).createKey({ name: 'settled across a reconnect', daily_budget_usd: '100' });
      upstream.reset();
      const slow = chat(gw, key, ask('acme/slow-priced', 10));
      await upstream.waitForRequests(1);
      proxy.dropReplies(); // the settlement runs in Redis; its answer never comes back
      expect((await slow).status).toBe(200);
      await new Promise((r) => setTimeout(r, 800)); // past REDIS_COMMAND_TIMEOUT_MS
      await proxy.stop(); // the connection is lost, and made again
      proxy.release();
      await proxy.start();
      await waitFor(shared, 'Redis to answer again');
      const cost = nano(usdToPico((await gw.rows()).find((r) => r.api_key_id === id)!.cost_usd));
      const counter = `${prefix}lim:{${id}}:spent:d:${Math.floor(Date.now() / 86_400_000)}`;
      await waitFor(async () => Number(await redis.get(counter)) === cost, 'the settlement to be counted', 3000);
      await new Promise((r) => setTimeout(r, 1500)); // a command sent again on the new connection, had it counted again
      expect(Number(await redis.get(counter))).toBe(cost);
    } finally {
      redis.disconnect();
    }
  });

  it('counts in Redis, once it answers again, the spend of requests admitted per process while it stalled, once', async () => {
    await redisBack();
    const redis = new Redis(REDIS_URL);
    try {
      const { id, key } = await adminApi(gw).createKey({ name: 'spent across a stall', daily_budget_usd: '100' });
      expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200); // counted in Redis
      proxy.hold(); // nothing answers: checked and settled per process
      for (let i = 0; i < 2; i++) expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200);
      proxy.release();
      await waitFor(shared, 'Redis to answer again');
      // The next request through Redis carries what Redis never saw: left out, the key could
      // spend its whole budget again; added on top of a baseline that holds it, twice.
      expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200);
      const rows = (await gw.rows()).filter((r) => r.api_key_id === id);
      expect(rows).toHaveLength(4);
      const cost = rows.reduce((sum, r) => sum + nano(usdToPico(r.cost_usd)), 0);
      expect(cost).toBeGreaterThan(0);
      const counter = `${prefix}lim:{${id}}:spent:d:${Math.floor(Date.now() / 86_400_000)}`;
      await waitFor(async () => Number(await redis.get(counter)) === cost, 'the per-process spend to reach Redis', 3000);
      expect((await chat(gw, key, ask('acme/chat', 10))).status).toBe(200);
      const all = (await gw.rows()).filter((r) => r.api_key_id === id);
      await waitFor(
        async () => Number(await redis.get(counter)) === all.reduce((sum, r) => sum + nano(usdToPico(r.cost_usd)), 0),
        'the counter to stay exact',
        3000,
      );
    } finally {
      redis.disconnect();
    }
  });

  it('frees in Redis the slot of an admission that timed out while Redis stalled, made there when it answered', async () => {
    await redisBack();
    const { key } = await adminApi(gw).createKey({ name: 'admitted across a stall', max_concurrency: 1 });
    proxy.hold();
    expect((await chat(gw, key, ask('acme/chat'))).status).toBe(200); // checked per process after 500 ms
    proxy.release(); // Redis makes the stalled admission: a slot that nothing would settle
    await waitFor(shared, 'Redis to answer again');
    await waitFor(async () => (await chat(gw, key, ask('acme/chat'))).status === 200, 'the slot to be free', 3000);
  });

  it('counts a request Redis admitted that still runs: per process while Redis is away, and in a Redis back empty', async () => {
    await redisBack();
    const { key } = await adminApi(gw).createKey({ name: 'slot across a restart', max_concurrency: 1 });
    upstream.reset();
    const slow = chat(gw, key, ask('acme/slower')); // admitted through Redis; 8 s to answer
    await upstream.waitForRequests(1);
    await proxy.stop();
    const away = await chat(gw, key, ask('acme/chat'));
    expect(away.status).toBe(429);
    expect(away.body.error).toMatchObject({ code: 'concurrency_limit_exceeded' });
    // Redis restarts without its data (no persistence): it learns of the request again.
    await clearRedisPrefix(prefix);
    await proxy.start();
    await waitFor(shared, 'Redis to be back');
    const back = await chat(gw, key, ask('acme/chat'));
    expect(back.status).toBe(429);
    expect(back.body.error).toMatchObject({ code: 'concurrency_limit_exceeded' });
    expect((await slow).status).toBe(200);
    await waitFor(async () => (await chat(gw, key, ask('acme/chat'))).status === 200, 'the slot to be free', 3000);
  });
});

describe('Redis leases of requests in flight', () => {
  const LEASE_MS = 1500;
  const replicas = twoReplicas({ REDIS_LEASE_MS: String(LEASE_MS) });

  it('are renewed while the request runs, so that its slot stays taken past the lease', async () => {
    const { a, b, upstream } = replicas;
    const { key } = await adminApi(a).createKey({ name: 'long request', max_concurrency: 1 });
    upstream.reset();
    const slow = chat(a, key, ask('acme/slow')); // 3 s, twice the lease
    await upstream.waitForRequests(1);
    await new Promise((r) => setTimeout(r, LEASE_MS + 700));
    const meanwhile = await chat(b, key, ask('acme/chat'));
    expect(meanwhile.status).toBe(429);
    expect(meanwhile.body.error).toMatchObject({ code: 'concurrency_limit_exceeded' });
    expect((await slow).status).toBe(200);
    await waitFor(async () => (await chat(b, key, ask('acme/chat'))).status === 200, 'the slot to be free', 3000);
  });

  it('of a process that died are free within the lease, slots and budget reservations', async () => {
    const { a, b, upstream } = replicas;
    const { key } = await adminApi(a).createKey({ name: 'crashed replica', max_concurrency: 1, daily_budget_usd: 1 });
    const env = a.app.get(AppConfig).env;
    const crashing = await launchGateway(
      {
        ...ACCESS_ENV,
        DB_BACKEND: 'postgres',
        DATABASE_URL: env.DATABASE_URL!,
        REDIS_URL,
        REDIS_KEY_PREFIX: env.REDIS_KEY_PREFIX,
        REDIS_LEASE_MS: String(LEASE_MS),
      },
      replicas.models,
    );
    try {
      upstream.reset();
      // Admitted there, reserving most of the budget (max_tokens at $0.01 a token), then killed.
      void fetch(`${crashing.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify(ask('acme/slow-priced', 90)),
      }).catch(() => undefined);
      await upstream.waitForRequests(1);
    } finally {
      await crashing.kill();
    }
    const killed = Date.now();
    const at_once = await chat(b, key, ask('acme/chat', 20));
    expect(at_once.status).toBe(429);
    await waitFor(async () => (await chat(b, key, ask('acme/chat', 20))).status === 200, "the dead process's slot to be free", 5000);
    // Free once its lease ran out (not the whole-request lease, minutes by default).
    expect(Date.now() - killed).toBeLessThan(LEASE_MS + 2000);
  });
});
