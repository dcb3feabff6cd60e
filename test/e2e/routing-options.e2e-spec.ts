import OpenAI, { APIError } from 'openai';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { rawPost, startGateway, type TestGateway } from '../helpers/gateway';

/** OpenRouter's routing options: `models` fallbacks, `provider` preferences and `:nitro` / `:floor`. */
const models = (u: string) => `
models:
  - id: o/main
    context_length: 8192
    router: priority
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: vllm, id: gpu, base_url: "${u}", provider_model_id: gpu-model, pricing: { prompt: "0.5", completion: "0.5" } }
      - { kind: deepseek, id: ds, base_url: "${u}", provider_model_id: ds-model, pricing: { prompt: "0.1", completion: "0.1" } }
      - { kind: openai_compat, id: backup, base_url: "${u}", provider_model_id: backup-model, pricing: { prompt: 2, completion: 2 } }
  - id: o/down
    context_length: 8192
    route:
      - { kind: openai_compat, id: dead, base_url: "${u}", provider_model_id: "error:503", retry: { max_retries: 0 } }
  - id: o/filtered
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: strict, base_url: "${u}", provider_model_id: content-filter }
      - { kind: openai_compat, id: strict-too, base_url: "${u}", provider_model_id: never-asked }
  - id: o/fallback
    context_length: 8192
    pricing: { prompt: 3, completion: 3 }
    route:
      - { kind: openai_compat, id: fb, base_url: "${u}", provider_model_id: fallback-model }
  - id: o/mixed
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: broken, base_url: "${u}", provider_model_id: "error:503", retry: { max_retries: 0 } }
      - { kind: openai_compat, id: fine, base_url: "${u}", provider_model_id: fine-model }
  - id: o/speed
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: dawdler, base_url: "${u}", provider_model_id: "slow-tokens:60" }
      - { kind: openai_compat, id: sprinter, base_url: "${u}", provider_model_id: sprinter-model }
      - { kind: openai_compat, id: latecomer, base_url: "${u}", provider_model_id: "delay-first-token:400" }
  - id: o/turned
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: slowpoke, base_url: "${u}", provider_model_id: "delay-headers:50" }
      - { kind: openai_compat, id: gone-bad, base_url: "${u}", provider_model_id: "ok-n:1:404" }
  - id: o/turned400
    context_length: 8192
    router: priority
    route:
      - { kind: openai_compat, id: slowpoke, base_url: "${u}", provider_model_id: "delay-headers:50" }
      - { kind: openai_compat, id: lost-model, base_url: "${u}", provider_model_id: "ok-n:1:400:model" }
`;

