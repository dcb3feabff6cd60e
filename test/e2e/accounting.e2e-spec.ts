import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { ACCESS_ENV, adminApi, call, chat, waitFor } from '../helpers/access';
import { startGateway, type TestGateway } from '../helpers/gateway';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres';
import { RequestRecord } from '../../src/gateway/request-record';

/**
 * What a request costs: every token kind at its price, the per-request fee, images, a route's own
 * pricing, the upstream's reported cost; streams, non-streams and clients that leave mid-stream.
 * And GET /v1/generation, which shows a caller its own request.
 */
const USAGE = {
  prompt_tokens: 1000,
  completion_tokens: 500,
  total_tokens: 1500,
  prompt_tokens_details: { cached_tokens: 400, cache_write_tokens: 100 },
  completion_tokens_details: { reasoning_tokens: 200 },
  cost: 0.0123,
};

/** xAI's Grok counts reasoning apart from completion_tokens; its total has all three. */
const GROK_USAGE = {
  prompt_tokens: 1000,
  completion_tokens: 300,
  total_tokens: 1500,
  completion_tokens_details: { reasoning_tokens: 200 },
};

/** Figures no upstream should send: counts no context holds, a cost beyond any bill. */
const GARBAGE_USAGE = { prompt_tokens: 1e300, completion_tokens: 3_000_000_000, total_tokens: 1e300, cost: 1e21 };

/**
 * An OpenAI-compatible stand-in that reports a fixed, detailed usage (as OpenRouter does); for
 * the upstream model `garbage`, GARBAGE_USAGE.
 */
function usageUpstream(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const parsed = JSON.parse(body) as { stream?: boolean; model?: string };
      const stream = parsed.stream === true;
      const USAGE_SENT = parsed.model === 'garbage' ? GARBAGE_USAGE : parsed.model === 'grok' ? GROK_USAGE : USAGE;
      const base = { id: 'chatcmpl-usage-1', created: 1, model: 'detailed' };
      if (!stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            ...base,
            object: 'chat.completion',
            choices: [{ index: 0, message: { role: 'assistant', content: 'an answer' }, finish_reason: 'stop' }],
            usage: USAGE_SENT,
          }),
        );
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (choices: unknown[], usage: unknown = null) =>
        res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices, usage })}\n\n`);
      chunk([{ index: 0, delta: { role: 'assistant', content: 'an ' }, finish_reason: null }]);
      chunk([{ index: 0, delta: { content: 'answer' }, finish_reason: 'stop' }]);
      chunk([], USAGE_SENT);
      res.end('data: [DONE]\n\n');
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, server })),
  );
}

const models = (detailed: string, standIn: string) => `
models:
  - id: acme/detailed
    context_length: 100000
    pricing: { prompt: "2", completion: "8", input_cache_read: "0.5", input_cache_write: "2.5", internal_reasoning: "4", request: "0.001", image: "0.01" }
    route: [{ kind: openai_compat, id: detailed, base_url: "${detailed}", provider_model_id: detailed }]
  - id: acme/route-priced
    context_length: 100000
    pricing: { prompt: "2", completion: "8", request: "0.001" }
    route: [{ kind: openai_compat, id: cheap, base_url: "${detailed}", provider_model_id: detailed, pricing: { prompt: "1", completion: "1" } }]
  - id: acme/grok
    context_length: 100000
    pricing: { prompt: "2", completion: "8", internal_reasoning: "4" }
    route: [{ kind: openai_compat, base_url: "${detailed}", provider_model_id: grok }]
  - id: acme/garbage
    context_length: 100000
    pricing: { prompt: "1", completion: "1" }
    route: [{ kind: openai_compat, base_url: "${detailed}", provider_model_id: garbage }]
  - id: acme/slow-first-token
    context_length: 8192
    pricing: { prompt: "1", completion: "1" }
    route: [{ kind: openai_compat, id: prefilling, base_url: "${standIn}", provider_model_id: "delay-first-token:5000" }]
  - id: acme/slow-answer
    context_length: 8192
    pricing: { prompt: "1", completion: "1" }
    route: [{ kind: openai_compat, id: thinking-long, base_url: "${standIn}", provider_model_id: "delay-headers:5000" }]
  - id: acme/slow-stream
    context_length: 8192
    pricing: { prompt: "1", completion: "1" }
    route: [{ kind: openai_compat, base_url: "${standIn}", provider_model_id: "slow-tokens:200" }]
  - id: acme/down
    context_length: 8192
    route: [{ kind: openai_compat, base_url: "${standIn}", provider_model_id: "error:503" }]
