import OpenAI, { APIError } from 'openai';
import { GeminiUpstream } from '../fixtures/gemini-upstream';
import { AdapterRegistry } from '../../src/adapters/adapter-registry.service';
import { ModelRegistry } from '../../src/config/model-registry.service';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/** kind: gemini end to end: the official OpenAI client, the gateway, a Gemini API stand-in. */
describe('gemini adapter', () => {
  const upstream = new GeminiUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    const r = (model: string, extra = '') =>
      `{ kind: gemini, base_url: "${base}", api_key: good-key, provider_model_id: "${model}"${extra} }`;
    const models = `
models:
  - id: gemini/flash
    context_length: 1000000
    pricing: { prompt: "0.3", completion: "2.5", input_cache_read: "0.075" }
    route:
      - ${r('ok')}
  - id: gemini/image
    context_length: 32000
    route:
      - ${r('image')}
  - id: gemini/ids
    context_length: 1000000
    route:
      - ${r('ids')}
  - id: gemini/empty
    context_length: 1000000
    route:
      - ${r('empty')}
  - id: gemini/no-thinking
    context_length: 1000000
    route:
      - ${r('ok', ', extra_body: { generationConfig: { thinkingConfig: { thinkingBudget: 0 } } }')}
  - id: gemini/three
    context_length: 1000000
    route:
      - ${r('sig')}
  - id: gemini/thinking
    context_length: 1000000
    route:
      - ${r('thinking')}
  - id: gemini/prompt-usage
    context_length: 1000000
    pricing: { prompt: 1, completion: 1000 }
    route:
      - ${r('prompt-usage')}
  - id: gemini/cached
    context_length: 1000000
    pricing: { prompt: "0.3", completion: "2.5", input_cache_read: "0.075" }
    route:
      - ${r('cached')}
  - id: gemini/safety
    context_length: 1000000
    route:
      - ${r('safety')}
  - id: gemini/blocked
    context_length: 1000000
    route:
      - ${r('blocked')}
  - id: gemini/quota
    context_length: 1000000
    route:
      - ${r('error:429')}
  - id: gemini/overloaded
    context_length: 1000000
    route:
      - ${r('error:503')}
  - id: gemini/bad-request
    context_length: 1000000
    route:
      - ${r('error:400')}
  - id: gemini/cut
    context_length: 1000000
    route:
      - ${r('cut')}
  - id: gemini/page
    context_length: 1000000
    route:
      - ${r('page')}
  - id: gemini/keys
    context_length: 1000000
    route:
      - { kind: gemini, base_url: "${base}", api_keys: [bad-key, good-key], provider_model_id: ok }
  - id: gemini/bad-key
    context_length: 1000000
    route:
      - { kind: gemini, base_url: "${base}", api_key: bad-key, provider_model_id: ok }
  - id: gemini/safety-settings
    context_length: 1000000
    route:
      - kind: gemini
        base_url: ${base}
        api_key: good-key
        provider_model_id: ok
        safety_settings: [{ category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_ONLY_HIGH }]
  - id: gemini/embedding
    type: embedding
    context_length: 2048
    pricing: { prompt: "0.15" }
    route:
      - { kind: gemini, base_url: "${base}", api_key: good-key, provider_model_id: gemini-embedding-001, task_type: RETRIEVAL_DOCUMENT }
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

  it('answers through generateContent with the system instruction, sampling and usage', async () => {
    const res = await client.chat.completions.create({
      model: 'gemini/flash',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hello gemini' },
      ],
      temperature: 0.3,
      max_tokens: 50,
      stop: ['NEVER'],
    });
    expect(res.choices[0]).toMatchObject({ message: { role: 'assistant', content: 'echo: hello gemini' }, finish_reason: 'stop' });
    const sent = upstream.requests[0];
    expect(sent.path).toBe('/v1beta/models/ok:generateContent');
    expect(sent.headers['x-goog-api-key']).toBe('good-key');
    expect(sent.body).toEqual({
      systemInstruction: { parts: [{ text: 'Be brief.' }] },
      contents: [{ role: 'user', parts: [{ text: 'hello gemini' }] }],
      generationConfig: { temperature: 0.3, maxOutputTokens: 50, stopSequences: ['NEVER'] },
    });
    expect(res.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 });
    expect(await rowFor(res.id)).toMatchObject({ provider: 'gemini', prompt_tokens: 7, completion_tokens: 3, usage_estimated: false });
  });

  it('answers a conversation with empty messages (which OpenAI takes), sending Gemini no empty part', async () => {
    const res = await client.chat.completions.create({
      model: 'gemini/flash',
      messages: [
        { role: 'system', content: '' },
        {
          role: 'user',
          content: [
            { type: 'text', text: '' },
            { type: 'text', text: 'hello gemini' },
          ],
        },
      ],
    });
    expect(res.choices[0].message.content).toBe('echo: hello gemini');
    expect(upstream.requests[0].body).toEqual({ contents: [{ role: 'user', parts: [{ text: 'hello gemini' }] }] });
  });

  it("merges a route's extra_body into the generationConfig the request makes, not over it", async () => {
    await client.chat.completions.create({
      model: 'gemini/no-thinking',
      temperature: 0.2,
      max_tokens: 30,
      stop: ['X'],
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(upstream.requests[0].body.generationConfig).toEqual({
      temperature: 0.2,
      maxOutputTokens: 30,
      stopSequences: ['X'],
      thinkingConfig: { thinkingBudget: 0 },
    });
  });

  it('answers no candidates without a reason as a failure, JSON or streamed, never as choices: []', async () => {
    for (const stream of [false, true]) {
      const res = await rawPost(`${gw.url}/v1/chat/completions`, {
        model: 'gemini/empty',
        stream,
        messages: [{ role: 'user', content: 'hi' }],
      });
      expect([stream, res.status]).toEqual([stream, 502]);
    }
  });

  it('streams with alt=sse, usage from the last event', async () => {
    const stream = await client.chat.completions.create({
      model: 'gemini/flash',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'stream this please' }],
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    expect(upstream.requests[0].url).toBe('/v1beta/models/ok:streamGenerateContent?alt=sse');
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('echo: stream this please');
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 6, completion_tokens: 4 } });
    expect(await rowFor(chunks[0].id)).toMatchObject({ stream: true, prompt_tokens: 6, completion_tokens: 4, usage_estimated: false });
  });

  it("returns an image model's images as OpenRouter does, in message.images, streamed or not", async () => {
    const ask = { model: 'gemini/image', modalities: ['image', 'text'], messages: [{ role: 'user' as const, content: 'draw a cat' }] };
    const png = { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } };
    const res = await client.chat.completions.create(ask as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    expect(res.choices[0].message).toMatchObject({ content: 'echo: draw a cat', images: [png] });
    expect(upstream.requests.at(-1)!.body).toMatchObject({ generationConfig: { responseModalities: ['IMAGE', 'TEXT'] } });
    const stream = await client.chat.completions.create({ ...ask, stream: true } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    const images: unknown[] = [];
    for await (const c of stream) images.push(...((c.choices[0]?.delta as { images?: unknown[] } | undefined)?.images ?? []));
    expect(images).toEqual([png]);
    // The next turn sends the image back with the answer that made it: editing it needs it.
    await client.chat.completions.create({
      ...ask,
      messages: [...ask.messages, res.choices[0].message, { role: 'user', content: 'make it blue' }],
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    const contents = upstream.requests.at(-1)!.body.contents as Array<{ role: string; parts: unknown[] }>;
    expect(contents[1]).toEqual({
      role: 'model',
      parts: [{ text: 'echo: draw a cat' }, { inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } }],
    });
    // Not an image by URL from another provider's history (private or expired by now), nor a data: URL that is not base64.
    await client.chat.completions.create({
      ...ask,
      messages: [
        ...ask.messages,
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Here.' },
            { type: 'image_url', image_url: { url: 'https://files.example.com/img-abc.png?sig=x' } },
            { type: 'image_url', image_url: { url: 'data:image/png,abc' } },
          ],
        } as never,
        { role: 'user', content: 'make it blue' },
      ],
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    expect((upstream.requests.at(-1)!.body.contents as Array<{ parts: unknown[] }>)[1].parts).toEqual([{ text: 'Here.' }]);
  });

  it('stops at max tokens, and answers several candidates', async () => {
    const res = await client.chat.completions.create({
      model: 'gemini/flash',
      n: 2,
      max_tokens: 2,
      messages: [{ role: 'user', content: 'one two three' }],
    });
    expect(res.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual([
      [0, 'echo: one ', 'length'],
      [1, 'echo: one ', 'length'],
    ]);
  });

  it('carries a multi-turn tool round trip with stable ids, streamed and not', async () => {
    const first = await client.chat.completions.create({
      model: 'gemini/flash',
      tools,
      tool_choice: 'required',
      messages: [{ role: 'user', content: 'Paris' }],
    });
    expect(first.choices[0].finish_reason).toBe('tool_calls');
    const call = first.choices[0].message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(call.id).toMatch(/^call_/);
    expect(call.function).toEqual({ name: 'get_weather', arguments: '{"input":"Paris"}' });
    expect(upstream.requests[0].body).toMatchObject({
      toolConfig: { functionCallingConfig: { mode: 'ANY' } },
      tools: [{ functionDeclarations: [{ name: 'get_weather', parametersJsonSchema: { type: 'object' } }] }],
    });

    const second = await client.chat.completions.create({
      model: 'gemini/flash',
      tools,
      messages: [
        { role: 'user', content: 'Paris' },
        first.choices[0].message,
        { role: 'tool', tool_call_id: call.id, content: '{"tempC": 21}' },
      ],
    });
    expect(second.choices[0].message.content).toBe('tool said: {"tempC":21}');
    expect((upstream.requests[1].body.contents as unknown[])[2]).toEqual({
      role: 'user',
      parts: [{ functionResponse: { name: 'get_weather', response: { output: { tempC: 21 } } } }],
    });

    const stream = await client.chat.completions.create({
      model: 'gemini/ids',
      tools,
      stream: true,
      messages: [{ role: 'user', content: 'Rome' }],
    });
    const calls: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let finish: string | null = null;
    for await (const c of stream) {
      calls.push(...(c.choices[0]?.delta.tool_calls ?? []));
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(calls).toEqual([{ index: 0, id: 'fc-1', type: 'function', function: { name: 'get_weather', arguments: '{"input":"Rome"}' } }]);
    expect(finish).toBe('tool_calls');
    const third = await client.chat.completions.create({
      model: 'gemini/ids',
      tools,
      messages: [
        { role: 'user', content: 'Rome' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'fc-1', type: 'function', function: { name: 'get_weather', arguments: '{"input":"Rome"}' } }],
        },
        { role: 'tool', tool_call_id: 'fc-1', content: 'rain' },
      ],
    });
    expect(third.choices[0].message.content).toBe('tool said: "rain"');
    expect(
      (upstream.requests[3].body.contents as Array<{ parts: Array<{ functionResponse?: { id?: string } }> }>)[2].parts[0].functionResponse
        ?.id,
    ).toBe('fc-1');
  });

  it("returns Gemini 3's thought signatures and sends them back, as Gemini 3 requires", async () => {
    const first = await client.chat.completions.create({ model: 'gemini/three', tools, messages: [{ role: 'user', content: 'Oslo' }] });
    const call = first.choices[0].message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall & {
      extra_content?: { google?: { thought_signature?: string } };
    };
    const signature = call.extra_content?.google?.thought_signature;
    expect(signature).toMatch(/^sig-/);
    const next = await client.chat.completions.create({
      model: 'gemini/three',
      tools,
      messages: [{ role: 'user', content: 'Oslo' }, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'snow' }],
    });
    expect(next.choices[0].message.content).toBe('tool said: "snow"');
    expect(
      (upstream.requests[1].body.contents as Array<{ parts: Array<{ thoughtSignature?: string }> }>)[1].parts[0].thoughtSignature,
    ).toBe(signature);
  });

  it('shows thoughts as reasoning_content and counts thinking tokens as reasoning', async () => {
    const res = await client.chat.completions.create({
      model: 'gemini/thinking',
      reasoning_effort: 'medium',
      messages: [{ role: 'user', content: 'why' }],
    });
    expect((res.choices[0].message as unknown as { reasoning_content: string }).reasoning_content).toBe('pondering');
    expect(res.choices[0].message.content).toBe('echo: why');
    expect(upstream.requests[0].body.generationConfig).toEqual({ thinkingConfig: { thinkingBudget: 8192, includeThoughts: true } });
    expect(res.usage).toMatchObject({ completion_tokens: 7, completion_tokens_details: { reasoning_tokens: 5 } });
    expect(await rowFor(res.id)).toMatchObject({ reasoning_tokens: 5, completion_tokens: 7 });
  });

  it('bills output a usage figure left out by its estimate, and shows the client the same count, streamed or not', async () => {
    const ask = { model: 'gemini/prompt-usage', messages: [{ role: 'user' as const, content: 'count these words please' }] };
    const res = await client.chat.completions.create(ask);
    expect(res.choices[0].message.content).toBe('echo: count these words please');
    // 31 characters of answer: about 8 tokens, none of which Gemini counted.
    expect(res.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8, total_tokens: 15 });
    expect(await rowFor(res.id)).toMatchObject({ completion_tokens: 8, usage_estimated: true });

    const stream = await client.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks.at(-1)!;
    expect(last.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 8, total_tokens: 15 });
    const row = await rowFor(chunks[0].id);
    expect(row).toMatchObject({ completion_tokens: 8, usage_estimated: true });
    // The cost beside the counts is the one billed.
    expect((last.usage as unknown as { cost: number }).cost).toBeCloseTo(Number(row.cost_usd), 12);
    expect(Number(row.cost_usd)).toBeCloseTo((7 * 1 + 8 * 1000) / 1e6, 12);
  });

  it('shows a Messages client the billed output count where the figure left it out, streamed or not', async () => {
    const ask = { model: 'gemini/prompt-usage', max_tokens: 100, messages: [{ role: 'user', content: 'count these words please' }] };
    const one = await rawPost(`${gw.url}/v1/messages`, ask);
    expect(one.status).toBe(200);
    const message = JSON.parse(one.text) as { usage: { input_tokens: number; output_tokens: number } };
    // 31 characters of answer: about 8 tokens, none of which Gemini counted.
    expect(message.usage).toMatchObject({ input_tokens: 7, output_tokens: 8 });
    const oneRow = (await gw.rows()).find((r) => r.id === one.headers.get('x-request-id'))!;
    expect(oneRow).toMatchObject({ completion_tokens: 8, usage_estimated: true });

    const streamed = await rawPost(`${gw.url}/v1/messages`, { ...ask, stream: true });
    const delta = streamed.text.split('\n\n').find((e) => e.startsWith('event: message_delta'))!;
    expect(JSON.parse(delta.slice(delta.indexOf('data: ') + 6)).usage).toMatchObject({ output_tokens: 8 });
    const row = (await gw.rows()).find((r) => r.id === streamed.headers.get('x-request-id'))!;
    expect(row).toMatchObject({ completion_tokens: 8, usage_estimated: true });
  });

  it('counts cached content as cached prompt tokens', async () => {
    const res = await client.chat.completions.create({ model: 'gemini/cached', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.usage).toMatchObject({ prompt_tokens: 4, prompt_tokens_details: { cached_tokens: 3 } });
    expect(await rowFor(res.id)).toMatchObject({ cached_tokens: 3 });
  });

  it('asks for JSON in JSON mode', async () => {
    const res = await client.chat.completions.create({
      model: 'gemini/flash',
      response_format: { type: 'json_object' },
      messages: [{ role: 'user', content: 'json please' }],
    });
    expect(JSON.parse(res.choices[0].message.content!)).toEqual({ echo: 'echo: json please' });
  });

  it('sends images inline', async () => {
    await client.chat.completions.create({
      model: 'gemini/flash',
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
    expect((upstream.requests[0].body.contents as Array<{ parts: unknown[] }>)[0].parts[1]).toEqual({
      inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' },
    });
  });

  it('ends safety-stopped and blocked answers with content_filter, streamed and not', async () => {
    const stopped = await client.chat.completions.create({ model: 'gemini/safety', messages: [{ role: 'user', content: 'x' }] });
    expect(stopped.choices[0].finish_reason).toBe('content_filter');
    const blocked = await client.chat.completions.create({ model: 'gemini/blocked', messages: [{ role: 'user', content: 'x' }] });
    expect(blocked.choices[0]).toMatchObject({ finish_reason: 'content_filter', message: { content: '' } });
    for (const model of ['gemini/safety', 'gemini/blocked']) {
      const stream = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: 'x' }] });
      let finish: string | null = null;
      for await (const c of stream) finish = c.choices[0]?.finish_reason ?? finish;
      expect(finish).toBe('content_filter');
    }
  });

  it('maps errors: quota with Retry-After, overload to a retryable 503, bad requests as they are', async () => {
    const quota = await rawPost(`${gw.url}/v1/chat/completions`, { model: 'gemini/quota', messages: [{ role: 'user', content: 'x' }] });
    expect(quota.status).toBe(429);
    expect(quota.headers.get('retry-after')).toBe('12');
    expect(JSON.parse(quota.text).error).toMatchObject({ type: 'rate_limit_error', code: 'RESOURCE_EXHAUSTED' });
    const busy = await client.chat.completions
      .create({ model: 'gemini/overloaded', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    // Gemini's UNAVAILABLE is its "model is overloaded", the signal Anthropic's 529 gives.
    expect(busy).toMatchObject({ status: 503, code: 'overloaded' });
    const bad = await client.chat.completions
      .create({ model: 'gemini/bad-request', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(APIError);
    expect(bad).toMatchObject({ status: 400, code: 'INVALID_ARGUMENT' });
  });

  it("treats an invalid key as the gateway's credentials refused (502) and moves on to the next key", async () => {
    const err = await client.chat.completions
      .create({ model: 'gemini/bad-key', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'upstream_unauthorized' });
    upstream.reset();
    const res = await client.chat.completions.create({ model: 'gemini/keys', messages: [{ role: 'user', content: 'x' }] });
    expect(res.choices[0].message.content).toBe('echo: x');
    expect(upstream.requests.map((r) => r.headers['x-goog-api-key'])).toEqual(['bad-key', 'good-key']);
    await client.chat.completions.create({ model: 'gemini/keys', messages: [{ role: 'user', content: 'y' }] });
    expect(upstream.requests.map((r) => r.headers['x-goog-api-key'])).toEqual(['bad-key', 'good-key', 'good-key']);
  });

  it('fails a stream that ends without a finish reason', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'gemini/cut',
      stream: true,
      messages: [{ role: 'user', content: 'one two three four' }],
    });
    expect(res.text).toMatch(/"error":\{/);
    expect(res.text).not.toContain('[DONE]');
    // Billed on Gemini's running figures: its prompt count (4 words + 3 per turn) and the two
    // tokens it had generated, not on the gateway's estimate; and marked as an estimate.
    const id = /"id":"(gen-[^"]+)"/.exec(res.text)![1];
    const row = await rowFor(id);
    expect(row).toMatchObject({ stream: true, prompt_tokens: 7, completion_tokens: 2, usage_estimated: true });
    expect(row.status_code).toBeGreaterThanOrEqual(500);
  });

  it("bills a stream cut short on the Anthropic surface on Gemini's running figures too", async () => {
    const res = await rawPost(`${gw.url}/v1/messages`, {
      model: 'gemini/cut',
      stream: true,
      max_tokens: 100,
      messages: [{ role: 'user', content: 'one two three four' }],
    });
    expect(res.text).toContain('event: error');
    const row = (await gw.rows()).find((r) => r.id === res.headers.get('x-request-id'))!;
    expect(row).toMatchObject({ stream: true, prompt_tokens: 7, completion_tokens: 2, usage_estimated: true });
    expect(row.status_code).toBeGreaterThanOrEqual(500);
  });

  it('answers a stream request that got a page instead of events with a 502 naming it, not retried', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'gemini/page',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text).error).toMatchObject({ code: 'upstream_protocol' });
    expect(res.text).toMatch(/upstream gemini answered a stream request with no event stream \(text\/html\)/);
    expect(upstream.requests).toHaveLength(1);
  });

  it("sends the route's safety settings", async () => {
    await client.chat.completions.create({ model: 'gemini/safety-settings', messages: [{ role: 'user', content: 'x' }] });
    expect(upstream.requests[0].body.safetySettings).toEqual([{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_ONLY_HIGH' }]);
  });

  it('serves embeddings through batchEmbedContents, usage estimated and marked so', async () => {
    const res = await client.embeddings.create({ model: 'gemini/embedding', input: ['hello', 'hi'], dimensions: 3 });
    expect(res.data.map((d) => Array.from(d.embedding).map((v) => Math.round(v * 100) / 100))).toEqual([
      [0.5, 0.6, 0.7],
      [0.2, 0.3, 0.4],
    ]);
    expect(upstream.requests[0]).toMatchObject({
      path: '/v1beta/models/gemini-embedding-001:batchEmbedContents',
      body: { requests: [{ model: 'models/gemini-embedding-001', outputDimensionality: 3, taskType: 'RETRIEVAL_DOCUMENT' }, {}] },
    });
    expect(res.usage.prompt_tokens).toBeGreaterThan(0);
    const row = (await gw.rows()).find((r) => r.model === 'gemini/embedding')!;
    expect(row).toMatchObject({ provider: 'gemini', usage_estimated: true, prompt_tokens: res.usage.prompt_tokens });
    const tokens = await rawPost(`${gw.url}/v1/embeddings`, { model: 'gemini/embedding', input: [1, 2, 3] });
    expect(tokens.status).toBe(400);
    expect(JSON.parse(tokens.text).error.param).toBe('input');
  });

  it('embeds more inputs than one batchEmbedContents call takes (100) in several, in order', async () => {
    const input = Array.from({ length: 250 }, (_, i) => 'x'.repeat(i + 1));
    const res = await client.embeddings.create({ model: 'gemini/embedding', input, dimensions: 1 });
    expect(upstream.requests.map((r) => (r.body.requests as unknown[]).length)).toEqual([100, 100, 50]);
    // The stand-in's vector is the text's length / 10: each vector is its own input's, in place.
    expect(res.data.map((d) => [d.index, Math.round(d.embedding[0] * 10)])).toEqual(input.map((t, i) => [i, t.length]));

    // A batch rate-limited on the way: the retry goes on from it, not from the first batch again
    // (those were embedded and paid for already).
    upstream.reset();
    upstream.limitedEmbedCalls.add(upstream.embedCalls + 2); // the next request's second call
    const again = await client.embeddings.create({ model: 'gemini/embedding', input, dimensions: 1 });
    expect(upstream.requests.map((r) => (r.body.requests as unknown[]).length)).toEqual([100, 100, 100, 50]);
    expect(again.data.map((d) => [d.index, Math.round(d.embedding[0] * 10)])).toEqual(input.map((t, i) => [i, t.length]));
  });

  it('serves text completions through generateContent', async () => {
    const res = await client.completions.create({ model: 'gemini/flash', prompt: 'complete me' });
    expect(res.choices[0].text).toBe('echo: complete me');
  });

  it('probes health with a cheap, keyed GET of the model list', async () => {
    const probe = (model: string) =>
      gw.app.get(AdapterRegistry).get('gemini')!.probe!(
        gw.app.get(ModelRegistry).current().find(model)!.routes[0],
        AbortSignal.timeout(5000),
      );
    await expect(probe('gemini/flash')).resolves.toMatchObject({ ok: true, detail: 'HTTP 200' });
    expect(upstream.requests.at(-1)?.path).toBe('/v1beta/models');
    await expect(probe('gemini/bad-key')).resolves.toMatchObject({ ok: false });
  });
});
