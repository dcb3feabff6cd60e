import OpenAI from 'openai';
import { CodexBackend } from '../fixtures/codex-backend';
import { type Login, OAuthTokenServer } from '../fixtures/oauth-token-server';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { rawPost } from '../helpers/gateway';
import { codexFile, CODEX_CLIENT_ID, eventually, sharedDb, startSubscriptionGateway, type SharedDb } from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;
interface AccountJson {
  id: string;
  name: string;
  status: string;
  cooldown_until: string | null;
  failures: number;
  last_error: string | null;
  account_id: string | null;
}

/**
 * The codex_sub adapter and the account pool end to end: the official OpenAI client → gateway →
 * Codex backend stand-in, with the OAuth token stand-in issuing, rotating and refusing tokens.
 * On SQLite and on the local PostgreSQL.
 */
describe.each(['sqlite', 'postgres'] as const)('Codex subscription accounts on %s', (backend) => {
  const tokens = new OAuthTokenServer('codex', CODEX_CLIENT_ID);
  const codex = new CodexBackend(tokens);
  const paid = new OpenAiUpstream();
  let tokenUrl: string;
  let codexUrl: string;
  let paidUrl: string;
  let db: SharedDb;
  const open: Gateway[] = [];

  const models = () => `
models:
  - id: codex/gpt
    context_length: 200000
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }
  - id: codex/with-fallback
    context_length: 200000
    router: priority
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: gpt-5.1-codex }
      - { kind: openai_compat, id: paid, base_url: "${paidUrl}", api_key: sk-paid, provider_model_id: ok }
  - id: codex/fail-stream
    context_length: 200000
    router: priority
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: fail-stream }
      - { kind: openai_compat, id: paid, base_url: "${paidUrl}", api_key: sk-paid, provider_model_id: ok }
  - id: codex/cut
    context_length: 200000
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: cut }
  - id: codex/page
    context_length: 200000
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: page }
  - id: codex/quote-token
    context_length: 200000
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: quote-token }
  - id: codex/quote-token-failed
    context_length: 200000
    route:
      - { kind: codex_sub, id: sub, base_url: "${codexUrl}", provider_model_id: quote-token-failed }
`;

  beforeAll(async () => {
    tokenUrl = await tokens.start();
    codexUrl = await codex.start();
    paidUrl = await paid.start();
  });
  afterAll(async () => {
    await Promise.all([tokens.stop(), codex.stop(), paid.stop()]);
  });
  beforeEach(async () => {
    db = await sharedDb(backend);
    codex.requests.length = 0;
    codex.clearRateLimits();
    tokens.refreshes.length = 0;
    tokens.reused = 0;
    tokens.delayMs = 0;
    tokens.quoteRefreshToken = false;
    tokens.failNext = 0;
    tokens.release();
    paid.reset();
  });
  afterEach(async () => {
    for (const gw of open.splice(0)) await gw.close();
    await db.drop();
  });

  const NO_RETRIES = 'retry: { max_retries: 0 }\n';

  /** n fresh logins (acct-1..n), written to an import file, and a gateway that imported them. */
  async function boot(
    n: number,
    opts: { ttlSeconds?: number; env?: Record<string, string>; routing?: string } = {},
  ): Promise<{ gw: Gateway; logins: Login[] }> {
    const logins = Array.from({ length: n }, (_, i) =>
      tokens.login({
        accountId: `acct-${i + 1}-${Math.random().toString(36).slice(2, 6)}`,
        email: `user${i + 1}@example.com`,
        ttlSeconds: opts.ttlSeconds,
      }),
    );
    const file = codexFile(
      db.dir,
      logins.map((login, i) => ({ name: `account-${i + 1}`, login })),
      // Saved with a byte-order mark: still read.
      true,
    );
    const gw = await start(file, opts.env, opts.routing);
    return { gw, logins };
  }

  async function start(file?: string, env?: Record<string, string>, routing?: string): Promise<Gateway> {
    const gw = await startSubscriptionGateway({ models: models(), routing, db, codexTokenUrl: tokenUrl, codexFile: file, env });
    open.push(gw);
    return gw;
  }

  async function accounts(gw: Gateway): Promise<AccountJson[]> {
    const res = await gw.admin('');
    expect(res.status).toBe(200);
    return ((await res.json()) as { data: AccountJson[] }).data;
  }

  const ask = (client: OpenAI, model = 'codex/gpt', content = 'hello there') =>
    client.chat.completions.create({
      model,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content },
      ],
      max_tokens: 50,
      temperature: 0.2,
    });

  it('streams an answer through the official client, sending the Codex headers and the account id', async () => {
    const { gw, logins } = await boot(1);
    const stream = await gw.client().chat.completions.create({
      model: 'codex/gpt',
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 50,
      temperature: 0.2,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hello there' },
      ],
    });
    let text = '';
    let reasoning = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      expect(chunk.model).toBe('codex/gpt');
      const d = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
      text += d?.content ?? '';
      reasoning += d?.reasoning_content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('echo: hello there');
    expect(reasoning).toBe('Thinking it over.\n\nAnswering now.');
    expect(finish).toBe('stop');
    expect(usage).toMatchObject({
      prompt_tokens: 22,
      completion_tokens: 10,
      total_tokens: 32,
      prompt_tokens_details: { cached_tokens: 16 },
      completion_tokens_details: { reasoning_tokens: 5 },
    });

    const [req] = codex.requests;
    expect(req.status).toBe(200);
    expect(req.headers).toMatchObject({
      authorization: `Bearer ${logins[0].access_token}`,
      'chatgpt-account-id': logins[0].accountId,
      originator: 'codex_cli_rs',
      accept: 'text/event-stream',
      version: expect.any(String),
      session_id: expect.any(String),
      'user-agent': expect.stringMatching(/^codex_cli_rs\//),
    });
    expect(req.body).toMatchObject({
      model: 'gpt-5.1-codex',
      instructions: 'Be brief.',
      store: false,
      stream: true,
      input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hello there' }] }],
    });
    expect(req.body).not.toHaveProperty('max_output_tokens');
    expect(req.body).not.toHaveProperty('temperature');
    expect(req.body.prompt_cache_key).toBe(req.headers.session_id);
  });

  it("sends a client's prompt_cache_key that no header can carry as a hash in session_id, and answers", async () => {
    const { gw } = await boot(1);
    for (const key of ['a\nb', '日本語🙂', 'k'.repeat(20_000)]) {
      const res = await gw.client().chat.completions.create({
        model: 'codex/gpt',
        prompt_cache_key: key,
        messages: [{ role: 'user', content: 'hello there' }],
      });
      expect(res.choices[0].message.content).toBe('echo: hello there');
    }
    expect(codex.requests.map((r) => r.headers.session_id)).toEqual([
      expect.stringMatching(/^[0-9a-f-]{36}$/),
      expect.stringMatching(/^[0-9a-f-]{36}$/),
      expect.stringMatching(/^[0-9a-f-]{36}$/),
    ]);
    // The body keeps the client's key, for the backend's prompt cache.
    expect(codex.requests[0].body.prompt_cache_key).toBe('a\nb');
  });

  it('answers a non-streaming request from the collected stream; api_logs has the cached and reasoning tokens', async () => {
    const { gw } = await boot(1);
    const res = await ask(gw.client());
    expect(res.choices[0]).toMatchObject({
      finish_reason: 'stop',
      message: { role: 'assistant', content: 'echo: hello there', reasoning_content: 'Thinking it over.\n\nAnswering now.' },
    });
    expect(res.usage).toMatchObject({
      prompt_tokens: 22,
      completion_tokens: 10,
      prompt_tokens_details: { cached_tokens: 16 },
      completion_tokens_details: { reasoning_tokens: 5 },
    });
    const [row] = await gw.waitForRows(1);
    expect(row).toMatchObject({
      model: 'codex/gpt',
      provider: 'codex_sub',
      endpoint: 'sub',
      status_code: 200,
      prompt_tokens: 22,
      completion_tokens: 10,
      cached_tokens: 16,
      reasoning_tokens: 5,
      usage_estimated: false,
    });
  });

  it('streams tool calls with argument deltas, and sends the tool result back as function_call_output', async () => {
    const { gw } = await boot(1);
    const client = gw.client();
    const tools: OpenAI.ChatCompletionTool[] = [
      {
        type: 'function',
        function: { name: 'lookup', description: 'Look it up', parameters: { type: 'object', properties: { input: { type: 'string' } } } },
      },
    ];
    const stream = await client.chat.completions.create({
      model: 'codex/gpt',
      stream: true,
      tools,
      messages: [{ role: 'user', content: 'weather in Paris' }],
    });
    const calls: Array<{ id?: string; name?: string; args: string }> = [];
    let deltas = 0;
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const t of chunk.choices[0]?.delta?.tool_calls ?? []) {
        const c = (calls[t.index] ??= { args: '' });
        if (t.id) c.id = t.id;
        if (t.function?.name) c.name = t.function.name;
        if (t.function?.arguments) {
          c.args += t.function.arguments;
          deltas++;
        }
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ id: expect.stringMatching(/^call_/), name: 'lookup' });
    expect(JSON.parse(calls[0].args)).toEqual({ input: 'weather in Paris' });
    expect(deltas).toBe(2);
    expect(codex.requests[0].body).toMatchObject({
      tools: [{ type: 'function', name: 'lookup', parameters: { type: 'object' } }],
      tool_choice: 'auto',
      parallel_tool_calls: true,
    });

    const second = await client.chat.completions.create({
      model: 'codex/gpt',
      tools,
      messages: [
        { role: 'user', content: 'weather in Paris' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: calls[0].id!, type: 'function', function: { name: 'lookup', arguments: calls[0].args } }],
        },
        { role: 'tool', tool_call_id: calls[0].id!, content: 'sunny, 21°C' },
      ],
    });
    expect(second.choices[0].message.content).toBe('tool said: sunny, 21°C');
    expect(codex.requests[1].status).toBe(200);
    expect((codex.requests[1].body.input as unknown[]).slice(1)).toEqual([
      { type: 'function_call', call_id: calls[0].id, name: 'lookup', arguments: calls[0].args },
      { type: 'function_call_output', call_id: calls[0].id, output: 'sunny, 21°C' },
    ]);
  });

  it('rotates round-robin over the active accounts', async () => {
    const { gw, logins } = await boot(3);
    const client = gw.client();
    for (let i = 0; i < 6; i++) await ask(client);
    const ids = logins.map((l) => l.accountId);
    expect(codex.served()).toEqual([...ids, ...ids]);
  });

  it('429: the account cools down until the reset time and the next account answers the same request', async () => {
    const { gw, logins } = await boot(2);
    const resetsAt = Math.floor(Date.now() / 1000) + 3600;
    codex.rateLimit(logins[0].accountId!, resetsAt);
    const client = gw.client();
    for (let i = 0; i < 3; i++) expect((await ask(client)).choices[0].message.content).toBe('echo: hello there');
    // The limited account was asked once; every answer came from the other.
    expect(codex.requests.filter((r) => r.accountId === logins[0].accountId).map((r) => r.status)).toEqual([429]);
    expect(codex.served()).toEqual([logins[1].accountId, logins[1].accountId, logins[1].accountId]);
    const [a, b] = await accounts(gw);
    expect(a).toMatchObject({
      name: 'account-1',
      status: 'cooldown',
      cooldown_until: new Date(resetsAt * 1000).toISOString(),
      failures: 1,
      last_error: expect.stringContaining('usage limit'),
    });
    expect(b).toMatchObject({ name: 'account-2', status: 'active', failures: 0 });
    // The first request's row names the account that answered and both it tried.
    const first = (await gw.waitForRows(3)).sort((x, y) => +new Date(x.created_at) - +new Date(y.created_at))[0];
    expect(first.metadata).toMatchObject({
      account: 'account-2',
      attempts: [{ route: 'sub', outcome: 'ok', account: 'account-2', accounts_tried: ['account-1', 'account-2'] }],
    });
  });

  it.each(['in_seconds', 'header_after'] as const)(
    '429 whose reset is told as %s: the account cools down until then, not for a minute',
    async (form) => {
      const { gw, logins } = await boot(2);
      codex.rateLimit(logins[0].accountId!, Math.floor(Date.now() / 1000) + 7200, form);
      expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
      const [a] = await accounts(gw);
      expect(a.status).toBe('cooldown');
      const left = Date.parse(String(a.cooldown_until)) - Date.now();
      expect(left).toBeGreaterThan(7100_000);
      expect(left).toBeLessThan(7300_000);
    },
  );

  it('an account enabled again after a usage limit takes its turn again (its spent-window report does not keep it behind)', async () => {
    const { gw, logins } = await boot(2);
    // The refusal reports the window 100% used (x-codex-primary-used-percent).
    codex.rateLimit(logins[0].accountId!, Math.floor(Date.now() / 1000) + 3600);
    const client = gw.client();
    await ask(client);
    codex.clearRateLimits();
    const [a] = await accounts(gw);
    expect((await gw.admin(`/${a.id}/enable`, { method: 'POST' })).status).toBe(200);
    const before = codex.served().length;
    for (let i = 0; i < 4; i++) await ask(client);
    expect(new Set(codex.served().slice(before))).toEqual(new Set([logins[0].accountId, logins[1].accountId]));
  });

  it('403: the failure counts against the account, the next one answers, and the healthy one is preferred for a while', async () => {
    const { gw, logins } = await boot(3);
    codex.forbidden.add(logins[0].accountId!);
    const client = gw.client();
    for (let i = 0; i < 4; i++) expect((await ask(client)).choices[0].message.content).toBe('echo: hello there');
    codex.clearRateLimits();
    // Round-robin over the two healthy accounts; the one that failed is left out while its failure is recent.
    expect(codex.requests.map((r) => [r.status, r.accountId])).toEqual([
      [403, logins[0].accountId],
      [200, logins[1].accountId],
      [200, logins[2].accountId],
      [200, logins[1].accountId],
      [200, logins[2].accountId],
    ]);
    const [a] = await accounts(gw);
    expect(a).toMatchObject({ status: 'active', failures: 1, last_error: expect.stringContaining('403') });
  });

  it("402 (a deactivated workspace): the operator's account, said so, not the client's credits; the next account serves", async () => {
    const { gw, logins } = await boot(2);
    codex.unpaid.add(logins[0].accountId!);
    codex.unpaid.add(logins[1].accountId!);
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    const body = JSON.parse(raw.text) as { error: { code: string; message: string } };
    expect([raw.status, body.error.code]).toEqual([502, 'upstream_payment_required']);
    expect(body.error.message).toContain("the operator's account with the provider (402): codex account acc_");
    expect(raw.headers.get('x-should-retry')).toBe('false');
    // Each counted against its account (not the route's circuit).
    expect((await accounts(gw)).map((a) => a.failures)).toEqual([1, 1]);
  });

  it('402 from one account: the next serves', async () => {
    const { gw, logins } = await boot(2);
    codex.unpaid.add(logins[0].accountId!);
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
    expect(codex.served()).toEqual([logins[1].accountId]);
  });

  it('403 from every account: a 502 naming it, without Retry-After, and each account asked and counted once', async () => {
    // More accounts than one try of the route takes (3): the route is tried again for the fourth only.
    const { gw, logins } = await boot(4);
    for (const l of logins) codex.forbidden.add(l.accountId!);
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    expect(raw.status).toBe(502);
    expect(JSON.parse(raw.text)).toMatchObject({ error: { code: 'subscription_forbidden' } });
    expect(raw.headers.get('retry-after')).toBeNull();
    expect(codex.requests.map((r) => r.status)).toEqual([403, 403, 403, 403]);
    expect(new Set(codex.requests.map((r) => r.accountId)).size).toBe(4);
    // The client learns which account by its opaque id, never by its name (often an email).
    expect(JSON.parse(raw.text).error.message).toMatch(/^codex account acc_[0-9a-f]+ is not allowed/);
    for (const a of await accounts(gw)) {
      expect(a).toMatchObject({ status: 'active', failures: 1 });
      expect(raw.text).not.toContain(a.name);
    }
  });

  it('with every account rate limited, the paid fallback route answers; without one the client gets 429 and Retry-After', async () => {
    const { gw, logins } = await boot(2);
    const resetsAt = Math.floor(Date.now() / 1000) + 600;
    for (const l of logins) codex.rateLimit(l.accountId!, resetsAt);
    const res = await ask(gw.client(), 'codex/with-fallback');
    expect(res.choices[0].message.content).toBe('echo: hello there');
    expect(paid.requests).toHaveLength(1);
    expect(paid.requests[0].headers.authorization).toBe('Bearer sk-paid');

    const before = Date.now();
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    const after = Date.now();
    expect(raw.status).toBe(429);
    expect(JSON.parse(raw.text)).toMatchObject({ error: { type: 'rate_limit_error', code: 'subscription_rate_limited' } });
    // Until the accounts' reset time, as seen at some moment during the request.
    const retryAfter = Number(raw.headers.get('retry-after'));
    expect(retryAfter).toBeLessThanOrEqual(Math.ceil((resetsAt * 1000 - before) / 1000));
    expect(retryAfter).toBeGreaterThanOrEqual(Math.ceil((resetsAt * 1000 - after) / 1000));
    // Both accounts are cooling down: the second request did not reach the backend at all.
    expect(codex.requests).toHaveLength(2);

    const rows = await gw.waitForRows(2);
    expect(rows[0]).toMatchObject({ model: 'codex/with-fallback', endpoint: 'paid', status_code: 200 });
    expect((rows[0].metadata as { attempts: Array<{ route: string; status?: number }> }).attempts.map((a) => [a.route, a.status])).toEqual([
      ['sub', 429],
      ['paid', undefined],
    ]);
  });

  it("having no usable account never opens the route's circuit: enabling one takes effect at once", async () => {
    const { gw } = await boot(1);
    const [a] = await accounts(gw);
    expect((await gw.admin(`/${a.id}/disable`, { method: 'POST' })).status).toBe(200);
    // More refusals than the circuit breaker's threshold (5 by default).
    for (let i = 0; i < 7; i++) {
      const raw = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
      expect(JSON.parse(raw.text).error.code).toBe('no_subscription_account');
    }
    expect((await gw.admin(`/${a.id}/enable`, { method: 'POST' })).status).toBe(200);
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
  });

  it('tells the client when to come back after one request met every account rate limited without a reset time', async () => {
    // No retries on the route: the request's own account loop is all there is.
    const { gw, logins } = await boot(3, { routing: NO_RETRIES });
    for (const l of logins) codex.rateLimit(l.accountId!);
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    expect(raw.status).toBe(429);
    expect(codex.requests).toHaveLength(3);
    // The default cooldown (SUBSCRIPTION_COOLDOWN_MS, 60 s) of the first account tried.
    const retryAfter = Number(raw.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(50);
    expect(retryAfter).toBeLessThanOrEqual(60);
  });

  it('with more accounts than one try takes, the route is tried again at once with the others', async () => {
    const { gw, logins } = await boot(5, { routing: NO_RETRIES });
    // In-stream limits (the route's own retries are off) and HTTP 429s without a reset time.
    codex.limitedInStream.add(logins[0].accountId!);
    for (const l of logins.slice(1, 4)) codex.rateLimit(l.accountId!);
    const res = await ask(gw.client());
    expect(res.choices[0].message.content).toBe('echo: hello there');
    // Each account asked once; the fifth answered.
    expect(codex.requests.map((r) => r.accountId).sort()).toEqual(logins.map((l) => l.accountId).sort());
    expect(codex.served().at(-1)).toBe(logins[4].accountId);
  });

  it("an in-stream rate limit on one account moves to the route's next account at once", async () => {
    const { gw, logins } = await boot(2);
    codex.limitedInStream.add(logins[0].accountId!);
    const started = Date.now();
    const res = await ask(gw.client());
    expect(res.choices[0].message.content).toBe('echo: hello there');
    // No backoff, and no Retry-After of 20 s waited out: the other account answered.
    expect(Date.now() - started).toBeLessThan(2000);
    expect(codex.requests.map((r) => r.accountId)).toEqual([logins[0].accountId, logins[1].accountId]);
    expect(paid.requests).toHaveLength(0);
    const byName = new Map((await accounts(gw)).map((a) => [a.name, a.status]));
    expect([...byName.values()].sort()).toEqual(['active', 'cooldown']);
    // The request log says which account served, and which one failed first.
    const [row] = await gw.waitForRows(1);
    expect(row.metadata).toMatchObject({
      account: 'account-2',
      attempts: [
        { route: 'sub', account: 'account-1', outcome: 'error', status: 429 },
        { route: 'sub', account: 'account-2', outcome: 'ok' },
      ],
    });
  });

  it('an in-stream rate limit (response.failed) cools the account down and fails over before any content', async () => {
    const { gw } = await boot(1);
    const before = Date.now();
    const res = await ask(gw.client(), 'codex/fail-stream');
    const after = Date.now();
    expect(res.choices[0].message.content).toBe('echo: hello there');
    expect(paid.requests).toHaveLength(1);
    const [a] = await accounts(gw);
    expect(a).toMatchObject({ status: 'cooldown', last_error: expect.stringContaining('try again in 20s') });
    // No account left: straight to the paid route, and the row names no account as the server.
    const [row] = await gw.waitForRows(1);
    expect((row.metadata as { attempts: Array<{ route: string; account?: string }> }).attempts.map((t) => [t.route, t.account])).toEqual([
      ['sub', a.name],
      ['paid', undefined],
    ]);
    expect(row.metadata).not.toHaveProperty('account');
    // "Please try again in 20s", counted from a moment during the request.
    const until = Date.parse(a.cooldown_until!);
    expect(until).toBeGreaterThanOrEqual(before + 20_000);
    expect(until).toBeLessThanOrEqual(after + 20_000);
  });

  it('a stream cut mid-answer ends with an in-band error, not [DONE]', async () => {
    const { gw } = await boot(1);
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'codex/cut',
      stream: true,
      messages: [{ role: 'user', content: 'one two three four' }],
    });
    expect(raw.status).toBe(200);
    expect(raw.text).toContain('"content":"echo: "');
    expect(raw.text).toMatch(/"error":\{/);
    expect(raw.text).not.toContain('[DONE]');
  });

  it('answers a stream that got a page instead of events with a 502 naming it, not retried', async () => {
    const { gw } = await boot(1);
    const before = codex.requests.length;
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'codex/page',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(raw.status).toBe(502);
    expect(JSON.parse(raw.text).error).toMatchObject({ code: 'upstream_protocol' });
    expect(raw.text).toMatch(/answered a stream request with no event stream \(text\/html\)/);
    expect(codex.requests.length - before).toBe(1);
  });

  it('blanks out the account token in an error that quotes it', async () => {
    const { gw } = await boot(1);
    for (const model of ['codex/quote-token', 'codex/quote-token-failed']) {
      const err = await ask(gw.client(), model).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.APIError);
      const sent = String(codex.requests.at(-1)!.headers.authorization).slice(7);
      expect(sent.length).toBeGreaterThan(20);
      expect((err as Error).message).toContain('token [redacted]');
      expect((err as Error).message).not.toContain(sent);
    }
  });

  it('refreshes a token about to expire before using it, once for concurrent requests', async () => {
    const { gw, logins } = await boot(1, { ttlSeconds: 20 }); // so little left that requests wait for the refresh
    tokens.delayMs = 200;
    const client = gw.client();
    const answers = await Promise.all(Array.from({ length: 5 }, () => ask(client)));
    expect(answers.map((a) => a.choices[0].message.content)).toEqual(Array(5).fill('echo: hello there'));
    expect(tokens.refreshes).toHaveLength(1);
    expect(tokens.refreshes[0].body).toEqual({
      grant_type: 'refresh_token',
      refresh_token: logins[0].refresh_token,
      client_id: CODEX_CLIENT_ID,
    });
    // Every request went out with the new token, none with the expiring one.
    expect(codex.requests.every((r) => r.headers.authorization !== `Bearer ${logins[0].access_token}`)).toBe(true);
    expect(codex.requests.map((r) => r.status)).toEqual(Array(5).fill(200));
  });

  it("an admin's refresh that fails for a while leaves an account with a usable token as it was", async () => {
    const { gw } = await boot(1);
    const [a] = await accounts(gw);
    tokens.failNext = 3;
    for (let i = 0; i < 3; i++) {
      const res = await gw.admin(`/${a.id}/refresh`, { method: 'POST' });
      expect(await res.json()).toMatchObject({ refreshed: false, error: expect.stringContaining('temporarily_unavailable') });
    }
    const [after] = await accounts(gw);
    expect(after).toMatchObject({ status: 'active', failures: 0 });
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');

    // Also one whose token's expiry is not known (an opaque token added by hand): its token may work.
    const added = await gw.admin('', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        provider: 'codex',
        name: 'opaque',
        access_token: 'opaque-access',
        refresh_token: 'opaque-refresh',
        account_id: 'acct-opaque',
      }),
    });
    expect(added.status).toBe(201);
    const { id } = (await added.json()) as { id: string };
    tokens.failNext = 3;
    for (let i = 0; i < 3; i++) {
      const res = await gw.admin(`/${id}/refresh`, { method: 'POST' });
      expect(await res.json()).toMatchObject({ refreshed: false, error: expect.stringContaining('temporarily_unavailable') });
    }
    expect((await accounts(gw)).find((x) => x.id === id)).toMatchObject({ status: 'active', failures: 0 });
  });

  it('refreshes once a token that lives less than the look-ahead, not at every sync', async () => {
    const ttl = tokens.accessTtlSeconds;
    // Two minutes: inside the 5-minute margin (and the sync's 10-minute look-ahead) as it is issued.
    tokens.accessTtlSeconds = 120;
    try {
      const before = tokens.refreshes.length;
      const { gw } = await boot(1, { ttlSeconds: 1 });
      await eventually(() => tokens.refreshes.length > before, 'the refresh of the expiring token');
      await new Promise((r) => setTimeout(r, 1500)); // fifteen syncs at 100 ms
      expect(tokens.refreshes.length - before).toBe(1);
      expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
      expect(tokens.refreshes.length - before).toBe(1);
      // A replica started now reads when that refresh stored the token: none again (each start
      // of a rolling deploy spent a single-use refresh token).
      const second = await start();
      await new Promise((r) => setTimeout(r, 1500));
      expect((await ask(second.client())).choices[0].message.content).toBe('echo: hello there');
      expect(tokens.refreshes.length - before).toBe(1);
    } finally {
      tokens.accessTtlSeconds = ttl;
    }
  });

  it('an account whose token ran out while the token endpoint is down waits for it: one refresh, a 503, no growing cooldown', async () => {
    tokens.failNext = 100;
    const { gw } = await boot(1, { ttlSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1200)); // the access token has expired
    const tried = tokens.refreshes.length; // at start, while it had a second left
    const ask0 = () =>
      gw
        .client()
        .chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
        .catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    const err = await ask0();
    // Not the provider's rate limit: its token endpoint, which is tried again later.
    expect(err).toMatchObject({ status: 503, code: 'subscription_token_refresh_unavailable' });
    expect(Number((err as InstanceType<typeof OpenAI.APIError>).headers?.get('retry-after'))).toBeLessThanOrEqual(30);
    // At most once for the request and its retries; the next requests do not try again for a while.
    expect(tokens.refreshes.length - tried).toBeLessThanOrEqual(1);
    expect(await ask0()).toMatchObject({ status: 503 });
    expect(tokens.refreshes.length - tried).toBeLessThanOrEqual(1);
    const [a] = await accounts(gw);
    expect(a).toMatchObject({ status: 'cooldown', failures: 0, last_error: expect.stringContaining('temporarily_unavailable') });
    // A model with another route is answered by it at once, not after the wait.
    const started = Date.now();
    expect((await ask(gw.client(), 'codex/with-fallback')).choices[0].message.content).toBeTruthy();
    expect(Date.now() - started).toBeLessThan(5000);
    // The endpoint back, a refresh (here an administrator's) ends the wait at once.
    tokens.failNext = 0;
    expect(await (await gw.admin(`/${a.id}/refresh`, { method: 'POST' })).json()).toMatchObject({ refreshed: true });
    const [after] = await accounts(gw);
    expect(after).toMatchObject({ status: 'active', failures: 0 });
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
  });

  it('a token endpoint that does not answer costs one wait, not one per retry: the next route, then no wait at all', async () => {
    const release = tokens.hold(); // the token endpoint hangs
    try {
      // A token with so little left that requests wait for its refresh, and cannot use it after.
      const { gw, logins } = await boot(1, { ttlSeconds: 3, env: { SUBSCRIPTION_REFRESH_WAIT_MS: '1500' } });
      let started = Date.now();
      expect((await ask(gw.client(), 'codex/with-fallback')).choices[0].message.content).toBeTruthy();
      // One wait, then the paid route at once: the route's retries do not wait on the same refresh again.
      expect(Date.now() - started).toBeLessThan(3000);
      expect(paid.requests).toHaveLength(1);
      started = Date.now();
      expect((await ask(gw.client(), 'codex/with-fallback')).choices[0].message.content).toBeTruthy();
      expect(Date.now() - started).toBeLessThan(1000);
      // Without another route, the client is told why.
      const err = await gw
        .client()
        .chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
        .catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
      expect(err).toMatchObject({ status: 503, code: 'subscription_token_refresh_unavailable' });
      expect((err as Error).message).toMatch(/token refresh of 1 account has not answered within 1.5 s/);
      expect(tokens.refreshes).toHaveLength(1);
      release();
      // Once it answers, the account serves again, with the new token.
      const answered = () =>
        gw
          .client()
          .chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
          .then(
            () => true,
            () => false,
          );
      await eventually(answered, 'the account serves again');
      expect(codex.requests.at(-1)!.headers.authorization).not.toBe(`Bearer ${logins[0].access_token}`);
      expect(codex.requests.at(-1)!.status).toBe(200);
    } finally {
      release();
    }
  });

  it('a token refused (401) while the token endpoint hangs costs one wait, not one per retry', async () => {
    const { gw, logins } = await boot(1, { env: { SUBSCRIPTION_REFRESH_WAIT_MS: '1500' } });
    const release = tokens.hold();
    try {
      tokens.invalidateAccess(logins[0].access_token);
      let started = Date.now();
      expect((await ask(gw.client(), 'codex/with-fallback')).choices[0].message.content).toBeTruthy();
      expect(Date.now() - started).toBeLessThan(3000);
      started = Date.now();
      expect((await ask(gw.client(), 'codex/with-fallback')).choices[0].message.content).toBeTruthy();
      expect(Date.now() - started).toBeLessThan(1000);
      expect(paid.requests).toHaveLength(2);
      const err = await gw
        .client()
        .chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
        .catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
      expect(err).toMatchObject({ status: 503, code: 'subscription_token_refresh_unavailable' });
      expect(tokens.refreshes).toHaveLength(1);
    } finally {
      release();
    }
  });

  it('a token refused right after a failed refresh is refreshed at once when the endpoint is back', async () => {
    tokens.failNext = 1;
    const { gw, logins } = await boot(1, { ttlSeconds: 120 }); // refreshed at start (within the margin): that fails
    await eventually(() => tokens.refreshes.length === 1, 'the refresh at start');
    tokens.invalidateAccess(logins[0].access_token);
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
    expect(tokens.refreshes).toHaveLength(2);
  });

  it('401: one forced refresh and one retry with the new token', async () => {
    const { gw, logins } = await boot(1);
    tokens.invalidateAccess(logins[0].access_token);
    const res = await ask(gw.client());
    expect(res.choices[0].message.content).toBe('echo: hello there');
    expect(codex.requests.map((r) => r.status)).toEqual([401, 200]);
    expect(tokens.refreshes).toHaveLength(1);
    const [a] = await accounts(gw);
    expect(a).toMatchObject({ status: 'active', failures: 0 });
  });

  it('401 again after the refresh: one refresh for the request, and the client is told it is about the login, not a rate limit', async () => {
    const { gw, logins } = await boot(1);
    codex.unauthorized.add(logins[0].accountId!);
    const err = await gw
      .client()
      .chat.completions.create({ model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'subscription_auth_failed' });
    expect(tokens.refreshes).toHaveLength(1);
    expect(codex.requests.map((r) => r.status)).toEqual([401, 401]);
  });

  it('invalid_grant on refresh revokes the account; the next account serves; a revoked account cannot be enabled', async () => {
    const { gw, logins } = await boot(2);
    tokens.invalidateAccess(logins[0].access_token);
    tokens.revoke(logins[0].refresh_token);
    tokens.quoteRefreshToken = true;
    const res = await ask(gw.client());
    expect(res.choices[0].message.content).toBe('echo: hello there');
    expect(codex.served()).toEqual([logins[1].accountId]);
    const [a] = await accounts(gw);
    expect(a).toMatchObject({ status: 'revoked', last_error: expect.stringContaining('invalid_grant') });
    // The endpoint quoted the refresh token: the account view shows it blanked out.
    expect(a.last_error).toContain('Refresh token [redacted]');
    expect(a.last_error).not.toContain(logins[0].refresh_token);
    const enable = await gw.admin(`/${a.id}/enable`, { method: 'POST' });
    expect(enable.status).toBe(409);
    expect(await enable.json()).toMatchObject({ error: { code: 'account_revoked' } });
    // Never used again: one 401 with its old token, then only the other account.
    await ask(gw.client());
    await ask(gw.client());
    expect(codex.requests.map((r) => [r.status, r.accountId])).toEqual([
      [401, undefined],
      [200, logins[1].accountId],
      [200, logins[1].accountId],
      [200, logins[1].accountId],
    ]);
  });

  it("blanks the refresh token where the token endpoint's error code quotes it", async () => {
    const { gw, logins } = await boot(2);
    tokens.invalidateAccess(logins[0].access_token);
    tokens.revoke(logins[0].refresh_token);
    tokens.quoteRefreshToken = 'code';
    await ask(gw.client());
    const [a] = await accounts(gw);
    expect(a.last_error).toContain('unsupported refresh_token [redacted]');
    expect(JSON.stringify(await accounts(gw))).not.toContain(logins[0].refresh_token);
    const forced = await gw.admin(`/${a.id}/refresh`, { method: 'POST' });
    const said = await forced.text();
    expect(said).toContain('[redacted]');
    expect(said).not.toContain(logins[0].refresh_token);
  });

  it('keeps state and rotated tokens across a restart', async () => {
    const first = await boot(2);
    const [l1, l2] = first.logins;
    // Account 1's tokens rotate (forced refresh); account 2 cools down.
    const list = await accounts(first.gw);
    expect((await (await first.gw.admin(`/${list[0].id}/refresh`, { method: 'POST' })).json()) as { refreshed: boolean }).toMatchObject({
      refreshed: true,
    });
    codex.rateLimit(l2.accountId!, Math.floor(Date.now() / 1000) + 3600);
    await ask(first.gw.client());
    await ask(first.gw.client());
    await first.gw.close();
    open.splice(open.indexOf(first.gw), 1);

    // Same database, same import file: the file's (spent) refresh token must not come back.
    const gw = await start(
      codexFile(db.dir, [
        { name: 'account-1', login: l1 },
        { name: 'account-2', login: l2 },
      ]),
    );
    const after = await accounts(gw);
    expect(after.map((a) => [a.name, a.status])).toEqual([
      ['account-1', 'active'],
      ['account-2', 'cooldown'],
    ]);
    codex.requests.length = 0;
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
    expect(codex.served()).toEqual([l1.accountId]);
    // The stored refresh token is the rotated one: refreshing again works (the file's would be "reused").
    const again = (await (await gw.admin(`/${after[0].id}/refresh`, { method: 'POST' })).json()) as { refreshed: boolean };
    expect(again).toMatchObject({ refreshed: true });
    expect(tokens.reused).toBe(0);
  });

  it('refreshes a token inside the margin behind the request that found it, which still uses the current one', async () => {
    const release = tokens.hold(); // the refresh cannot finish until released
    const { gw, logins } = await boot(1, { ttlSeconds: 120 }); // inside the 5-minute margin, not about to expire
    await eventually(() => tokens.refreshes.length === 1, 'the refresh has started');
    // The request did not wait for the refresh: it went out with the current token.
    expect((await ask(gw.client())).choices[0].message.content).toBe('echo: hello there');
    expect(codex.requests[0].headers.authorization).toBe(`Bearer ${logins[0].access_token}`);
    release();
    await eventually(async () => {
      await ask(gw.client());
      return codex.requests[codex.requests.length - 1].headers.authorization !== `Bearer ${logins[0].access_token}`;
    }, 'requests use the refreshed token');
    expect(tokens.refreshes).toHaveLength(1);
    expect(codex.requests.every((r) => r.status === 200)).toBe(true);
  });

  it('two processes on one database refresh an expiring account once between them', async () => {
    const { gw: a, logins } = await boot(1, { ttlSeconds: 20 });
    const b = await start();
    tokens.delayMs = 300;
    const all = await Promise.all([
      ...Array.from({ length: 3 }, () => ask(a.client())),
      ...Array.from({ length: 3 }, () => ask(b.client())),
    ]);
    expect(all.map((r) => r.choices[0].message.content)).toEqual(Array(6).fill('echo: hello there'));
    expect(tokens.refreshes).toHaveLength(1);
    expect(tokens.reused).toBe(0);
    expect(codex.requests.every((r) => r.status === 200 && r.headers.authorization !== `Bearer ${logins[0].access_token}`)).toBe(true);
  });

  it("replicas pick up each other's state: a cooldown seen by one, an admin disable made on the other", async () => {
    const { gw: a, logins } = await boot(2);
    const b = await start();
    codex.rateLimit(logins[0].accountId!, Math.floor(Date.now() / 1000) + 3600);
    await ask(a.client());
    codex.clearRateLimits();
    await eventually(() => b.pool.usable('codex').usable === 1, 'replica b sees the cooldown');
    const list = await accounts(b);
    const disabled = await b.admin(`/${list[1].id}/disable`, { method: 'POST' });
    expect(await disabled.json()).toMatchObject({ name: 'account-2', status: 'disabled' });
    await eventually(() => a.pool.usable('codex').usable === 0, 'replica a sees the disable');
    const raw = await rawPost(`${a.url}/v1/chat/completions`, { model: 'codex/gpt', messages: [{ role: 'user', content: 'x' }] });
    expect(raw.status).toBe(429);
  });
});
