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

/**
 * Bodies of megabytes, queued faster than the database takes them, ran the process out of memory
 * (and lost the rows) with a queue far below REQUEST_LOG_MAX_QUEUE rows: the bodies the request
 * log holds in memory are bounded by REQUEST_LOG_MAX_CONTENT_BYTES, past which rows go on
 * without theirs.
 */
describe('stored bodies held in memory, bounded by REQUEST_LOG_MAX_CONTENT_BYTES', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startGateway({
      models: 'models:\n  - id: llm\n    context_length: 4096\n    route: [{ kind: mock }]\n',
      env: {
        DB_STORE_FULL_CONTENT: 'true',
        DB_STORE_CONTENT_LIMIT: '64kb',
        REQUEST_LOG_MAX_CONTENT_BYTES: String(200 * 1024),
        // No flush comes round during the test: the rows stay queued until it flushes.
        REQUEST_LOG_FLUSH_MS: '3600000',
        REQUEST_LOG_BATCH_SIZE: '1000',
      },
    });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('logs the rows past the bound without their bodies, says so, and keeps bodies again once some are written', async () => {
    const writer = gw.app.get(RequestLogWriter);
    const body = (n: number) => ({ model: 'llm', messages: [{ role: 'user', content: `${n}:${'x'.repeat(40 * 1024)}` }] });
    const rows = Array.from({ length: 6 }, (_, n) =>
      logRow(`bounded-${n}`, { model: 'llm', request_content: body(n), response_content: { text: `answer ${n}` } }),
    );
    for (const row of rows) writer.enqueue(row);
    await writer.flush();
    const byId = async (id: string) => (await gw.rows()).find((r) => r.id === id)!;
    const stored = await Promise.all(rows.map((r) => byId(r.id)));
    // 200 KB hold four bodies of 40 KB and some; the rest are logged without theirs.
    expect(stored.map((r) => r.request_content !== null)).toEqual([true, true, true, true, false, false]);
    expect((stored[0].request_content as { messages: Array<{ content: string }> }).messages[0].content).toMatch(/^0:x{40960}$/);
    expect(stored[0].response_content).toEqual({ text: 'answer 0' });
    expect(stored[5]).toMatchObject({ response_content: null, metadata: { content_left_out: true }, model: 'llm', status_code: 200 });
    expect(writer.stats.contentLeftOut).toBe(2);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/^hybridinference_request_log_content_left_out_total 2$/m);
    // Written, they no longer count: the next row keeps its body.
    const next = logRow('bounded-next', { model: 'llm', request_content: body(7), response_content: null });
    writer.enqueue(next);
    await writer.flush();
    expect((await byId(next.id)).request_content).toEqual(body(7));
  });
});
