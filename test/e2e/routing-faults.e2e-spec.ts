import OpenAI, { APIError } from 'openai';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/**
 * What a correct gateway does for each fault of an upstream: the client gets the whole answer
 * (by a retry on the same route or by the next route) or a clean, bounded error; never a
 * truncated answer presented as success; never a tight retry loop; and it keeps serving.
 * Each model puts a faulty route first and a healthy backup second (priority strategy).
 */
const pair = (id: string, upstream: string, scenario: string, extra = '') => `
  - id: ${id}
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: main, base_url: "${upstream}", provider_model_id: "${scenario}", headers: { x-route-key: ${id} }${extra} }
      - { kind: openai_compat, id: backup, base_url: "${upstream}", provider_model_id: ok }
`;

/** A model with one route: a retry can only be made there. */
const solo = (id: string, upstream: string, scenario: string) => `
  - id: ${id}
    context_length: 8192
    route:
      - { kind: openai_compat, id: main, base_url: "${upstream}", provider_model_id: "${scenario}", headers: { x-route-key: ${id} } }
`;

const models = (u: string) => `
models:
${solo('f/429-retry-after', u, 'fail-n:429:1:1')}
${solo('f/429-bare', u, 'fail-n:429:1')}
${solo('f/503-come-back-later', u, 'fail-n:503:99:120')}
${pair('f/429-pair', u, 'fail-n:429:1:1')}
${pair('f/500-once', u, 'fail-n:500:1')}
${pair('f/no-retry-pair', u, 'no-retry:503')}
${solo('f/no-retry', u, 'no-retry:503')}
${pair('f/reset', u, 'reset')}
${pair('f/hang', u, 'hang', ', timeouts: { first_byte_ms: 300, total_ms: 500 }')}
${pair('f/slow-answer', u, 'delay-headers:2500', ', timeouts: { first_byte_ms: 300, first_token_ms: 1000 }')}
${pair('f/slow-first-token', u, 'delay-first-token:5000', ', timeouts: { first_token_ms: 300 }')}
${pair('f/stall-first', u, 'stall-first:5000', ', timeouts: { idle_ms: 300, first_token_ms: 600 }')}
${pair('f/role-then-prefill', u, 'stall-first:800', ', timeouts: { idle_ms: 300, first_token_ms: 3000 }')}
${pair('f/headers-then-prefill', u, 'delay-first-token:800', ', timeouts: { idle_ms: 300, first_token_ms: 3000 }')}
${pair('f/malformed-first', u, 'malformed-first')}
${pair('f/usage-first', u, 'usage-first')}
${pair('f/empty-flood', u, 'empty-flood:1500:300', ', timeouts: { idle_ms: 3000, first_token_ms: 3000 }')}
${pair('f/empty-flood-long', u, 'empty-flood:1500:1500', ', timeouts: { idle_ms: 3000, first_token_ms: 800 }')}
${pair('f/cut', u, 'cut')}
${pair('f/truncated', u, 'truncated')}
${pair('f/no-done', u, 'no-done')}
${pair('f/stall', u, 'stall:5000', ', timeouts: { idle_ms: 300 }')}
${pair('f/content-filter', u, 'content-filter')}
  - id: f/503-forever
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: first, base_url: "${u}", provider_model_id: "error:503" }
      - { kind: openai_compat, id: second, base_url: "${u}", provider_model_id: "error:503" }
  - id: f/two-bad-then-good
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: first, base_url: "${u}", provider_model_id: "error:500" }
      - { kind: openai_compat, id: second, base_url: "${u}", provider_model_id: "error:503" }
      - { kind: openai_compat, id: third, base_url: "${u}", provider_model_id: ok }
  - id: f/context
    context_length: 40
    router: priority
    route:
      - { kind: openai_compat, id: small, base_url: "${u}", provider_model_id: "context:40" }
      - { kind: openai_compat, id: also-small, base_url: "${u}", provider_model_id: "context:40" }
      - { kind: openai_compat, id: large, base_url: "${u}", provider_model_id: "context:100000", context_length: 100000 }
  - id: f/context-small-only
    context_length: 40
    route:
      - { kind: openai_compat, id: small, base_url: "${u}", provider_model_id: "context:40" }
  - id: f/context-large
    context_length: 100000
    route:
      - { kind: openai_compat, id: large, base_url: "${u}", provider_model_id: "context:100000" }
  - id: f/ok
    context_length: 8192
    route:
      - { kind: openai_compat, id: only, base_url: "${u}", provider_model_id: ok }
`;

