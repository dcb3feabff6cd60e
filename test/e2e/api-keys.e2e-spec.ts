import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { picoToUsd, usdToPico } from '../../src/common/money';
import { DatabaseService } from '../../src/storage/database.service';
import { RequestLogWriter } from '../../src/storage/request-log.writer';
import { ACCESS_ENV, adminApi, call, chat, KEY_SECRET } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

const MODELS = `
models:
  - id: demo/mock
    context_length: 4096
    pricing: { prompt: 1, completion: 2 }
    route: [{ kind: mock, tokens: 3 }]
`;
const ask = { model: 'demo/mock', messages: [{ role: 'user', content: 'hi' }] };

describe.each(['sqlite', 'postgres'] as const)('API keys on %s', (backend) => {
  let gw: TestGateway;
  let pg: TestDatabase | undefined;
  let admin: ReturnType<typeof adminApi>;
  const logLines: string[] = [];

  beforeAll(async () => {
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({
      models: MODELS,
      env: { ...pg?.env, ...ACCESS_ENV, USER_AUTH_ENABLED: 'true', API_KEY_CACHE_TTL_MS: '60000', LOG_LEVEL: 'info' },
      logLines,
    });
    admin = adminApi(gw);
  });
  afterAll(async () => {
    await gw?.close();
    await pg?.drop();
  });

  it('creates a key whose secret is shown once, and never stores or shows it again', async () => {
    const created = await admin.createKey({
      name: 'team a',
      rpm_limit: 60,
      tpm_limit: 100000,
      max_concurrency: 4,
      daily_budget_usd: '12.5',
      monthly_budget_usd: 100,
      expires_at: '2099-01-01T00:00:00Z',
      notes: 'for the demo',
    });
    expect(created).toMatchObject({
      object: 'api_key',
      name: 'team a',
      status: 'active',
      rpm_limit: 60,
      tpm_limit: 100000,
      max_concurrency: 4,
      daily_budget_usd: '12.5',
      monthly_budget_usd: '100',
      expires_at: '2099-01-01T00:00:00.000Z',
      notes: 'for the demo',
      revoked_at: null,
    });
    expect(created.key).toMatch(/^hyi-[A-Za-z0-9_-]{43}$/);
    expect(created.prefix).toBe(created.key.slice(0, 12));

    const got = await admin.call('GET', `/admin/api-keys/${created.id}`);
    expect(got.status).toBe(200);
    expect(got.body).not.toHaveProperty('key');
    const list = await admin.call<{ data: Array<Record<string, unknown>>; total: number }>('GET', '/admin/api-keys?limit=10');
    expect(list.body.data.map((k) => k.id)).toContain(created.id);
    for (const text of [JSON.stringify(got.body), JSON.stringify(list.body)]) {
      expect(text).not.toContain(created.key);
      expect(text).not.toContain('key_hash');
    }

    // Only the HMAC is in the database.
    const ds = gw.app.get(DatabaseService).dataSource!;
    const stored = await ds.query<Array<{ key_hash: string }>>(
      `SELECT key_hash FROM api_keys WHERE id = ${backend === 'postgres' ? '$1' : '?'}`,
      [created.id],
    );
    expect(stored[0].key_hash).toBe(createHmac('sha256', KEY_SECRET).update(created.key).digest('hex'));
  });

  it('lets a key call, by Bearer or x-api-key, and logs the call under it', async () => {
    const { id, key } = await admin.createKey({ name: 'caller' });
    const a = await chat(gw, key, ask);
    expect(a.status).toBe(200);
    const b = await chat(gw, undefined, ask, { 'x-api-key': key });
    expect(b.status).toBe(200);
    const rows = await gw.rows();
    const mine = rows.filter((r) => r.api_key_id === id);
    expect(mine.map((r) => `gen-${r.id}`).sort()).toEqual([a.body.id, b.body.id].sort());
  });

  it('answers missing, unknown, revoked, suspended and expired keys with 401 / 403 in the OpenAI shape', async () => {
    const none = await chat(gw, undefined, ask);
    expect(none.status).toBe(401);
    expect(none.body).toEqual({
      error: {
        message: expect.stringContaining('API key is required'),
        type: 'authentication_error',
        param: null,
        code: 'missing_api_key',
      },
    });

    for (const bad of ['hyi-not-a-key-we-know-of-0000000000000000000000000', 'sk-some-other-key']) {
      const res = await chat(gw, bad, ask);
      expect(res.status).toBe(401);
      expect(res.body.error).toMatchObject({ type: 'authentication_error', code: 'invalid_api_key' });
      // The same key would be refused again: no client should retry it (Claude Code did, for minutes).
      expect(res.headers.get('x-should-retry')).toBe('false');
    }

    const suspended = await admin.createKey({ name: 'to suspend' });
    expect((await admin.call('PATCH', `/admin/api-keys/${suspended.id}`, { status: 'suspended' })).body).toMatchObject({
      status: 'suspended',
    });
    const s = await chat(gw, suspended.key, ask);
    expect(s.status).toBe(403);
    expect(s.body.error).toMatchObject({ type: 'permission_error', code: 'api_key_suspended' });
    expect(s.headers.get('x-should-retry')).toBe('false');
    expect((await admin.call('PATCH', `/admin/api-keys/${suspended.id}`, { status: 'active' })).status).toBe(200);
    expect((await chat(gw, suspended.key, ask)).status).toBe(200);

    const revoked = await admin.createKey({ name: 'to revoke' });
    expect((await chat(gw, revoked.key, ask)).status).toBe(200); // now cached for a minute
    expect((await admin.call('POST', `/admin/api-keys/${revoked.id}/revoke`)).body).toMatchObject({
      status: 'revoked',
      revoked_at: expect.any(String),
    });
    const r = await chat(gw, revoked.key, ask);
    expect(r.status).toBe(401);
    expect(r.body.error).toMatchObject({ type: 'authentication_error', code: 'api_key_revoked' });

    const expiring = await admin.createKey({ name: 'expiring', expires_at: new Date(Date.now() + 60_000).toISOString() });
    const ds = gw.app.get(DatabaseService).dataSource!;
    await ds.getRepository('ApiKey').update({ id: expiring.id }, { expires_at: new Date(Date.now() - 1000) });
    const e = await chat(gw, expiring.key, ask);
    expect(e.status).toBe(401);
    expect(e.body.error).toMatchObject({ code: 'api_key_expired' });
    // The admin API lists it as expired, not active, and filters by that.
    expect((await admin.call('GET', `/admin/api-keys/${expiring.id}`)).body).toMatchObject({ status: 'expired' });
    const ids = async (status: string) =>
      ((await admin.call('GET', `/admin/api-keys?status=${status}&limit=500`)).body as { data: Array<{ id: string }> }).data.map(
        (k) => k.id,
      );
    expect(await ids('expired')).toEqual([expiring.id]);
    expect(await ids('active')).not.toContain(expiring.id);
    expect((await ids('active')).length).toBeGreaterThan(0);
  });

  it('logs and counts a refused call, without what was sent and without a row', async () => {
    const refusals = async () => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      return Number(/^hybridinference_auth_refusals_total\{status="401",code="invalid_api_key"\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const before = await refusals();
    const rows = (await gw.rows()).length;
    logLines.length = 0;
    const res = await chat(gw, 'sk-probe-secret-0123456789', ask);
    expect(res.status).toBe(401);
    const refused = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request refused');
    expect(refused).toEqual([
      expect.objectContaining({
        status: 401,
        error: 'invalid_api_key',
        method: 'POST',
        path: '/v1/chat/completions',
        reqId: expect.any(String),
      }),
    ]);
    expect(logLines.join('\n')).not.toContain('probe-secret');
    expect(await refusals()).toBe(before + 1);
    await gw.app.get(RequestLogWriter).flush();
    expect((await gw.rows()).length).toBe(rows);
  });

  it('changes limits, keeps revoked keys revoked, and regenerates a secret', async () => {
    const k = await admin.createKey({ name: 'changing', rpm_limit: 5 });
    const patched = await admin.call('PATCH', `/admin/api-keys/${k.id}`, {
      rpm_limit: null,
      tpm_limit: 500,
      daily_budget_usd: '0.25',
      name: 'changed',
    });
    expect(patched.body).toMatchObject({ name: 'changed', rpm_limit: null, tpm_limit: 500, daily_budget_usd: '0.25' });

    expect((await chat(gw, k.key, ask)).status).toBe(200);
    const regen = await admin.call<{ key: string; prefix: string; id: string }>('POST', `/admin/api-keys/${k.id}/regenerate`);
    expect(regen.status).toBe(200);
    expect(regen.body.id).toBe(k.id);
    expect(regen.body.key).not.toBe(k.key);
    expect(regen.body.prefix).toBe(regen.body.key.slice(0, 12));
    expect((await chat(gw, k.key, ask)).status).toBe(401);
    expect((await chat(gw, regen.body.key, ask)).status).toBe(200);

    expect((await admin.call('DELETE', `/admin/api-keys/${k.id}`)).body).toMatchObject({ status: 'revoked' });
    const again = await admin.call<{ error: { code: string } }>('PATCH', `/admin/api-keys/${k.id}`, { status: 'active' });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('api_key_revoked');
    expect((await admin.call('POST', `/admin/api-keys/${k.id}/regenerate`)).status).toBe(409);
    expect((await admin.call('GET', '/admin/api-keys?status=revoked')).body).toMatchObject({
      data: expect.arrayContaining([expect.objectContaining({ id: k.id })]),
    });
  });

  it('keeps a key revoked that was changed at the same moment, and regenerates one secret at a time', async () => {
    const keys = await Promise.all(Array.from({ length: 10 }, (_, i) => admin.createKey({ name: `racing ${i}` })));
    await Promise.all(
      keys.flatMap((k) => [
        admin.call('PATCH', `/admin/api-keys/${k.id}`, { status: 'active', rpm_limit: 50 }),
        admin.call('POST', `/admin/api-keys/${k.id}/revoke`),
        admin.call('PATCH', `/admin/api-keys/${k.id}`, { status: 'active' }),
      ]),
    );
    for (const k of keys) {
      expect((await admin.call('GET', `/admin/api-keys/${k.id}`)).body).toMatchObject({ status: 'revoked' });
      expect((await chat(gw, k.key, ask)).status).toBe(401);
    }

    const k = await admin.createKey({ name: 'regenerated at once' });
    const regens = await Promise.all(
      Array.from({ length: 8 }, () => admin.call<{ key: string; prefix: string }>('POST', `/admin/api-keys/${k.id}/regenerate`)),
    );
    const issued = regens.filter((r) => r.status === 200).map((r) => r.body);
    expect(issued.length).toBeGreaterThan(0);
    for (const r of regens.filter((x) => x.status !== 200)) expect(r.body).toMatchObject({ error: { code: 'api_key_changed' } });
    for (const r of issued) expect(r.prefix).toBe(r.key.slice(0, 12));
    // Each one that was issued replaced the one before it: the last is the one that works.
    const working = [];
    for (const r of issued) if ((await chat(gw, r.key, ask)).status === 200) working.push(r.key);
    expect(working).toHaveLength(1);
  });

  it("describes the calling key at /v1/key in OpenRouter's shape: spend by period, and the budget that runs out first", async () => {
    const k = await admin.createKey({
      name: 'metered',
      rpm_limit: 30,
      daily_budget_usd: '0.1',
      monthly_budget_usd: '10',
      expires_at: '2099-01-01T00:00:00Z',
    });
    const info = (path: string, headers: Record<string, string>) =>
      call<{ data: Record<string, unknown> }>(`${gw.url}${path}`, 'GET', undefined, headers);
    const before = await info('/v1/key', { authorization: `Bearer ${k.key}` });
    expect(before.status).toBe(200);
    expect(before.body.data).toEqual({
      label: `${k.prefix}...`,
      name: 'metered',
      limit: 0.1,
      limit_reset: 'daily',
      limit_remaining: 0.1,
      usage: 0,
      usage_daily: 0,
      usage_weekly: 0,
      usage_monthly: 0,
      byok_usage: 0,
      byok_usage_daily: 0,
      byok_usage_weekly: 0,
      byok_usage_monthly: 0,
      include_byok_in_limit: false,
      is_free_tier: false,
      is_provisioning_key: false,
      is_management_key: false,
      expires_at: '2099-01-01T00:00:00.000Z',
      allowed_data_regions: ['global'],
      creator_user_id: null,
      organization_id: null,
      workspace_id: null,
      free_model_daily_requests: { limit: -1, remaining: -1, used: 0 },
      rate_limit: { requests: 30, interval: '1m', note: expect.stringContaining('rpm_limit') },
      limits: { rpm_limit: 30, tpm_limit: null, max_concurrency: null, daily_budget_usd: '0.1', monthly_budget_usd: '10' },
    });

    let spent = 0n;
    for (let i = 0; i < 3; i++) {
      const res = await chat(gw, k.key, ask);
      expect(res.status).toBe(200);
      spent += usdToPico((res.body.usage as { cost: number }).cost);
    }
    expect(spent).toBeGreaterThan(0n);
    const usd = (pico: bigint) => Number(picoToUsd(pico));
    // The figure is the rows' cost (written first: a batch being written at the moment of the
    // read is counted by the next read).
    const rows = (await gw.rows()).filter((r) => r.api_key_id === k.id);
    expect(rows.reduce((sum, r) => sum + usdToPico(r.cost_usd), 0n)).toBe(spent);
    // OpenRouter's base path and its older /auth/key; Anthropic's header.
    const after = await info('/api/v1/auth/key', { 'x-api-key': k.key });
    expect(after.status).toBe(200);
    expect(after.body.data).toMatchObject({
      usage: usd(spent),
      usage_daily: usd(spent),
      usage_weekly: usd(spent),
      usage_monthly: usd(spent),
      limit: 0.1,
      limit_reset: 'daily',
      limit_remaining: usd(usdToPico('0.1') - spent),
    });

    // With more left of the daily budget than of the monthly one, the monthly one is the limit.
    await admin.call('PATCH', `/admin/api-keys/${k.id}`, { daily_budget_usd: '100' });
    expect((await info('/v1/key', { authorization: `Bearer ${k.key}` })).body.data).toMatchObject({
      limit: 10,
      limit_reset: 'monthly',
      limit_remaining: usd(usdToPico('10') - spent),
    });

    // A key without limits has none, and another key's spend is not its own.
    const plain = await admin.createKey({ name: 'plain' });
    expect((await info('/v1/key', { authorization: `Bearer ${plain.key}` })).body.data).toMatchObject({
      usage: 0,
      limit: null,
      limit_reset: null,
      limit_remaining: null,
      expires_at: null,
      rate_limit: { requests: -1, interval: '1m' },
    });
    const none = await info('/v1/key', {});
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ error: { type: 'authentication_error', code: 'missing_api_key' } });
  });

  it('answers 404 for a key that does not exist', async () => {
    for (const [method, path] of [
      ['GET', '/admin/api-keys/nope'],
      ['PATCH', '/admin/api-keys/nope'],
      ['POST', '/admin/api-keys/nope/revoke'],
      ['POST', '/admin/api-keys/nope/regenerate'],
    ] as const) {
      const res = await admin.call<{ error: { type: string; code: string } }>(method, path, method === 'PATCH' ? { name: 'x' } : undefined);
      expect(res.status).toBe(404);
      expect(res.body.error).toMatchObject({ type: 'not_found_error', code: 'api_key_not_found' });
    }
  });

  it('answers bad admin input with a 400 that lists every field error', async () => {
    const res = await admin.call<{ error: { message: string; type: string; param: string; code: string } }>('POST', '/admin/api-keys', {
      name: '',
      rpm_limit: -1,
      tpm_limit: 1.5,
      max_concurrency: 'four',
      daily_budget_usd: 'lots',
      expires_at: '2001-01-01T00:00:00Z',
      rpm_limt: 5,
    });
    expect(res.status).toBe(400);
    expect(res.body.error.type).toBe('invalid_request_error');
    for (const field of ['name', 'rpm_limit', 'tpm_limit', 'max_concurrency', 'daily_budget_usd', 'expires_at', 'rpm_limt']) {
      expect(res.body.error.message).toContain(field);
      expect(res.body.error.param).toContain(field);
    }
    expect(res.body.error.message).toContain('property rpm_limt should not exist');
    // Too large says so (the column keeps 12 integer digits), not only "non-negative".
    const huge = await admin.call<{ error: { message: string } }>('POST', '/admin/api-keys', {
      name: 'x',
      monthly_budget_usd: '1000000000000',
    });
    expect(huge.body.error.message).toContain('monthly_budget_usd must be a non-negative amount of USD below 1000000000000');

    const cases: Array<[string, string, unknown, string]> = [
      ['POST', '/admin/api-keys', {}, 'name'],
      ['POST', '/admin/api-keys', [1, 2], 'body'],
      ['POST', '/admin/api-keys', 'not json', 'body'],
      ['PATCH', '/admin/api-keys/any', { status: 'revoked' }, 'status'],
      ['PATCH', '/admin/api-keys/any', { name: null }, 'name'],
      ['PATCH', '/admin/api-keys/any', { rpm_limit: 0 }, 'rpm_limit'],
      ['PATCH', '/admin/api-keys/any', { monthly_budget_usd: 'lots' }, 'monthly_budget_usd'],
      ['PATCH', '/admin/api-keys/any', { notes: 7 }, 'notes'],
      ['GET', '/admin/api-keys?limit=0', undefined, 'limit'],
      ['GET', '/admin/api-keys?offset=1e20', undefined, 'offset'],
      ['GET', '/admin/api-keys?status=gone', undefined, 'status'],
      ['GET', '/admin/api-keys?cursor=not-a-cursor', undefined, 'cursor'],
      [
        'GET',
        `/admin/api-keys?offset=2&cursor=${Buffer.from(JSON.stringify(['2026-12-07T00:00:00Z', 'x'])).toString('base64url')}`,
        undefined,
        'offset',
      ],
      // Milliseconds sent as seconds: the year 255479, which no column stores as sent.
      ['POST', '/admin/api-keys', { name: 'x', expires_at: 8000000000000 }, 'expires_at'],
      ['POST', '/admin/api-keys', { name: 'x', expires_at: '10000-01-01' }, 'expires_at'],
      // Names class-transformer drops before validation: refused as any unknown field.
      ['POST', '/admin/api-keys', '{"name": "x", "__proto__": {"status": "revoked", "rpm_limit": -5}}', '__proto__'],
      ['PATCH', '/admin/api-keys/any', '{"constructor": {"name": "x"}}', 'constructor'],
      ['GET', '/admin/api-keys?constructor=x', undefined, 'constructor'],
      // Nested, class-transformer took an own `constructor` for the class to build, and threw (a 500).
      ['POST', '/admin/api-keys', '{"name": {"constructor": 1}}', 'name.constructor'],
      ['POST', '/admin/api-keys', '{"name": "k", "allowed_models": [{"constructor": 1}]}', 'allowed_models.0.constructor'],
      ['POST', '/admin/api-keys', '{"name": "k", "metadata": {"a": {"constructor": "x"}}}', 'metadata.a.constructor'],
      ['PATCH', '/admin/api-keys/any', '{"metadata": {"constructor": {}}}', 'metadata.constructor'],
    ];
    for (const [method, path, body, param] of cases) {
      const r = await admin.call<{ error: { param: string; type: string } }>(method, path, body);
      expect([method, path, r.status]).toEqual([method, path, 400]);
      expect(r.body.error).toMatchObject({ type: 'invalid_request_error', param: expect.stringContaining(param) });
    }
  });

  it('pages through the keys newest first with next_cursor, a key created between pages shifting nothing', async () => {
    const made: string[] = [];
    // A few milliseconds apart: keys of one millisecond are ordered by id, not by creation.
    for (let i = 0; i < 5; i++) {
      made.push((await admin.createKey({ name: `paging ${i}` })).id);
      await sleep(3);
    }
    type Page = { data: Array<{ id: string; name: string }>; total: number; has_more: boolean; next_cursor: string | null };
    const first = await admin.call<Page>('GET', '/admin/api-keys?limit=2');
    expect(first.status).toBe(200);
    expect(first.body.data.map((k) => k.id)).toEqual([made[4], made[3]]);
    expect(first.body.has_more).toBe(true);
    const total = first.body.total;
    // A key created now comes first in the list; the next page is where the last one ended.
    const later = (await admin.createKey({ name: 'paging later' })).id;
    const seen = [...first.body.data.map((k) => k.id)];
    let cursor = first.body.next_cursor;
    while (cursor) {
      const page = await admin.call<Page>('GET', `/admin/api-keys?limit=2&cursor=${cursor}`);
      expect(page.status).toBe(200);
      expect(page.body.total).toBe(total + 1);
      seen.push(...page.body.data.map((k) => k.id));
      cursor = page.body.next_cursor;
      expect(page.body.has_more).toBe(cursor !== null);
    }
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).not.toContain(later);
    expect(seen.slice(0, 5)).toEqual([...made].reverse());
    expect(seen.length).toBe(total);
    // Offsets still page (from the newest), so existing clients keep working.
    const byOffset = await admin.call<Page>('GET', '/admin/api-keys?limit=2&offset=1');
    expect(byOffset.body.data.map((k) => k.id)).toEqual([made[4], made[3]]);

    // Keys inserted by hand, in one statement: PostgreSQL's now() has microseconds, and SQLite's
    // datetime('now') no milliseconds; one at a time, the cursor still finds every key once.
    const ds = gw.app.get(DatabaseService).dataSource!;
    await ds.query(
      `INSERT INTO api_keys (id, name, key_hash, key_prefix${backend === 'sqlite' ? ', created_at' : ''}) VALUES ` +
        ['sql-a', 'sql-b', 'sql-c']
          .map((id) => `('${id}', '${id}', 'hash-${id}', 'hyi-x'${backend === 'sqlite' ? ", datetime('now')" : ''})`)
          .join(', '),
    );
    const all: string[] = [];
    let next: string | null = null;
    let listed: number;
    do {
      const page: { body: Page } = await admin.call<Page>('GET', `/admin/api-keys?limit=1${next ? `&cursor=${next}` : ''}`);
      all.push(...page.body.data.map((k) => k.id));
      listed = page.body.total;
      next = page.body.next_cursor;
    } while (next && all.length <= listed);
    expect(all.length).toBe(listed);
    expect(new Set(all).size).toBe(listed);
    expect(all).toEqual(expect.arrayContaining(['sql-a', 'sql-b', 'sql-c', later]));
  });

  it('refuses NUL characters and lone surrogates in admin input and ids with a 400 (not stored as sent), and finds no such generation', async () => {
    const { id } = await admin.createKey({ name: 'nul checks' });
    const cases: Array<[string, string, unknown, string]> = [
      ['POST', '/admin/api-keys', { name: 'x\u0000y' }, 'name'],
      ['PATCH', `/admin/api-keys/${id}`, { notes: 'a\u0000b' }, 'notes'],
      ['GET', '/admin/api-keys/a%00b', undefined, 'id'],
      ['PATCH', '/admin/api-keys/a%00b', { name: 'x' }, 'id'],
      ['GET', '/admin/requests?model=a%00b', undefined, 'model'],
      ['GET', '/admin/requests?key=a%00b', undefined, 'key'],
      ['GET', '/admin/accounts/a%00b', undefined, 'id'],
    ];
    for (const [method, path, body, param] of cases) {
      const r = await admin.call<{ error: { param: string; type: string; message: string } }>(method, path, body);
      expect([method, path, r.status]).toEqual([method, path, 400]);
      expect(r.body.error).toMatchObject({
        type: 'invalid_request_error',
        param: expect.stringContaining(param),
        message: expect.stringContaining('NUL'),
      });
    }
    // Half of a surrogate pair: no database stores it as sent (SQLite read it back as three U+FFFD).
    for (const [method, path, body, param] of [
      ['POST', '/admin/api-keys', { name: 'a\ud800b' }, 'name'],
      ['PATCH', `/admin/api-keys/${id}`, { notes: '\udc00' }, 'notes'],
    ] as const) {
      const r = await admin.call<{ error: { param: string; message: string } }>(method, path, body);
      expect([method, path, r.status]).toEqual([method, path, 400]);
      expect(r.body.error).toMatchObject({ param, message: expect.stringContaining('surrogate') });
    }
    const res = await fetch(`${gw.url}/v1/generation?id=gen-a%00b`, {
      headers: { authorization: `Bearer ${(await admin.createKey({ name: 'gen' })).key}` },
    });
    expect(res.status).toBe(404);
  });

  it('guards the key API with ADMIN_TOKEN: 401 without, 403 with a wrong one, never with a client key', async () => {
    const { key } = await admin.createKey({ name: 'not an admin' });
    logLines.length = 0;
    const none = await call(`${gw.url}/admin/api-keys`, 'GET');
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ error: { type: 'authentication_error', code: 'missing_admin_token' } });
    for (const token of ['wrong-token-wrong-token', key]) {
      const res = await call(`${gw.url}/admin/api-keys`, 'POST', { name: 'x' }, { authorization: `Bearer ${token}` });
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ error: { type: 'permission_error', code: 'invalid_admin_token' } });
    }
    // Refusals are logged (a wrong token as a warning), never with what was sent.
    const refused = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request refused');
    expect(refused.map((l) => [l.level, l.status, l.error, l.path])).toEqual([
      ['info', 401, 'missing_admin_token', '/admin/api-keys'],
      ['warn', 403, 'invalid_admin_token', '/admin/api-keys'],
      ['warn', 403, 'invalid_admin_token', '/admin/api-keys'],
    ]);
    expect(logLines.join('\n')).not.toContain('wrong-token');
    expect(logLines.join('\n')).not.toContain(key);
  });
});

