import { testRoute } from '../helpers/route';
import OpenAI, { APIError } from 'openai';
import { KeyPool } from '../../src/adapters/http/key-pool.service';
import { UpstreamClient } from '../../src/adapters/http/upstream-client.service';
import { OpenAiCompatAdapter } from '../../src/adapters/openai-compat/openai-compat.adapter';
import { AppConfig } from '../../src/config/app-config';
import { validateEnv } from '../../src/config/env.schema';
import type { RouteDef } from '../../src/config/registry.types';
import { CompatProviderUpstream, type Flavor } from '../fixtures/compat-providers-upstream';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/**
 * The openai_compat profiles end to end: the official client talks to the gateway, which talks
 * to stand-ins reproducing each provider's documented differences from OpenAI.
 */
const FLAVORS: Flavor[] = ['deepseek', 'kimi', 'minimax', 'zai', 'ollama', 'sglang', 'chutes', 'vllm'];

describe('openai_compat provider profiles', () => {
  const ups = Object.fromEntries(FLAVORS.map((f) => [f, new CompatProviderUpstream(f)])) as Record<Flavor, CompatProviderUpstream>;
  const base: Partial<Record<Flavor, string>> = {};
  let gw: TestGateway;
  let client: OpenAI;

  const model = (id: string, kind: string, flavor: Flavor, upstreamModel: string) => `
  - id: ${id}
    context_length: 8192
    pricing: { prompt: 1, completion: 2, input_cache_read: "0.5" }
    route:
      - { kind: ${kind}, base_url: "${base[flavor]}", api_key: k, provider_model_id: "${upstreamModel}" }`;

  beforeAll(async () => {
    for (const f of FLAVORS) base[f] = await ups[f].start();
    const models = `models:${[
      model('ds/chat', 'deepseek', 'deepseek', 'deepseek-chat'),
      model('ds/reasoner', 'deepseek', 'deepseek', 'deepseek-reasoner'),
      model('kimi/k2', 'kimi', 'kimi', 'kimi-k2'),
      model('mm/m2', 'minimax', 'minimax', 'MiniMax-M2'),
      model('mm/broke', 'minimax', 'minimax', 'balance'),
      model('glm/4', 'zai', 'zai', 'glm-4.6'),
      model('glm/limited', 'zai', 'zai', 'error:429'),
      model('ollama/llama', 'ollama', 'ollama', 'llama3'),
      model('sglang/qwen', 'sglang', 'sglang', 'qwen'),
      model('chutes/busy', 'chutes', 'chutes', 'busy'),
      model('mm/sensitive', 'minimax', 'minimax', 'sensitive'),
      model('vllm/no-choices', 'vllm', 'vllm', 'no-choices'),
      model('vllm/bare-error', 'vllm', 'vllm', 'bare-error-event'),
      model('glm/network-error', 'zai', 'zai', 'finish:network_error'),
      model('glm/sensitive', 'zai', 'zai', 'finish:sensitive'),
      model('glm/window', 'zai', 'zai', 'finish:model_context_window_exceeded'),
      model('sglang/abort', 'sglang', 'sglang', 'finish:abort'),
    ].join('')}\n`;
    gw = await startGateway({ models });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    for (const f of FLAVORS) await ups[f].stop();
  });

  beforeEach(() => FLAVORS.forEach((f) => ups[f].reset()));

  const rowFor = (id: string) => gw.rowFor(id);

  it('DeepSeek: chat without /v1, cache hits as cached_tokens, blank lines before the JSON', async () => {
    const res = await client.chat.completions.create({ model: 'ds/chat', messages: [{ role: 'user', content: 'hello deep seek' }] });
    expect(res.choices[0].message.content).toBe('echo: hello deep seek');
    expect(ups.deepseek.requests[0].path).toBe('/chat/completions');
    expect(res.usage?.prompt_tokens_details?.cached_tokens).toBe(2);
    const row = await rowFor(res.id);
    expect(row).toMatchObject({ prompt_tokens: 6, cached_tokens: 2, usage_estimated: false });
  });

  it('DeepSeek: reasoning_content passes through, streamed past its keep-alive comments', async () => {
    const res = await client.chat.completions.create({ model: 'ds/reasoner', messages: [{ role: 'user', content: 'think' }] });
    expect((res.choices[0].message as unknown as { reasoning_content: string }).reasoning_content).toBe('thinking it over');
    // Under OpenRouter's name too, which clients written for OpenRouter read.
    expect((res.choices[0].message as unknown as { reasoning: string }).reasoning).toBe('thinking it over');
    expect(res.usage?.completion_tokens_details?.reasoning_tokens).toBe(3);
    const stream = await client.chat.completions.create({
      model: 'ds/reasoner',
      stream: true,
      messages: [{ role: 'user', content: 'think' }],
    });
    let reasoning = '';
    let openRouters = '';
    let text = '';
    for await (const c of stream) {
      reasoning += (c.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';
      openRouters += (c.choices[0]?.delta as { reasoning?: string } | undefined)?.reasoning ?? '';
      text += c.choices[0]?.delta.content ?? '';
    }
    expect(reasoning).toBe('thinking it over');
    expect(openRouters).toBe('thinking it over');
    expect(text).toBe('echo: think');
    expect((await gw.rows()).at(-1)).toMatchObject({ reasoning_tokens: 3, usage_estimated: false });
  });

  it("leaves the reasoning out of the answer for OpenRouter's reasoning.exclude, JSON and stream, and still bills it", async () => {
    const ask = { model: 'ds/reasoner', messages: [{ role: 'user' as const, content: 'think' }], reasoning: { exclude: true } };
    const res = await client.chat.completions.create(ask as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    expect(res.choices[0].message).not.toHaveProperty('reasoning_content');
    expect(res.choices[0].message.content).toBe('echo: think');
    expect(res.usage?.completion_tokens_details?.reasoning_tokens).toBe(3);
    const stream = await client.chat.completions.create({ ...ask, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    let text = '';
    let first = true;
    for await (const c of stream) {
      expect(c.choices[0]?.delta ?? {}).not.toHaveProperty('reasoning_content');
      if (first) expect(c.choices[0]?.delta.role).toBe('assistant');
      first = false;
      text += c.choices[0]?.delta.content ?? '';
    }
    expect(text).toBe('echo: think');
    expect((await gw.rows()).at(-1)).toMatchObject({ reasoning_tokens: 3, usage_estimated: false });
  });

  it('DeepSeek: a JSON schema is asked for as json_object, with the schema in the prompt', async () => {
    const res = await client.chat.completions.create({
      model: 'ds/chat',
      messages: [{ role: 'user', content: 'give me a number' }],
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'n', schema: { type: 'object', properties: { n: { type: 'number' } } } },
      },
    });
    expect(res.choices[0].finish_reason).toBe('stop');
    const sent = ups.deepseek.requests[0].body;
    expect(sent.response_format).toEqual({ type: 'json_object' });
    expect((sent.messages as Array<{ role: string; content: string }>)[0]).toMatchObject({
      role: 'system',
      content: expect.stringContaining('"n":{"type":"number"}'),
    });
  });

  it('Kimi: usage from inside the finishing choice reaches the client and the log', async () => {
    const stream = await client.chat.completions.create({
      model: 'kimi/k2',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hi kimi' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    const usage = chunks.find((c) => c.usage)?.usage;
    expect(usage).toMatchObject({ prompt_tokens: 5, prompt_tokens_details: { cached_tokens: 2 } });
    expect(await rowFor(chunks[0].id)).toMatchObject({ prompt_tokens: 5, cached_tokens: 2, usage_estimated: false });
  });

  it('Kimi: tool_choice "required" and a temperature above 1 are turned into what Kimi accepts', async () => {
    const res = await client.chat.completions.create({
      model: 'kimi/k2',
      temperature: 1.7,
      tool_choice: 'required',
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }],
      messages: [{ role: 'user', content: 'use a tool' }],
    });
    expect(res.choices[0].message.content).toBe('echo: Please select a tool to handle the current issue.');
    expect(ups.kimi.requests[0].body).toMatchObject({ temperature: 1 });
  });

  it('MiniMax: empty roles and placeholder usage are cleaned from the stream; temperature 0 is accepted', async () => {
    const stream = await client.chat.completions.create({
      model: 'mm/m2',
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hello' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.slice(1).every((c) => (c.choices[0]?.delta as { role?: string } | undefined)?.role !== '')).toBe(true);
    const usages = chunks.filter((c) => c.usage);
    expect(usages).toHaveLength(1);
    expect(usages[0].usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 2 });
    expect(ups.minimax.requests[0].body.temperature).toBe(0.01);
  });

  it("MiniMax: an error inside an HTTP 200 answer is the client's error", async () => {
    const err = await client.chat.completions
      .create({ model: 'mm/broke', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(502);
    expect((err as APIError).message).toContain('insufficient balance (1008)');
  });

  it('MiniMax: output its moderation removed (an empty reply with base_resp 1027) stopped for content_filter, not a plain stop', async () => {
    const res = await client.chat.completions.create({ model: 'mm/sensitive', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0]).toMatchObject({ finish_reason: 'content_filter', message: { content: '' } });
    expect(res).not.toHaveProperty('base_resp');
    const stream = await client.chat.completions.create({
      model: 'mm/sensitive',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    const finishes: unknown[] = [];
    for await (const c of stream) for (const ch of c.choices) if (ch.finish_reason) finishes.push(ch.finish_reason);
    expect(finishes).toEqual(['content_filter']);
  });

  it('an answer of no choices is the route failing, never a 200 the SDK cannot read', async () => {
    const err = await client.chat.completions
      .create({ model: 'vllm/no-choices', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, message: expect.stringContaining('answered without choices') });
    // Asked for a stream, answered with that JSON.
    const streamed = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'vllm/no-choices',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect([streamed.status, streamed.text]).toEqual([502, expect.stringContaining('answered without choices')]);
    const rows = (await gw.rows()).filter((r) => r.model === 'vllm/no-choices');
    expect(rows.map((r) => [r.status_code, Number(r.cost_usd)])).toEqual([
      [502, 0],
      [502, 0],
    ]);
  });

  it("keeps the words of vLLM's bare error event", async () => {
    const err = await client.chat.completions
      .create({ model: 'vllm/bare-error', stream: true, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, message: expect.stringContaining('Engine core died unexpectedly') });
  });

  it("Z.AI's and SGLang's own finish reasons: a failure is one (not billed as an empty answer), the rest OpenAI's nearest", async () => {
    for (const id of ['glm/network-error', 'sglang/abort'])
      for (const stream of [false, true]) {
        const err = await client.chat.completions
          .create({ model: id, stream, messages: [{ role: 'user', content: 'x' }] })
          .then(async (r) => {
            if (stream) for await (const c of r as AsyncIterable<unknown>) void c;
            return r;
          })
          .catch((e: unknown) => e);
        expect([id, stream, err]).toEqual([id, stream, expect.objectContaining({ status: 502 })]);
        // Named by the reason it ended with.
        expect((err as Error).message).toContain(id === 'sglang/abort' ? '"abort"' : '"network_error"');
      }
    for (const [id, reason] of [
      ['glm/sensitive', 'content_filter'],
      ['glm/window', 'length'],
    ]) {
      const res = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'x' }] });
      expect(res.choices[0].finish_reason).toBe(reason);
    }
  });

  it('Z.AI: chat below /api/paas/v4, list content flattened where GLM would drop it, its error codes kept', async () => {
    const res = await client.chat.completions.create({
      model: 'glm/4',
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: [{ type: 'text', text: 'a' }] },
        { role: 'user', content: 'again' },
      ],
    });
    expect(res.choices[0].message.content).toBe('echo: again');
    expect(ups.zai.requests[0].path).toBe('/api/paas/v4/chat/completions');
    const err = await client.chat.completions
      .create({ model: 'glm/limited', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 429, code: '1302' });
  });

  it('Ollama: its `reasoning` field passes through, with role on every delta', async () => {
    const stream = await client.chat.completions.create({
      model: 'ollama/llama',
      stream: true,
      messages: [{ role: 'user', content: 'hey' }],
    });
    let reasoning = '';
    let deepSeeks = '';
    for await (const c of stream) {
      reasoning += (c.choices[0]?.delta as { reasoning?: string } | undefined)?.reasoning ?? '';
      deepSeeks += (c.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';
    }
    expect(reasoning).toBe('thinking it over');
    // Not under DeepSeek's name as well: servers that answer with `reasoning` (Groq) refuse
    // `reasoning_content` on the assistant turn a client sends back.
    expect(deepSeeks).toBe('');
  });

  it('SGLang: its top-level reasoning_tokens become completion_tokens_details and reach the log', async () => {
    const res = await client.chat.completions.create({ model: 'sglang/qwen', messages: [{ role: 'user', content: 'x' }] });
    expect((res.choices[0].message as unknown as { reasoning_content: string }).reasoning_content).toBe('thinking it over');
    expect(res.usage?.completion_tokens_details?.reasoning_tokens).toBe(3);
    expect(await rowFor(res.id)).toMatchObject({ reasoning_tokens: 3 });
  });

  it("Chutes: a capacity 429 with FastAPI's detail is passed on as a rate limit with its message", async () => {
    const err = await client.chat.completions
      .create({ model: 'chutes/busy', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 429 });
    expect((err as APIError).message).toContain('Infrastructure is at maximum capacity');
  });

  describe('health probes', () => {
    const config = new AppConfig(validateEnv({}));
    const http = new UpstreamClient(config);
    const adapter = new OpenAiCompatAdapter(http, new KeyPool());
    const route = (kind: string, flavor: Flavor): RouteDef =>
      testRoute({ id: kind, kind, baseUrl: base[flavor], providerModelId: 'm', locality: 'local' });
    afterAll(() => http.onApplicationShutdown());

    it.each([
      ['ollama', 'ollama', '/api/tags'],
      ['vllm', 'vllm', '/health'],
      ['sglang', 'sglang', '/health'],
      ['deepseek', 'deepseek', '/models'],
    ] as const)('%s (%s stand-in) is probed at %s', async (kind, flavor, path) => {
      const result = await adapter.probe(route(kind, flavor), AbortSignal.timeout(5000));
      expect(result.ok).toBe(true);
      expect(ups[flavor].requests.at(-1)?.path).toBe(path);
    });
  });
});
