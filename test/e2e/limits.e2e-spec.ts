import OpenAI from 'openai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { picoToUsd, usdToPico } from '../../src/common/money';
import { AnthropicUpstream } from '../fixtures/anthropic-upstream';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { ACCESS_ENV, adminApi, chat, waitFor } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';

/**
 * Per-key limits in one process (no REDIS_URL), on SQLite: requests and tokens per minute,
 * requests in flight, and budgets with reservation and settlement, surviving a restart.
 */
const models = (upstream: string) => `
models:
  - id: acme/chat
    context_length: 8192
    pricing: { prompt: "10000", completion: "10000" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: ok }]
  - id: acme/slow
    context_length: 8192
    pricing: { prompt: "10000", completion: "10000" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-headers:3000" }]
  - id: acme/slow-stream
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "slow-tokens:300" }]
  - id: acme/cheap
    context_length: 8192
    pricing: { prompt: "1", completion: "1" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: ok }]
  - id: acme/embed
    type: embedding
    context_length: 8192
    pricing: { prompt: "1" }
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: ok }]
`;
const ask = (model: string, max_tokens?: number) => ({
  model,
  messages: [{ role: 'user', content: 'hi' }],
  ...(max_tokens ? { max_tokens } : {}),
});

describe('per-key limits in one process', () => {
  const upstream = new OpenAiUpstream();
  let base: string;
  let dir: string;
  let gw: TestGateway;
  let admin: ReturnType<typeof adminApi>;
  const env = () => ({ ...ACCESS_ENV, DB_SQLITE_PATH: join(dir, 'limits.sqlite'), REQUEST_LOG_SPOOL_DIR: join(dir, 'spool') });

  beforeAll(async () => {
    base = await upstream.start();
    dir = mkdtempSync(join(tmpdir(), 'hi-limits-'));
    gw = await startGateway({ models: models(base), env: env() });
    admin = adminApi(gw);
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('admits rpm_limit requests a minute, then answers 429 with Retry-After and x-ratelimit headers, and logs the refusal', async () => {
    const { id, key } = await admin.createKey({ name: 'rpm', rpm_limit: 3 });
    const remaining: Array<string | null> = [];
    for (let i = 0; i < 3; i++) {
      const res = await chat(gw, key, ask('acme/chat'));
      expect(res.status).toBe(200);
      expect(res.headers.get('x-ratelimit-limit-requests')).toBe('3');
      expect(res.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+s$/);
      remaining.push(res.headers.get('x-ratelimit-remaining-requests'));
    }
    expect(remaining).toEqual(['2', '1', '0']);
    const refused = await chat(gw, key, ask('acme/chat'));
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({
      type: 'rate_limit_error',
      code: 'rpm_limit_exceeded',
      message: expect.stringContaining('3 requests per minute (rpm_limit)'),
    });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expect(refused.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    // Another key is not affected.
    const other = await admin.createKey({ name: 'other', rpm_limit: 3 });
    expect((await chat(gw, other.key, ask('acme/chat'))).status).toBe(200);

    const rows = (await gw.rows()).filter((r) => r.api_key_id === id);
    expect(rows.map((r) => r.status_code).sort()).toEqual([200, 200, 200, 429]);
    expect(rows.find((r) => r.status_code === 429)).toMatchObject({ error_code: 'rpm_limit_exceeded', cost_usd: expect.anything() });
    expect(upstream.requests.length).toBe(4); // the refused request never went upstream
  });

  it('counts tokens per minute, and refuses a request larger than the whole limit', async () => {
    const { key } = await admin.createKey({ name: 'tpm', tpm_limit: 100 });
    const big = await chat(gw, key, ask('acme/chat', 500));
    expect(big.status).toBe(429);
    expect(big.body.error).toMatchObject({
      code: 'tpm_limit_exceeded',
      message: expect.stringContaining('more than the 100 tokens per minute'),
    });
    // It would be refused again after any wait: the SDKs are told not to retry it.
    expect(big.headers.get('x-should-retry')).toBe('false');
    expect(big.headers.get('retry-after')).toBeNull();
    const ok = await chat(gw, key, ask('acme/chat', 20));
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-ratelimit-limit-tokens')).toBe('100');
    const left = Number(ok.headers.get('x-ratelimit-remaining-tokens'));
    expect(left).toBeLessThan(100 - 20);
    // What is left is too little for 90 more tokens.
    const refused = await chat(gw, key, ask('acme/chat', 90));
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'tpm_limit_exceeded', message: expect.stringContaining('retry in') });
    expect(refused.headers.get('x-should-retry')).toBeNull();
  });

  it('says what an embeddings request is charged for (its input), which has no max_tokens to lower', async () => {
    const { key } = await admin.createKey({ name: 'tpm embeddings', tpm_limit: 10 });
    const res = await fetch(`${gw.url}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/embed', input: 'many words '.repeat(40) }),
    });
    expect(res.status).toBe(429);
    const { error } = (await res.json()) as { error: { message: string } };
    expect(error.message).toContain('(its input)');
    expect(error.message).toContain('send fewer or shorter inputs');
    expect(error.message).not.toContain('max_tokens');
  });

  it('shows both windows on a refusal: an rpm 429 still tells the tokens left', async () => {
    const { key } = await admin.createKey({ name: 'rpm and tpm', rpm_limit: 1, tpm_limit: 1000 });
    const ok = await chat(gw, key, ask('acme/chat', 20));
    const left = ok.headers.get('x-ratelimit-remaining-tokens');
    expect(Number(left)).toBeLessThan(1000);
    const refused = await chat(gw, key, ask('acme/chat', 20));
    expect(refused.body.error).toMatchObject({ code: 'rpm_limit_exceeded' });
    // What the first used (settled by now to its real count, at most what it reserved).
    expect(Number(refused.headers.get('x-ratelimit-remaining-tokens'))).toBeGreaterThanOrEqual(Number(left));
    expect(Number(refused.headers.get('x-ratelimit-remaining-tokens'))).toBeLessThan(1000);
    expect(refused.headers.get('x-ratelimit-reset-tokens')).not.toBe('0s');
  });

  it('holds max_concurrency requests in flight, and frees the slot when one ends, even by the client leaving', async () => {
    const { key } = await admin.createKey({ name: 'concurrency', max_concurrency: 1 });
    upstream.reset();
    const first = chat(gw, key, ask('acme/slow'));
    await upstream.waitForRequests(1);
    const second = await chat(gw, key, ask('acme/chat'));
    expect(second.status).toBe(429);
    expect(second.body.error).toMatchObject({
      code: 'concurrency_limit_exceeded',
      message: expect.stringContaining('1 in flight (max_concurrency)'),
    });
    expect(second.headers.get('retry-after')).toBe('1');
    expect(second.headers.get('x-should-retry')).toBeNull(); // a short wait: the SDKs may retry
    expect((await first).status).toBe(200);
    expect((await chat(gw, key, ask('acme/chat'))).status).toBe(200);

    // A streaming client that leaves mid-answer gives its slot back.
    const controller = new AbortController();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({
        model: 'acme/slow-stream',
        stream: true,
        messages: [{ role: 'user', content: 'one two three four five six seven eight' }],
      }),
    });
    const id = res.headers.get('x-request-id');
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    // Its row says the client left (499) mid-answer; by then the slot is free.
    await waitFor(async () => (await gw.rows()).some((r) => r.id === id && r.status_code === 499), 'the row of the abandoned stream');
    expect((await chat(gw, key, ask('acme/chat'))).status).toBe(200);
  });

  it('charges a text completion for every completion it makes: each prompt of a list, best_of times', async () => {
    const { key } = await admin.createKey({ name: 'completions', daily_budget_usd: '1', tpm_limit: 150 });
    const complete = (body: Record<string, unknown>) =>
      fetch(`${gw.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: 'acme/chat', max_tokens: 10, ...body }),
      });
    // $0.01 a token: 20 completions of 10 tokens may cost $2, 20 times one completion's charge.
    for (const body of [{ prompt: Array.from({ length: 20 }, (_, i) => `p${i}`) }, { prompt: 'hi', best_of: 20 }]) {
      const res = await complete(body);
      expect(res.status).toBe(429);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe('tpm_limit_exceeded');
      expect(error.message).toMatch(/needs about 2\d\d tokens/);
    }
    expect((await complete({ prompt: 'hi' })).status).toBe(200);
  });

  it('reserves the worst-case cost against the daily budget and settles the real cost, across a restart', async () => {
    // $0.01 a token; the prompt "hi" is estimated at 8 tokens.
    const { id, key } = await admin.createKey({ name: 'budget', daily_budget_usd: '1' });
    upstream.reset();
    const first = chat(gw, key, ask('acme/slow', 40)); // reserves (8 + 40) x $0.01 = $0.48
    await upstream.waitForRequests(1);
    const second = await chat(gw, key, ask('acme/chat', 60)); // $0.68 more would pass $1
    expect(second.status).toBe(429);
    expect(second.body.error).toMatchObject({ type: 'rate_limit_error', code: 'daily_budget_exceeded' });
    expect(second.body.error!.message).toContain(
      '$0 is spent, $0.48 reserved by requests in flight, and this request may cost up to $0.68',
    );
    expect(Number(second.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await first).status).toBe(200);
    // The first cost far less than it reserved; now there is room.
    expect((await chat(gw, key, ask('acme/chat', 60))).status).toBe(200);

    const spent = async (g: TestGateway) =>
      (await g.rows()).filter((r) => r.api_key_id === id && r.status_code === 200).reduce((s, r) => s + usdToPico(r.cost_usd), 0n);
    const total = await spent(gw);
    expect(total).toBeGreaterThan(0n);
    const over = await chat(gw, key, ask('acme/chat', 100));
    expect(over.status).toBe(429);
    expect(over.body.error!.message).toContain(`$${picoToUsd(total)} is spent, $0 reserved`);

    // A restarted gateway starts from what the request log says was spent.
    await gw.close();
    gw = await startGateway({ models: models(base), env: env() });
    admin = adminApi(gw);
    const after = await chat(gw, key, ask('acme/chat', 100));
    expect(after.status).toBe(429);
    expect(after.body.error!.message).toContain(`$${picoToUsd(total)} is spent`);
    expect((await chat(gw, key, ask('acme/chat', 5))).status).toBe(200);
  });

  it("reserves at the dearest price of the request's fallback models, which may be the one that answers", async () => {
    const { key } = await admin.createKey({ name: 'fallbacks', daily_budget_usd: '1' });
    // acme/cheap alone: (8 + 100) tokens at $0.000001.
    expect((await chat(gw, key, ask('acme/cheap', 100))).status).toBe(200);
    // With acme/chat as its fallback, the request may cost (8 + 100) x $0.01 = $1.08.
    const refused = await chat(gw, key, { ...ask('acme/cheap', 100), models: ['acme/cheap', 'acme/chat'] });
    expect(refused.status).toBe(429);
    expect(refused.body.error!.message).toContain('this request may cost up to $1.08');
    // A malformed fallback list is the client's mistake, found before any reservation.
    const bad = await chat(gw, key, { ...ask('acme/cheap', 100), models: ['no/such-model'] });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ param: 'models[0]' });
  });

  it('sends no rate-limit headers for keys without limits or anonymous calls', async () => {
    const { key } = await admin.createKey({ name: 'unlimited' });
    for (const k of [key, undefined]) {
      const res = await chat(gw, k, ask('acme/chat'));
      expect(res.status).toBe(200);
      expect(res.headers.get('x-ratelimit-limit-requests')).toBeNull();
    }
  });
});