describe('API keys with USER_AUTH_ENABLED=false (the default)', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, env: { ...ACCESS_ENV } });
  });
  afterAll(() => gw.close());

  it('admits anonymous calls and logs them without a key; attributes a key that is sent', async () => {
    const admin = adminApi(gw);
    const { id, key } = await admin.createKey({ name: 'optional' });
    const anonymous = await chat(gw, undefined, ask);
    const unused = await chat(gw, 'unused', ask);
    const withKey = await chat(gw, key, ask);
    expect([anonymous.status, unused.status, withKey.status]).toEqual([200, 200, 200]);
    const rows = await gw.rows();
    const byGen = new Map(rows.map((r) => [`gen-${r.id}`, r]));
    expect(byGen.get(anonymous.body.id as string)?.api_key_id).toBeNull();
    expect(byGen.get(unused.body.id as string)?.api_key_id).toBeNull();
    expect(byGen.get(withKey.body.id as string)?.api_key_id).toBe(id);

    // A key of ours that may not call is refused even so: the client said who it is.
    await admin.call('POST', `/admin/api-keys/${id}/revoke`);
    expect((await chat(gw, key, ask)).status).toBe(401);
    // Without a key there is no key to describe.
    const info = await call<{ error: { code: string; message: string } }>(`${gw.url}/v1/key`, 'GET');
    expect(info.status).toBe(401);
    expect(info.body.error).toMatchObject({
      code: 'missing_api_key',
      message: expect.stringContaining('GET /v1/key describes the API key'),
    });
    // A token that is no key of ours (admitted anonymously elsewhere) is not a key to describe.
    const unknown = await call<{ error: { code: string } }>(`${gw.url}/v1/key`, 'GET', undefined, { authorization: 'Bearer sk-notours' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.error.code).toBe('invalid_api_key');
  });
});

describe('API keys without API_KEY_SECRET', () => {
  it('refuses to start with USER_AUTH_ENABLED=true, naming the variable', async () => {
    await expect(startGateway({ models: MODELS, env: { USER_AUTH_ENABLED: 'true' } })).rejects.toThrow(
      /API_KEY_SECRET is required when USER_AUTH_ENABLED=true/,
    );
  });

  it('cannot create keys, and says why', async () => {
    const gw = await startGateway({ models: MODELS, env: { ADMIN_TOKEN: ACCESS_ENV.ADMIN_TOKEN } });
    try {
      const res = await adminApi(gw).call<{ error: { message: string } }>('POST', '/admin/api-keys', { name: 'x' });
      expect(res.status).toBe(503);
      expect(res.body.error.message).toContain('API_KEY_SECRET');
      expect((await chat(gw, 'hyi-anything', ask)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});
