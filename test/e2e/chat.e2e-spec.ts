import OpenAI, { APIError } from 'openai';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

/**
 * The OpenAI-compatible surface end to end: the official `openai` client talks to the real
 * gateway, which talks to a stand-in upstream over HTTP; every request's api_logs row is read
 * back from the real database (SQLite file and the local PostgreSQL).
 */
const models = (upstream: string) => `
models:
  - id: acme/chat
    name: Acme Chat
    context_length: 8192
    pricing: { prompt: "1.50", completion: "2", input_cache_reads: "0.5" }
    route:
      - kind: vllm
        id: local-vllm
        base_url: ${upstream}
        api_key: upstream-secret
        provider_model_id: ok
  - id: acme/tokens
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "tokens:7" }
  - id: acme/usage-on-finish
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: usage-on-finish }
  - id: acme/sloppy
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: sloppy }
  - id: acme/late-end
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "late-end:30" }
  - id: acme/silent-after-finish-usage
    context_length: 8192
    route:
      - kind: openai_compat
        base_url: ${upstream}
        provider_model_id: "usage-on-finish:silent"
        timeouts: { idle_ms: 4000 }
  - id: acme/silent-after-finish
    context_length: 8192
    route:
      - kind: openai_compat
        base_url: ${upstream}
        provider_model_id: "no-usage:silent"
        timeouts: { idle_ms: 4000 }
  - id: acme/reset-after-finish
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "no-usage:reset" }]
  - id: acme/usage-then-reset
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "usage-on-finish:reset" }]
  - id: acme/notice-after-answer
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "usage-on-finish:notice" }]
  - id: acme/n-cut-reset
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "n-cut:reset" }]
  - id: acme/silent-after-usage
    context_length: 8192
    route:
      - kind: openai_compat
        base_url: ${upstream}
        provider_model_id: silent-after-usage
        timeouts: { idle_ms: 4000 }
  - id: acme/staggered
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${upstream}", provider_model_id: "staggered:400" }]
  - id: acme/no-usage
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: no-usage }
  - id: acme/tools-bare
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: tools-bare }
  - id: acme/tools-one-index
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: tools-one-index }
  - id: acme/bad-request
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "error:400" }
  - id: acme/rate-limited
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "error:429" }
  - id: acme/broken
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "error:500" }
  - id: acme/down
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "http://127.0.0.1:9/v1", provider_model_id: ok }
  - id: acme/hang
    context_length: 8192
    route:
      - kind: openai_compat
        base_url: ${upstream}
        provider_model_id: hang
        timeouts: { first_byte_ms: 300, total_ms: 500 }
  - id: acme/slow-start
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-first-token:5000" }
  - id: acme/late-limit
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "late-error:600:400" }
  - id: acme/accepted-then-failed
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "accept-then-error:60" }
  - id: acme/slow-headers
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: "delay-headers:5000" }
  - id: acme/mid-error
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: mid-error }
  - id: acme/cut
    context_length: 8192
    route:
      - { kind: openai_compat, base_url: "${upstream}", provider_model_id: cut }
  - id: acme/stall
    context_length: 8192
    route:
      - kind: openai_compat
        base_url: ${upstream}
        provider_model_id: "stall:5000"
        timeouts: { idle_ms: 200 }
  - id: acme/failover
    context_length: 8192
    router: priority
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: openai_compat, id: first, base_url: "${upstream}", provider_model_id: "error:503" }
      - { kind: openai_compat, id: second, base_url: "${upstream}", provider_model_id: ok }
`;