`;

describe.each(['sqlite', 'postgres'] as const)('accounting on %s', (backend) => {
  const standIn = new OpenAiUpstream();
  let detailed: Server;
  let gw: TestGateway;
  let pg: TestDatabase | undefined;

  beforeAll(async () => {
    const d = await usageUpstream();
    detailed = d.server;
    pg = backend === 'postgres' ? await createTestDatabase() : undefined;
    gw = await startGateway({ models: models(d.url, await standIn.start()), env: { ...pg?.env, ...ACCESS_ENV } });
  });
  afterAll(async () => {
    await gw?.close();
    detailed?.close();
    await standIn.stop();
    await pg?.drop();
  });

  const ask = (model: string, extra: Record<string, unknown> = {}) => ({
    model,
    messages: [{ role: 'user', content: 'question' }],
    ...extra,
  });

  it('bills every token kind at its own price plus the request fee and images, streamed or not', async () => {
    // (1000 - 400 - 100) x 2 + 400 x 0.5 + 100 x 2.5 + (500 - 200) x 8 + 200 x 4 per million, + $0.001
    const expected = '0.00565';
    const json = await chat(gw, undefined, ask('acme/detailed'));
    const streamed = await chat(gw, undefined, ask('acme/detailed', { stream: true }));
    const withImage = await chat(gw, undefined, {
      model: 'acme/detailed',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is it?' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
          ],
        },
      ],
    });
    expect([json.status, streamed.status, withImage.status]).toEqual([200, 200, 200]);
    const rows = await gw.rows();
    const row = (gen: unknown) => rows.find((r) => `gen-${r.id}` === gen)!;
    const streamId = /"id":"(gen-[^"]+)"/.exec(String(streamed.body))![1];
    for (const r of [row(json.body.id), row(streamId)]) {
      expect(r).toMatchObject({
        prompt_tokens: 1000,
        completion_tokens: 500,
        total_tokens: 1500,
        cached_tokens: 400,
        cache_write_tokens: 100,
        reasoning_tokens: 200,
        usage_estimated: false,
      });
      expect(Number(r.cost_usd)).toBeCloseTo(Number(expected), 12);
      expect(Number(r.upstream_cost_usd)).toBeCloseTo(0.0123, 12);
    }
    expect(row(streamId).stream).toBe(true);
    expect(Number(row(withImage.body.id).cost_usd)).toBeCloseTo(0.01565, 12);
    // The client is told what it is billed, as OpenRouter's usage.cost (never the upstream's 0.0123).
    expect((json.body.usage as { cost: number }).cost).toBe(Number(row(json.body.id).cost_usd));
  });

  it("bills reasoning a server counted apart from completion_tokens (xAI's Grok) as output, and says so to the client", async () => {
    const json = await chat(gw, undefined, ask('acme/grok'));
    const streamed = await chat(gw, undefined, ask('acme/grok', { stream: true, stream_options: { include_usage: true } }));
    expect([json.status, streamed.status]).toEqual([200, 200]);
    const billed = {
      prompt_tokens: 1000,
      completion_tokens: 500,
      total_tokens: 1500,
      completion_tokens_details: { reasoning_tokens: 200 },
    };
    expect(json.body.usage).toMatchObject(billed);
    const usageEvent = String(streamed.body)
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)) as { usage?: unknown })
      .find((e) => e.usage);
    expect(usageEvent?.usage).toMatchObject(billed);
    const rows = await gw.rows();
    const streamId = /"id":"(gen-[^"]+)"/.exec(String(streamed.body))![1];
    for (const id of [json.body.id, streamId]) {
      const r = rows.find((row) => `gen-${row.id}` === id)!;
      expect(r).toMatchObject({
        prompt_tokens: 1000,
        completion_tokens: 500,
        total_tokens: 1500,
        reasoning_tokens: 200,
        usage_estimated: false,
      });
      // 1000 x 2 + (500 - 200) x 8 + 200 x 4 per million
      expect(Number(r.cost_usd)).toBeCloseTo(0.0052, 12);
    }
  });

  it("streams usage with its cost for OpenRouter's usage: {include: true}, as for stream_options", async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ask('acme/detailed', { stream: true, usage: { include: true } })),
    });
    const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {'));
    const last = JSON.parse(events.at(-1)!.slice(6)) as { id: string; usage: { prompt_tokens: number; cost: number } };
    expect(last.usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 500 });
    const r = (await gw.rows()).find((x) => `gen-${x.id}` === last.id)!;
    expect(last.usage.cost).toBe(Number(r.cost_usd));
    expect(last.usage.cost).toBeCloseTo(0.00565, 12);
  });

  it("bills usage figures out of range on the estimate, writes the row and frees the key's slot", async () => {
    const key = await adminApi(gw).createKey({ name: 'one-at-a-time', max_concurrency: 1 });
    const ids: string[] = [];
    for (const stream of [false, true, false]) {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key.key}` },
        body: JSON.stringify(ask('acme/garbage', { stream, stream_options: stream ? { include_usage: true } : undefined })),
      });
      const text = await res.text();
      // A slot left held by the request before would answer 429 here.
      expect([res.status, text]).toEqual([200, expect.stringContaining('answer')]);
      if (!stream) expect((JSON.parse(text) as { usage: Record<string, number> }).usage.prompt_tokens).toBeLessThan(100);
      ids.push(res.headers.get('x-request-id')!);
    }
    const rows = await gw.rows();
    for (const id of ids) {
      const row = rows.find((r) => r.id === id);
      expect(row).toMatchObject({ status_code: 200, usage_estimated: true, upstream_cost_usd: null });
      expect(row!.prompt_tokens).toBeLessThan(100);
      expect(row!.completion_tokens).toBeLessThan(100);
      expect(Number(row!.cost_usd)).toBeLessThan(0.001);
    }
  });

  it("still writes the row and frees the key's slot when making the row from the upstream's figures fails", async () => {
    const key = await adminApi(gw).createKey({ name: 'one-at-a-time-2', max_concurrency: 1 });
    const toRow = jest.spyOn(RequestRecord.prototype, 'toRow').mockImplementationOnce(() => {
      throw new Error('a bug in the accounting');
    });
    try {
      const first = await chat(gw, key.key, ask('acme/detailed'));
      const second = await chat(gw, key.key, ask('acme/detailed'));
      expect([first.status, second.status]).toEqual([200, 200]);
      const rows = await gw.rows();
      const row = rows.find((r) => `gen-${r.id}` === first.body.id);
      // Rebuilt without the upstream's usage: billed on the estimate, and it says so.
      expect(row).toMatchObject({ status_code: 200, usage_estimated: true });
      expect(rows.find((r) => `gen-${r.id}` === second.body.id)).toMatchObject({ status_code: 200, prompt_tokens: 1000 });
    } finally {
      toRow.mockRestore();
    }
  });

  it("bills a route's own pricing instead of the model's", async () => {
    const res = await chat(gw, undefined, ask('acme/route-priced'));
    const r = (await gw.rows()).find((x) => `gen-${x.id}` === res.body.id)!;
    expect(r.endpoint).toBe('cheap');
    // (1000 + 500) x $1 per million: a route with both token prices has a whole price list of its own, so no request fee.
    expect(Number(r.cost_usd)).toBeCloseTo(0.0015, 12);
  });

  it('bills a stream the client left for what was delivered', async () => {
    const controller = new AbortController();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(
        ask('acme/slow-stream', { stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] }),
      ),
    });
    const id = res.headers.get('x-request-id')!;
    const reader = res.body!.getReader();
    let text = '';
    while (!text.includes('echo: ')) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    await standIn.waitForAborts(1);
    let row: Awaited<ReturnType<TestGateway['rows']>>[number] | undefined;
    await waitFor(async () => (row = (await gw.rows()).find((r) => r.id === id)) !== undefined, 'the row of the abandoned stream');
    expect(row).toMatchObject({ status_code: 499, usage_estimated: true, stream: true });
    expect(row!.completion_tokens).toBeGreaterThan(0);
    expect(row!.completion_tokens).toBeLessThan(9); // the whole answer is 9 tokens, 200 ms apart
    expect(Number(row!.cost_usd)).toBeGreaterThan(0);
  });

  it('bills the prompt of a stream the client left while the upstream worked on it', async () => {
    standIn.reset();
    const controller = new AbortController();
    const prompt = 'one two three four five six seven eight '.repeat(20);
    // No headers reach the client before the first content: the request is told by the id it sent.
    const clientId = `left-in-prefill-${backend}`;
    const pending = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json', 'x-request-id': clientId },
      body: JSON.stringify(ask('acme/slow-first-token', { stream: true, messages: [{ role: 'user', content: prompt }] })),
    }).catch(() => undefined);
    await standIn.waitForRequests(1);
    await new Promise((r) => setTimeout(r, 300)); // the headers have come; the first token has not
    controller.abort();
    await pending;
    await standIn.waitForAborts(1);
    const mine = (r: { metadata: unknown }) => (r.metadata as { client_request_id?: string } | null)?.client_request_id === clientId;
    let row: Awaited<ReturnType<TestGateway['rows']>>[number] | undefined;
    await waitFor(async () => (row = (await gw.rows()).find(mine)) !== undefined, 'the row of the abandoned stream');
    expect(row).toMatchObject({ status_code: 499, endpoint: 'prefilling', completion_tokens: 0, usage_estimated: true, stream: true });
    // The upstream reported nothing: the prompt is the gateway's estimate, at the route's price.
    expect(row!.prompt_tokens).toBeGreaterThan(100);
    expect(Number(row!.cost_usd)).toBeCloseTo(row!.prompt_tokens / 1e6, 12);
  });

  it('bills the prompt of a one-shot call the client left while the upstream worked on it', async () => {
    standIn.reset();
    const controller = new AbortController();
    const prompt = 'one two three four five six seven eight '.repeat(20);
    const clientId = `left-one-shot-${backend}`;
    const pending = fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      signal: controller.signal,
      headers: { 'content-type': 'application/json', 'x-request-id': clientId },
      body: JSON.stringify(ask('acme/slow-answer', { messages: [{ role: 'user', content: prompt }] })),
    }).catch(() => undefined);
    await standIn.waitForRequests(1);
    controller.abort();
    await pending;
    await standIn.waitForAborts(1);
    const mine = (r: { metadata: unknown }) => (r.metadata as { client_request_id?: string } | null)?.client_request_id === clientId;
    let row: Awaited<ReturnType<TestGateway['rows']>>[number] | undefined;
    await waitFor(async () => (row = (await gw.rows()).find(mine)) !== undefined, 'the row of the abandoned call');
    // Logged at nothing, a key could have had any number of such calls worked on without its budget seeing them.
    expect(row).toMatchObject({ status_code: 499, endpoint: 'thinking-long', completion_tokens: 0, usage_estimated: true, stream: false });
    expect(row!.prompt_tokens).toBeGreaterThan(100);
    expect(Number(row!.cost_usd)).toBeCloseTo(row!.prompt_tokens / 1e6, 12);
  });

  it("shows a caller its own generation in OpenRouter's shape, and nobody else's", async () => {
    const admin = adminApi(gw);
    const mine = await admin.createKey({ name: 'mine' });
    const theirs = await admin.createKey({ name: 'theirs' });
    const res = await chat(gw, mine.key, ask('acme/detailed', { user: 'end-user-7' }));
    const gen = String(res.body.id);
    // Visible at once, before the log writer's next flush.
    const got = await call<{ data: Record<string, unknown> }>(`${gw.url}/v1/generation?id=${gen}`, 'GET', undefined, {
      authorization: `Bearer ${mine.key}`,
    });
    expect(got.status).toBe(200);
    expect(got.body.data).toMatchObject({
      id: gen,
      upstream_id: 'chatcmpl-usage-1',
      model: 'acme/detailed',
      streamed: false,
      cancelled: false,
      provider_name: 'openai_compat',
      finish_reason: 'stop',
      tokens_prompt: 1000,
      tokens_completion: 500,
      native_tokens_prompt: 1000,
      native_tokens_completion: 500,
      native_tokens_reasoning: 200,
      native_tokens_cached: 400,
      // The route reported what it charged the operator (0.0123): never shown to the caller.
      upstream_inference_cost: null,
      is_byok: false,
      external_user: 'end-user-7',
    });
    expect(got.body.data.total_cost).toBeCloseTo(0.00565, 12);
    expect(got.body.data.usage).toBe(got.body.data.total_cost);
    expect(new Date(String(got.body.data.created_at)).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(typeof got.body.data.latency).toBe('number');
    // The same from the database, after the flush; also by the bare request id.
    await gw.rows();
    const again = await call<{ data: Record<string, unknown> }>(`${gw.url}/v1/generation?id=${gen.slice(4)}`, 'GET', undefined, {
      'x-api-key': mine.key,
    });
    expect(again.body.data).toEqual(got.body.data);

    for (const other of [{ authorization: `Bearer ${theirs.key}` }, {}] as Array<Record<string, string>>) {
      const denied = await call<{ error: { code: string; type: string } }>(`${gw.url}/v1/generation?id=${gen}`, 'GET', undefined, other);
      expect(denied.status).toBe(404);
      expect(denied.body.error).toMatchObject({ type: 'not_found_error', code: 'generation_not_found' });
    }
    // A fallback model answered: the generation names it, as the answer did.
    const fell = await chat(gw, mine.key, { ...ask('acme/down'), models: ['acme/down', 'acme/detailed'] });
    expect(fell.body.model).toBe('acme/detailed');
    const served = await call<{ data: Record<string, unknown> }>(`${gw.url}/v1/generation?id=${String(fell.body.id)}`, 'GET', undefined, {
      authorization: `Bearer ${mine.key}`,
    });
    expect(served.body.data.model).toBe('acme/detailed');
    const anonymous = await chat(gw, undefined, ask('acme/detailed'));
    expect((await call(`${gw.url}/v1/generation?id=${String(anonymous.body.id)}`, 'GET')).status).toBe(200);
    const missing = await call<{ error: { param: string } }>(`${gw.url}/v1/generation`, 'GET');
    expect(missing.status).toBe(400);
    expect(missing.body.error.param).toBe('id');
    // Sent twice: not "required", but one id, once.
    const twice = await call<{ error: { message: string; code: string } }>(`${gw.url}/v1/generation?id=a&id=b`, 'GET');
    expect(twice.status).toBe(400);
    expect(twice.body.error).toMatchObject({ code: 'invalid_value', message: expect.stringContaining('given once') });
  });
});

