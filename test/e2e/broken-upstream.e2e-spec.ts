import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/**
 * An OpenAI-compatible server that answers with the right status and content type but a body no
 * server should send, chosen by the model name the gateway sends (`{path}:{case}`). What the
 * gateway owes its client then: a 502 in OpenAI's shape that names what was wrong (or an in-band
 * error once the stream started), never a 500 or the gateway's own TypeError text, and one row.
 */
const CHAT = { id: 'x', object: 'chat.completion', created: 1, model: 'x' };
const CHUNK = { id: 'x', object: 'chat.completion.chunk', created: 1, model: 'x' };
const USAGE = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
const toolCall = (args: unknown) => ({ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: args } });

const ANSWERS: Record<string, unknown> = {
  'null-choice': { ...CHAT, choices: [null], usage: USAGE },
  'null-message': { ...CHAT, choices: [{ index: 0, message: null, finish_reason: null }], usage: USAGE },
  'content-number': { ...CHAT, choices: [{ index: 0, message: { role: 'assistant', content: 42 }, finish_reason: 'stop' }] },
  'args-object': {
    ...CHAT,
    choices: [
      { index: 0, message: { role: 'assistant', content: null, tool_calls: [toolCall({ city: 'Paris' })] }, finish_reason: 'tool_calls' },
    ],
    usage: USAGE,
  },
  'bad-usage': {
    ...CHAT,
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there, friend' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: -1, completion_tokens: 'two', total_tokens: 1 },
  },
  'custom-tool-call': {
    ...CHAT,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: 'Running it.',
          tool_calls: [{ id: 'c', type: 'custom', custom: { name: 'sh', input: 'ls' } }],
        },
        finish_reason: 'tool_calls',
      },
    ],
    usage: USAGE,
  },
  'finish-only': { ...CHAT, choices: [{ index: 0, finish_reason: 'content_filter' }], usage: USAGE },
  'text-null-choice': { id: 'x', object: 'text_completion', created: 1, model: 'x', choices: [null], usage: USAGE },
  // A chat answer to a legacy completion: no choice has text.
  'text-chat-shaped': {
    id: 'x',
    object: 'text_completion',
    created: 1,
    model: 'x',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'stop' }],
    usage: USAGE,
  },
  'text-filtered': {
    id: 'x',
    object: 'text_completion',
    created: 1,
    model: 'x',
    choices: [{ index: 0, finish_reason: 'content_filter' }],
    usage: USAGE,
  },
  'emb-short': {
    object: 'list',
    data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }],
    usage: { prompt_tokens: 3, total_tokens: 3 },
  },
  'emb-null': { object: 'list', data: [null, null, null] },
  'emb-text': { object: 'list', data: ['a', 'b', 'c'].map((embedding, index) => ({ object: 'embedding', index, embedding: [embedding] })) },
  'emb-huge-usage': {
    object: 'list',
    data: [0, 1, 2].map((index) => ({ object: 'embedding', index, embedding: [0.5] })),
    usage: { prompt_tokens: 1e300, total_tokens: 1e300 },
  },
};

const STREAMS: Record<string, unknown[]> = {
  'null-tool-call': [{ ...CHUNK, choices: [{ index: 0, delta: { role: 'assistant', tool_calls: [null] }, finish_reason: null }] }],
  'tool-calls-object': [{ ...CHUNK, choices: [{ index: 0, delta: { tool_calls: { index: 0 } }, finish_reason: null }] }],
  'mid-null-choice': [
    { ...CHUNK, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hello' }, finish_reason: null }] },
    { ...CHUNK, choices: [null] },
  ],
  'null-delta': [
    { ...CHUNK, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }] },
    { ...CHUNK, choices: [{ index: 0, delta: null, finish_reason: 'stop' }] },
  ],
};

