import OpenAI, { APIError } from 'openai';
import { AnthropicUpstream } from '../fixtures/anthropic-upstream';
import { AdapterRegistry } from '../../src/adapters/adapter-registry.service';
import { ModelRegistry } from '../../src/config/model-registry.service';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/** kind: anthropic end to end: the official OpenAI client, the gateway, a Messages API stand-in. */
describe('anthropic adapter', () => {
  const upstream = new AnthropicUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    const r = (model: string, extra = '') =>
      `{ kind: anthropic, base_url: "${base}", api_key: good, provider_model_id: "${model}"${extra} }`;
    const models = `
models:
  - id: claude/sonnet
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route:
      - ${r('ok')}
  - id: claude/thinking
    context_length: 200000
    route:
      - ${r('thinking')}
  - id: claude/route-thinking
    context_length: 200000
    route:
      - ${r('ok', ', extra_body: { thinking: { type: enabled, budget_tokens: 2000 }, metadata: { user_id: route } }')}
  - id: claude/cached
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route:
      - ${r('cached')}
  - id: claude/cached-1h
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route:
      - ${r('cached-1h')}
  - id: claude/failover
    context_length: 200000
    router: priority
    route:
      - ${r('error:529', ', id: busy')}
      - ${r('ok', ', id: spare')}
  - id: claude/overloaded
    context_length: 200000
    route:
      - ${r('error:529')}
  - id: claude/limited
    context_length: 200000
    route:
      - ${r('error:429')}
  - id: claude/mid-error
    context_length: 200000
    route:
      - ${r('overloaded-mid')}
  - id: claude/limited-then-ok
    context_length: 200000
    router: priority
    route:
      - ${r('limited-mid', ', id: limited')}
      - ${r('ok', ', id: fine')}
  - id: claude/bad-usage
    context_length: 200000
    pricing: { prompt: 1, completion: 1 }
    route:
      - ${r('bad-usage')}
  - id: claude/cut
    context_length: 200000
    route:
      - ${r('cut')}
  - id: claude/page
    context_length: 200000
    route:
      - ${r('page')}
  - id: claude/keys
    context_length: 200000
    route:
      - { kind: anthropic, base_url: "${base}", api_keys: [limited-key, bad-key, good], provider_model_id: ok, default_max_tokens: 64 }
  - id: claude/no-good-key
    context_length: 200000
    route:
      - { kind: anthropic, base_url: "${base}", api_keys: [bad-key, limited-key], provider_model_id: ok }
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

  it('answers a chat completion through the Messages API', async () => {
    const res = await client.chat.completions.create({
      model: 'claude/sonnet',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hello claude' },
      ],
      stop: ['NEVER'],
    });
    expect(res.choices[0]).toMatchObject({ message: { role: 'assistant', content: 'echo: hello claude' }, finish_reason: 'stop' });
    expect(res.model).toBe('claude/sonnet');
    const sent = upstream.requests[0];
    expect(sent.path).toBe('/v1/messages');
    expect(sent.headers['x-api-key']).toBe('good');
    expect(sent.headers['anthropic-version']).toBe('2023-06-01');
    expect(sent.body).toEqual({
      model: 'ok',
      max_tokens: 4096,
      system: 'Be brief.',
      messages: [{ role: 'user', content: 'hello claude' }],
      stop_sequences: ['NEVER'],
    });
    expect(res.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    expect(await rowFor(res.id)).toMatchObject({
      provider: 'anthropic',
      prompt_tokens: 7,
      completion_tokens: 3,
      usage_estimated: false,
      finish_reason: 'stop',
    });
  });

  it("answers a JSON schema response_format with Claude's structured output, and refuses JSON mode without a schema", async () => {
    const schema = { type: 'object', properties: { echo: { type: 'string' } }, required: ['echo'], additionalProperties: false };
    const res = await client.chat.completions.create({
      model: 'claude/sonnet',
      messages: [{ role: 'user', content: 'hi there' }],
      response_format: { type: 'json_schema', json_schema: { name: 'echo', strict: true, schema } },
    });
    expect(JSON.parse(res.choices[0].message.content!)).toEqual({ echo: 'hi there' });
    expect(upstream.requests.at(-1)!.body.output_config).toEqual({ format: { type: 'json_schema', schema } });
    const err = await client.chat.completions
      .create({ model: 'claude/sonnet', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, param: 'response_format', message: expect.stringContaining('no JSON mode without a schema') });
  });

  it('stops at a stop sequence and at max_tokens', async () => {
    const stopped = await client.chat.completions.create({
      model: 'claude/sonnet',
      messages: [{ role: 'user', content: 'one two three' }],
      stop: 'two',
    });
    expect(stopped.choices[0]).toMatchObject({ message: { content: 'echo: one ' }, finish_reason: 'stop' });
    const cut = await client.chat.completions.create({
      model: 'claude/sonnet',
      messages: [{ role: 'user', content: 'one two three' }],
      max_tokens: 2,
    });
    expect(cut.choices[0]).toMatchObject({ message: { content: 'echo: one ' }, finish_reason: 'length' });
  });

  it('streams text with usage from message_start and message_delta', async () => {
    const stream = await client.chat.completions.create({
      model: 'claude/sonnet',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream this please' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('echo: stream this please');
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 } });
    expect(upstream.requests[0].body.stream).toBe(true);
    expect(await rowFor(chunks[0].id)).toMatchObject({ stream: true, prompt_tokens: 6, completion_tokens: 4, usage_estimated: false });
  });

  it('carries a tool round trip, streamed and not', async () => {
    const first = await client.chat.completions.create({
      model: 'claude/sonnet',
      tools,
      tool_choice: 'required',
      messages: [{ role: 'user', content: 'Paris' }],
    });
    expect(first.choices[0].finish_reason).toBe('tool_calls');
    const call = first.choices[0].message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(call.function).toEqual({ name: 'get_weather', arguments: '{"input":"Paris"}' });
    expect(upstream.requests[0].body).toMatchObject({
      tool_choice: { type: 'any' },
      tools: [{ name: 'get_weather', input_schema: { type: 'object' } }],
    });

    const second = await client.chat.completions.create({
      model: 'claude/sonnet',
      tools,
      messages: [
        { role: 'user', content: 'Paris' },
        first.choices[0].message,
        { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' },
      ],
    });
    expect(second.choices[0].message.content).toBe('tool said: sunny, 21C');

    const stream = await client.chat.completions.create({
      model: 'claude/sonnet',
      tools,
      stream: true,
      messages: [{ role: 'user', content: 'Rome' }],
    });
    let args = '';
    let name = '';
    let finish: string | null = null;
    for await (const c of stream) {
      const tc = c.choices[0]?.delta.tool_calls?.[0];
      if (tc?.function?.name) name = tc.function.name;
      args += tc?.function?.arguments ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect({ name, args, finish }).toEqual({ name: 'get_weather', args: '{"input":"Rome"}', finish: 'tool_calls' });
  });

  it('shows thinking as reasoning_content and takes its signed blocks back on the next turn', async () => {
    const res = await client.chat.completions.create({
      model: 'claude/thinking',
      reasoning_effort: 'low',
      max_tokens: 200,
      messages: [{ role: 'user', content: 'why' }],
    });
    const msg = res.choices[0].message as OpenAI.Chat.Completions.ChatCompletionMessage & {
      reasoning_content?: string;
      thinking_blocks?: unknown[];
    };
    expect(msg.reasoning_content).toBe('Let me think about this step by step.');
    expect(msg.thinking_blocks).toEqual([
      { type: 'thinking', thinking: 'Let me think about this step by step.', signature: expect.any(String) },
    ]);
    // A model id that names no Claude version before 4.6 gets adaptive thinking (budgets: see the mapper's tests).
    expect(upstream.requests[0].body).toMatchObject({ thinking: { type: 'adaptive' }, output_config: { effort: 'low' }, max_tokens: 200 });
    const next = await client.chat.completions.create({
      model: 'claude/thinking',
      reasoning_effort: 'low',
      messages: [{ role: 'user', content: 'why' }, msg, { role: 'user', content: 'and then?' }],
    });
    expect(next.choices[0].message.content).toBe('echo: and then?');
    expect((upstream.requests[1].body.messages as Array<{ content: unknown }>)[1].content).toEqual([
      expect.objectContaining({ type: 'thinking', signature: expect.any(String) }),
      { type: 'text', text: 'echo: why' },
    ]);

    const stream = await client.chat.completions.create({
      model: 'claude/thinking',
      stream: true,
      messages: [{ role: 'user', content: 'why' }],
    });
    let reasoning = '';
    for await (const c of stream) reasoning += (c.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';
    expect(reasoning).toBe('Let me think about this step by step.');
  });

  it("fits a route's own thinking (extra_body) as a client's: room in max_tokens, no sampling changes, none for a forced tool", async () => {
    const res = await client.chat.completions.create({
      model: 'claude/route-thinking',
      temperature: 0.5,
      top_k: 5,
      max_tokens: 1000,
      messages: [{ role: 'user', content: 'Paris' }],
    } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming);
    expect(res.choices[0].message.content).toBeTruthy();
    const sent = upstream.requests[0].body;
    expect(sent).toMatchObject({ thinking: { type: 'enabled', budget_tokens: 2000 }, max_tokens: 3000, metadata: { user_id: 'route' } });
    expect(sent).not.toHaveProperty('temperature');
    expect(sent).not.toHaveProperty('top_k');

    const forced = await client.chat.completions.create({
      model: 'claude/route-thinking',
      tools,
      tool_choice: 'required',
      messages: [{ role: 'user', content: 'Paris' }],
    });
    expect(forced.choices[0].finish_reason).toBe('tool_calls');
    expect(upstream.requests[1].body).not.toHaveProperty('thinking');

    // Relayed from the Messages surface alike.
    const relayed = await rawPost(`${gw.url}/anthropic/v1/messages`, {
      model: 'claude/route-thinking',
      max_tokens: 1000,
      temperature: 0.5,
      messages: [{ role: 'user', content: 'Paris' }],
    });
    expect(relayed.status).toBe(200);
    expect(upstream.requests[2].body).toMatchObject({ thinking: { type: 'enabled', budget_tokens: 2000 }, max_tokens: 3000 });
    expect(upstream.requests[2].body).not.toHaveProperty('temperature');
  });

  it('counts cache reads and writes into prompt tokens and bills them at their prices', async () => {
    const res = await client.chat.completions.create({ model: 'claude/cached', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.usage).toMatchObject({ prompt_tokens: 124, prompt_tokens_details: { cached_tokens: 100, cache_write_tokens: 20 } });
    const row = await rowFor(res.id);
    expect(row).toMatchObject({ prompt_tokens: 124, cached_tokens: 100, cache_write_tokens: 20 });
    // 4 × 3 + 100 × 0.3 + 20 × 3.75 + 2 × 15 USD per million tokens
    expect(Number(row.cost_usd)).toBeCloseTo((4 * 3 + 100 * 0.3 + 20 * 3.75 + 2 * 15) / 1e6, 12);
  });

  it('bills one-hour cache writes at twice the prompt price, streamed or not', async () => {
    const res = await client.chat.completions.create({ model: 'claude/cached-1h', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.usage?.prompt_tokens_details).toEqual({ cached_tokens: 100, cache_write_tokens: 20, cache_write_1h_tokens: 15 });
    // 4 × 3 + 100 × 0.3 + 5 × 3.75 + 15 × 6 (2 × 3) + 2 × 15 USD per million tokens
    const cost = (4 * 3 + 100 * 0.3 + 5 * 3.75 + 15 * 6 + 2 * 15) / 1e6;
    expect(Number((await rowFor(res.id)).cost_usd)).toBeCloseTo(cost, 12);
    const stream = await client.chat.completions.create({
      model: 'claude/cached-1h',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let id = '';
    let usage: unknown;
    for await (const chunk of stream) {
      id = chunk.id;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(usage).toMatchObject({ prompt_tokens_details: { cache_write_tokens: 20, cache_write_1h_tokens: 15 } });
    expect(Number((await rowFor(id)).cost_usd)).toBeCloseTo(cost, 12);
    // Cache writes are counted in the metrics too.
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toContain('hybridinference_tokens_total{model="claude/cached-1h",provider="anthropic",type="cache_write"} 40');
  });

  it('fails over when Claude is overloaded, and answers 503 when no route is left', async () => {
    const res = await client.chat.completions.create({ model: 'claude/failover', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBe('echo: x');
    expect((await rowFor(res.id)).endpoint).toBe('spare');
    const err = await client.chat.completions
      .create({ model: 'claude/overloaded', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect(err).toMatchObject({ status: 503, code: 'overloaded' });
  });

  it('passes a rate limit on with Retry-After', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'claude/limited', messages: [{ role: 'user', content: 'x' }] });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('3');
    expect(JSON.parse(res.text).error).toMatchObject({ type: 'rate_limit_error', code: 'rate_limit_error' });
  });

  it('estimates usage Anthropic sent without counts, JSON and stream, and marks the rows so', async () => {
    const messages = [{ role: 'user' as const, content: 'one two three four' }];
    const res = await client.chat.completions.create({ model: 'claude/bad-usage', messages });
    expect(res.usage).toMatchObject({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number) });
    expect(res.usage!.prompt_tokens).toBeGreaterThan(0);
    expect(res.usage!.completion_tokens).toBeGreaterThan(0);
    const json = await gw.rowFor(res.id);
    expect(json).toMatchObject({ prompt_tokens: res.usage!.prompt_tokens, usage_estimated: true });
    expect(json.cost_usd).toBeGreaterThan(0);
    const stream = await client.chat.completions.create({
      model: 'claude/bad-usage',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let id = '';
    let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
    for await (const c of stream) {
      id = c.id;
      if (c.usage) usage = c.usage;
    }
    expect(usage!.prompt_tokens).toBeGreaterThan(0);
    expect(usage!.completion_tokens).toBeGreaterThan(0);
    const row = await gw.rowFor(id);
    expect(row).toMatchObject({ prompt_tokens: usage!.prompt_tokens, completion_tokens: usage!.completion_tokens, usage_estimated: true });
  });

  it('ends a stream that fails mid-answer with an in-band error, never [DONE]', async () => {
    // Characters delivered before the failure: "echo: " (overloaded-mid), "echo: one " (cut).
    for (const [model, delivered] of [
      ['claude/mid-error', 6],
      ['claude/cut', 10],
    ] as const) {
      const res = await rawPost(`${gw.url}/v1/chat/completions`, {
        model,
        stream: true,
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      expect(res.status).toBe(200);
      expect(res.text).toContain('echo: ');
      expect(res.text).toMatch(/"error":\{/);
      expect(res.text).not.toContain('[DONE]');
      // Billed on message_start's input figure (4 words + 3 for the turn) and its output of 1,
      // plus an estimate of the characters delivered after it; marked as an estimate.
      const row = await gw.rowFor(/"id":"(gen-[^"]+)"/.exec(res.text)![1]);
      expect(row).toMatchObject({ stream: true, prompt_tokens: 7, completion_tokens: 1 + Math.ceil(delivered / 4), usage_estimated: true });
    }
  });

  it('answers a stream request that got a page instead of events with a 502 naming it, not retried', async () => {
    // Translated (chat completions) and relayed as it is (the Messages surface).
    const chat = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'claude/page',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(chat.status).toBe(502);
    expect(JSON.parse(chat.text).error).toMatchObject({ code: 'upstream_protocol' });
    expect(chat.text).toMatch(/upstream anthropic answered a stream request with no event stream \(text\/html\)/);
    const messages = await rawPost(`${gw.url}/anthropic/v1/messages`, {
      model: 'claude/page',
      max_tokens: 10,
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(messages.status).toBe(502);
    expect(JSON.parse(messages.text)).toMatchObject({ type: 'error', error: { type: 'api_error' } });
    expect(messages.text).toMatch(/no event stream \(text\/html\)/);
    expect(upstream.requests).toHaveLength(2);
  });

  it('fails over from a stream that failed after message_start, before any content', async () => {
    const stream = await client.chat.completions.create({
      model: 'claude/limited-then-ok',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('echo: x');
    // The limited route is retried (429), then the next one answers.
    const models = upstream.requests.map((q) => q.body.model);
    expect(models[0]).toBe('limited-mid');
    expect(models.at(-1)).toBe('ok');
  });

  it('moves on from a rate-limited and a refused key, each tried once', async () => {
    const res = await client.chat.completions.create({ model: 'claude/keys', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBe('echo: x');
    expect(upstream.requests.map((r) => r.headers['x-api-key'])).toEqual(['limited-key', 'bad-key', 'good']);
    expect(upstream.requests[2].body.max_tokens).toBe(64);
    // Both keys of this route now sit out (same upstream, same keys): one try, with the key whose
    // pause ends first (the 429's Retry-After of 7 s, before the 401's 5 minutes).
    const err = await client.chat.completions
      .create({ model: 'claude/no-good-key', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 429 });
    expect(upstream.requests.slice(3).map((r) => r.headers['x-api-key'])).toEqual(['limited-key']);
  });

  it('sends images as image blocks', async () => {
    const res = await client.chat.completions.create({
      model: 'claude/sonnet',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is it' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
          ],
        },
      ],
    });
    expect(res.choices[0].message.content).toBe('echo: what is it');
    expect((upstream.requests[0].body.messages as Array<{ content: unknown[] }>)[0].content[1]).toEqual({
      type: 'image',
      source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' },
    });
  });

  it('serves a text completion through Messages', async () => {
    const res = await client.completions.create({ model: 'claude/sonnet', prompt: 'complete me' });
    expect(res.choices[0].text).toBe('echo: complete me');
    expect(upstream.requests[0].body.messages).toEqual([{ role: 'user', content: 'complete me' }]);
  });

  it('refuses n > 1 with a 400 naming the parameter', async () => {
    const err = await client.chat.completions
      .create({ model: 'claude/sonnet', n: 2, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, param: 'n' });
    expect(upstream.requests).toHaveLength(0);
  });

  it('probes health with a cheap, keyed GET of the model list', async () => {
    const probe = (model: string) =>
      gw.app.get(AdapterRegistry).get('anthropic')!.probe!(
        gw.app.get(ModelRegistry).current().find(model)!.routes[0],
        AbortSignal.timeout(5000),
      );
    await expect(probe('claude/sonnet')).resolves.toMatchObject({ ok: true, detail: 'HTTP 200' });
    expect(upstream.requests.at(-1)?.path).toBe('/v1/models');
    await expect(probe('claude/no-good-key')).resolves.toMatchObject({ ok: false });
  });
});
