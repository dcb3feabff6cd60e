import type OpenAI from 'openai';
import { RequestLogWriter } from '../../src/storage/request-log.writer';
import { StatsRepository } from '../../src/storage/stats.repository';
import type { TruncatedContent } from '../../src/storage/stored-content';
import { AnthropicUpstream } from '../fixtures/anthropic-upstream';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { logRow } from '../helpers/log-row';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';

/**
 * DB_STORE_FULL_CONTENT: the row keeps the request and the answer. A streamed answer is stored
 * as the whole answer a one-shot request would have given: every choice apart, tool calls and
 * reasoning included.
 */
describe('stored content', () => {
  const upstream = new OpenAiUpstream();
  const claude = new AnthropicUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    const claudeBase = await claude.start();
    gw = await startGateway({
      models: `
models:
  - id: demo
    context_length: 4096
    route: [{ kind: mock, tokens: 4 }]
  - id: llm
    context_length: 4096
    route: [{ kind: openai_compat, base_url: "${base}", provider_model_id: ok }]
  - id: claude
    context_length: 200000
    route: [{ kind: anthropic, base_url: "${claudeBase}", api_key: good, provider_model_id: thinking }]
`,
      env: { DB_STORE_FULL_CONTENT: 'true' },
    });
    client = gw.client();
  });

  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
    await claude.stop();
  });

  it('stores each choice of a streamed answer apart, as a whole answer', async () => {
    const stream = await client.chat.completions.create({ model: 'demo', n: 2, stream: true, messages: [{ role: 'user', content: 'x' }] });
    let id = '';
    const texts = ['', ''];
    for await (const c of stream) {
      id = c.id;
      for (const ch of c.choices) texts[ch.index] += ch.delta.content ?? '';
    }
    const row = await gw.rowFor(id);
    const stored = row.response_content as OpenAI.ChatCompletion;
    expect(stored.choices.map((c) => c.message.content)).toEqual(texts);
    expect(texts[0]).not.toBe('');
    expect(stored.choices.map((c) => c.finish_reason)).toEqual(['stop', 'stop']);
  });

  it('stores each choice of a streamed text completion apart', async () => {
    const stream = await client.completions.create({ model: 'demo', n: 2, stream: true, prompt: 'x' });
    let id = '';
    const texts = ['', ''];
    for await (const c of stream) {
      id = c.id;
      for (const ch of c.choices) texts[ch.index] += ch.text;
    }
    const stored = (await gw.rowFor(id)).response_content as OpenAI.Completion;
    expect(stored.choices.map((c) => [c.index, c.text, c.finish_reason])).toEqual([
      [0, texts[0], 'stop'],
      [1, texts[1], 'stop'],
    ]);
  });

  it('stores the tool calls of a streamed answer', async () => {
    const stream = await client.chat.completions.create({
      model: 'llm',
      stream: true,
      messages: [{ role: 'user', content: 'weather in Paris' }],
      tools: [
        { type: 'function', function: { name: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
      ],
    });
    let id = '';
    for await (const c of stream) id = c.id;
    const stored = (await gw.rowFor(id)).response_content as OpenAI.ChatCompletion;
    expect(stored.choices[0]).toMatchObject({
      finish_reason: 'tool_calls',
      message: { tool_calls: [{ type: 'function', function: { name: 'weather', arguments: expect.stringContaining('{') } }] },
    });
    const call = stored.choices[0].message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall;
    expect(JSON.parse(call.function.arguments)).toBeInstanceOf(Object);
  });

  it('stores a relayed Anthropic stream as the message: thinking, text and tool use', async () => {
    const res = await fetch(`${gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'claude',
        max_tokens: 200,
        stream: true,
        messages: [{ role: 'user', content: 'weather in Paris' }],
        tools: [{ name: 'weather', input_schema: { type: 'object', properties: { input: { type: 'string' } } } }],
      }),
    });
    const text = await res.text();
    const id = res.headers.get('x-request-id')!;
    expect(text).toContain('event: message_stop');
    const row = (await gw.rows()).find((r) => r.id === id)!;
    const stored = row.response_content as { content: Array<Record<string, unknown>>; stop_reason: string };
    expect(stored.stop_reason).toBe('tool_use');
    expect(stored.content.map((b) => b.type)).toEqual(['thinking', 'tool_use']);
    expect(stored.content[0]).toMatchObject({ thinking: expect.stringContaining('step by step'), signature: expect.any(String) });
    expect(stored.content[1]).toMatchObject({ name: 'weather', input: { input: 'weather in Paris' } });
  });
});

/**
 * A body past DB_STORE_CONTENT_LIMIT is stored as its head, marked: a body past the database's
 * own limits (PostgreSQL's 256 MB jsonb string) was refused on every insert, and its row replayed
 * from the spool for ever. Here the limit is 64 KB and the bodies 1 MB, both ways (the stand-in
 * echoes the prompt).
 */
describe.each(['sqlite', 'postgres'] as const)('stored bodies over DB_STORE_CONTENT_LIMIT, on %s', (backend) => {
  const upstream = new OpenAiUpstream();
  let pg: TestDatabase | undefined;
  let gw: TestGateway;

  beforeAll(async () => {
    const base = await upstream.start();
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({
      models: `
models:
  - id: llm
    context_length: 4096
    route: [{ kind: openai_compat, base_url: "${base}", provider_model_id: ok }]
`,
      env: { ...pg?.env, DB_STORE_FULL_CONTENT: 'true', DB_STORE_CONTENT_LIMIT: '64kb' },
    });
  });

  afterAll(async () => {
    await gw?.close();
    await pg?.drop();
    await upstream.stop();
  });

  it('keeps the head of each body, marked truncated with its whole size, and a body within the limit whole', async () => {
    const client = gw.client();
    const prompt = 'é'.repeat(512 * 1024); // 1 MB of UTF-8
    const big = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: prompt }] });
    expect(big.choices[0].message.content).toBe(`echo: ${prompt}`);
    const small = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'hi' }] });

    const row = await gw.rowFor(big.id);
    const request = row.request_content as TruncatedContent;
    const response = row.response_content as TruncatedContent;
    for (const stored of [request, response]) {
      expect(stored).toEqual({ truncated: true, bytes: expect.any(Number), head: expect.any(String) });
      expect(stored.bytes).toBeGreaterThan(1024 * 1024);
      expect(Buffer.byteLength(JSON.stringify(stored))).toBeLessThanOrEqual(64 * 1024);
      expect(stored.head.length).toBeGreaterThan(16 * 1024);
    }
    // The head is the start of the body's JSON text.
    expect(request.head).toMatch(/^\{"model":"llm","messages":\[\{"role":"user","content":"éé/);
    expect(response.head).toMatch(/^\{"id":"gen-/);
    expect(response.head).toContain('"content":"echo: é');
    expect(row.completion_tokens).toBeGreaterThan(0);

    const whole = await gw.rowFor(small.id);
    expect(whole.request_content).toMatchObject({ messages: [{ role: 'user', content: 'hi' }] });
    expect(whole.response_content).toMatchObject({ choices: [{ message: { content: 'echo: hi' } }] });
  });

  it('looks a row up alike before and after it is written: without the bodies, never whole', async () => {
    const writer = gw.app.get(RequestLogWriter);
    const logs = gw.app.get(StatsRepository);
    const prompt = 'é'.repeat(512 * 1024); // 1 MB of UTF-8, 16 times the limit
    const row = logRow(`queued-${backend}`, {
      model: 'llm',
      provider: 'ok',
      endpoint: 'ok',
      request_content: { model: 'llm', messages: [{ role: 'user', content: prompt }] },
      response_content: { choices: [{ message: { content: prompt } }] },
    });
    writer.enqueue(row);
    // Called at once, before the next flush: the row is still in the writer's queue.
    const queued = await logs.findLog(row.id);
    await writer.flush();
    const written = await logs.findLog(row.id);
    expect(written).toBeDefined();
    // The lookup of a written row reads no body (none is shown); the queued one held the whole
    // 1 MB bodies, more than the row would ever store.
    expect([written!.request_content, written!.response_content]).toEqual([undefined, undefined]);
    expect([queued!.request_content, queued!.response_content]).toEqual([undefined, undefined]);
    expect(queued).toMatchObject({ id: row.id, model: 'llm', prompt_tokens: 1, completion_tokens: 2, status_code: 200 });
  });
});
