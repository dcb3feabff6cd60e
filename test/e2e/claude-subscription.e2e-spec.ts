import Anthropic, { APIError } from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { AnthropicUpstream } from '../fixtures/anthropic-upstream';
import { ClaudeBackend, CLAUDE_CODE_IDENTITY } from '../fixtures/claude-backend';
import { OAuthTokenServer, type Login } from '../fixtures/oauth-token-server';
import { CLAUDE_CLIENT_ID, claudeFile, eventually, sharedDb, startSubscriptionGateway, type SharedDb } from '../helpers/subscriptions';

type Gateway = Awaited<ReturnType<typeof startSubscriptionGateway>>;
type AccountRow = { id: string; name: string; status: string; cooldown_until: string | null; last_error: string | null };

/**
 * `kind: claude_sub` end to end: the OpenAI surface (translated) and the Anthropic surface
 * (relayed) against a Claude Messages stand-in that checks the OAuth token and Claude Code's
 * headers, both drawing on the one `claude` pool — refresh on 401, cooldown on 429 (also from an
 * error event mid-stream), seen by both surfaces alike, and the paid route when no account can serve.
 */
describe('claude_sub', () => {
  const tokens = new OAuthTokenServer('claude', CLAUDE_CLIENT_ID);
  const backend = new ClaudeBackend(tokens);
  const paid = new AnthropicUpstream();
  let db: SharedDb;
  let gw: Gateway;
  let logins: Record<'alpha' | 'beta', Login>;
  let openai: OpenAI;
  let anthropic: Anthropic;

  beforeAll(async () => {
    const tokenUrl = await tokens.start();
    const base = await backend.start();
    const paidBase = await paid.start();
    db = await sharedDb('sqlite');
    logins = { alpha: tokens.login({ accountId: 'acct-alpha' }), beta: tokens.login({ accountId: 'acct-beta' }) };
    const file = claudeFile(db.dir, [
      { name: 'alpha', login: logins.alpha },
      { name: 'beta', login: logins.beta },
    ]);
    gw = await startSubscriptionGateway({
      db,
      claudeTokenUrl: tokenUrl,
      claudeFile: file,
      models: `
models:
  - id: claude/sub
    context_length: 200000
    pricing: { prompt: 3, completion: 15 }
    route:
      - { kind: claude_sub, base_url: "${base}", provider_model_id: ok, anthropic_beta: "interleaved-thinking-2025-05-14" }
  - id: claude/sub-limited-mid
    context_length: 200000
    route:
      - { kind: claude_sub, base_url: "${base}", provider_model_id: limited-mid }
  - id: claude/sub-billing-mid
    context_length: 200000
    route:
      - { kind: claude_sub, base_url: "${base}", provider_model_id: billing-mid }
  - id: claude/sub-or-paid
    context_length: 200000
    router: priority
    route:
      - { kind: claude_sub, id: subscription, base_url: "${base}", provider_model_id: ok }
      - { kind: anthropic, id: paid, base_url: "${paidBase}", api_key: paid-key, provider_model_id: ok }
`,
    });
    openai = gw.client();
    anthropic = new Anthropic({ baseURL: `${gw.url}/anthropic`, apiKey: 'test-key', maxRetries: 0 });
  });

  afterAll(async () => {
    await gw?.close();
    await db?.drop();
    await backend.stop();
    await paid.stop();
    await tokens.stop();
  });

  beforeEach(async () => {
    backend.reset();
    backend.calls.length = 0;
    backend.clearFaults();
    paid.reset();
    // Every test starts with both accounts in rotation.
    for (const a of await accounts()) if (a.status !== 'active') await gw.admin(`/${a.id}/enable`, { method: 'POST' });
  });

  async function accounts(): Promise<AccountRow[]> {
    return ((await (await gw.admin('?provider=claude')).json()) as { data: AccountRow[] }).data;
  }

  const token = (auth: unknown) => String(auth).replace(/^Bearer /, '');

  it('serves chat completions with the OAuth token and the headers Claude Code sends', async () => {
    const res = await openai.chat.completions.create({
      model: 'claude/sub',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hello claude' },
      ],
    });
    expect(res.choices[0].message.content).toBe('echo: hello claude');
    const seen = backend.calls[0];
    expect(seen.status).toBe(200);
    expect(seen.req.url).toBe('/v1/messages?beta=true');
    const h = seen.req.headers;
    expect(tokens.accessValid(token(h.authorization))).toBeDefined();
    expect(h['x-api-key']).toBeUndefined();
    expect(String(h['anthropic-beta']).split(',')).toEqual(['claude-code-20250219', 'oauth-2025-04-20', 'interleaved-thinking-2025-05-14']);
    expect(h['user-agent']).toMatch(/^claude-cli\/\d+\.\d+\.\d+ \(external, cli\)$/);
    expect(h['x-app']).toBe('cli');
    expect(h['anthropic-version']).toBe('2023-06-01');
    expect(seen.req.body).toMatchObject({
      model: 'ok',
      system: [
        { type: 'text', text: CLAUDE_CODE_IDENTITY },
        { type: 'text', text: 'Be brief.' },
      ],
    });

    const stream = await openai.chat.completions.create({
      model: 'claude/sub',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream it' }],
    });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('echo: stream it');
    const rows = await gw.waitForRows(2);
    expect(rows.map((r) => [r.provider, r.status_code, r.usage_estimated])).toEqual([
      ['claude_sub', 200, false],
      ['claude_sub', 200, false],
    ]);
  });

  it("relays the Anthropic surface's requests with the client's betas merged in, streaming and tool use included", async () => {
    const tools: Anthropic.Tool[] = [
      { name: 'Read', description: 'Reads a file', input_schema: { type: 'object', properties: { input: { type: 'string' } } } },
    ];
    const stream = anthropic.messages.stream(
      { model: 'claude/sub', max_tokens: 300, system: 'Project rules.', tools, messages: [{ role: 'user', content: 'README.md' }] },
      { headers: { 'anthropic-beta': 'context-1m-2025-08-07,oauth-2025-04-20' } },
    );
    const msg = await stream.finalMessage();
    expect(msg.content).toEqual([{ type: 'tool_use', id: expect.stringMatching(/^toolu_/), name: 'Read', input: { input: 'README.md' } }]);
    const seen = backend.calls[0];
    expect(seen.status).toBe(200);
    expect(String(seen.req.headers['anthropic-beta']).split(',')).toEqual([
      'claude-code-20250219',
      'oauth-2025-04-20',
      'interleaved-thinking-2025-05-14',
      'context-1m-2025-08-07',
    ]);
    expect(seen.req.headers['anthropic-version']).toBe('2026-10-21');
    expect(seen.req.body).toEqual({
      model: 'ok',
      max_tokens: 300,
      stream: true,
      tools,
      messages: [{ role: 'user', content: 'README.md' }],
      system: [
        { type: 'text', text: CLAUDE_CODE_IDENTITY },
        { type: 'text', text: 'Project rules.' },
      ],
    });
    const counted = await anthropic.messages.countTokens({ model: 'claude/sub', messages: [{ role: 'user', content: 'two words' }] });
    expect(counted.input_tokens).toBeGreaterThan(0);
    expect(backend.calls[1].req.url).toBe('/v1/messages/count_tokens?beta=true');
  });

  it('refreshes a token the API refuses and retries once', async () => {
    const before = tokens.refreshes.length;
    const live = backend.calls.length;
    await openai.chat.completions.create({ model: 'claude/sub', messages: [{ role: 'user', content: 'warm up' }] });
    const used = token(backend.calls[live].req.headers.authorization);
    tokens.invalidateAccess(used);
    // Rotation moves on; go round until the invalidated account is picked again.
    for (let i = 0; i < 2; i++)
      await anthropic.messages.create({ model: 'claude/sub', max_tokens: 20, messages: [{ role: 'user', content: `again ${i}` }] });
    expect(tokens.refreshes.length).toBe(before + 1);
    const refused = backend.calls.filter((c) => c.status === 401);
    expect(refused).toHaveLength(1);
    expect(token(refused[0].req.headers.authorization)).toBe(used);
    expect((await accounts()).map((a) => a.status)).toEqual(['active', 'active']);
  });

  it('cools a rate-limited account down until the reset time, and both surfaces see the same cooldown', async () => {
    const reset = Math.floor(Date.now() / 1000) + 3600;
    backend.rateLimit('acct-alpha', reset);
    backend.rateLimit('acct-beta', reset);
    // OpenAI surface: both accounts answer 429 → both cool down until the reset; the client gets 429.
    const err = await openai.chat.completions
      .create({ model: 'claude/sub', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    await eventually(async () => (await accounts()).every((a) => a.status === 'cooldown'), 'both accounts cool down');
    for (const a of await accounts()) expect(Date.parse(a.cooldown_until!)).toBe(reset * 1000);

    // The stand-in would serve again, but the Anthropic surface shares the pool: no call is made.
    backend.clearFaults();
    const calls = backend.calls.length;
    const limited = await anthropic.messages
      .create({ model: 'claude/sub', max_tokens: 20, messages: [{ role: 'user', content: 'y' }] })
      .catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    expect((limited as APIError).error).toMatchObject({
      type: 'error',
      error: { type: 'rate_limit_error', message: expect.stringContaining('cooling down') },
    });
    expect(Number((limited as APIError).headers?.get('retry-after'))).toBeGreaterThan(3000);
    expect(backend.calls.length).toBe(calls);

    // With a paid route behind the subscription, the paid key serves while the accounts cool down.
    const served = await anthropic.messages.create({
      model: 'claude/sub-or-paid',
      max_tokens: 20,
      messages: [{ role: 'user', content: 'z' }],
    });
    expect(served.content).toEqual([{ type: 'text', text: 'echo: z' }]);
    expect(paid.requests[0].headers['x-api-key']).toBe('paid-key');
    expect(backend.calls.length).toBe(calls);
  });

  it('moves past one account in cooldown on either surface', async () => {
    backend.rateLimit('acct-beta', Math.floor(Date.now() / 1000) + 600);
    // Whichever account comes first, beta ends up cooling and alpha serves both surfaces.
    await anthropic.messages.create({ model: 'claude/sub', max_tokens: 20, messages: [{ role: 'user', content: 'one' }] });
    await openai.chat.completions.create({ model: 'claude/sub', messages: [{ role: 'user', content: 'two' }] });
    await anthropic.messages.create({ model: 'claude/sub', max_tokens: 20, messages: [{ role: 'user', content: 'three' }] });
    expect(backend.served()).toEqual(['acct-alpha', 'acct-alpha', 'acct-alpha']);
    expect(backend.calls.filter((c) => c.status === 429).map((c) => c.accountId)).toEqual(['acct-beta']);
    expect((await accounts()).map((a) => [a.name, a.status])).toEqual([
      ['alpha', 'active'],
      ['beta', 'cooldown'],
    ]);
  });

  it('serves from an account that failed lately rather than send the client away until another one cools down', async () => {
    // Beta is rate limited for two seconds (alpha serves meanwhile), then usable again, with a failure to its name.
    backend.rateLimit('acct-beta', Math.floor(Date.now() / 1000) + 2);
    for (let i = 0; i < 2 && !backend.calls.some((c) => c.status === 429); i++)
      await openai.chat.completions.create({ model: 'claude/sub', messages: [{ role: 'user', content: 'warm' }] });
    expect(backend.calls.filter((c) => c.status === 429).map((c) => c.accountId)).toEqual(['acct-beta']);
    await eventually(async () => (await accounts()).every((a) => a.status === 'active'), 'beta to cool down', 10_000);
    // Now alpha is limited for an hour: beta is there to serve, and does.
    backend.clearFaults();
    backend.rateLimit('acct-alpha', Math.floor(Date.now() / 1000) + 3600);
    const res = await openai.chat.completions.create({ model: 'claude/sub', messages: [{ role: 'user', content: 'now' }] });
    expect(res.choices[0].message.content).toBe('echo: now');
    expect(backend.served().at(-1)).toBe('acct-beta');
  });

  it('blanks out an account token the API quotes, for the client and in the account view', async () => {
    const tokensSent = () => new Set(backend.calls.map((c) => token(c.req.headers.authorization)));
    const leaks = (text: string) => [...tokensSent()].filter((t) => text.includes(t));
    backend.quoteToken = 400;
    const chat = await openai.chat.completions
      .create({ model: 'claude/sub', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(chat).toBeInstanceOf(OpenAI.BadRequestError);
    expect((chat as Error).message).toContain('request refused for token [redacted]');
    const relayed = await anthropic.messages
      .create({ model: 'claude/sub', max_tokens: 20, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(relayed).toBeInstanceOf(Anthropic.BadRequestError);
    expect((relayed as APIError).message).toContain('[redacted]');
    expect(leaks(`${(chat as Error).message} ${(relayed as Error).message}`)).toEqual([]);

    backend.quoteToken = 'stream';
    const stream = await openai.chat.completions
      .create({ model: 'claude/sub', stream: true, messages: [{ role: 'user', content: 'x' }] })
      .then(async (s) => {
        for await (const _ of s);
      })
      .catch((e: unknown) => e);
    expect((stream as Error).message).toContain('overloaded for [redacted]');
    expect(leaks((stream as Error).message)).toEqual([]);

    backend.quoteToken = 429;
    await openai.chat.completions.create({ model: 'claude/sub', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    await eventually(async () => (await accounts()).every((a) => a.status === 'cooldown'), 'both accounts cool down');
    const shown = JSON.stringify(await accounts());
    expect(shown).toContain('[redacted]');
    expect(leaks(shown)).toEqual([]);
  });

  it('cools an account down on a rate-limit error event inside a stream', async () => {
    const res = await anthropic.messages
      .create({ model: 'claude/sub-limited-mid', max_tokens: 20, stream: true, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    // Before any content, so the error is the request's: 429 in Anthropic's shape.
    expect(res).toBeInstanceOf(Anthropic.RateLimitError);
    await eventually(
      async () => (await accounts()).some((a) => a.status === 'cooldown' && (a.last_error ?? '').includes('rate limit')),
      'an account cools down',
    );
    // Until the window's reset (an hour away here) that the stream's headers named, though
    // they said 'allowed': they came before the limit was met.
    const cooled = (await accounts()).find((a) => a.status === 'cooldown')!;
    expect(Date.parse(cooled.cooldown_until!) - Date.now()).toBeGreaterThan(30 * 60_000);
  });

  it('counts a billing error event inside a stream against the account', async () => {
    const res = await anthropic.messages
      .create({ model: 'claude/sub-billing-mid', max_tokens: 20, stream: true, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(res).toBeInstanceOf(Anthropic.APIError);
    await eventually(async () => (await accounts()).some((a) => (a.last_error ?? '').startsWith('billing_error')), 'the account counted');
  });
});
