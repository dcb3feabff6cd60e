import OpenAI, { APIError } from 'openai';
import { OpenRouterUpstream } from '../fixtures/openrouter-upstream';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/** kind: openrouter end to end: attribution, pinned sub-providers, usage cost into api_logs. */
describe('openrouter adapter', () => {
  const upstream = new OpenRouterUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    const models = `
models:
  - id: or/llama
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - kind: openrouter
        base_url: ${base}
        api_key: or-key
        provider_model_id: meta-llama/llama-3.1-8b-instruct
        http_referer: https://gateway.example
        x_title: HybridInference Test
  - id: or/byok
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: byok }
  - id: or/with-plugins
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: ok, plugins: true }
  - id: or/pinned
    context_length: 8192
    route:
      - { kind: "openrouter[deepinfra]", base_url: "${base}", api_key: or-key, provider_model_id: ok }
  - id: or/pinned-down
    context_length: 8192
    route:
      - { kind: "openrouter[down]", base_url: "${base}", api_key: or-key, provider_model_id: ok }
  - id: or/broke
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: no-credits, provider_model_id: ok }
  - id: or/moderated
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: sk-or-v1-moderated, provider_model_id: moderated }
  - id: or/mid-error
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: mid-error }
  - id: or/choice-error
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: choice-error }
  - id: or/bare-error
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: bare-error }
  - id: or/error-body
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: "error-body:502" }
  - id: or/error-body-limited
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: "error-body:429" }
  - id: or/reasoned
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: reasoned }
  - id: or/limited-first
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: limited-first }
  - id: or/failed-choice
    context_length: 8192
    pricing: { prompt: 1, completion: 2 }
    router: priority
    route:
      - { kind: openrouter, id: failing, base_url: "${base}", api_key: or-key, provider_model_id: failed-choice }
      - { kind: openrouter, id: healthy, base_url: "${base}", api_key: or-key, provider_model_id: ok }
  - id: or/keys
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_keys: [limited-key, or-key], provider_model_id: ok }
  - id: or/embed
    type: embedding
    context_length: 8192
    route:
      - { kind: openrouter, base_url: "${base}", api_key: or-key, provider_model_id: openai/text-embedding-3-small }
`;
    gw = await startGateway({ models });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  beforeEach(() => upstream.reset());

  const rowFor = (id: string) => gw.rowFor(id);

  it('sends the attribution headers, asks for usage, and records the cost OpenRouter reports', async () => {
    const res = await client.chat.completions.create({
      model: 'or/llama',
      messages: [{ role: 'user', content: 'hello router' }],
      provider: { order: ['openrouter'] },
      models: ['or/pinned'],
    } as never);
    expect(res.choices[0].message.content).toBe('echo: hello router');
    const sent = upstream.requests[0];
    expect(sent.path).toBe('/api/v1/chat/completions');
    expect(sent.headers['http-referer']).toBe('https://gateway.example');
    expect(sent.headers['x-title']).toBe('HybridInference Test');
    expect(sent.headers.authorization).toBe('Bearer or-key');
    expect(sent.body.usage).toEqual({ include: true });
    // The client's routing options are the gateway's business, never OpenRouter's.
    expect(sent.body).not.toHaveProperty('provider');
    expect(sent.body).not.toHaveProperty('models');
    const row = await rowFor(res.id);
    // 5 prompt tokens at $1/M + 3 completion tokens at $2/M
    expect(Number(row.upstream_cost_usd)).toBeCloseTo(0.000011, 12);
    expect(row).toMatchObject({ provider: 'openrouter', prompt_tokens: 5, completion_tokens: 3 });
    // What OpenRouter charged the operator is not the client's price: the client never sees it.
    // Its usage.cost is what the gateway bills, at the model's price (the row's cost_usd).
    expect(res.usage).toEqual({
      prompt_tokens: 5,
      completion_tokens: 3,
      total_tokens: 8,
      prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
      cost: Number(row.cost_usd),
    });
    expect(Number(row.cost_usd)).not.toBeCloseTo(0.000011, 12);
  });

  it("logs a BYOK request's cost as OpenRouter's fee plus the provider's charge", async () => {
    const res = await client.chat.completions.create({ model: 'or/byok', messages: [{ role: 'user', content: 'hello router' }] });
    // The provider's $0.000011 plus OpenRouter's 5% fee.
    expect(Number((await rowFor(res.id)).upstream_cost_usd)).toBeCloseTo(0.00001155, 12);
    expect(res.usage).not.toHaveProperty('is_byok');
  });

  it("passes OpenRouter's own features (transforms; plugins where the route allows them) and the client's data policies on", async () => {
    const ask = (model: string) =>
      client.chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'search this' }],
        plugins: [{ id: 'web', max_results: 3 }],
        transforms: ['middle-out'],
        provider: { sort: 'price', data_collection: 'deny', zdr: true },
        session_id: 'conversation-7',
        debug: { echo_upstream_body: true },
      } as never);
    await ask('or/with-plugins');
    expect(upstream.requests[0].body).not.toHaveProperty('debug');
    expect(upstream.requests[0].body).toMatchObject({
      session_id: 'conversation-7',
      plugins: [{ id: 'web', max_results: 3 }],
      transforms: ['middle-out'],
      provider: { data_collection: 'deny', zdr: true },
    });
    expect(upstream.requests[0].body.provider).not.toHaveProperty('sort');
    // Plugins are billed on top of the tokens: a route that does not allow them does not pass them.
    await ask('or/llama');
    expect(upstream.requests[1].body).toMatchObject({ transforms: ['middle-out'] });
    expect(upstream.requests[1].body).not.toHaveProperty('plugins');
  });

  it('records the cost of a stream too, past the processing comments', async () => {
    const stream = await client.chat.completions.create({
      model: 'or/llama',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream me' }],
    });
    let text = '';
    let id = '';
    let usage: unknown;
    for await (const c of stream) {
      id ||= c.id;
      text += c.choices[0]?.delta.content ?? '';
      if (c.usage) usage = c.usage;
    }
    expect(text).toBe('echo: stream me');
    expect(Number((await rowFor(id)).upstream_cost_usd)).toBeCloseTo(0.000011, 12);
    const row = await rowFor(id);
    expect(usage).toEqual(expect.objectContaining({ prompt_tokens: 5, cost: Number(row.cost_usd) }));
    expect(Number(row.cost_usd)).not.toBeCloseTo(0.000011, 12);
  });

  it('pins kind openrouter[slug] to that provider without fallbacks', async () => {
    await client.chat.completions.create({ model: 'or/pinned', messages: [{ role: 'user', content: 'x' }] });
    expect(upstream.requests[0].body.provider).toEqual({ order: ['deepinfra'], allow_fallbacks: false });
    const err = await client.chat.completions
      .create({ model: 'or/pinned-down', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(502);
    expect((err as APIError).message).toContain('No allowed providers are available');
  });

  it('passes an out-of-credits 402 on as a 502 with its message, saying whose credits they are', async () => {
    const err = await client.chat.completions
      .create({ model: 'or/broke', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'upstream_payment_required' });
    expect((err as APIError).message).toContain('Insufficient credits');
    // OpenRouter's own 402 means the caller's credits: this one is the operator's account.
    expect((err as APIError).message).toContain("the operator's account with the provider");
  });

  it("passes a moderation refusal on with OpenRouter's metadata, the route's key blanked out", async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'or/moderated', messages: [{ role: 'user', content: 'x' }] });
    expect(res.status).toBe(403);
    const error = JSON.parse(res.text).error;
    expect(error).toMatchObject({
      message: expect.stringContaining('flagged for "harassment"'),
      metadata: { reasons: ['harassment'], flagged_input: 'you are a...', provider_name: 'OpenAI', model_slug: 'openai/gpt-4o' },
    });
    expect(error.metadata.raw).toBe('key [redacted]');
  });

  it('ends a stream that fails mid-answer with an error, never [DONE]', async () => {
    const stream = await client.chat.completions.create({
      model: 'or/mid-error',
      stream: true,
      messages: [{ role: 'user', content: 'one two three' }],
    });
    const run = async () => {
      for await (const _ of stream) void _;
    };
    await expect(run()).rejects.toThrow(/Provider disconnected/);
    // The error event keeps OpenRouter's metadata (which provider failed, its own words), as an error before the stream does.
    const raw = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'or/mid-error',
      stream: true,
      messages: [{ role: 'user', content: 'one two three' }],
    });
    const last = raw.text.trim().split('\n\n').at(-1)!;
    expect(JSON.parse(last.replace(/^data: /, '')).error).toMatchObject({
      message: expect.stringContaining('Provider disconnected'),
      metadata: { provider_name: 'Together', raw: 'socket hang up' },
    });
  });

  it('takes an answer whose choice finished with error (HTTP 200) as a failure: the next route answers', async () => {
    const res = await client.chat.completions.create({ model: 'or/failed-choice', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: 'echo: x' } });
    // A 502 like any other: retried on its route as the policy allows, then the next route.
    const sent = upstream.requests.map((r) => r.body.model);
    expect(sent.at(-1)).toBe('ok');
    expect(new Set(sent.slice(0, -1))).toEqual(new Set(['failed-choice']));
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === res.id)!;
    expect(row).toMatchObject({ endpoint: 'healthy', status_code: 200 });
    expect((row.metadata as { attempts: Array<{ route: string; outcome: string; error?: string }> }).attempts[0]).toMatchObject({
      route: 'failing',
      outcome: 'error',
      error: expect.stringContaining('provider died'),
    });
  });

  it("passes on an error OpenRouter put in a 200 answer's body, with its words, status and metadata", async () => {
    const failed = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'or/error-body', messages: [{ role: 'user', content: 'x' }] });
    expect(failed.status).toBe(502);
    expect(JSON.parse(failed.text).error).toMatchObject({
      message: expect.stringContaining('Provider returned error'),
      metadata: { provider_name: 'Together', raw: 'connection reset' },
    });
    const limited = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'or/error-body-limited',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect([limited.status, JSON.parse(limited.text).error.message]).toEqual([
      429,
      expect.stringContaining('Rate limit exceeded upstream'),
    ]);
  });

  it('ends a stream whose choice finishes with error (the error on the choice alone) with an error, never [DONE]', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'or/choice-error',
      stream: true,
      messages: [{ role: 'user', content: 'one two' }],
    });
    expect(res.text).toContain('"content":"echo:');
    expect(res.text).toMatch(/"error":\{"message":"[^"]*Upstream idle timeout/);
    expect(res.text).not.toContain('[DONE]');
    // Ended with `error` and no word of why: the message says so, not "{}".
    const bare = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'or/bare-error',
      stream: true,
      messages: [{ role: 'user', content: 'one two' }],
    });
    expect(bare.text).toMatch(/"error":\{"message":"[^"]*ended with finish_reason \\"error\\" and no error message/);
  });

  it("keeps an in-band error's own status: a rate limit before any content is a 429, not a 502", async () => {
    const err = await client.chat.completions
      .create({ model: 'or/limited-first', stream: true, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(err).toMatchObject({ status: 429, message: expect.stringContaining('Provider rate limit exceeded') });
  });

  it('moves to the next key when OpenRouter rate-limits one', async () => {
    const res = await client.chat.completions.create({ model: 'or/keys', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBe('echo: x');
    expect(upstream.requests.map((r) => r.headers.authorization)).toEqual(['Bearer limited-key', 'Bearer or-key']);
    // The limited key now sits out: the next request goes straight to the other one.
    await client.chat.completions.create({ model: 'or/keys', messages: [{ role: 'user', content: 'y' }] });
    expect(upstream.requests.map((r) => r.headers.authorization)).toEqual(['Bearer limited-key', 'Bearer or-key', 'Bearer or-key']);
  });

  it('serves embeddings and text completions with their cost', async () => {
    const emb = await client.embeddings.create({ model: 'or/embed', input: ['a b', 'c'] });
    expect(emb.data.map((d) => Array.from(d.embedding))).toEqual([
      [3, 0.5, -0.5],
      [1, 0.5, -0.5],
    ]);
    expect(upstream.requests[0].path).toBe('/api/v1/embeddings');
    expect(upstream.requests[0].body).not.toHaveProperty('usage');
    const done = await client.completions.create({ model: 'or/llama', prompt: 'Once', max_tokens: 3 });
    expect(done.choices[0].text).toBe(' it was ');
    expect(upstream.requests[1].path).toBe('/api/v1/completions');
    expect(upstream.requests[1].body).toMatchObject({ prompt: 'Once', usage: { include: true } });
    const rows = await gw.rows();
    expect(Number(rows.find((r) => r.model === 'or/embed')!.upstream_cost_usd)).toBeCloseTo(0.000003, 12);
    // The gateway's id, which /v1/generation knows, and route kind, not OpenRouter's; its id in the row; a TTFT as chat's.
    const embRow = rows.find((r) => r.model === 'or/embed')!;
    expect(emb).toMatchObject({ id: `gen-${embRow.id}`, provider: 'openrouter' });
    expect(embRow.ttft_ms).not.toBeNull();
    expect((embRow.metadata as { upstream_id?: string }).upstream_id).toMatch(/^gen-/);
    expect(Number(rows.find((r) => `gen-${r.id}` === done.id)!.upstream_cost_usd)).toBeCloseTo(0.000007, 12);
    // Their usage.cost is the gateway's charge (the row's cost_usd), never OpenRouter's.
    expect(emb.usage).toEqual({ prompt_tokens: 3, total_tokens: 3, cost: Number(rows.find((r) => r.model === 'or/embed')!.cost_usd) });
    const charged = (done.usage as unknown as { cost: number }).cost;
    expect(charged).toBe(Number(rows.find((r) => `gen-${r.id}` === done.id)!.cost_usd));
    expect(charged).not.toBe(0.000007);
  });

  it("passes the client's data policies, transforms and session on from text completions and embeddings too", async () => {
    const extras = { transforms: ['middle-out'], provider: { sort: 'price', data_collection: 'deny', zdr: true }, session_id: 's-9' };
    // Without `model`, the first of `models` is the one asked for, as on chat.
    await client.completions.create({ models: ['or/llama'], prompt: 'Once', max_tokens: 3, ...extras } as never);
    await client.embeddings.create({ models: ['or/embed'], input: 'a', ...extras } as never);
    expect(upstream.requests.map((r) => r.path)).toEqual(['/api/v1/completions', '/api/v1/embeddings']);
    for (const { body } of upstream.requests) {
      expect(body).toMatchObject({ transforms: ['middle-out'], provider: { data_collection: 'deny', zdr: true }, session_id: 's-9' });
      expect(body.provider).not.toHaveProperty('sort');
      expect(body).not.toHaveProperty('models');
    }
  });

  it("gives Claude's signed and encrypted reasoning to the Anthropic surface, and takes it back to OpenRouter whole", async () => {
    const ask = { model: 'or/reasoned', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] };
    const blocks = [
      { type: 'thinking', thinking: 'Thinking hard.', signature: 'sigABC' },
      { type: 'redacted_thinking', data: 'ENCRYPTEDBLOB' },
      { type: 'text', text: 'echo: hi' },
    ];
    const whole = await rawPost(`${gw.url}/anthropic/v1/messages`, ask);
    expect(JSON.parse(whole.text)).toMatchObject({ content: blocks });
    const streamed = await rawPost(`${gw.url}/anthropic/v1/messages`, { ...ask, stream: true });
    const events = streamed.text
      .split('\n\n')
      .filter((e) => e.includes('data: '))
      .map((e) => JSON.parse(e.slice(e.indexOf('data: ') + 6)) as Record<string, unknown>);
    expect(events.filter((e) => e.type === 'content_block_start').map((e) => (e.content_block as { type: string }).type)).toEqual([
      'thinking',
      'redacted_thinking',
      'text',
    ]);
    expect(events).toContainEqual({ type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'sigABC' } });
    expect(events).toContainEqual({
      type: 'content_block_start',
      index: 1,
      content_block: { type: 'redacted_thinking', data: 'ENCRYPTEDBLOB' },
    });
    // A thinking budget goes as OpenRouter's reasoning.max_tokens, the budget itself.
    upstream.reset();
    expect(
      (await rawPost(`${gw.url}/anthropic/v1/messages`, { ...ask, max_tokens: 4096, thinking: { type: 'enabled', budget_tokens: 2048 } }))
        .status,
    ).toBe(200);
    expect(upstream.requests[0].body).toMatchObject({ reasoning: { max_tokens: 2048 } });
    expect(upstream.requests[0].body.reasoning_effort).toBeUndefined();
    // The next turn: the blocks go back as OpenRouter's reasoning_details, signature and all.
    upstream.reset();
    const next = await rawPost(`${gw.url}/anthropic/v1/messages`, {
      ...ask,
      messages: [...ask.messages, { role: 'assistant', content: blocks }, { role: 'user', content: 'more' }],
    });
    expect(next.status).toBe(200);
    expect((upstream.requests[0].body.messages as unknown[])[1]).toMatchObject({
      role: 'assistant',
      content: 'echo: hi',
      reasoning_details: [
        { type: 'reasoning.text', text: 'Thinking hard.', signature: 'sigABC', format: 'anthropic-claude-v1', index: 0 },
        { type: 'reasoning.encrypted', data: 'ENCRYPTEDBLOB', format: 'anthropic-claude-v1', index: 1 },
      ],
    });
  });
});