describe.each(['sqlite', 'postgres'] as const)('chat completions on %s', (backend) => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;
  let client: OpenAI;
  let pg: TestDatabase | undefined;

  beforeAll(async () => {
    const base = await upstream.start();
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({ models: models(base), env: { ...pg?.env, STREAM_KEEPALIVE_MS: '100' } });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
    await pg?.drop();
  });

  beforeEach(() => upstream.reset());

  it('answers a chat completion and passes every parameter through', async () => {
    const res = await client.chat.completions.create({
      model: 'acme/chat',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hello there' },
      ],
      temperature: 0.3,
      top_p: 0.9,
      max_tokens: 50,
      stop: ['END'],
      seed: 7,
      n: 1,
      frequency_penalty: 0.1,
      presence_penalty: 0.2,
      logprobs: false,
      user: 'user-42',
      response_format: { type: 'text' },
      // vLLM extras ride along untouched
      ...({ top_k: 40, min_p: 0.05, repetition_penalty: 1.1 } as object),
    });
    expect(res.choices[0].message.content).toBe('echo: hello there');
    expect(res.model).toBe('acme/chat');
    expect(res.id).toMatch(/^gen-/);
    expect(res.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 });

    const sent = upstream.requests[0];
    expect(sent.headers.authorization).toBe('Bearer upstream-secret');
    expect(sent.body).toMatchObject({
      model: 'ok',
      temperature: 0.3,
      top_p: 0.9,
      max_tokens: 50,
      stop: ['END'],
      seed: 7,
      n: 1,
      frequency_penalty: 0.1,
      presence_penalty: 0.2,
      logprobs: false,
      user: 'user-42',
      response_format: { type: 'text' },
      top_k: 40,
      min_p: 0.05,
      repetition_penalty: 1.1,
    });
    expect(sent.body).not.toHaveProperty('stream_options');

    const rows = await gw.waitForRows(1);
    const row = rows.find((r) => r.id === res.id.slice(4))!;
    expect(row).toMatchObject({
      model: 'acme/chat',
      provider: 'vllm',
      endpoint: 'local-vllm',
      status_code: 200,
      stream: false,
      prompt_tokens: 10,
      completion_tokens: 3,
      total_tokens: 13,
      usage_estimated: false,
      user_id: 'user-42',
    });
    // For a client that does not stream, the first token comes with the whole answer.
    expect(row.ttft_ms).toEqual(expect.any(Number));
    expect(row.ttft_ms).toBeLessThanOrEqual(row.latency_ms);
    // 10 × 1.50 + 3 × 2 USD per million tokens
    expect(Number(row.cost_usd)).toBeCloseTo(0.000021, 12);
    expect(row.latency_ms).toBeGreaterThanOrEqual(0);
  });

  it("passes OpenAI's custom tools, allowed_tools and a custom call's history through", async () => {
    const custom = { type: 'custom' as const, custom: { name: 'grep', description: 'search files' } };
    const res = await client.chat.completions.create({
      model: 'acme/chat',
      tools: [custom],
      tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [{ type: 'custom', custom: { name: 'grep' } }] } },
      messages: [
        { role: 'user', content: 'find foo' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'custom', custom: { name: 'grep', input: 'foo' } }] },
        { role: 'tool', tool_call_id: 'c1', content: 'found' },
      ],
    });
    expect(res.choices[0].message.content).toBe('tool said: found');
    expect(upstream.requests[0].body).toMatchObject({
      tools: [custom],
      tool_choice: { type: 'allowed_tools' },
      messages: [{}, { tool_calls: [{ type: 'custom', custom: { name: 'grep', input: 'foo' } }] }, {}],
    });
  });

  it('streams chunks with the role first and a usage chunk before [DONE] when asked', async () => {
    const stream = await client.chat.completions.create({
      model: 'acme/tokens',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'count' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('t0 t1 t2 t3 t4 t5 t6 ');
    const last = chunks[chunks.length - 1];
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 7 });
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.model === 'acme/tokens')).toBe(true);
    expect(upstream.requests[0].body).toMatchObject({ stream: true, stream_options: { include_usage: true } });

    const rows = await gw.rows();
    const row = rows.find((r) => `gen-${r.id}` === chunks[0].id)!;
    expect(row).toMatchObject({ stream: true, status_code: 200, completion_tokens: 7, usage_estimated: false, finish_reason: 'stop' });
    expect(row.ttft_ms).not.toBeNull();
  });

  /** A stream asking for usage, read as the raw SSE text by the caller. */
  const streamWithUsage = (model: string, content: string) =>
    fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content }] }),
    });

  it('completes a stream whose server leaves object and created out and writes "[DONE] "; every chunk gets both', async () => {
    const res = await streamWithUsage('acme/sloppy', 'hi there');
    const events = (await res.text()).split('\n\n').filter(Boolean);
    expect(events.pop()).toBe('data: [DONE]');
    const chunks = events.map((e) => JSON.parse(e.slice('data: '.length)) as OpenAI.Chat.Completions.ChatCompletionChunk);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && Number.isInteger(c.created))).toBe(true);
    expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === chunks[0].id)!;
    expect(row).toMatchObject({ status_code: 200, finish_reason: 'stop' });
  });

  it('sends usage in a last chunk of its own, other chunks saying usage: null, wherever the upstream put it', async () => {
    for (const model of ['acme/tokens', 'acme/usage-on-finish']) {
      const res = await streamWithUsage(model, 'hi there');
      const events = (await res.text()).split('\n\n').filter(Boolean);
      expect(events.pop()).toBe('data: [DONE]');
      const chunks = events.map((e) => JSON.parse(e.slice('data: '.length)) as OpenAI.Chat.Completions.ChatCompletionChunk);
      const last = chunks.pop()!;
      expect([model, last.choices, last.usage]).toEqual([
        model,
        [],
        expect.objectContaining({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number) }),
      ]);
      expect(chunks.every((c) => c.usage === null && c.choices.length > 0)).toBe(true);
      expect(chunks[chunks.length - 1].choices[0].finish_reason).toBe('stop');
    }
  });

  it('always asks upstream for usage, but shows it only to clients that asked', async () => {
    const stream = await client.chat.completions.create({
      model: 'acme/tokens',
      stream: true,
      messages: [{ role: 'user', content: 'count' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.some((c) => c.usage)).toBe(false);
    expect(chunks.every((c) => c.choices.length > 0)).toBe(true);
    expect(upstream.requests[0].body).toMatchObject({ stream_options: { include_usage: true } });
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === chunks[0].id)!;
    expect(row).toMatchObject({ completion_tokens: 7, usage_estimated: false });
  });

  it('estimates usage, and says so, when the upstream reports none', async () => {
    const res = await client.chat.completions.create({
      model: 'acme/no-usage',
      messages: [{ role: 'user', content: 'a fairly long question about many things' }],
    });
    expect(res.usage!.completion_tokens).toBeGreaterThan(0);
    const stream = await client.chat.completions.create({
      model: 'acme/no-usage',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hi' }],
    });
    let usage: OpenAI.CompletionUsage | undefined | null;
    let last: OpenAI.Chat.Completions.ChatCompletionChunk | undefined;
    for await (const c of stream) {
      if (c.usage) usage = c.usage;
      last = c;
    }
    expect(usage?.prompt_tokens).toBeGreaterThan(0);
    // The usage chunk the gateway makes itself names who served, as every other chunk does.
    expect(last).toMatchObject({ usage: { prompt_tokens: usage!.prompt_tokens }, provider: expect.any(String), route: expect.any(String) });
    const rows = (await gw.rows()).filter((r) => r.model === 'acme/no-usage');
    expect(rows).toHaveLength(2);
    for (const r of rows) {
      expect(r.usage_estimated).toBe(true);
      expect(r.prompt_tokens).toBeGreaterThan(0);
      expect(Number(r.cost_usd)).toBeGreaterThan(0);
    }
  });

  it('estimates a tool call answered without usage alike, JSON or streamed', async () => {
    const ask = {
      model: 'acme/no-usage',
      tools: [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }],
      messages: [{ role: 'user' as const, content: 'find the weather in a city with a rather long name' }],
    };
    const json = await client.chat.completions.create(ask);
    expect(json.choices[0].message.tool_calls).toHaveLength(1);
    const stream = await client.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } });
    let streamed: OpenAI.CompletionUsage | undefined | null;
    for await (const c of stream) if (c.usage) streamed = c.usage;
    // name + arguments: "lookup" and {"input":"find the weather ..."}, about 16 tokens.
    expect(json.usage!.completion_tokens).toBeGreaterThan(10);
    expect(json.usage!.completion_tokens).toBe(streamed?.completion_tokens);
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === json.id)!;
    expect(row).toMatchObject({ completion_tokens: json.usage!.completion_tokens, usage_estimated: true });
  });

  it('carries a tool call round trip, streamed and not', async () => {
    const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'Weather for a city',
          parameters: { type: 'object', properties: { input: { type: 'string' } } },
        },
      },
    ];
    const first = await client.chat.completions.create({
      model: 'acme/chat',
      tools,
      tool_choice: 'auto',
      parallel_tool_calls: false,
      messages: [{ role: 'user', content: 'Paris' }],
    });
    const call = first.choices[0].message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(first.choices[0].finish_reason).toBe('tool_calls');
    expect(call.function).toEqual({ name: 'get_weather', arguments: '{"input":"Paris"}' });
    expect(upstream.requests[0].body).toMatchObject({ tools, tool_choice: 'auto', parallel_tool_calls: false });

    // Streamed: the SDK reassembles the argument fragments.
    const stream = client.chat.completions.stream({ model: 'acme/chat', tools, messages: [{ role: 'user', content: 'Oslo' }] });
    const streamed = await stream.finalChatCompletion();
    const scall = streamed.choices[0].message.tool_calls![0];
    expect(scall.function.arguments).toBe('{"input":"Oslo"}');

    const second = await client.chat.completions.create({
      model: 'acme/chat',
      tools,
      messages: [
        { role: 'user', content: 'Paris' },
        first.choices[0].message,
        { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' },
      ],
    });
    expect(second.choices[0].message.content).toBe('tool said: sunny, 21C');
    const sentMessages = upstream.requests[2].body.messages as Array<Record<string, unknown>>;
    expect(sentMessages[1]).toMatchObject({
      role: 'assistant',
      tool_calls: [{ id: call.id, type: 'function', function: { name: 'get_weather' } }],
    });
    expect(sentMessages[2]).toEqual({ role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' });
  });

  it('streams tool calls from a server that sends them without index or id as OpenAI does', async () => {
    const stream = client.chat.completions.stream({
      model: 'acme/tools-bare',
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } }],
      messages: [{ role: 'user', content: 'Oslo' }],
    });
    // The SDK keys calls by index and answers them by id.
    const call = (await stream.finalChatCompletion()).choices[0].message.tool_calls![0];
    expect(call).toMatchObject({ id: expect.stringMatching(/^call_/), function: { name: 'get_weather', arguments: '{"input":"Oslo"}' } });
  });

  it('streams parallel calls a server sent all at index 0 as calls of their own', async () => {
    const fn = (name: string) => ({ type: 'function' as const, function: { name, parameters: { type: 'object', properties: {} } } });
    const stream = client.chat.completions.stream({
      model: 'acme/tools-one-index',
      tools: [fn('get_weather'), fn('get_time')],
      messages: [{ role: 'user', content: 'Oslo' }],
    });
    const calls = (await stream.finalChatCompletion()).choices[0].message.tool_calls!;
    expect(
      calls.map((c) => [c.id, c.type === 'function' ? c.function.name : '', c.type === 'function' ? c.function.arguments : '']),
    ).toEqual([
      [expect.stringMatching(/^call_/), 'get_weather', '{"input":"Oslo"}'],
      ['call_second', 'get_time', '{"n":2}'],
    ]);
  });

  it('passes an upstream 4xx through with its message', async () => {
    const err = await client.chat.completions
      .create({ model: 'acme/bad-request', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as APIError).message).toContain('Invalid value for "temperature"');
    expect((err as APIError).code).toBe('invalid_value');

    const limited = await client.chat.completions
      .create({ model: 'acme/rate-limited', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect((limited as APIError).headers?.get('retry-after')).toBe('1');
  });

  it('answers 502 when the upstream fails or is down, and 504 when it does not answer', async () => {
    const broken = await client.chat.completions
      .create({ model: 'acme/broken', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((broken as APIError).status).toBe(502);
    expect((broken as APIError).message).toMatch(/upstream .* answered 500/);

    const down = await client.chat.completions
      .create({ model: 'acme/down', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((down as APIError).status).toBe(502);
    expect((down as APIError).message).toMatch(/unreachable/);

    const hang = await client.chat.completions
      .create({ model: 'acme/hang', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect((hang as APIError).status).toBe(504);
    expect((hang as APIError).message).toMatch(/no complete answer from upstream openai_compat within 500 ms/);

    const rows = await gw.rows();
    expect(rows.filter((r) => r.model === 'acme/broken').map((r) => r.status_code)).toEqual([502]);
    expect(rows.filter((r) => r.model === 'acme/down').map((r) => r.status_code)).toEqual([502]);
    expect(rows.filter((r) => r.model === 'acme/hang').map((r) => r.status_code)).toEqual([504]);
    // No route answered: the row (and the metrics) name the one that failed, and bill nothing.
    for (const r of rows.filter((x) => ['acme/broken', 'acme/down', 'acme/hang'].includes(x.model))) {
      expect([r.model, r.provider, typeof r.endpoint, Number(r.cost_usd)]).toEqual([r.model, 'openai_compat', 'string', 0]);
    }
    expect(await (await fetch(`${gw.url}/metrics`)).text()).toMatch(
      /hybridinference_requests_total\{model="acme\/broken",provider="openai_compat",status="502"\} 1/,
    );
  });

  it('retries the first route, then fails over to the next when it keeps failing before answering', async () => {
    const res = await client.chat.completions.create({ model: 'acme/failover', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.choices[0].message.content).toBe('echo: hi');
    const row = (await gw.rows()).find((r) => r.id === res.id.slice(4))!;
    expect(row.endpoint).toBe('second');
    // routing.yaml's default retry policy: two more tries on the same route, with backoff.
    expect((row.metadata as { attempts: Array<{ route: string; outcome: string; status?: number }> }).attempts).toEqual([
      expect.objectContaining({ route: 'first', outcome: 'error', status: 503 }),
      expect.objectContaining({ route: 'first', outcome: 'error', status: 503, retry: 1, backoff_ms: expect.any(Number) }),
      expect.objectContaining({ route: 'first', outcome: 'error', status: 503, retry: 2, backoff_ms: expect.any(Number) }),
      expect.objectContaining({ route: 'second', outcome: 'ok' }),
    ]);
    expect(upstream.requests.map((r) => r.body.model)).toEqual(['error:503', 'error:503', 'error:503', 'ok']);
  });

  it('aborts the upstream request as soon as a streaming client leaves, even before the first token', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'acme/slow-start', stream: true, messages: [{ role: 'user', content: 'x' }] },
      { signal: controller.signal },
    );
    await upstream.waitForRequests(1);
    setTimeout(() => controller.abort(), 150);
    const received: unknown[] = [];
    // The SDK ends the iteration quietly (or throws) when aborted; either way nothing arrived.
    await (async () => {
      for await (const c of stream) received.push(c);
    })().catch(() => undefined);
    expect(received).toEqual([]);
    await upstream.waitForAborts(1);
    const rows = await gw.waitForRows(1);
    const row = rows.filter((r) => r.model === 'acme/slow-start').pop()!;
    expect(row.status_code).toBe(499);
    // The client leaving is no failure of the route's: the attempt is cancelled, in the row and
    // in the attempts metric.
    expect((row.metadata as { attempts: Array<{ outcome: string }> }).attempts).toEqual([
      expect.objectContaining({ outcome: 'cancelled' }),
    ]);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/hybridinference_upstream_attempts_total\{[^}]*outcome="cancelled"[^}]*\} [1-9]/);
    // By model too: route ids are unique within a model only.
    expect(metrics).toMatch(
      /hybridinference_upstream_attempts_total\{model="[^"]+",provider="[^"]+",route="[^"]+",outcome="cancelled"\} [1-9]/,
    );
  });

  it('aborts the upstream request when a non-streaming client leaves', async () => {
    const controller = new AbortController();
    const pending = client.chat.completions.create(
      { model: 'acme/slow-headers', messages: [{ role: 'user', content: 'x' }] },
      { signal: controller.signal },
    );
    await upstream.waitForRequests(1);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await upstream.waitForAborts(1);
    const row = (await gw.waitForRows(1)).filter((r) => r.model === 'acme/slow-headers').pop()!;
    expect(row.status_code).toBe(499);
  });

  it('ends a stream that fails mid-answer with an in-band error, never [DONE]', async () => {
    for (const model of ['acme/mid-error', 'acme/cut']) {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'one two three four' }] }),
      });
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(text).toContain('"content":"echo: "');
      expect(text).not.toContain('[DONE]');
      // OpenRouter's mid-stream error: a chunk of the same stream, its choice finished with `error`.
      const events = text
        .split('\n\n')
        .filter((e) => e.startsWith('data: '))
        .map((e) => JSON.parse(e.slice(6)) as Record<string, unknown>);
      const last = events.pop()!;
      expect(last).toMatchObject({
        id: events[0].id,
        object: 'chat.completion.chunk',
        model,
        provider: 'openai_compat',
        error: { message: expect.any(String), type: expect.any(String) },
        choices: [{ index: 0, delta: { content: '' }, finish_reason: 'error' }],
      });
    }
    // After a `models` fallback, the event names the model that streamed, as its chunks do.
    const fellBack = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'acme/broken',
        models: ['acme/broken', 'acme/mid-error'],
        stream: true,
        messages: [{ role: 'user', content: 'one two three' }],
      }),
    });
    const fellBackEvents = (await fellBack.text()).split('\n\n').filter((e) => e.startsWith('data: '));
    expect(fellBackEvents.map((e) => (JSON.parse(e.slice(6)) as { model: string }).model)).toEqual(
      fellBackEvents.map(() => 'acme/mid-error'),
    );
    // A text completion (served through chat here) ends the same way, its choice in its own shape.
    const completion = await fetch(`${gw.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/mid-error', stream: true, prompt: 'one two three' }),
    });
    const events = (await completion.text()).split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).not.toBe('data: [DONE]');
    expect(JSON.parse(events.at(-1)!.slice(6))).toMatchObject({
      object: 'text_completion',
      model: 'acme/mid-error',
      error: { message: expect.any(String) },
      choices: [{ index: 0, text: '', finish_reason: 'error' }],
    });
    // The SDK surfaces the in-band error as an exception.
    const stream = await client.chat.completions.create({
      model: 'acme/mid-error',
      stream: true,
      messages: [{ role: 'user', content: 'one two three' }],
    });
    await expect(
      (async () => {
        for await (const _ of stream) void _;
      })(),
    ).rejects.toBeInstanceOf(OpenAI.APIError);
    const rows = (await gw.rows()).filter((r) => r.model === 'acme/mid-error' || r.model === 'acme/cut');
    expect(rows).toHaveLength(4); // the fallback's row is under the model asked for (acme/broken)
    for (const r of rows) {
      expect(r.status_code).toBe(502);
      expect(r.completion_tokens).toBeGreaterThan(0); // billed for what was delivered
      expect(r.usage_estimated).toBe(true);
    }
  });

  it('ends a stream whose upstream goes silent mid-answer with an in-band timeout error', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/stall', stream: true, messages: [{ role: 'user', content: 'one two three four' }] }),
    });
    const text = await res.text();
    expect(text).toContain('"content":"echo: "');
    expect(text).toMatch(/"error":\{"message":"upstream [^"]+ went silent for 200 ms mid-stream","type":"timeout_error"/);
    expect(text).not.toContain('[DONE]');
    const row = (await gw.rows()).filter((r) => r.model === 'acme/stall').pop()!;
    expect(row.status_code).toBe(504);
  });

  it.each(['acme/silent-after-usage', 'acme/silent-after-finish-usage'])(
    'ends a stream whose upstream sent the whole answer and its usage, then neither [DONE] nor the end (%s)',
    async (model) => {
      const started = performance.now();
      const res = await streamWithUsage(model, 'one two');
      const text = await res.text();
      // Ended well before the idle timeout (4 s), which would have failed an answer the client had whole.
      expect(performance.now() - started).toBeLessThan(3500);
      expect(text).toContain('"finish_reason":"stop"');
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      const row = (await gw.rows()).filter((r) => r.model === model).pop()!;
      expect(row).toMatchObject({ status_code: 200, usage_estimated: false });
    },
  );

  it('ends a stream whose upstream finished every choice and then went silent without usage, its output estimated', async () => {
    const started = performance.now();
    const res = await streamWithUsage('acme/silent-after-finish', 'one two');
    const text = await res.text();
    // After the wait for usage (just under the idle timeout here: 3.6 s), not failed at the idle timeout (4 s).
    expect(performance.now() - started).toBeGreaterThan(3000);
    expect(text).toContain('"finish_reason":"stop"');
    expect(text).not.toContain('"error"');
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const row = (await gw.rows()).filter((r) => r.model === 'acme/silent-after-finish').pop()!;
    expect(row).toMatchObject({ status_code: 200, usage_estimated: true, finish_reason: 'stop' });
    expect(row.completion_tokens).toBeGreaterThan(0);
  });

  it("ends a stream asked under OpenRouter's base path with its usage, unasked, as OpenRouter does; not one under /v1", async () => {
    const events = async (path: string) => {
      const res = await fetch(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'acme/chat', stream: true, messages: [{ role: 'user', content: 'one two' }] }),
      });
      return (await res.text()).split('\n\n').filter((e) => e.startsWith('data: '));
    };
    const openrouter = await events('/api/v1/chat/completions');
    expect(openrouter.at(-1)).toBe('data: [DONE]');
    expect(JSON.parse(openrouter.at(-2)!.slice(6))).toMatchObject({
      choices: [],
      usage: { prompt_tokens: expect.any(Number), cost: expect.any(Number) },
    });
    const openai = await events('/v1/chat/completions');
    expect(openai.at(-1)).toBe('data: [DONE]');
    expect(openai.some((e) => e.includes('"usage":{'))).toBe(false);
  });

  it('ends a stream whose upstream finished every choice and then broke the connection as whole, its output estimated', async () => {
    const res = await streamWithUsage('acme/reset-after-finish', 'one two');
    const text = await res.text();
    expect(text).toContain('"finish_reason":"stop"');
    expect(text).not.toContain('"error"');
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const row = (await gw.rows()).filter((r) => r.model === 'acme/reset-after-finish').pop()!;
    expect(row).toMatchObject({ status_code: 200, usage_estimated: true, finish_reason: 'stop' });
    // Asked for two and given one before the break: the other was cut off, not an answer of one.
    const two = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/reset-after-finish', n: 2, stream: true, messages: [{ role: 'user', content: 'one two' }] }),
    });
    const events = (await two.text()).split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).not.toBe('data: [DONE]');
    expect(JSON.parse(events.at(-1)!.slice(6))).toMatchObject({ error: { code: 'upstream_reset' } });
    // Unless usage came after the one it sent: a server that ignores n ends so, as its silence is taken.
    for (const model of ['acme/usage-then-reset', 'acme/notice-after-answer']) {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, n: 2, stream: true, messages: [{ role: 'user', content: 'one two' }] }),
      });
      const text = await res.text();
      // An `event: error` after the whole answer (a proxy's notice) does not undo it either.
      expect([model, text.trimEnd().endsWith('data: [DONE]'), text.includes('"error"')]).toEqual([model, true, false]);
    }
  });

  it('ends a stream that breaks with one of two choices finished by an error on the other only', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/n-cut-reset', n: 2, stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).not.toBe('data: [DONE]');
    const last = JSON.parse(events.at(-1)!.slice(6)) as { error?: unknown; choices: unknown[] };
    expect(last.error).toBeDefined();
    // Choice 0 had finished (stop): the error is told on choice 1, which had not.
    expect(last.choices).toEqual([{ index: 1, delta: { content: '' }, finish_reason: 'error' }]);
  });

  it('reads a stream on while a choice is still answering, though the other finished and usage came with each chunk', async () => {
    const stream = await client.chat.completions.create({
      model: 'acme/staggered',
      stream: true,
      // No n: 2. More choices than n is what a text completion of several prompts gets (n for each).
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'x' }],
    });
    let second = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    let id = '';
    for await (const chunk of stream) {
      for (const c of chunk.choices) if (c.index === 1) second += c.delta.content ?? '';
      usage = chunk.usage ?? usage;
      id = chunk.id;
    }
    expect(second).toBe('B1 B2 B3 B4 ');
    expect(usage?.completion_tokens).toBe(5);
    // The row's finish_reason is choice 0's, as for a one-shot answer, not the last to end.
    const row = (await gw.rows()).find((r) => `gen-${r.id}` === id)!;
    expect(row.finish_reason).toBe('stop');
  });

  it('keeps upstream connections alive across streams', async () => {
    for (let i = 0; i < 5; i++) {
      // The upstream finishes each response a little after [DONE], as real servers may.
      const stream = await client.chat.completions.create({
        model: 'acme/late-end',
        stream: true,
        messages: [{ role: 'user', content: 'x' }],
      });
      for await (const _ of stream) void _;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(upstream.requests).toHaveLength(5);
    expect(upstream.connections).toBeLessThanOrEqual(1);
  });

  it('keeps keepalives back until an upstream accepted the stream, so an earlier failure keeps its status', async () => {
    // The refusal comes after several keepalive intervals (100 ms here), before any upstream accepted.
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/late-limit', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toContain('application/json');
  });

  it("stops keepalives when an accepted attempt fails, so that the retries' waits do not send the 200", async () => {
    // Each attempt is accepted and fails before the first keepalive (100 ms); the backoffs
    // between them are longer than one interval.
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/accepted-then-failed', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.status).toBe(502);
    expect(await res.text()).not.toContain(': keepalive');
  });

  it('sends keepalive comments while waiting for the first token', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'acme/slow-start', stream: true, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('x-accel-buffering')).toBe('no');
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    expect(new TextDecoder().decode(value)).toContain(': keepalive');
    await reader.cancel();
    await upstream.waitForAborts(1);
  });

  it('writes exactly one row per request', async () => {
    const before = (await gw.rows()).length;
    const n = 12;
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        client.chat.completions.create({ model: 'acme/chat', messages: [{ role: 'user', content: `q${i}` }] }),
      ),
    );
    const after = await gw.waitForRows(before + n);
    expect(after).toHaveLength(before + n);
    expect(new Set(after.map((r) => r.id)).size).toBe(after.length);
  });
});
