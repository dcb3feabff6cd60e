import { FREE, tokenPrice, unitPrice } from '../common/money';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { cheapestFirst, estimateCost, estimateParamsProblems, estimateRequestTokens, NOMINAL_REQUEST } from './cost-estimate';

const pricing = (prompt: string, completion: string, request = '0') => ({
  prompt: tokenPrice(prompt),
  completion: tokenPrice(completion),
  request: unitPrice(request),
  image: FREE,
});
const model = { pricing: pricing('1', '2'), routerParams: {} } as unknown as ModelDef;
const route = (extra: Partial<RouteDef> = {}) => ({ id: 'r', kind: 'mock', options: {}, ...extra }) as RouteDef;

describe('estimateRequestTokens', () => {
  it('estimates the prompt from the messages and takes max_tokens as the completion', () => {
    const t = estimateRequestTokens({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(400) }], max_tokens: 50 }, model);
    expect(t.completion).toBe(50);
    expect(t.prompt).toBeGreaterThanOrEqual(100);
    expect(t.prompt).toBeLessThan(120);
  });

  it('assumes the expected completion when no max_tokens is set', () => {
    expect(estimateRequestTokens({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }, model).completion).toBe(256);
    const tuned = { ...model, routerParams: { expected_completion_tokens: 1000 } } as ModelDef;
    expect(estimateRequestTokens({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }, tuned).completion).toBe(1000);
  });

  it('copes with one-shot operations without messages', () => {
    expect(estimateRequestTokens({ model: 'm', input: 'abcd'.repeat(10) } as never, model).prompt).toBeGreaterThan(0);
    expect(estimateRequestTokens(undefined, model)).toEqual(NOMINAL_REQUEST);
  });
});

describe('estimateCost', () => {
  it("prices at the route's own pricing where it has one, else the model's", () => {
    const tokens = { prompt: 1_000_000, completion: 1_000_000 };
    expect(estimateCost(model, route(), tokens)).toBe(3_000_000_000_000n); // $1 + $2
    expect(estimateCost(model, route({ pricing: pricing('0.5', '0.5', '0.01') }), tokens)).toBe(1_010_000_000_000n);
  });
});

describe('cheapestFirst', () => {
  it('orders by cost, ties in listed order', () => {
    expect(cheapestFirst([30n, 10n, 20n, 10n])).toEqual([1, 3, 2, 0]);
    expect(cheapestFirst([])).toEqual([]);
  });
});

describe('estimateParamsProblems', () => {
  const withParams = (routerParams: Record<string, unknown>) => ({ where: 'models.yaml:1', routerParams }) as unknown as ModelDef;

  it('takes a whole number of tokens above 0, or none', () => {
    expect(estimateParamsProblems(withParams({}))).toEqual([]);
    expect(estimateParamsProblems(withParams({ expected_completion_tokens: 500 }))).toEqual([]);
    for (const bad of [0, -5, 2.5, 'lots'])
      expect(estimateParamsProblems(withParams({ expected_completion_tokens: bad }))).toEqual([
        'models.yaml:1: router_params.expected_completion_tokens must be a whole number above 0',
      ]);
  });
});