function brokenUpstream(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.method !== 'POST') {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not here"}}');
        return;
      }
      const { model, stream } = JSON.parse(body) as { model: string; stream?: boolean };
      if (stream && (model === 'stream-html' || model === 'stream-untyped-json')) {
        // Events asked for; a proxy's page, or a whole answer with no type, came instead.
        const html = model === 'stream-html';
        res.writeHead(200, html ? { 'content-type': 'text/html' } : {});
        res.end(html ? '<html><body>502 Bad Gateway</body></html>' : JSON.stringify({ ...CHAT, choices: [] }));
        return;
      }
      if (model === 'quotes-url') {
        // A proxy in front of the server, naming the address it could not reach.
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `upstream connect error to http://${req.headers.host}/v1 (${req.headers.host})` } }));
        return;
      }
      if (model === 'quotes-key') {
        const key = String(req.headers.authorization).replace('Bearer ', '');
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            error: { message: `Incorrect API key provided: ${key}.`, type: 'invalid_request_error', code: 'invalid_api_key' },
          }),
        );
        return;
      }
      const events = STREAMS[model];
      if (stream && events) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (const e of events) res.write(`data: ${JSON.stringify(e)}\n\n`);
        res.end('data: [DONE]\n\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ANSWERS[model] ?? { error: 'no such case' }));
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, server })),
  );
}

const ROUTE_KEY = 'sk-route-secret-0123456789';

/** A model per case, named after it (`case/<name>`), its route asking the upstream for `<name>`. */
const MODELS = (url: string) =>
  'models:\n' +
  [...Object.keys(ANSWERS), ...Object.keys(STREAMS), 'quotes-key', 'stream-html', 'stream-untyped-json', 'quotes-url']
    .map(
      (name) => `
  - id: case/${name}
    ${name.startsWith('emb-') ? 'type: embedding' : ''}
    context_length: 8192
    pricing: { prompt: 1, completion: 1 }
    route: [{ kind: vllm, id: ${name}, base_url: "${url}", provider_model_id: ${name}, api_key: ${ROUTE_KEY} }]`,
    )
    .join('\n');

