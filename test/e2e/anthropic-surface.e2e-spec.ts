import Anthropic, { APIError } from '@anthropic-ai/sdk';
import { betaTool } from '@anthropic-ai/sdk/helpers/beta/json-schema';
import type OpenAI from 'openai';
import { AnthropicUpstream } from '../fixtures/anthropic-upstream';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { ACCESS_ENV, adminApi, call } from '../helpers/access';
import { waitFor } from '../helpers/access';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

type Json = Record<string, unknown>;

/** SSE text as [event, data] pairs. */
function events(text: string): Array<[string, Json]> {
  return text
    .split('\n\n')
    .filter((block) => block.includes('data: '))
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? '';
      return [event, JSON.parse(/^data: (.*)$/m.exec(block)![1]) as Json];
    });
}

const tools: Anthropic.Tool[] = [
  { name: 'get_weather', description: 'Weather for a city', input_schema: { type: 'object', properties: { input: { type: 'string' } } } },
];

/**
 * The Anthropic Messages surface with the official Anthropic SDK: relayed as it is to an
 * `anthropic` route (a Messages API stand-in), translated for an `openai_compat` route (an
 * OpenAI-compatible stand-in), errors in Anthropic's shape, one api_logs row per request.
 */
describe('Anthropic Messages surface', () => {
  const claude = new AnthropicUpstream();
  const compat = new OpenAiUpstream();
  let gw: TestGateway;
  let client: Anthropic;

  beforeAll(async () => {
    const a = await claude.start();
    const o = await compat.start();
    const r = (model: string, extra = '') => `{ kind: anthropic, base_url: "${a}", api_key: good, provider_model_id: "${model}"${extra} }`;
    gw = await startGateway({
      models: `
models:
  - id: claude/sonnet
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route: [${r('ok')}]
  - id: claude/thinking
    context_length: 200000
    route: [${r('thinking')}]
  - id: claude/cached
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route: [${r('cached')}]
  - id: claude/prefill
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route: [${r('prefill:5000', ', id: prefilling')}]
  - id: claude/cached-1h
    context_length: 200000
    pricing: { prompt: 3, completion: 15, input_cache_read: "0.3", input_cache_write: "3.75" }
    route: [${r('cached-1h')}]
  - id: claude/searched
    context_length: 200000
    pricing: { prompt: 3, completion: 15, web_search: "0.01" }
    route: [${r('searched')}]
  - id: claude/limited
    context_length: 200000
    route: [${r('error:429')}]
  - id: claude/refused-us
    context_length: 200000
    route: [${r('error:401')}]
  - id: claude/mid-error
    context_length: 200000
    route: [${r('overloaded-mid')}]
  - id: claude/overloaded
    context_length: 200000
    route: [${r('error:529')}]
  - id: claude/bad-delta-usage
    context_length: 200000
    route: [${r('bad-delta-usage')}]
  - id: claude/invalid-mid
    context_length: 200000
    route: [${r('invalid-mid')}]
  - id: claude/no-stop
    context_length: 200000
    pricing: { prompt: 3, completion: 15 }
    route: [${r('no-stop')}]
  - id: claude/pretty
    context_length: 200000
    route: [${r('pretty')}]
  - id: llama/chat
    context_length: 8192
    pricing: { prompt: 1, completion: 2 }
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: ok }]
  - id: or/chat
    context_length: 8192
    route: [{ kind: openrouter, base_url: "${o}", api_key: k, provider_model_id: ok }]
  - id: llama/reasoner
    context_length: 8192
    pricing: { prompt: 1, completion: 2, internal_reasoning: 5 }
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: "reasoned:40" }]
  - id: llama/small
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: "context:5" }]
  - id: llama/window-2k
    context_length: 2048
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: "context:2048" }]
  - id: or/window-2k
    context_length: 2048
    route: [{ kind: openrouter, base_url: "${o}", api_key: k, provider_model_id: "context:2048" }]
  - id: llama/no-usage
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: no-usage }]
  - id: llama/mid-error
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: mid-error }]
  - id: llama/only-done
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: only-done }]
  - id: llama/tools-one-index
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: tools-one-index }]
  - id: llama/only-role
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${o}", provider_model_id: only-role }]
  - id: mixed/failover
    context_length: 8192
    router: priority
    route:
      - ${r('error:529', ', id: busy-claude')}
      - { kind: openai_compat, id: spare-llama, base_url: "${o}", provider_model_id: ok }
  - id: mixed/late-failure
    context_length: 8192
    router: priority
    route:
      - ${r('limited-mid', ', id: opened-claude')}
      - { kind: openai_compat, id: spare-llama, base_url: "${o}", provider_model_id: ok }
`,
    });
    client = new Anthropic({ baseURL: `${gw.url}/anthropic`, apiKey: 'test-key', maxRetries: 0 });
  });

  afterAll(async () => {
    await gw?.close();
    await claude.stop();
    await compat.stop();
  });

  beforeEach(() => {
    claude.reset();
    compat.reset();
  });

  const rowFor = async (upstreamId: string) => {
    const rows = await gw.rows();
    const row = rows.find((r) => (r.metadata as { upstream_id?: string } | null)?.upstream_id === upstreamId);
    if (!row) throw new Error(`no api_logs row for ${upstreamId}`);
    return row;
  };

  it("records a translated answer's upstream id, not the message id the gateway made, one-shot and streamed", async () => {
    for (const stream of [false, true]) {
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'llama/chat',
        max_tokens: 50,
        stream,
        messages: [{ role: 'user', content: 'which id' }],
      });
      expect(res.status).toBe(200);
      const rows = (await gw.rows()).filter((r) => r.model === 'llama/chat');
      const id = (rows.at(-1)!.metadata as { upstream_id?: string }).upstream_id;
      expect([stream, id]).toEqual([stream, expect.stringMatching(/^chatcmpl-/)]);
    }
  });

  it("takes Claude Code's mid-conversation system messages: relayed to Claude, where they stand for chat backends", async () => {
    // As Claude Code 2.1.197 sends them (the beta in its anthropic-beta header).
    const beta = { 'anthropic-beta': 'claude-code-20250219,mid-conversation-system-2026-04-07' };
    const body = {
      max_tokens: 50,
      system: 'You are Claude Code.',
      messages: [
        { role: 'user', content: 'say hi' },
        { role: 'system', content: 'Available agent types for the Agent tool: general-purpose' },
      ],
    };
    const relayed = await call(`${gw.url}/anthropic/v1/messages`, 'POST', { ...body, model: 'claude/sonnet' }, beta);
    expect(relayed.status).toBe(200);
    expect(claude.requests[0].body).toEqual({ ...body, model: 'ok' });
    expect(claude.requests[0].headers['anthropic-beta']).toBe('claude-code-20250219,mid-conversation-system-2026-04-07');
    const counted = await call(
      `${gw.url}/anthropic/v1/messages/count_tokens`,
      'POST',
      { ...body, max_tokens: undefined, model: 'claude/sonnet' },
      beta,
    );
    expect(counted.status).toBe(200);
    expect(claude.requests[1].body.messages).toEqual(body.messages);

    const translated = await call(`${gw.url}/anthropic/v1/messages`, 'POST', { ...body, model: 'llama/chat', stream: true }, beta);
    expect(translated.status).toBe(200);
    expect(String(translated.body)).toContain('event: message_stop');
    expect(compat.requests[0].body.messages).toEqual([
      { role: 'system', content: 'You are Claude Code.' },
      { role: 'user', content: 'say hi' },
      { role: 'system', content: 'Available agent types for the Agent tool: general-purpose' },
    ]);
  });

  it('gives parallel calls a server sent all at index 0 a tool_use block each', async () => {
    const msg = await client.messages
      .stream({
        model: 'llama/tools-one-index',
        max_tokens: 100,
        tools: [
          { name: 'get_weather', input_schema: { type: 'object', properties: {} } },
          { name: 'get_time', input_schema: { type: 'object', properties: {} } },
        ],
        messages: [{ role: 'user', content: 'Oslo' }],
      })
      .finalMessage();
    expect(msg.stop_reason).toBe('tool_use');
    expect(msg.content.filter((b) => b.type === 'tool_use').map((b) => [b.name, b.input])).toEqual([
      ['get_weather', { input: 'Oslo' }],
      ['get_time', { n: 2 }],
    ]);

    // The server names its second call `call_second` at every turn; Claude Code drops a call
    // whose id it has seen, so the next turn's calls get ids of their own, streamed or not.
    const uses = msg.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
    const next = {
      model: 'llama/tools-one-index',
      max_tokens: 100,
      tools: [
        { name: 'get_weather', input_schema: { type: 'object' as const, properties: {} } },
        { name: 'get_time', input_schema: { type: 'object' as const, properties: {} } },
      ],
      messages: [
        { role: 'user' as const, content: 'Oslo' },
        { role: 'assistant' as const, content: msg.content },
        {
          role: 'user' as const,
          content: [
            ...uses.map((u) => ({ type: 'tool_result' as const, tool_use_id: u.id, content: 'ok' })),
            { type: 'text' as const, text: 'and Bergen' },
          ],
        },
      ],
    };
    const streamed = await client.messages.stream(next).finalMessage();
    const oneShot = await client.messages.create(next);
    for (const answer of [streamed, oneShot]) {
      const ids = answer.content.filter((b) => b.type === 'tool_use').map((b) => b.id);
      expect(ids).toHaveLength(2);
      for (const id of ids) expect(uses.map((u) => u.id)).not.toContain(id);
    }
  });

  describe('relayed to an anthropic route', () => {
    it("acts on OpenRouter's routing options itself and never sends them to Anthropic", async () => {
      // Anthropic refuses fields it does not know; before, `provider` reached it and came back a 400.
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 50,
        messages: [{ role: 'user', content: 'hi' }],
        provider: { sort: 'price', data_collection: 'deny' },
        transforms: [],
      });
      expect(res.status).toBe(200);
      expect(claude.requests[0].body).toEqual({ model: 'ok', max_tokens: 50, messages: [{ role: 'user', content: 'hi' }] });
      // `models`: the fallback serves when the Claude route refuses, as on chat.
      claude.reset();
      const fallback = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/overloaded',
        max_tokens: 50,
        messages: [{ role: 'user', content: 'fall back' }],
        models: ['llama/chat'],
      });
      expect(fallback.status).toBe(200);
      expect(fallback.body).toMatchObject({ model: 'llama/chat', content: [{ type: 'text', text: 'echo: fall back' }] });
      expect(claude.requests.map((r) => r.body.models)).toEqual(claude.requests.map(() => undefined));
      expect(compat.requests[0].body.models).toBeUndefined();
      // And a malformed option is the client's 400 in Anthropic's shape, naming it.
      const bad = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 50,
        messages: [{ role: 'user', content: 'x' }],
        provider: { order: [7] },
      });
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('provider.order[0]') },
      });
    });

    it('passes the request through with only the model and the key replaced, and the answer back under the public model id', async () => {
      const params: Anthropic.MessageCreateParamsNonStreaming = {
        model: 'claude/sonnet',
        max_tokens: 100,
        system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }],
        messages: [{ role: 'user', content: [{ type: 'text', text: 'hello claude', cache_control: { type: 'ephemeral', ttl: '1h' } }] }],
        metadata: { user_id: 'user-7' },
        stop_sequences: ['NEVER'],
      };
      const msg = await client.messages.create(params, { headers: { 'anthropic-beta': 'extended-cache-ttl-2025-04-11' } });
      expect(msg).toMatchObject({
        type: 'message',
        role: 'assistant',
        content: [{ type: 'text', text: 'echo: hello claude' }],
        stop_reason: 'end_turn',
        model: 'claude/sonnet',
      });
      const sent = claude.requests[0];
      expect(sent.path).toBe('/v1/messages');
      expect(sent.body).toEqual({ ...params, model: 'ok' });
      expect(sent.headers['x-api-key']).toBe('good');
      // The client's own API version (the 1.x SDK's), relayed with its request.
      expect(sent.headers['anthropic-version']).toBe('2026-10-21');
      expect(sent.headers['anthropic-beta']).toBe('extended-cache-ttl-2025-04-11');
      expect(sent.headers.authorization).toBeUndefined();
      const row = await rowFor(msg.id);
      expect(row).toMatchObject({
        model: 'claude/sonnet',
        provider: 'anthropic',
        stream: false,
        status_code: 200,
        prompt_tokens: msg.usage.input_tokens,
        completion_tokens: msg.usage.output_tokens,
        usage_estimated: false,
        finish_reason: 'stop',
        user_id: 'user-7',
      });
      expect(Number(row.cost_usd)).toBeCloseTo((msg.usage.input_tokens * 3 + msg.usage.output_tokens * 15) / 1e6, 12);
    });

    it("leaves out the unsigned thinking and carried reasoning a translated route's answer had, which Anthropic would refuse", async () => {
      // A conversation begun on a translated route (its thinking has no signature), now on Claude.
      const messages = [
        { role: 'user', content: 'hello' },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'I should think.', signature: '' },
            // Another model's encrypted reasoning the gateway carried (Gemini's thought signature):
            // Claude refuses its data as not its own.
            { type: 'redacted_thinking', data: 'hybridinference-reasoning-v1.eyJ0eXBlIjoicmVhc29uaW5nLmVuY3J5cHRlZCJ9' },
            { type: 'text', text: 'hi' },
          ],
        },
        { role: 'user', content: 'again' },
      ];
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', { model: 'claude/sonnet', max_tokens: 20, messages });
      expect(res.status).toBe(200);
      expect(claude.requests[0].body.messages).toEqual([
        messages[0],
        { role: 'assistant', content: [{ type: 'text', text: 'hi' }] },
        messages[2],
      ]);
      // A turn that was nothing but such reasoning (cut off while it reasoned) goes whole, and
      // the user turns around it become one: Anthropic refuses an empty turn.
      claude.reset();
      const cut = [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'long reasoning cut', signature: '' }] },
        { role: 'user', content: [{ type: 'text', text: 'continue' }] },
      ];
      const again = await call(`${gw.url}/anthropic/v1/messages`, 'POST', { model: 'claude/sonnet', max_tokens: 20, messages: cut });
      expect(again.status).toBe(200);
      expect(claude.requests[0].body.messages).toEqual([
        {
          role: 'user',
          content: [
            { type: 'text', text: 'q' },
            { type: 'text', text: 'continue' },
          ],
        },
      ]);
    });

    it('relays the stream event by event, usage read from message_start and message_delta', async () => {
      const body = { model: 'claude/cached', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'stream this please' }] };
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, body, {
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      const evs = events(res.text);
      expect(evs.map(([e]) => e)).toEqual([
        'message_start',
        'content_block_start',
        'ping',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ]);
      for (const [e, data] of evs) expect(data.type).toBe(e);
      const start = evs[0][1].message as { id: string; model: string; usage: Json };
      expect(start.model).toBe('claude/cached');
      expect(start.usage).toMatchObject({ input_tokens: 6, cache_read_input_tokens: 100, cache_creation_input_tokens: 20 });
      expect(res.text).not.toContain('[DONE]');
      const row = await rowFor(start.id);
      // 6 + 100 cached reads + 20 cache writes; output from message_delta.
      expect(row).toMatchObject({
        stream: true,
        prompt_tokens: 126,
        cached_tokens: 100,
        cache_write_tokens: 20,
        completion_tokens: 4,
        usage_estimated: false,
        finish_reason: 'stop',
      });
      expect(row.ttft_ms).not.toBeNull();
    });

    it('bills one-hour cache writes at twice the prompt price, streamed or not', async () => {
      const params = { model: 'claude/cached-1h', max_tokens: 50, messages: [{ role: 'user' as const, content: 'cache me' }] };
      const msg = await client.messages.create(params);
      expect(msg.usage).toMatchObject({
        cache_creation_input_tokens: 20,
        cache_creation: { ephemeral_5m_input_tokens: 5, ephemeral_1h_input_tokens: 15 },
      });
      const cost = (u: { input_tokens: number; output_tokens: number }) =>
        (u.input_tokens * 3 + 100 * 0.3 + 5 * 3.75 + 15 * 6 + u.output_tokens * 15) / 1e6;
      expect(Number((await rowFor(msg.id)).cost_usd)).toBeCloseTo(cost(msg.usage), 12);
      const streamed = await client.messages.stream(params).finalMessage();
      expect(Number((await rowFor(streamed.id)).cost_usd)).toBeCloseTo(cost(streamed.usage), 12);
    });

    it('takes a stream that ended after its stop reason, without message_stop, as whole on both surfaces', async () => {
      const params = { model: 'claude/no-stop', max_tokens: 50, messages: [{ role: 'user' as const, content: 'all of it' }] };
      const message = await client.messages.stream(params).finalMessage();
      expect(message).toMatchObject({ content: [{ type: 'text', text: 'echo: all of it' }], stop_reason: 'end_turn' });
      expect(await rowFor(message.id)).toMatchObject({
        status_code: 200,
        usage_estimated: false,
        completion_tokens: message.usage.output_tokens,
      });
      const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
      const stream = await gw.client().chat.completions.create({
        model: 'claude/no-stop',
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'all of it' }],
      });
      for await (const c of stream) chunks.push(c);
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('echo: all of it');
      const usage = chunks.at(-1)!.usage!;
      expect(usage.completion_tokens).toBe(message.usage.output_tokens);
      expect((await gw.rows()).find((r) => `gen-${r.id}` === chunks[0].id)).toMatchObject({ status_code: 200, usage_estimated: false });
    });

    it('bills the web searches Claude ran at the web_search price, streamed or not', async () => {
      const params = {
        model: 'claude/searched',
        max_tokens: 50,
        tools: [{ type: 'web_search_20250305' as const, name: 'web_search' as const, max_uses: 3 }],
        messages: [{ role: 'user' as const, content: 'look it up' }],
      };
      const cost = (u: { input_tokens: number; output_tokens: number }) => (u.input_tokens * 3 + u.output_tokens * 15) / 1e6 + 3 * 0.01;
      const msg = await client.messages.create(params);
      expect(msg.usage.server_tool_use).toEqual({ web_search_requests: 3 });
      expect(Number((await rowFor(msg.id)).cost_usd)).toBeCloseTo(cost(msg.usage), 12);
      const streamed = await client.messages.stream(params).finalMessage();
      expect(Number((await rowFor(streamed.id)).cost_usd)).toBeCloseTo(cost(streamed.usage), 12);
      // And on the OpenAI surface, where the usage says so too.
      const chat = await gw.client().chat.completions.create({ model: 'claude/searched', messages: [{ role: 'user', content: 'x' }] });
      expect(chat.usage).toMatchObject({ server_tool_use: { web_search_requests: 3 } });
      expect((chat.usage as unknown as { cost: number }).cost).toBeCloseTo(
        (chat.usage!.prompt_tokens * 3 + chat.usage!.completion_tokens * 15) / 1e6 + 0.03,
        12,
      );
    });

    it('bills the prompt as message_start counted it when the client leaves before the first content', async () => {
      const controller = new AbortController();
      const body = { model: 'claude/prefill', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'a long prompt' }] };
      // No headers reach the client before the first content: the request is told by the id it sent.
      const pending = fetch(`${gw.url}/anthropic/v1/messages`, {
        method: 'POST',
        signal: controller.signal,
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-request-id': 'left-in-prefill' },
        body: JSON.stringify(body),
      }).catch(() => undefined);
      await waitFor(async () => claude.requests.length > 0, 'the upstream call');
      await new Promise((r) => setTimeout(r, 300)); // message_start has come; the first content has not
      controller.abort();
      await pending;
      await claude.waitForAborts(1);
      const mine = (r: { metadata: unknown }) =>
        (r.metadata as { client_request_id?: string } | null)?.client_request_id === 'left-in-prefill';
      let row: Awaited<ReturnType<TestGateway['rows']>>[number] | undefined;
      await waitFor(async () => (row = (await gw.rows()).find(mine)) !== undefined, 'the row of the abandoned stream');
      // The stand-in's count: 3 words + 3 for the message, and 100 cache reads.
      expect(row).toMatchObject({
        status_code: 499,
        endpoint: 'prefilling',
        prompt_tokens: 106,
        cached_tokens: 100,
        completion_tokens: 0,
        usage_estimated: true,
      });
      expect(Number(row!.cost_usd)).toBeCloseTo((6 * 3 + 100 * 0.3) / 1e6, 12);
    });

    it('streams a tool round trip through the SDK: tool_use with input_json_delta, then the tool_result', async () => {
      const stream = client.messages.stream({
        model: 'claude/sonnet',
        max_tokens: 200,
        tools,
        tool_choice: { type: 'any' },
        messages: [{ role: 'user', content: 'Paris' }],
      });
      const partials: string[] = [];
      stream.on('inputJson', (partial) => partials.push(partial));
      const first = await stream.finalMessage();
      expect(first.stop_reason).toBe('tool_use');
      const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
      expect(use).toMatchObject({ name: 'get_weather', input: { input: 'Paris' } });
      expect(partials.join('')).toBe('{"input":"Paris"}');
      expect(claude.requests[0].body).toMatchObject({ model: 'ok', stream: true, tool_choice: { type: 'any' }, tools });

      const second = await client.messages.create({
        model: 'claude/sonnet',
        max_tokens: 200,
        tools,
        messages: [
          { role: 'user', content: 'Paris' },
          { role: 'assistant', content: first.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny, 21C' }] },
        ],
      });
      expect(second.content).toEqual([{ type: 'text', text: 'tool said: sunny, 21C' }]);
    });

    it('relays thinking with its signature', async () => {
      const msg = await client.messages
        .stream({
          model: 'claude/thinking',
          max_tokens: 2048,
          thinking: { type: 'enabled', budget_tokens: 1024 },
          messages: [{ role: 'user', content: 'why' }],
        })
        .finalMessage();
      expect(msg.content[0]).toEqual({
        type: 'thinking',
        thinking: 'Let me think about this step by step.',
        signature: expect.stringMatching(/.+/),
      });
      expect(msg.content[1]).toEqual({ type: 'text', text: 'echo: why' });
      expect(claude.requests[0].body.thinking).toEqual({ type: 'enabled', budget_tokens: 1024 });
    });

    it("counts tokens with the upstream's count_tokens, free of charge", async () => {
      const before = (await gw.rows()).length;
      const counted = await client.messages.countTokens({
        model: 'claude/sonnet',
        system: 'Be brief.',
        messages: [{ role: 'user', content: 'hello there claude' }],
      });
      expect(counted.input_tokens).toBe(8);
      expect(claude.requests[0]).toMatchObject({
        path: '/v1/messages/count_tokens',
        body: { model: 'ok', system: 'Be brief.', messages: [{ role: 'user', content: 'hello there claude' }] },
      });
      const rows = await gw.waitForRows(before + 1);
      expect(rows.at(-1)).toMatchObject({ model: 'claude/sonnet', status_code: 200, prompt_tokens: 0, completion_tokens: 0 });
      expect(Number(rows.at(-1)!.cost_usd)).toBe(0);
      // Told apart from a message in the log, with what was counted.
      expect(rows.at(-1)!.metadata).toMatchObject({ operation: 'count_tokens', input_tokens: 8 });
    });

    it("relays message threads, and passes a lost thread's details on so that the SDK replays the conversation", async () => {
      const url = `${gw.url}/anthropic/v1/messages`;
      const first = await call(url, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 10,
        thread: { type: 'create' },
        messages: [{ role: 'user', content: 'first' }],
      });
      expect(first.status).toBe(200);
      const next = await call(url, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 10,
        thread: { type: 'continue', previous_message_id: (first.body as Json).id },
        messages: [{ role: 'user', content: 'second' }],
      });
      expect(next.status).toBe(200);
      expect(claude.requests[1].body.thread).toEqual({ type: 'continue', previous_message_id: (first.body as Json).id });
      // A paused turn is resumed with no new message.
      const resumed = await call(url, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 10,
        thread: { type: 'continue', previous_message_id: (next.body as Json).id },
        messages: [],
      });
      expect(resumed.status).toBe(200);
      const lost = await call(url, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 10,
        thread: { type: 'continue', previous_message_id: 'msg_gone' },
        messages: [{ role: 'user', content: 'third' }],
      });
      expect(lost.status).toBe(404);
      expect((lost.body as Json).error).toEqual({
        type: 'not_found_error',
        message: expect.any(String),
        details: { error_code: 'thread_not_found' },
      });
      const bad = await call(url, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 10,
        thread: { type: 'continue' },
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(bad.status).toBe(400);
      expect(JSON.stringify(bad.body)).toContain('thread.previous_message_id');
    });

    it("passes an upstream rate limit on as Anthropic's 429 with retry-after", async () => {
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/limited',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(res.status).toBe(429);
      expect(res.headers.get('retry-after')).toBe('3');
      expect(res.body).toEqual({
        type: 'error',
        error: { type: 'rate_limit_error', message: expect.stringContaining('rate limit') },
        request_id: res.headers.get('x-request-id'),
      });
      const err = await client.messages
        .create({ model: 'claude/overloaded', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.APIError);
      expect(err).toMatchObject({ status: 529, error: { type: 'error', error: { type: 'overloaded_error' } } });
      // The row records what the client was told.
      const row = (await gw.rows()).filter((r) => r.model === 'claude/overloaded').pop()!;
      expect(row).toMatchObject({ status_code: 529, error_code: 'overloaded' });
    });

    it("answers an upstream's refusal of the gateway's own key as a 502, not a 401 Claude Code takes for its own", async () => {
      const err = await client.messages
        .create({ model: 'claude/refused-us', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.InternalServerError);
      expect(err).toMatchObject({ status: 502, error: { type: 'error', error: { type: 'api_error' } } });
      expect((err as InstanceType<typeof Anthropic.APIError>).message).toContain("refused the gateway's credentials for it (401)");
      const row = (await gw.rows()).filter((r) => r.model === 'claude/refused-us').pop()!;
      expect(row).toMatchObject({ status_code: 502, error_code: 'upstream_unauthorized' });
      // Asking again changes nothing: the SDKs are told not to retry the 502.
      const raw = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/refused-us',
        max_tokens: 10,
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(raw.headers.get('x-should-retry')).toBe('false');
    });

    it("says a backend's context overflow in Anthropic's words, which Claude Code reads to compact", async () => {
      const err = await client.messages
        .create({ model: 'llama/small', max_tokens: 10, messages: [{ role: 'user', content: 'a long prompt of many words indeed' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.BadRequestError);
      expect((err as InstanceType<typeof Anthropic.APIError>).message).toMatch(
        /prompt is too long: This model's maximum context length is 5 tokens/,
      );
    });

    it("keeps message_start's input count when message_delta's output count is not one, and estimates the output", async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'claude/bad-delta-usage',
        max_tokens: 50,
        stream: true,
        messages: [{ role: 'user', content: 'one two three' }],
      });
      expect(res.status).toBe(200);
      const row = (await gw.rows()).filter((r) => r.model === 'claude/bad-delta-usage').pop()!;
      // 3 words + 3 for the turn, as the stand-in counts; "echo: one two three" delivered (19 chars).
      expect(row).toMatchObject({ prompt_tokens: 6, completion_tokens: 5, usage_estimated: true });
    });

    it('ends a stream that fails mid-answer with an in-band error event and no message_stop', async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'claude/mid-error',
        max_tokens: 50,
        stream: true,
        messages: [{ role: 'user', content: 'one two three' }],
      });
      expect(res.status).toBe(200);
      const evs = events(res.text);
      expect(evs.at(-1)).toEqual([
        'error',
        {
          type: 'error',
          error: { type: 'overloaded_error', message: expect.stringContaining('Overloaded') },
          request_id: expect.any(String),
        },
      ]);
      expect(evs.map(([e]) => e)).not.toContain('message_stop');
      const err = await client.messages
        .stream({ model: 'claude/mid-error', max_tokens: 50, messages: [{ role: 'user', content: 'one two three' }] })
        .finalMessage()
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.APIError);
      const rows = await gw.rows();
      expect(rows.at(-1)).toMatchObject({ model: 'claude/mid-error', status_code: 529, stream: true });
    });

    it('keeps the type of an error event, and does not call it an HTTP status', async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'claude/invalid-mid',
        max_tokens: 50,
        stream: true,
        messages: [{ role: 'user', content: 'one two three' }],
      });
      expect(events(res.text).at(-1)).toEqual([
        'error',
        {
          type: 'error',
          error: { type: 'invalid_request_error', message: 'Output blocked by content filtering policy' },
          request_id: expect.any(String),
        },
      ]);
      const overloaded = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'claude/mid-error',
        max_tokens: 50,
        stream: true,
        messages: [{ role: 'user', content: 'one two three' }],
      });
      const last = events(overloaded.text).at(-1)![1] as { error: { message: string } };
      expect(last.error.message).toMatch(/sent an error event \(overloaded_error\)/);
      expect(last.error.message).not.toContain('answered');
    });

    it('relays events whose data spans several lines as valid SSE', async () => {
      const stream = client.messages.stream({
        model: 'claude/pretty',
        max_tokens: 50,
        messages: [{ role: 'user', content: 'pretty please' }],
      });
      const msg = await stream.finalMessage();
      expect(msg).toMatchObject({
        model: 'claude/pretty',
        content: [{ type: 'text', text: 'echo: pretty please' }],
        stop_reason: 'end_turn',
      });
    });
  });

  describe('translated for an openai_compat route', () => {
    it('keeps the prompt-cache markers and signed reasoning for OpenRouter, and takes them out for other servers', async () => {
      const body = {
        max_tokens: 64,
        cache_control: { type: 'ephemeral' },
        system: [
          { type: 'text', text: 'You are Claude Code.' },
          { type: 'text', text: 'Long instructions.', cache_control: { type: 'ephemeral' } },
        ],
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'list files' }] },
          {
            role: 'assistant',
            content: [
              { type: 'thinking', thinking: 'Look first.', signature: 'sig-1' },
              { type: 'tool_use', id: 'toolu_01', name: 'ls', input: {} },
            ],
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_01', content: 'a.txt', cache_control: { type: 'ephemeral' } },
              { type: 'text', text: 'and now?', cache_control: { type: 'ephemeral', ttl: '1h' } },
            ],
          },
        ],
        tools: [{ name: 'ls', input_schema: { type: 'object', properties: {} } }],
      };
      const routed = await rawPost(`${gw.url}/anthropic/v1/messages`, { model: 'or/chat', ...body });
      expect(routed.status).toBe(200);
      expect(compat.requests[0].body).toMatchObject({
        cache_control: { type: 'ephemeral' },
        messages: [
          {
            role: 'system',
            content: [
              { type: 'text', text: 'You are Claude Code.' },
              { type: 'text', text: 'Long instructions.', cache_control: { type: 'ephemeral' } },
            ],
          },
          { role: 'user', content: 'list files' },
          { role: 'assistant', reasoning_details: [{ type: 'reasoning.text', text: 'Look first.', signature: 'sig-1' }] },
          { role: 'tool', content: [{ type: 'text', text: 'a.txt', cache_control: { type: 'ephemeral' } }] },
          { role: 'user', content: [{ type: 'text', text: 'and now?', cache_control: { type: 'ephemeral', ttl: '1h' } }] },
        ],
      });
      const plain = await rawPost(`${gw.url}/anthropic/v1/messages`, { model: 'llama/chat', ...body });
      expect(plain.status).toBe(200);
      expect(JSON.stringify(compat.requests[1].body)).not.toContain('cache_control');
      expect(JSON.stringify(compat.requests[1].body)).not.toContain('reasoning_details');
      expect(compat.requests[1].body.messages).toEqual([
        { role: 'system', content: 'You are Claude Code.\n\nLong instructions.' },
        { role: 'user', content: 'list files' },
        expect.objectContaining({ role: 'assistant' }),
        { role: 'tool', tool_call_id: expect.any(String), content: 'a.txt' },
        { role: 'user', content: 'and now?' },
      ]);
    });

    it('answers a message from a chat completion', async () => {
      const msg = await client.messages.create({
        model: 'llama/chat',
        max_tokens: 64,
        system: 'Be brief.',
        stop_sequences: ['NEVER'],
        metadata: { user_id: 'u-1' },
        messages: [{ role: 'user', content: 'hello llama' }],
      });
      expect(msg).toMatchObject({
        type: 'message',
        role: 'assistant',
        model: 'llama/chat',
        content: [{ type: 'text', text: 'echo: hello llama' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 10, output_tokens: 3 },
      });
      expect(msg.id).toMatch(/^msg_/);
      expect(compat.requests[0].body).toEqual({
        model: 'ok',
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'hello llama' },
        ],
        max_tokens: 64,
        stop: ['NEVER'],
        user: 'u-1',
      });
      const row = (await gw.rows()).at(-1)!;
      expect(row).toMatchObject({
        model: 'llama/chat',
        provider: 'openai_compat',
        prompt_tokens: 10,
        completion_tokens: 3,
        usage_estimated: false,
        finish_reason: 'stop',
      });
    });

    it('streams the events Anthropic streams, usage in message_delta', async () => {
      const res = await rawPost(`${gw.url}/v1/messages`, {
        model: 'llama/chat',
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: 'stream from llama' }],
      });
      expect(res.status).toBe(200);
      const evs = events(res.text);
      expect(evs.map(([e]) => e)).toEqual([
        'message_start',
        'ping',
        'content_block_start',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ]);
      expect(evs[2][1]).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
      expect(evs[8][1]).toEqual({
        type: 'message_delta',
        delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: { input_tokens: 6, output_tokens: 4, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      });
      expect(compat.requests[0].body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
      const sdk = await client.messages
        .stream({ model: 'llama/chat', max_tokens: 64, messages: [{ role: 'user', content: 'stream from llama' }] })
        .finalMessage();
      expect(sdk).toMatchObject({
        content: [{ type: 'text', text: 'echo: stream from llama' }],
        usage: { input_tokens: 6, output_tokens: 4 },
      });
      const rows = await gw.rows();
      expect(rows.at(-1)).toMatchObject({ stream: true, prompt_tokens: 6, completion_tokens: 4, usage_estimated: false });
    });

    it('streams a tool call as tool_use with input_json_delta, and sends tool results back as tool messages', async () => {
      const stream = client.messages.stream({
        model: 'llama/chat',
        max_tokens: 64,
        tools,
        tool_choice: { type: 'tool', name: 'get_weather' },
        messages: [{ role: 'user', content: 'Rome' }],
      });
      const partials: string[] = [];
      stream.on('inputJson', (partial) => partials.push(partial));
      const first = await stream.finalMessage();
      expect(first.stop_reason).toBe('tool_use');
      const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use')!;
      expect(use).toMatchObject({ name: 'get_weather', input: { input: 'Rome' } });
      expect(partials.join('')).toBe('{"input":"Rome"}');
      expect(compat.requests[0].body).toMatchObject({
        tools: [
          { type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: tools[0].input_schema } },
        ],
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      });

      const second = await client.messages.create({
        model: 'llama/chat',
        max_tokens: 64,
        tools,
        messages: [
          { role: 'user', content: 'Rome' },
          { role: 'assistant', content: first.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: 'cloudy' }] }] },
        ],
      });
      expect(second.content).toEqual([{ type: 'text', text: 'tool said: cloudy' }]);
      const sent = compat.requests[1].body.messages as Json[];
      expect(sent.slice(1)).toEqual([
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: use.id, type: 'function', function: { name: 'get_weather', arguments: '{"input":"Rome"}' } }],
        },
        { role: 'tool', tool_call_id: use.id, content: 'cloudy' },
      ]);
    });

    it("refuses a message thread as Anthropic refuses one it cannot keep, and the SDK's tool runner sends the whole conversation", async () => {
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'llama/chat',
        max_tokens: 10,
        thread: { type: 'continue', previous_message_id: 'msg_1' },
        messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: '42' }] }],
      });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', details: { error_code: 'thread_unsupported_request' } },
      });
      expect(compat.requests).toHaveLength(0);

      // The tool runner threads by default; told the route keeps none, it goes on without.
      const runner = client.beta.messages.toolRunner({
        model: 'llama/chat',
        max_tokens: 64,
        messages: [{ role: 'user', content: 'Rome' }],
        tools: [
          betaTool({
            name: 'get_weather',
            description: 'Weather for a city',
            inputSchema: { type: 'object', properties: { input: { type: 'string' } }, required: ['input'] },
            run: () => 'cloudy',
          }),
        ],
      });
      const done = await runner.runUntilDone();
      expect(done.content).toEqual([{ type: 'text', text: 'tool said: cloudy' }]);
      // The turn after the tool call: the whole conversation, as the backend needs it.
      const sent = compat.requests[compat.requests.length - 1].body;
      expect((sent.messages as Json[]).map((m) => m.role)).toEqual(['user', 'assistant', 'tool']);
      expect(sent.tools).toHaveLength(1);
    });

    it('estimates usage when the backend reports none, and says so', async () => {
      const msg = await client.messages
        .stream({ model: 'llama/no-usage', max_tokens: 64, messages: [{ role: 'user', content: 'no usage here' }] })
        .finalMessage();
      expect(msg.content).toEqual([{ type: 'text', text: 'echo: no usage here' }]);
      expect(msg.usage.output_tokens).toBeGreaterThan(0);
      // The log bills the same estimate the client was shown (it once counted each event's envelope).
      expect((await gw.rows()).at(-1)).toMatchObject({
        model: 'llama/no-usage',
        usage_estimated: true,
        completion_tokens: msg.usage.output_tokens,
      });
    });

    it("bills a translated answer on the backend's usage: reasoning tokens and its cost kept, streamed or not", async () => {
      const params = { model: 'llama/reasoner', max_tokens: 64, messages: [{ role: 'user' as const, content: 'think it over' }] };
      const expected = {
        model: 'llama/reasoner',
        prompt_tokens: 6,
        completion_tokens: 44,
        reasoning_tokens: 40,
        usage_estimated: false,
      };
      // 6 × 1 + 4 × 2 + 40 × 5 USD per million tokens
      const cost = (6 + 4 * 2 + 40 * 5) / 1e6;
      const msg = await client.messages.create(params);
      expect(msg.usage).toMatchObject({ input_tokens: 6, output_tokens: 44 });
      let row = (await gw.rows()).at(-1)!;
      expect(row).toMatchObject(expected);
      expect(Number(row.cost_usd)).toBeCloseTo(cost, 12);
      expect(Number(row.upstream_cost_usd)).toBe(0.000123);
      await client.messages.stream(params).finalMessage();
      row = (await gw.rows()).at(-1)!;
      expect(row).toMatchObject({ ...expected, stream: true });
      expect(Number(row.cost_usd)).toBeCloseTo(cost, 12);
      expect(Number(row.upstream_cost_usd)).toBe(0.000123);
    });

    it('fails over from an overloaded Claude route to a translated one before the answer started', async () => {
      const msg = await client.messages
        .stream({ model: 'mixed/failover', max_tokens: 64, messages: [{ role: 'user', content: 'anyone there' }] })
        .finalMessage();
      expect(msg.content).toEqual([{ type: 'text', text: 'echo: anyone there' }]);
      const row = (await gw.rows()).at(-1)!;
      expect(row).toMatchObject({ endpoint: 'spare-llama', status_code: 200 });
      // The overloaded route is retried (529 is retryable), then the next one answers.
      const attempts = (row.metadata as { attempts: Array<{ route: string; outcome: string }> }).attempts.map((a) => [a.route, a.outcome]);
      expect(attempts.at(-1)).toEqual(['spare-llama', 'ok']);
      expect(attempts.slice(0, -1)).toEqual(claude.requests.map(() => ['busy-claude', 'error']));
    });

    it('still fails over when a relayed stream fails after message_start but before any content', async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'mixed/late-failure',
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: 'hello again' }],
      });
      const evs = events(res.text);
      // One answer only: the translated route's, never the relayed route's opening events.
      expect(evs.filter(([e]) => e === 'message_start')).toHaveLength(1);
      expect(evs.map(([e]) => e)).not.toContain('error');
      expect(evs.at(-1)?.[0]).toBe('message_stop');
      expect((evs[0][1].message as { model: string }).model).toBe('mixed/late-failure');
      expect((await gw.rows()).at(-1)).toMatchObject({ endpoint: 'spare-llama', status_code: 200 });
    });

    it('ends a translated stream that fails mid-answer with an error event', async () => {
      const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
        model: 'llama/mid-error',
        max_tokens: 50,
        stream: true,
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      const evs = events(res.text);
      expect(evs.map(([e]) => e)).toContain('content_block_delta');
      expect(evs.at(-1)?.[0]).toBe('error');
      expect(evs.map(([e]) => e)).not.toContain('message_stop');
    });

    it.each(['llama/only-done', 'llama/only-role'])(
      'answers %s, a stream that ended without content, as a failure, not as an empty message',
      async (model) => {
        const res = await rawPost(`${gw.url}/anthropic/v1/messages`, {
          model,
          max_tokens: 50,
          stream: true,
          messages: [{ role: 'user', content: 'x' }],
        });
        expect(res.status).toBe(502);
        expect(JSON.parse(res.text)).toMatchObject({
          type: 'error',
          // Naming the route, as the chat surface does.
          error: { type: 'api_error', message: expect.stringMatching(/^upstream \S+ ended the stream without an answer/) },
        });
      },
    );

    it("fits Claude Code's 32,000-token completion limit into a smaller window rather than call the prompt too long", async () => {
      const stream = client.messages.stream({
        model: 'llama/window-2k',
        max_tokens: 32000,
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      const message = await stream.finalMessage();
      expect(message.content).toMatchObject([{ type: 'text', text: 'echo: one two three four' }]);
      // Refused once with vLLM's figures (7 prompt tokens), then asked again with what the window leaves.
      expect(compat.requests.map((r) => r.body.max_completion_tokens ?? r.body.max_tokens)).toEqual([32000, 2048 - 7]);
    });

    it("sends OpenRouter's own options (session_id, ...) on to an OpenRouter route", async () => {
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'or/chat',
        max_tokens: 10,
        session_id: 's1',
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(res.status).toBe(200);
      expect(compat.requests[0].body).toMatchObject({ session_id: 's1' });
    });

    it('fits the completion limit over OpenRouter too, with the thinking budget kept below it', async () => {
      const message = await client.messages
        .stream({
          model: 'or/window-2k',
          max_tokens: 32000,
          thinking: { type: 'enabled', budget_tokens: 31999 },
          messages: [{ role: 'user', content: 'one two three four' }],
        })
        .finalMessage();
      expect(message.content).toContainEqual({ type: 'text', text: 'echo: one two three four' });
      const sent = compat.requests.map((r) => [
        Number(r.body.max_tokens),
        Number((r.body.reasoning as { max_tokens?: number } | undefined)?.max_tokens),
      ]);
      expect(sent[0]).toEqual([32000, 31999]);
      expect(sent[1][0]).toBeLessThan(2048);
      expect(sent[1][1]).toBeLessThan(sent[1][0]);
    });

    it('counts tokens with the gateway estimate', async () => {
      const counted = await client.messages.countTokens({
        model: 'llama/chat',
        messages: [{ role: 'user', content: 'count these words please' }],
      });
      expect(counted.input_tokens).toBeGreaterThan(0);
      expect(compat.requests).toHaveLength(0);
      // No route was called on: none is named, and none has an attempt (or its latency) to its name.
      const row = (await gw.rows()).at(-1)!;
      expect(row).toMatchObject({ model: 'llama/chat', provider: null, endpoint: null });
      expect((row.metadata as { attempts?: unknown[] }).attempts ?? []).toEqual([]);
      // Provider preferences no route meets are refused as /v1/messages refuses them.
      const none = await call(`${gw.url}/anthropic/v1/messages/count_tokens`, 'POST', {
        model: 'llama/chat',
        provider: { only: ['nowhere'] },
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(none.status).toBe(404);
      expect(JSON.stringify(none.body)).toContain('provider preferences');
    });
  });

  describe('errors in Anthropic’s shape', () => {
    it('names the field of a bad request (400 invalid_request_error), and the unknown model (404)', async () => {
      const missing = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'claude/sonnet',
        messages: [{ role: 'user', content: 'x' }],
      });
      expect(missing.status).toBe(400);
      expect(missing.body).toEqual({
        type: 'error',
        error: { type: 'invalid_request_error', message: 'max_tokens: Field required' },
        request_id: expect.any(String),
      });
      const role = await call(`${gw.url}/v1/messages`, 'POST', {
        model: 'claude/sonnet',
        max_tokens: 5,
        messages: [{ role: 'system', content: 'x' }],
      });
      expect(role.body).toMatchObject({
        error: {
          type: 'invalid_request_error',
          message: expect.stringMatching(/^messages\.0\.role: a system message cannot be the first message/),
        },
      });
      const json = await call(`${gw.url}/anthropic/v1/messages`, 'POST', '{"model": ');
      expect(json.status).toBe(400);
      expect(json.body).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('not valid JSON') },
      });
      // Anthropic's SDKs take the id from `request-id`: on every answer, refused bodies included.
      expect(json.headers.get('request-id')).toBe(json.body.request_id);
      expect(json.headers.get('request-id')).toBe(json.headers.get('x-request-id'));
      const err = await client.messages
        .create({ model: 'nope/model', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.NotFoundError);
      expect((err as APIError).error).toMatchObject({
        type: 'error',
        error: { type: 'not_found_error', message: expect.stringContaining('nope/model') },
      });
      expect((err as APIError).requestID).toMatch(/^[0-9a-f-]{36}$/);
      const unknown = await client.models.retrieve('nope/model').catch((e: unknown) => e);
      expect(unknown).toBeInstanceOf(Anthropic.NotFoundError);
      expect((unknown as APIError).requestID).toMatch(/^[0-9a-f-]{36}$/);
      const path = await call(`${gw.url}/anthropic/v1/complete`, 'POST', {});
      expect(path.status).toBe(404);
      expect(path.body).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
      expect(path.headers.get('request-id')).toBe(path.headers.get('x-request-id'));
      expect(claude.requests).toHaveLength(0);
    });

    it('refuses what a translated backend cannot take with a 400 naming the field, never sending it', async () => {
      const res = await call(`${gw.url}/anthropic/v1/messages`, 'POST', {
        model: 'llama/chat',
        max_tokens: 5,
        tools: [{ type: 'web_search_20250305', name: 'web_search' }],
        messages: [{ role: 'user', content: 'search' }],
      });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('tools.0') },
      });
      // Counting the same request is refused alike: a count for a request that cannot be sent.
      const counted = await call(`${gw.url}/anthropic/v1/messages/count_tokens`, 'POST', {
        model: 'llama/chat',
        messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'url', url: 'https://example.com/a.pdf' } }] }],
      });
      expect(counted.status).toBe(400);
      expect(counted.body).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('messages.0.content.0.source') },
      });
      expect(compat.requests).toHaveLength(0);
    });

    it('writes exactly one api_logs row per request, whatever happened', async () => {
      const before = (await gw.rows()).length;
      await client.messages.create({ model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'a' }] });
      await client.messages.create({ model: 'llama/chat', max_tokens: 5, messages: [{ role: 'user', content: 'b' }] });
      await client.messages
        .create({ model: 'nope/model', max_tokens: 5, messages: [{ role: 'user', content: 'c' }] })
        .catch(() => undefined);
      await call(`${gw.url}/anthropic/v1/messages`, 'POST', { model: 'claude/sonnet', messages: [] });
      // A stream request refused before it started is still logged as a stream request.
      await call(`${gw.url}/anthropic/v1/messages`, 'POST', { model: 'claude/sonnet', stream: true, max_tokens: 0, messages: [] });
      const rows = await gw.waitForRows(before + 5);
      expect(rows.slice(before).map((r) => [r.model, r.status_code, r.stream])).toEqual([
        ['claude/sonnet', 200, false],
        ['llama/chat', 200, false],
        ['nope/model', 404, false],
        ['claude/sonnet', 400, false],
        ['claude/sonnet', 400, true],
      ]);
    });
  });

  it('lists the models in Anthropic’s shape, paged', async () => {
    const page = await client.models.list({ limit: 2 });
    expect(page.data.map((m) => m.id)).toEqual(['claude/sonnet', 'claude/thinking']);
    expect(page.data[0]).toEqual({
      type: 'model',
      id: 'claude/sonnet',
      display_name: 'claude/sonnet',
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    const all: string[] = [];
    for await (const m of client.models.list({ limit: 3 })) all.push(m.id);
    expect(all).toHaveLength(27);
    expect(await client.models.retrieve('llama/chat')).toMatchObject({ id: 'llama/chat', type: 'model' });
    // An empty cursor is no cursor: the first page, as with after_id=.
    const empty = (await (await fetch(`${gw.url}/anthropic/v1/models?limit=2&before_id=`)).json()) as { data: Array<{ id: string }> };
    expect(empty.data.map((m) => m.id)).toEqual(['claude/sonnet', 'claude/thinking']);
    for (const query of ['after_id=a&after_id=b', 'before_id=a&before_id=b', 'limit=1&limit=2']) {
      const res = await fetch(`${gw.url}/anthropic/v1/models?${query}`);
      expect([query, res.status]).toEqual([query, 400]);
      expect(await res.json()).toMatchObject({
        type: 'error',
        error: { type: 'invalid_request_error', message: expect.stringContaining('single string') },
      });
    }
  });
});