// Short backoffs keep the suite quick; the circuit threshold is out of reach so that every
// request here is judged on its own (circuits have their own spec).
const ROUTING = `
retry: { max_retries: 2, backoff_ms: 20, max_backoff_ms: 100, max_retry_after_ms: 3000, max_attempts: 5 }
circuit_breaker: { failure_threshold: 1000 }
`;

type Attempt = { route: string; outcome: string; status?: number; retry?: number; backoff_ms?: number; model?: string; error?: string };
const LONG_PROMPT = Array.from({ length: 80 }, (_, i) => `word${i}`).join(' ');

describe('routing under upstream faults', () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    gw = await startGateway({ models: models(base), routing: ROUTING });
    client = gw.client();
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });
  beforeEach(() => upstream.reset());

  const ask = (model: string, content = 'hi') => client.chat.completions.create({ model, messages: [{ role: 'user', content }] });
  const failure = (p: Promise<unknown>) =>
    p.then(
      () => Promise.reject(new Error('expected the request to fail')),
      (e: unknown) => e as APIError,
    );
  const sent = () => upstream.requests.map((r) => r.body.model);
  const attemptsOf = async (id: string): Promise<Attempt[]> => {
    const row = (await gw.rows()).find((r) => r.id === id.replace(/^gen-/, ''));
    return (row?.metadata as { attempts: Attempt[] }).attempts;
  };
  const streamText = async (model: string) => {
    const stream = await client.chat.completions.create({
      model,
      stream: true,
      messages: [{ role: 'user', content: 'one two three four' }],
    });
    let text = '';
    let id = '';
    for await (const c of stream) {
      id = c.id;
      text += c.choices[0]?.delta?.content ?? '';
    }
    return { text, id };
  };

  it('429 with another route left: that route answers at once, the rate-limited one is not waited for', async () => {
    const started = performance.now();
    const res = await ask('f/429-pair');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(performance.now() - started).toBeLessThan(900); // not the 1 s Retry-After
    expect(sent()).toEqual(['fail-n:429:1:1', 'ok']);
    expect(await attemptsOf(res.id)).toEqual([
      expect.objectContaining({ route: 'main', outcome: 'error', status: 429 }),
      expect.objectContaining({ route: 'backup', outcome: 'ok' }),
    ]);
  });

  it('429 with Retry-After on the last route: waits as told, then the same route answers', async () => {
    const res = await ask('f/429-retry-after');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['fail-n:429:1:1', 'fail-n:429:1:1']);
    const attempts = await attemptsOf(res.id);
    expect(attempts).toEqual([
      expect.objectContaining({ route: 'main', outcome: 'error', status: 429 }),
      expect.objectContaining({ route: 'main', outcome: 'ok', retry: 1 }),
    ]);
    expect(attempts[1].backoff_ms).toBeGreaterThanOrEqual(1000);
  });

  it('429 without Retry-After on the last route: backs off (jittered) and retries the same route', async () => {
    const res = await ask('f/429-bare');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['fail-n:429:1', 'fail-n:429:1']);
    const attempts = await attemptsOf(res.id);
    expect(attempts[1]).toMatchObject({ route: 'main', outcome: 'ok', retry: 1 });
    expect(attempts[1].backoff_ms).toBeGreaterThanOrEqual(10); // half of backoff_ms at least
  });

  it("passes on an upstream 503's Retry-After with the 502 the client gets", async () => {
    // Two minutes: past what the gateway waits for, so the client is told when to come back.
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'f/503-come-back-later', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(502);
    expect(res.headers.get('retry-after')).toBe('120');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('upstream_503');
  });

  it('x-should-retry: false from the upstream: that route is not asked again, and the client is told the same', async () => {
    const res = await ask('f/no-retry-pair');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['no-retry:503', 'ok']);
    upstream.reset();
    const direct = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'f/no-retry', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(direct.status).toBe(502);
    expect(direct.headers.get('x-should-retry')).toBe('false');
    // Not the two retries the routing config allows a 503.
    expect(sent()).toEqual(['no-retry:503']);
  });

  it('500 once: the retry on the same route answers, for JSON and streams', async () => {
    expect((await ask('f/500-once')).choices[0].message.content).toBe('echo: hi');
    upstream.reset();
    const { text, id } = await streamText('f/500-once');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['fail-n:500:1', 'fail-n:500:1']);
    expect((await attemptsOf(id)).map((a) => [a.route, a.outcome])).toEqual([
      ['main', 'error'],
      ['main', 'ok'],
    ]);
  });

  it('503 forever: bounded attempts with backoff (never a tight loop), then a clean 502; and it keeps serving', async () => {
    const err = await failure(ask('f/503-forever'));
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/answered 503/);
    // max_retries 2 on the first route (3 calls), then max_attempts 5 stops the second at 2.
    expect(sent()).toEqual(Array(5).fill('error:503'));
    const row = (await gw.rows()).filter((r) => r.model === 'f/503-forever').pop()!;
    const attempts = (row.metadata as { attempts: Attempt[] }).attempts;
    expect(attempts.map((a) => [a.route, a.retry ?? 0])).toEqual([
      ['first', 0],
      ['first', 1],
      ['first', 2],
      ['second', 0],
      ['second', 1],
    ]);
    for (const a of attempts.filter((x) => x.retry)) expect(a.backoff_ms).toBeGreaterThanOrEqual(10);
    expect((await ask('f/ok')).choices[0].message.content).toBe('echo: hi');
  });

  it('connection reset before headers: retried, then the next route answers', async () => {
    const res = await ask('f/reset');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['reset', 'reset', 'reset', 'ok']);
  });

  it("accepted and never answered: the attempt's deadline moves on to the next route without retrying the silent one", async () => {
    const res = await ask('f/hang');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['hang', 'ok']);
    expect((await attemptsOf(res.id))[0]).toMatchObject({ route: 'main', outcome: 'error', status: 504 });
    await upstream.waitForAborts(1);
  });

  it("a one-shot answer, whose headers come with it, has until the attempt's total deadline, not the first byte's or token's", async () => {
    const res = await ask('f/slow-answer');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['delay-headers:2500']);
  });

  it('a first token that does not come in time: the stream is served whole by the next route', async () => {
    const { text } = await streamText('f/slow-first-token');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['delay-first-token:5000', 'ok']);
    await upstream.waitForAborts(1);
  });

  it('a flood of empty events before any content: no more than 1,000 are held (and relayed); the first-token deadline still runs', async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'f/empty-flood', stream: true, messages: [{ role: 'user', content: 'one two three four' }] }),
    });
    const events = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {'));
    const chunks = events.map((e) => JSON.parse(e.slice('data: '.length)) as { choices: Array<{ delta: { content?: string } }> });
    const firstContent = chunks.findIndex((c) => (c.choices[0]?.delta.content ?? '') !== '');
    expect(firstContent).toBeGreaterThan(0);
    expect(firstContent).toBeLessThanOrEqual(1000);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('echo: one two three four');
    expect(sent()).toEqual(['empty-flood:1500:300']);

    // Events without content are no first token: past its deadline the next route serves.
    const { text } = await streamText('f/empty-flood-long');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['empty-flood:1500:300', 'empty-flood:1500:1500', 'ok']);
  });

  it('a stream that stalls before any content: fails over on the first-token timeout', async () => {
    const { text, id } = await streamText('f/stall-first');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['stall-first:5000', 'ok']);
    expect((await attemptsOf(id))[0]).toMatchObject({
      route: 'main',
      outcome: 'error',
      status: 504,
      error: expect.stringContaining('first token'),
    });
  });

  it.each(['f/role-then-prefill', 'f/headers-then-prefill'])(
    '%s: a first token later than idle_ms but within first_token_ms is waited for',
    async (model) => {
      // Servers send their headers, or an opening role chunk, at once and the first token after
      // prefill: until then the idle deadline (300 ms) is not the one that applies (3 s).
      const { text, id } = await streamText(model);
      expect(text).toBe('echo: one two three four');
      expect(sent()).toHaveLength(1);
      expect(await attemptsOf(id)).toEqual([expect.objectContaining({ route: 'main', outcome: 'ok' })]);
    },
  );

  it('keeps calls only for untried routes of the same model: fallback models do not switch retries off', async () => {
    // 2 routes of f/500-once plus 5 of fallback models: more than max_attempts (5). The main
    // route's one failure is still retried there, and answers.
    const res = await client.chat.completions.create({
      model: 'f/500-once',
      models: ['f/two-bad-then-good', 'f/ok'],
      messages: [{ role: 'user', content: 'hi' }],
    } as never);
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['fail-n:500:1', 'fail-n:500:1']);
  });

  it('keeps a call for every route not tried yet: retries on failing routes do not use up the budget', async () => {
    // max_attempts 5, max_retries 2: first three times, second once, the third answers.
    const res = await ask('f/two-bad-then-good');
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['error:500', 'error:500', 'error:500', 'error:503', 'ok']);
  });

  it('a malformed chunk before any content: the next route answers', async () => {
    const { text } = await streamText('f/malformed-first');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['malformed-first', 'ok']);
  });

  it('a usage figure before any content, then a reset: retried, then the next route answers', async () => {
    const { text } = await streamText('f/usage-first');
    expect(text).toBe('echo: one two three four');
    expect(sent()).toEqual(['usage-first', 'usage-first', 'usage-first', 'ok']);
  });

  it.each(['f/cut', 'f/truncated', 'f/stall'])(
    '%s mid-answer: an in-band error, never [DONE], and no second provider spliced in',
    async (model) => {
      const res = await rawPost(`${gw.url}/v1/chat/completions`, {
        model,
        stream: true,
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      expect(res.status).toBe(200);
      expect(res.text).toContain('"content":"echo: "');
      expect(res.text).toMatch(/"error":\{"message":"[^"]+"/);
      expect(res.text).not.toContain('[DONE]');
      expect(sent()).toHaveLength(1);
      // The SDK sees the failure, not a short answer.
      const stream = await client.chat.completions.create({
        model,
        stream: true,
        messages: [{ role: 'user', content: 'one two three four' }],
      });
      await expect(
        (async () => {
          for await (const _ of stream) void _;
        })(),
      ).rejects.toBeInstanceOf(APIError);
    },
  );

  it('a stream that ends without [DONE] after its finish reason is a whole answer', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'f/no-done',
      stream: true,
      messages: [{ role: 'user', content: 'one two' }],
    });
    expect(res.text).toContain('"finish_reason":"stop"');
    expect(res.text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(sent()).toEqual(['no-done']);
  });

  it('a context-length error goes to a route with a larger context, skipping those no larger', async () => {
    const res = await ask('f/context', LONG_PROMPT);
    expect(res.choices[0].message.content).toBe(`echo: ${LONG_PROMPT}`);
    expect(sent()).toEqual(['context:40', 'context:100000']);
    expect((await attemptsOf(res.id)).map((a) => [a.route, a.outcome])).toEqual([
      ['small', 'error'],
      ['also-small', 'skipped'],
      ['large', 'ok'],
    ]);
    // A prompt that fits is served by the first route as usual.
    upstream.reset();
    expect((await ask('f/context', 'short')).choices[0].message.content).toBe('echo: short');
    expect(sent()).toEqual(['context:40']);
  });

  it('a context-length error goes to a fallback model with a larger context, and the answer names it', async () => {
    const res = await client.chat.completions.create({
      model: 'f/context-small-only',
      models: ['f/context-large'],
      messages: [{ role: 'user', content: LONG_PROMPT }],
    } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);
    expect(res.model).toBe('f/context-large');
    expect(sent()).toEqual(['context:40', 'context:100000']);
  });

  it('a context-length error with nowhere larger to go is returned as the provider said it', async () => {
    const err = await failure(ask('f/context-small-only', LONG_PROMPT));
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.code).toBe('context_length_exceeded');
    expect(err.message).toMatch(/maximum context length is 40 tokens/);
    expect(sent()).toEqual(['context:40']);
  });

  it("a content-filter refusal is returned with the provider's reason, and not tried elsewhere", async () => {
    const err = await failure(ask('f/content-filter'));
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.code).toBe('content_filter');
    expect(err.message).toMatch(/content management policy/);
    expect(sent()).toEqual(['content-filter']);
  });

  it('gives up at once when the client leaves during a backoff', async () => {
    const controller = new AbortController();
    const pending = client.chat.completions.create(
      { model: 'f/429-retry-after', messages: [{ role: 'user', content: 'x' }] },
      { signal: controller.signal },
    );
    await upstream.waitForRequests(1);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 1500)); // past the Retry-After: no retry was sent
    expect(sent()).toEqual(['fail-n:429:1:1']);
    const row = (await gw.waitForRows(1)).filter((r) => r.model === 'f/429-retry-after').pop()!;
    expect(row.status_code).toBe(499);
  });
});

