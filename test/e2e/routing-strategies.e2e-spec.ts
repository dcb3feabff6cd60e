import OpenAI from 'openai';
import { OpenAiUpstream } from '../fixtures/openai-upstream';
import { startGateway, type TestGateway } from '../helpers/gateway';

/** The strategies end to end: who gets the traffic, counted at the upstream. */
const models = (u: string) => `
models:
  - id: s/round-robin
    context_length: 8192
    router: round_robin
    route:
      - { kind: openai_compat, id: heavy, base_url: "${u}", provider_model_id: heavy, weight: 2 }
      - { kind: openai_compat, id: light, base_url: "${u}", provider_model_id: light, weight: 1 }
  - id: s/cost
    context_length: 8192
    router: cost
    pricing: { prompt: 1, completion: 1 }
    route:
      - { kind: openai_compat, id: list-price, base_url: "${u}", provider_model_id: list-price }
      - { kind: openai_compat, id: bargain, base_url: "${u}", provider_model_id: bargain, pricing: { prompt: "0.25", completion: "0.25" } }
      - { kind: openai_compat, id: premium, base_url: "${u}", provider_model_id: premium, pricing: { prompt: 4, completion: 4 } }
  - id: s/latency
    context_length: 8192
    router: least_latency
    router_params: { exploration: 0 }
    route:
      - { kind: openai_compat, id: sluggish, base_url: "${u}", provider_model_id: "delay-first-token:400" }
      - { kind: openai_compat, id: quick, base_url: "${u}", provider_model_id: quick }
`;

describe('routing strategies', () => {
  const upstream = new OpenAiUpstream();
  let gw: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await upstream.start();
    gw = await startGateway({ models: models(base) });
    client = gw.client();
  });
  afterAll(async () => {
    await gw?.close();
    await upstream.stop();
  });
  beforeEach(() => upstream.reset());

  const sent = () => upstream.requests.map((r) => String(r.body.model));
  const count = (names: string[]) => names.reduce<Record<string, number>>((acc, n) => ({ ...acc, [n]: (acc[n] ?? 0) + 1 }), {});

  it('round_robin: turns in proportion to weight, interleaved', async () => {
    for (let i = 0; i < 9; i++)
      await client.chat.completions.create({ model: 's/round-robin', messages: [{ role: 'user', content: 'x' }] });
    expect(count(sent())).toEqual({ heavy: 6, light: 3 });
    expect(sent().slice(0, 3).sort()).toEqual(['heavy', 'heavy', 'light']);
    const shares = (await (await fetch(`${gw.url}/routing`)).json()) as { models: Array<{ id: string; routes: Array<{ share: number }> }> };
    expect(shares.models.find((m) => m.id === 's/round-robin')!.routes.map((r) => r.share)).toEqual([0.6667, 0.3333]);
  });

  it('cost: the cheapest route at its own price, billed at that price', async () => {
    const res = await client.chat.completions.create({ model: 's/cost', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] });
    expect(sent()).toEqual(['bargain']);
    const row = (await gw.rows()).find((r) => r.id === res.id.slice(4))!;
    expect(row.endpoint).toBe('bargain');
    expect(Number(row.cost_usd)).toBeCloseTo(((row.prompt_tokens + row.completion_tokens) * 0.25) / 1e6, 12);
  });

  it('least_latency: once both are measured, the route with the lower time to first token gets the traffic', async () => {
    const stream = async () => {
      const s = await client.chat.completions.create({ model: 's/latency', stream: true, messages: [{ role: 'user', content: 'x' }] });
      for await (const _ of s) void _;
    };
    // Unmeasured routes are tried first (one of them at random), so the first two measure both.
    await stream();
    await stream();
    expect([...sent()].sort()).toEqual(['delay-first-token:400', 'quick']);
    upstream.reset();
    for (let i = 0; i < 6; i++) await stream();
    expect(sent()).toEqual(Array(6).fill('quick'));
  });
});