describe('an upstream that answers with a broken body', () => {
  let upstream: Server;
  let upstreamUrl: string;
  let gw: TestGateway;

  beforeAll(async () => {
    const u = await brokenUpstream();
    upstream = u.server;
    upstreamUrl = u.url;
    gw = await startGateway({ models: MODELS(u.url) });
  });
  afterAll(async () => {
    await gw?.close();
    upstream?.close();
  });

  const post = async (path: string, name: string, extra: Record<string, unknown>) => {
    const res = await rawPost(`${gw.url}${path}`, { model: `case/${name}`, ...extra });
    return {
      ...res,
      json: res.headers.get('content-type')?.includes('json') ? (JSON.parse(res.text) as Record<string, unknown>) : undefined,
    };
  };

  const expectProtocolError = (res: { status: number; json?: Record<string, unknown> }, what: RegExp) => {
    expect(res.status).toBe(502);
    const error = (res.json as { error: { message: string; type: string; code: string } }).error;
    expect(error).toMatchObject({ type: 'upstream_error', code: 'upstream_protocol' });
    expect(error.message).toMatch(what);
    expect(error.message).not.toMatch(/Cannot read|is not a function|TypeError|undefined/);
  };

  it.each([
    ['a choice that is null', 'null-choice', /choices\[0\] is not an object/],
    ['a choice with neither message nor finish reason', 'null-message', /choices\[0\] has no message/],
    ['content that is a number', 'content-number', /choices\[0\]\.message\.content is not text/],
  ])('answers %s with a 502 naming it', async (_what, name, what) => {
    const res = await post('/v1/chat/completions', name, { messages: [{ role: 'user', content: 'hi' }] });
    expectProtocolError(res, what);
  });

  it('fails a stream whose first event is unreadable before answering: a 502, not a 500', async () => {
    for (const [name, what] of [
      ['null-tool-call', /tool_calls\[0\] is not an object/],
      ['tool-calls-object', /tool_calls is not a list/],
    ] as const) {
      const res = await post('/v1/chat/completions', name, { stream: true, messages: [{ role: 'user', content: 'hi' }] });
      expectProtocolError(res, what);
    }
  });

  it('ends a stream that breaks after it started with an in-band error, never [DONE]', async () => {
    const res = await post('/v1/chat/completions', 'mid-null-choice', { stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    expect(res.text).toContain('"content":"Hello"');
    expect(res.text).not.toContain('[DONE]');
    const last = JSON.parse(res.text.trim().split('\n\n').at(-1)!.slice('data: '.length)) as { error: { code: string; message: string } };
    expect(last.error).toMatchObject({ code: 'upstream_protocol', message: expect.stringContaining('choices[0] is not an object') });
  });

  it('reads a null delta as an empty one, and tool-call arguments sent as JSON as the string they should be', async () => {
    const streamed = await post('/v1/chat/completions', 'null-delta', { stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expect(streamed.status).toBe(200);
    expect(streamed.text).toContain('"finish_reason":"stop"');
    expect(streamed.text).toContain('[DONE]');
    const res = await post('/v1/chat/completions', 'args-object', { messages: [{ role: 'user', content: 'weather?' }] });
    expect(res.status).toBe(200);
    const call = (res.json as { choices: Array<{ message: { tool_calls: Array<{ function: { arguments: unknown } }> } }> }).choices[0]
      .message.tool_calls[0];
    expect(call.function.arguments).toBe('{"city":"Paris"}');
    const anthropic = await post('/anthropic/v1/messages', 'args-object', {
      max_tokens: 10,
      messages: [{ role: 'user', content: 'weather?' }],
    });
    expect(anthropic.status).toBe(200);
    expect(anthropic.json?.content).toEqual([{ type: 'tool_use', id: expect.any(String), name: 'get_weather', input: { city: 'Paris' } }]);
  });

  it('relays what is sound though unusual: a tool call of another type, a choice with only its finish reason', async () => {
    const custom = await post('/v1/chat/completions', 'custom-tool-call', { messages: [{ role: 'user', content: 'hi' }] });
    expect(custom.status).toBe(200);
    expect(custom.json?.choices).toMatchObject([{ message: { tool_calls: [{ type: 'custom', custom: { name: 'sh', input: 'ls' } }] } }]);
    // Messages has no counterpart for it: the text comes through, the call does not.
    const anthropic = await post('/anthropic/v1/messages', 'custom-tool-call', {
      max_tokens: 10,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(anthropic.status).toBe(200);
    expect(anthropic.json?.content).toEqual([{ type: 'text', text: 'Running it.' }]);
    const filtered = await post('/v1/chat/completions', 'finish-only', { messages: [{ role: 'user', content: 'hi' }] });
    expect(filtered.status).toBe(200);
    expect(filtered.json?.choices).toEqual([{ index: 0, message: { role: 'assistant', content: null }, finish_reason: 'content_filter' }]);
  });

  it('answers a text completion with a null choice with a 502', async () => {
    const res = await post('/v1/completions', 'text-null-choice', { prompt: 'hi' });
    expectProtocolError(res, /choices\[0\] is not an object/);
  });

  it('answers a text completion whose choice has no text with a 502, not an empty answer billed', async () => {
    const res = await post('/v1/completions', 'text-chat-shaped', { prompt: 'hi' });
    expectProtocolError(res, /choices\[0\] has no text/);
    const streamed = await post('/v1/completions', 'text-chat-shaped', { prompt: 'hi', stream: true });
    expect(streamed.status).toBe(502);
    let rows = (await gw.rows()).filter((r) => r.endpoint === 'text-chat-shaped');
    for (let i = 0; rows.length < 2 && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 25));
      rows = (await gw.rows()).filter((r) => r.endpoint === 'text-chat-shaped');
    }
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(row).toMatchObject({ status_code: 502, error_code: 'upstream_protocol', cost_usd: 0 });
    // A content-filter stop is an empty answer, as it is in chat.
    const filtered = await post('/v1/completions', 'text-filtered', { prompt: 'hi' });
    expect(filtered.status).toBe(200);
    expect(filtered.json?.choices).toMatchObject([{ index: 0, text: '', finish_reason: 'content_filter' }]);
  });

  it.each([
    ['fewer vectors than inputs', 'emb-short', /answered 1 embedding for 3 inputs/],
    ['items that are null', 'emb-null', /data\[0\]\) that is not a list of numbers/],
    ['vectors of text', 'emb-text', /data\[0\]\) that is not a list of numbers/],
  ])('answers embeddings with %s with a 502', async (_what, name, what) => {
    const res = await post('/v1/embeddings', name, { input: ['a', 'b', 'c'] });
    expectProtocolError(res, what);
  });

  it('bills embeddings with token counts out of range on the estimate', async () => {
    const res = await post('/v1/embeddings', 'emb-huge-usage', { input: ['a', 'b', 'c'] });
    expect(res.status).toBe(200);
    expect((res.json as { usage: { prompt_tokens: number } }).usage.prompt_tokens).toBeLessThan(10);
  });

  it("shows an Anthropic client the estimate it is billed on when the backend's usage is unusable", async () => {
    const res = await post('/anthropic/v1/messages', 'bad-usage', { max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    const usage = res.json?.usage as { input_tokens: number; output_tokens: number };
    expect(usage.output_tokens).toBe(5); // "Hello there, friend": 19 characters
    expect(usage.input_tokens).toBeGreaterThan(0);
    const row = (await gw.rows()).at(-1)!;
    expect(row).toMatchObject({ prompt_tokens: usage.input_tokens, completion_tokens: 5, usage_estimated: true });
  });

  it("answers an upstream's 401 as a 502, without the route's key that its message quoted", async () => {
    const res = await post('/v1/chat/completions', 'quotes-key', { messages: [{ role: 'user', content: 'hi' }] });
    // Not a 401, which the SDKs raise as the client's own key refused.
    expect(res.status).toBe(502);
    expect(res.headers.get('x-should-retry')).toBe('false');
    // Said to be the gateway's credentials for the route, not the client's key.
    expect(res.json?.error).toMatchObject({
      message: "upstream quotes-key refused the gateway's credentials for it (401): Incorrect API key provided: [redacted].",
      code: 'upstream_unauthorized',
    });
    expect(res.text).not.toContain(ROUTE_KEY);
  });

  it.each([
    ['a page', 'stream-html', /no event stream \(text\/html\)/],
    ['a whole answer with no content type', 'stream-untyped-json', /no event stream \(no content type\)/],
  ])('answers a stream request that got %s instead of events with a 502 naming it', async (_what, name, what) => {
    const res = await post('/v1/chat/completions', name, { stream: true, messages: [{ role: 'user', content: 'hi' }] });
    expectProtocolError(res, what);
  });

  it("does not tell the client the route's address that an upstream error quoted", async () => {
    const res = await post('/v1/chat/completions', 'quotes-url', { messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(502);
    const host = new URL(upstreamUrl).host;
    expect(res.text).not.toContain(host);
    expect((res.json as { error: { message: string } }).error.message).toContain('upstream connect error to [upstream]/v1 ([upstream])');
  });

  it('wrote one row per request, each with the status its client got', async () => {
    const rows = await gw.rows();
    expect(rows.map((r) => r.status_code)).toEqual([
      502, 502, 502, 502, 502, 502, 200, 200, 200, 200, 200, 200, 502, 502, 502, 200, 502, 502, 502, 200, 200, 502, 502, 502, 502,
    ]);
    expect(rows.at(-4)).toMatchObject({ status_code: 502, error_code: 'upstream_unauthorized' });
    expect(
      [...rows.slice(0, -4), ...rows.slice(-3, -1)].filter((r) => r.status_code === 502).every((r) => r.error_code === 'upstream_protocol'),
    ).toBe(true);
    expect(rows.at(-6)).toMatchObject({ usage_estimated: true });
    expect(rows.at(-6)!.prompt_tokens).toBeLessThan(10);
    expect(rows.at(-4)!.error).not.toContain(ROUTE_KEY);
    expect(rows.at(-1)!.error).not.toContain(new URL(upstreamUrl).host);
  });
});