describe('a budget set on a key that has just spent', () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const base = await upstream.start();
    // Rows stay queued: what the key spent is not in the database yet when its budget is set.
    gw = await startGateway({
      models: models(base),
      env: { ...ACCESS_ENV, REQUEST_LOG_FLUSH_MS: '60000', REQUEST_LOG_BATCH_SIZE: '1000' },
    });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  it('fails an SDK call at once when a budget is spent, rather than letting it wait out Retry-After', async () => {
    const admin = adminApi(gw);
    // At $0.01 a token no request fits in $0.0001: refused until midnight (UTC). (A wait past
    // 2^31 ms, such as a month's, a Node timer would cut to nothing.)
    const toMidnight = 86_400_000 - (Date.now() % 86_400_000);
    if (toMidnight < 120_000) return; // a wait this short the SDK may take: nothing to show
    const { key } = await admin.createKey({ name: 'spent for the day', daily_budget_usd: '0.0001' });
    // The OpenAI SDK's defaults: two automatic retries, each after the Retry-After it is given
    // (hours here), which its caller's abort does not cut short.
    const started = performance.now();
    const err = await gw
      .client({ apiKey: key, maxRetries: 2 })
      .chat.completions.create({ model: 'acme/chat', messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).code).toBe('daily_budget_exceeded');
    // Not "renews at midnight": this request would not fit tomorrow either.
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).message).toContain(
      'That is more than the whole budget: no wait makes it fit',
    );
    expect(performance.now() - started).toBeLessThan(5000);
  }, 15_000);

  it('lets a call that costs nothing (a free model, count_tokens) through a budget already overspent', async () => {
    const admin = adminApi(gw);
    const { id, key } = await admin.createKey({ name: 'overspent', daily_budget_usd: '1' });
    expect((await chat(gw, key, ask('acme/cheap', 5))).status).toBe(200);
    // Lowered below what the key has spent: no paid call fits now, and a free one costs nothing.
    expect((await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: '0.000000001' })).status).toBe(200);
    const paid = await chat(gw, key, ask('acme/cheap', 5));
    expect([paid.status, paid.body.error?.code]).toEqual([429, 'daily_budget_exceeded']);
    expect((await chat(gw, key, ask('acme/slow-stream', 5))).status).toBe(200);
  });

  it('counts the spend its request-log rows have not yet written', async () => {
    const admin = adminApi(gw);
    const { id, key } = await admin.createKey({ name: 'spent, then budgeted' });
    let tokens = 0;
    for (let i = 0; i < 4; i++) {
      const res = await chat(gw, key, ask('acme/chat', 4));
      expect(res.status).toBe(200);
      tokens += (res.body.usage as { total_tokens: number }).total_tokens;
    }
    // $10,000 per million tokens: spent so far, and a budget of half a request more.
    const spent = usdToPico('0.01') * BigInt(tokens);
    const budget = spent + spent / 8n;
    expect((await admin.call('PATCH', `/admin/api-keys/${id}`, { daily_budget_usd: picoToUsd(budget) })).status).toBe(200);
    const next = await chat(gw, key, ask('acme/chat', 4));
    expect([next.status, next.body.error?.code]).toEqual([429, 'daily_budget_exceeded']);
    // Until midnight (UTC): the SDKs, which would wait out any Retry-After before retrying on
    // their own (for hours), are told not to.
    if (Number(next.headers.get('retry-after')) > 60) expect(next.headers.get('x-should-retry')).toBe('false');
  });
});