describe('a one-shot call the client left before it reached the upstream', () => {
  const standIn = new OpenAiUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    // One connection to the upstream: a second call waits in the pool until the first is done.
    gw = await startGateway({ models: models('http://127.0.0.1:9', await standIn.start()), env: { UPSTREAM_MAX_CONNECTIONS: '1' } });
  });
  afterAll(async () => {
    await gw?.close();
    await standIn.stop();
  });

  it('is not billed: its request never went out', async () => {
    const body = JSON.stringify({
      model: 'acme/slow-answer',
      messages: [{ role: 'user', content: 'one two three four five six seven eight' }],
    });
    const post = (headers: Record<string, string>, signal?: AbortSignal) =>
      fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
        signal,
      }).catch(() => undefined);
    const holding = new AbortController();
    const first = post({ 'x-request-id': 'holds-the-connection' }, holding.signal);
    await standIn.waitForRequests(1);
    const controller = new AbortController();
    const queued = post({ 'x-request-id': 'queued-in-the-pool' }, controller.signal);
    await new Promise((r) => setTimeout(r, 300));
    controller.abort();
    await queued;
    expect(standIn.requests).toHaveLength(1);
    const byClientId = async (id: string) =>
      (await gw.rows()).find((r) => (r.metadata as { client_request_id?: string } | null)?.client_request_id === id);
    let row: Awaited<ReturnType<typeof byClientId>>;
    await waitFor(async () => (row = await byClientId('queued-in-the-pool')) !== undefined, 'the row of the queued call');
    expect(row).toMatchObject({ status_code: 499, prompt_tokens: 0, completion_tokens: 0 });
    expect(Number(row!.cost_usd)).toBe(0);
    // The call that was on the connection, left too, is billed its prompt.
    holding.abort();
    await first;
    await waitFor(async () => (row = await byClientId('holds-the-connection')) !== undefined, 'the row of the first call');
    expect(row!.status_code).toBe(499);
    expect(row!.prompt_tokens).toBeGreaterThan(0);
  });
});