describe('OpenRouter routing options', () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    gw = await startGateway({ models: models(base), routing: 'circuit_breaker: { failure_threshold: 1000 }\n' });
    client = gw.client();
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });
  beforeEach(() => upstream.reset());

  type Params = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & { models?: string[]; provider?: Record<string, unknown> };
  const ask = (params: Partial<Params>) =>
    client.chat.completions.create({ model: 'o/main', messages: [{ role: 'user', content: 'hi' }], ...params } as Params);
  const sent = () => upstream.requests.map((r) => r.body.model);
  const rowOf = async (res: { id: string }) => (await gw.rows()).find((r) => r.id === res.id.slice(4))!;

  it('models: tries the fallback models in order; the answer names the model that answered', async () => {
    const res = await ask({ model: 'o/down', models: ['o/down', 'o/fallback'] });
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(res.model).toBe('o/fallback');
    expect((res as unknown as { route: string }).route).toBe('fb'); // the route that answered
    expect(sent()).toEqual(['error:503', 'fallback-model']);
    const row = await rowOf(res);
    expect(row).toMatchObject({ model: 'o/down', endpoint: 'fb' });
    expect(row.metadata).toMatchObject({
      served_model: 'o/fallback',
      attempts: [
        { route: 'dead', outcome: 'error' },
        { route: 'fb', model: 'o/fallback', outcome: 'ok' },
      ],
    });
    // Billed at the price of the model that answered: $3 per million tokens.
    expect(Number(row.cost_usd)).toBeCloseTo(((row.prompt_tokens + row.completion_tokens) * 3) / 1e6, 12);
    // The upstream never sees the gateway's own options.
    expect(upstream.requests[1].body).not.toHaveProperty('models');
  });

  it("models: a content filter moves on to the fallback model (not to the same model's other routes), as OpenRouter does", async () => {
    const res = await ask({ model: 'o/filtered', models: ['o/filtered', 'o/fallback'] });
    expect(res.model).toBe('o/fallback');
    expect(sent()).toEqual(['content-filter', 'fallback-model']);
    // Without a fallback model the refusal is the answer, with its reason.
    upstream.reset();
    const err = await ask({ model: 'o/filtered' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 400, code: 'content_filter' });
    expect(sent()).toEqual(['content-filter']);
  });

  it('models without model: the first one is the model asked for', async () => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      models: ['o/down', 'o/fallback'],
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ model: 'o/fallback' });
    // A first one the gateway does not serve: 404, and the row names the model asked for.
    const unknown = await rawPost(`${gw.url}/v1/chat/completions`, { models: ['nope/none'], messages: [{ role: 'user', content: 'hi' }] });
    expect(unknown.status).toBe(404);
    const id = unknown.headers.get('x-request-id')!;
    let row = (await gw.rows()).find((r) => r.id === id);
    for (let i = 0; !row && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 25));
      row = (await gw.rows()).find((r) => r.id === id);
    }
    expect(row).toMatchObject({ model: 'nope/none', status_code: 404, error_code: 'model_not_found' });
  });

  it('streams name the model that answered too', async () => {
    const stream = await client.chat.completions.create({
      model: 'o/down',
      models: ['o/fallback'],
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
    const seen = new Set<string>();
    const routes = new Set<string>();
    for await (const c of stream) {
      seen.add(c.model);
      routes.add((c as unknown as { route: string }).route);
    }
    expect([...seen]).toEqual(['o/fallback']);
    expect([...routes]).toEqual(['fb']);
  });

  it('provider.order, only and ignore pick routes by id or kind', async () => {
    await ask({ provider: { order: ['backup'] } });
    await ask({ provider: { only: ['deepseek'] } });
    await ask({ provider: { ignore: ['gpu', 'ds'] } });
    expect(sent()).toEqual(['backup-model', 'ds-model', 'backup-model']);
    await ask({});
    expect(sent().pop()).toBe('gpu-model'); // without preferences: the model's own strategy
  });

  it('provider.allow_fallbacks: false stays with the ordered providers', async () => {
    const err = (await ask({ model: 'o/mixed', provider: { order: ['broken'], allow_fallbacks: false } }).catch(
      (e: unknown) => e,
    )) as APIError;
    expect(err.status).toBe(502);
    expect(sent()).toEqual(['error:503']);
    upstream.reset();
    const res = await ask({ model: 'o/mixed', provider: { order: ['broken'], allow_fallbacks: true } });
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['error:503', 'fine-model']);
  });

  it('provider.sort: price, and the :floor suffix, take the cheapest route', async () => {
    await ask({ provider: { sort: 'price' } });
    const floor = await ask({ model: 'o/main:floor' });
    expect(sent()).toEqual(['ds-model', 'ds-model']);
    expect(floor.model).toBe('o/main');
  });

  it(":exacto names the model too, in the strategy's order (the operator chose the routes)", async () => {
    const exacto = await ask({ model: 'o/main:exacto' });
    expect(exacto.model).toBe('o/main');
    // Under priority the first route serves, not the cheapest (:floor) nor the fastest (:nitro).
    expect(sent()).toEqual(['gpu-model']);
    expect((await ask({ model: 'o/main:exact' }).catch((e: unknown) => e)) as APIError).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('provider.max_price leaves out dearer routes, and a 404 when none is left', async () => {
    await ask({ provider: { max_price: { prompt: 0.2, completion: '0.2' } } });
    expect(sent()).toEqual(['ds-model']);
    const err = (await ask({ provider: { max_price: { prompt: 0.01 } } }).catch((e: unknown) => e)) as APIError;
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(err.code).toBe('no_matching_route');
  });

  it('provider names no route answers to match nothing, as on OpenRouter: harmless in order and ignore, none left in only', async () => {
    // Preferences a client sets once for OpenRouter's providers.
    const res = await ask({ provider: { order: ['together', 'ds'], ignore: ['DeepInfra'] } });
    expect(res.choices[0].message.content).toBe('echo: hi');
    expect(sent()).toEqual(['ds-model']);
    const err = (await ask({ provider: { only: ['together'] } }).catch((e: unknown) => e)) as APIError;
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    expect(err.code).toBe('no_matching_route');
    // The message names the preferences that left nothing, as the request set them.
    expect(err.message).toContain('provider preferences (only: together)');
    const ordered = (await ask({ provider: { order: ['together'], allow_fallbacks: false } }).catch((e: unknown) => e)) as APIError;
    expect(ordered.code).toBe('no_matching_route');
    expect(ordered.message).toContain('(order: together with allow_fallbacks: false)');
  });

  it('provider.sort: throughput (:nitro) and latency rank routes by what they measured', async () => {
    // Measure each route once with a stream (throughput needs token timing).
    for (const only of ['dawdler', 'sprinter', 'latecomer']) {
      const s = await client.chat.completions.create({
        model: 'o/speed',
        stream: true,
        messages: [{ role: 'user', content: 'one two three four five six' }],
        provider: { only: [only] },
      } as OpenAI.Chat.ChatCompletionCreateParamsStreaming);
      for await (const _ of s) void _;
    }
    upstream.reset();
    // (The latecomer is left out here: after its slow start it sends everything at once, which
    // makes its tokens-per-second as high as the sprinter's.)
    await ask({ model: 'o/speed:nitro', provider: { ignore: ['latecomer'] } });
    await ask({ model: 'o/speed', provider: { sort: 'throughput', ignore: ['latecomer'] } });
    expect(sent()).toEqual(['sprinter-model', 'sprinter-model']);
    upstream.reset();
    await ask({ model: 'o/speed', provider: { sort: 'latency', ignore: ['sprinter'] } });
    expect(sent()).toEqual(['slow-tokens:60']);
  });

  // The fast route's server lost the model (a 404, or DeepSeek's 400 "Model Not Exist"; no circuit
  // opens for either): it fails over, is tried first while it may be a one-off, then after the
  // others, its fast answer from before notwithstanding.
  it.each([
    ['o/turned', 'gone-bad', 'ok-n:1:404'],
    ['o/turned400', 'lost-model', 'ok-n:1:400:model'],
  ])(
    'provider.sort: latency puts last a route that was fast and then failed three times in a row (%s)',
    async (model, failing, upstream) => {
      for (const only of ['slowpoke', failing]) await ask({ model, provider: { only: [only] } });
      for (let i = 0; i < 4; i++) await ask({ model, provider: { sort: 'latency' } });
      const fallback = 'delay-headers:50';
      expect(sent().slice(2)).toEqual([upstream, fallback, upstream, fallback, upstream, fallback, fallback]);
    },
  );

  it.each([
    [{ provider: { sort: 'fastest' } }, 'provider.sort', /must be one of price, throughput, latency/],
    [{ provider: { order: [''] } }, 'provider.order[0]', /must be a non-empty string/],
    [{ provider: { allow_fallbacks: 'sometimes' } }, 'provider.allow_fallbacks', /must be a boolean/],
    [{ provider: { max_price: { prompt: 'cheap' } } }, 'provider.max_price.prompt', /non-negative number/],
    [{ provider: { turbo: true } }, 'provider.turbo', /is not a provider preference/],
    [{ provider: 'fast' }, 'provider', /must be an object/],
    [{ models: ['o/fallback', 'nope/none'] }, 'models[1]', /does not serve/],
    [{ models: 'o/fallback' }, 'models', /must be an array/],
  ])('refuses %j with a 400 in the OpenAI error shape', async (options, param, message) => {
    const res = await rawPost(`${gw.url}/v1/chat/completions`, {
      model: 'o/main',
      messages: [{ role: 'user', content: 'hi' }],
      ...options,
    });
    expect(res.status).toBe(400);
    const body = JSON.parse(res.text) as { error: { message: string; type: string; param: string; code: string } };
    expect(body.error).toEqual({ message: expect.stringMatching(message), type: 'invalid_request_error', param, code: 'invalid_request' });
    expect(upstream.requests).toHaveLength(0);
  });

  it('refuses bad options on streams the same way, before any byte is sent', async () => {
    const err = await client.chat.completions
      .create({
        model: 'o/main',
        stream: true,
        messages: [{ role: 'user', content: 'hi' }],
        provider: { sort: 'fastest' },
      } as OpenAI.Chat.ChatCompletionCreateParamsStreaming)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
  });
});