describe('budget reservations on a Claude route', () => {
  const claude = new AnthropicUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const base = await claude.start();
    gw = await startGateway({
      models: `
models:
  - id: claude/priced
    context_length: 200000
    pricing: { prompt: 1, completion: 1000 }
    route: [{ kind: anthropic, base_url: "${base}", api_key: good, provider_model_id: claude-sonnet-4-5-20250929 }]
  - id: claude/adaptive
    context_length: 200000
    pricing: { prompt: 1, completion: 1000 }
    route: [{ kind: anthropic, base_url: "${base}", api_key: good, provider_model_id: claude-opus-4-7 }]
`,
      env: ACCESS_ENV,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await claude.stop();
  });

  it("reserves for the thinking budget the route's adapter adds to max_tokens", async () => {
    // $1 a day at $0.001 per output token: max_tokens 100 fits; with reasoning_effort high the
    // Anthropic adapter asks Claude Sonnet 4.5 for 4,196 tokens (a 4,096-token thinking budget on top).
    const { key } = await adminApi(gw).createKey({ name: 'claude budget', daily_budget_usd: '1' });
    expect((await chat(gw, key, ask('claude/priced', 100))).status).toBe(200);
    const thinking = await chat(gw, key, { ...ask('claude/priced', 100), reasoning_effort: 'high' });
    expect(thinking.status).toBe(429);
    expect(thinking.body.error).toMatchObject({ code: 'daily_budget_exceeded' });
    // Claude 4.6 and later think adaptively, within the client's max_tokens: nothing on top.
    expect((await chat(gw, key, { ...ask('claude/adaptive', 100), reasoning_effort: 'high' })).status).toBe(200);
  });
});