describe('a retry the circuit it opened would refuse', () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const u = await upstream.start();
    gw = await startGateway({
      routing:
        'retry: { max_retries: 2, backoff_ms: 20, max_retry_after_ms: 10000 }\ncircuit_breaker: { failure_threshold: 1, cooldown_seconds: 30 }\n',
      models: `
models:
  - id: c/pair
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: limited, base_url: "${u}", provider_model_id: "fail-n:503:100:3" }
      - { kind: openai_compat, id: backup, base_url: "${u}", provider_model_id: ok }
  - id: c/solo
    context_length: 8192
    route:
      - { kind: openai_compat, id: only, base_url: "${u}", provider_model_id: "fail-n:429:1:1" }
`,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  it("stays open no longer than the Retry-After of the failure that opened it: a model's only route is asked again then", async () => {
    const ask = () =>
      gw
        .client()
        .chat.completions.create({ model: 'c/solo', messages: [{ role: 'user', content: 'hi' }] }, { maxRetries: 0 })
        .catch((e: unknown) => e as APIError);
    // The 429 said to come back in 1 s; its circuit opened (threshold 1), and the client is told so.
    const first = await ask();
    expect(first).toMatchObject({ status: 429 });
    await new Promise((r) => setTimeout(r, 1100));
    // Not refused by the gateway for the whole 30 s cooldown: the route answers again.
    const second = await ask();
    expect((second as OpenAI.Chat.Completions.ChatCompletion).choices?.[0].message.content).toBe('echo: hi');
  });

  it('is not waited for: the failure that opened the circuit moves on to the next route at once, not after its Retry-After', async () => {
    const started = performance.now();
    const res = await gw.client().chat.completions.create({ model: 'c/pair', messages: [{ role: 'user', content: 'hi' }] });
    const took = performance.now() - started;
    expect(res.choices[0].message.content).toBe('echo: hi');
    // The 503 said to come back in 3 s; the circuit its failure opened would have refused that retry.
    expect(took).toBeLessThan(1500);
    const row = (await gw.rows()).find((r) => r.id === res.id.replace(/^gen-/, ''))!;
    const attempts = (row.metadata as { attempts: Attempt[] }).attempts.map((a) => `${a.route}:${a.outcome}`);
    expect(attempts).toEqual(['limited:error', 'backup:ok']);
  });
});

describe("a try with too little of the request's deadline left", () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;

  beforeAll(async () => {
    const u = await upstream.start();
    // A second in all; the first route's first token may take 950 ms of it.
    gw = await startGateway({
      env: { UPSTREAM_TOTAL_TIMEOUT_MS: '1000' },
      models: `
models:
  - id: f/both-hang
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: first, base_url: "${u}", provider_model_id: "stall-first:5000", timeouts: { first_token_ms: 950 } }
      - { kind: openai_compat, id: second, base_url: "${u}", provider_model_id: hang }
`,
    });
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });

  it('is not begun: the upstream is not called only to be dropped, and the answer says why the first failed', async () => {
    // A stream: its first token is due within first_token_ms (a one-shot answer has the whole deadline).
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'f/both-hang',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(res.status).toBe(504);
    expect(JSON.parse(res.text).error.message).toMatch(/upstream first .*950 ms/);
    expect(upstream.requests).toHaveLength(1);
  });
});