describe('Anthropic Messages surface: keys and limits', () => {
  const claude = new AnthropicUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const a = await claude.start();
    gw = await startGateway({
      env: { ...ACCESS_ENV, USER_AUTH_ENABLED: 'true' },
      models: `models:\n  - { id: claude/sonnet, context_length: 200000, pricing: { prompt: 3, completion: 15 }, route: [{ kind: anthropic, base_url: "${a}", api_key: good, provider_model_id: ok }] }\n`,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await claude.stop();
  });

  it('finds the key in x-api-key when the Bearer token beside it is not ours', async () => {
    const { id, key } = await adminApi(gw).createKey({ name: 'both-headers' });
    // A client with both set (Claude Code with ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY) sends both.
    const body = { model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] };
    const ok = await call(`${gw.url}/anthropic/v1/messages`, 'POST', body, {
      authorization: 'Bearer sk-ant-oat01-someone-else',
      'x-api-key': key,
    });
    expect(ok.status).toBe(200);
    expect((await gw.rows()).filter((r) => r.api_key_id === id)).toHaveLength(1);
    const neither = await call(`${gw.url}/anthropic/v1/messages`, 'POST', body, {
      authorization: 'Bearer not-ours',
      'x-api-key': 'sk-not-ours',
    });
    expect(neither.status).toBe(401);
  });

  it('authenticates with x-api-key (or Bearer), refuses with 401 / 403, and holds the key to its limits', async () => {
    const anonymous = new Anthropic({ baseURL: `${gw.url}/anthropic`, apiKey: 'sk-ant-not-ours', maxRetries: 0 });
    const noKey = await anonymous.messages
      .create({ model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(noKey).toBeInstanceOf(Anthropic.AuthenticationError);
    expect((noKey as APIError).error).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });

    const admin = adminApi(gw);
    const { id, key } = await admin.createKey({ name: 'claude-code', rpm_limit: 2 });
    const keyed = new Anthropic({ baseURL: `${gw.url}/anthropic`, apiKey: key, maxRetries: 0 });
    const ok = await keyed.messages.create({ model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    expect(ok.content).toEqual([{ type: 'text', text: 'echo: x' }]);
    expect(claude.requests[0].headers['x-api-key']).toBe('good');
    const bearer = new Anthropic({ baseURL: `${gw.url}/anthropic`, authToken: key, apiKey: null, maxRetries: 0 });
    await bearer.messages.countTokens({ model: 'claude/sonnet', messages: [{ role: 'user', content: 'x' }] });
    const limited = await keyed.messages
      .create({ model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(limited).toBeInstanceOf(Anthropic.RateLimitError);
    expect((limited as APIError).error).toMatchObject({
      type: 'error',
      error: { type: 'rate_limit_error', message: expect.stringContaining('rpm_limit') },
    });
    expect((limited as APIError).headers?.get('retry-after')).toMatch(/^\d+$/);

    await admin.call('PATCH', `/admin/api-keys/${id}`, { status: 'suspended' });
    const suspended = await call(
      `${gw.url}/anthropic/v1/messages`,
      'POST',
      { model: 'claude/sonnet', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] },
      { 'x-api-key': key },
    );
    expect(suspended.status).toBe(403);
    expect(suspended.body).toMatchObject({ type: 'error', error: { type: 'permission_error' } });

    const rows = (await gw.rows()).filter((r) => r.api_key_id === id);
    expect(rows.map((r) => r.status_code)).toEqual([200, 200, 429]);
  });
});
