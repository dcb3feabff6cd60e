import { FREE, tokenPrice, unitPrice } from '../../common/money';
import type { ModelDef, RouteDef } from '../../config/registry.types';
import { EMPTY_ROUTING } from '../../config/routing.parser';
import type { RouteStats } from '../route-state.service';
import type { StrategyInput } from '../routing-strategy';
import { seededRandom } from '../weights';
import { CostStrategy } from './cost.strategy';
import { LeastLatencyStrategy } from './least-latency.strategy';
import { RoundRobinStrategy } from './round-robin.strategy';

const route = (id: string, weight = 1, prompt?: string): RouteDef => ({
  id,
  kind: 'mock',
  apiKeys: [],
  providerModelId: id,
  weight,
  locality: 'remote',
  headers: {},
  timeouts: {},
  options: {},
  where: `models.yaml:${id}`,
  pricing:
    prompt === undefined ? undefined : { prompt: tokenPrice(prompt), completion: tokenPrice(prompt), request: unitPrice('0'), image: FREE },
});

const modelOf = (routes: RouteDef[], routerParams: Record<string, unknown> = {}) =>
  ({
    id: 'm',
    routes,
    routerParams,
    where: 'models.yaml:1',
    pricing: { prompt: tokenPrice('1'), completion: tokenPrice('1'), request: FREE, image: FREE },
  }) as unknown as ModelDef;

function input(
  model: ModelDef,
  routes: readonly RouteDef[] = model.routes,
  stats: Record<string, RouteStats> = {},
  seed = 1,
  request?: StrategyInput['request'],
): StrategyInput {
  return { model, routes, routing: EMPTY_ROUTING, request, random: seededRandom(seed), stats: (r) => stats[r.id] ?? {} };
}

describe('RoundRobinStrategy', () => {
  it('takes turns in proportion to weight, interleaved', () => {
    const s = new RoundRobinStrategy();
    const m = modelOf([route('a', 2), route('b', 1)]);
    const firsts = Array.from({ length: 9 }, () => s.plan(input(m))[0].id);
    expect(firsts).toEqual(['a', 'b', 'a', 'a', 'b', 'a', 'a', 'b', 'a']);
  });

  it('lists every route once: the chosen one, then the others, zero weights last', () => {
    const s = new RoundRobinStrategy();
    const m = modelOf([route('z', 0), route('a', 1), route('b', 1)]);
    expect(s.plan(input(m)).map((r) => r.id)).toEqual(['a', 'b', 'z']);
    expect(s.plan(input(m)).map((r) => r.id)).toEqual(['b', 'a', 'z']);
  });

  it('lets an unavailable route sit out without disturbing the others, and gives it its turns back after', () => {
    const s = new RoundRobinStrategy();
    const [a, b, c] = [route('a'), route('b'), route('c')];
    const m = modelOf([a, b, c]);
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 100; i++) counts[s.plan(input(m, [a, c]))[0].id]++;
    expect(counts).toEqual({ a: 50, b: 0, c: 50 });
    const after: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 300; i++) after[s.plan(input(m))[0].id]++;
    for (const k of ['a', 'b', 'c']) expect(Math.abs(after[k] - 100)).toBeLessThanOrEqual(2);
  });

  it('starts afresh for a reloaded model', () => {
    const s = new RoundRobinStrategy();
    const m1 = modelOf([route('a'), route('b')]);
    s.plan(input(m1));
    expect(s.plan(input(modelOf([route('a'), route('b')])))[0].id).toBe('a');
  });
});

describe('LeastLatencyStrategy', () => {
  const s = new LeastLatencyStrategy();
  const m = modelOf([route('slow'), route('fast'), route('mid')], { exploration: 0.2 });
  const stats = { slow: { ttftMs: 900 }, fast: { ttftMs: 80 }, mid: { ttftMs: 300 } };

  it('sends most traffic to the lowest recent time to first token, and explores the rest', () => {
    const counts: Record<string, number> = { slow: 0, fast: 0, mid: 0 };
    const draws = 20_000;
    const inp = input(m, m.routes, stats, 77);
    for (let i = 0; i < draws; i++) counts[s.plan(inp)[0].id]++;
    // Expected 0.8 / 0.1 / 0.1; six standard errors of these shares are under 0.015.
    expect(Math.abs(counts.fast / draws - 0.8)).toBeLessThan(0.015);
    expect(Math.abs(counts.slow / draws - 0.1)).toBeLessThan(0.015);
    expect(Math.abs(counts.mid / draws - 0.1)).toBeLessThan(0.015);
    expect(s.shares(inp)).toEqual([0.1, 0.8, 0.1]);
  });

  it('follows with the others by latency', () => {
    const noExplore = modelOf(m.routes as RouteDef[], { exploration: 0 });
    expect(s.plan(input(noExplore, noExplore.routes, stats)).map((r) => r.id)).toEqual(['fast', 'mid', 'slow']);
  });

  it('tries a route without measurements first (a new or recovered endpoint)', () => {
    const noExplore = modelOf(m.routes as RouteDef[], { exploration: 0 });
    expect(s.plan(input(noExplore, noExplore.routes, { fast: { ttftMs: 80 }, mid: { ttftMs: 300 } }))[0].id).toBe('slow');
  });

  it('puts last a route whose recent attempts all failed, whatever the cause, rather than first as unmeasured', () => {
    // A route that answers 404 (a model its server does not have) never opens its circuit and
    // never gets a time to first token: as unmeasured it was every request's first try, for ever.
    const noExplore = modelOf(m.routes as RouteDef[], { exploration: 0 });
    const failing = { slow: { failureRate: 1, attempts: 3, errorRate: 0 }, fast: { ttftMs: 80 }, mid: { ttftMs: 300 } };
    expect(s.plan(input(noExplore, noExplore.routes, failing)).map((r) => r.id)).toEqual(['fast', 'mid', 'slow']);
    // Some attempts failed, none measured yet: still unmeasured, tried first; so after one or two
    // failures alone (a client's bad request would otherwise send a new route last).
    expect(s.plan(input(noExplore, noExplore.routes, { ...failing, slow: { failureRate: 0.5, attempts: 4 } }))[0].id).toBe('slow');
    expect(s.plan(input(noExplore, noExplore.routes, { ...failing, slow: { failureRate: 1, attempts: 2 } }))[0].id).toBe('slow');
    // Explored now and then all the same, so that its first answer measures it again.
    const inp = input(m, m.routes, failing, 5);
    let first = 0;
    for (let i = 0; i < 5000; i++) if (s.plan(inp)[0].id === 'slow') first++;
    expect(first / 5000).toBeGreaterThan(0.07);
    expect(first / 5000).toBeLessThan(0.13);
  });

  it('puts last a measured route whose latest attempts failed in a row (its old samples are still in the window)', () => {
    const noExplore = modelOf(m.routes as RouteDef[], { exploration: 0 });
    const failing = { slow: { ttftMs: 900 }, fast: { ttftMs: 80, failureRate: 0.2, attempts: 20, failedInARow: 3 }, mid: { ttftMs: 300 } };
    expect(s.plan(input(noExplore, noExplore.routes, failing)).map((r) => r.id)).toEqual(['mid', 'slow', 'fast']);
    expect(s.plan(input(noExplore, noExplore.routes, { ...failing, fast: { ttftMs: 80, failedInARow: 2 } }))[0].id).toBe('fast');
  });

  it('defaults exploration to 0.1 and refuses one outside 0..1', () => {
    expect(s.shares(input(modelOf([route('a'), route('b')]), undefined, { a: { ttftMs: 1 }, b: { ttftMs: 2 } }))).toEqual([0.9, 0.1]);
    expect(s.validate(modelOf([], { exploration: 2 }))).toEqual(['models.yaml:1: router_params.exploration must be a number from 0 to 1']);
    expect(s.validate(modelOf([], { exploration: 0.3 }))).toEqual([]);
  });
});

describe('CostStrategy', () => {
  const s = new CostStrategy();

  it("picks the cheapest route at its own price (a route's pricing overrides the model's)", () => {
    const m = modelOf([route('model-price'), route('pricey', 1, '5'), route('cheap', 1, '0.2')]);
    const req = { model: 'm', messages: [{ role: 'user' as const, content: 'hello' }], max_tokens: 100 };
    expect(s.plan(input(m, m.routes, {}, 1, req)).map((r) => r.id)).toEqual(['cheap', 'model-price', 'pricey']);
    expect(s.shares(input(m))).toEqual([0, 0, 1]);
  });

  it('weighs prompt and completion prices by the tokens of this request', () => {
    const promptHeavy = {
      ...route('prompt-cheap'),
      pricing: { prompt: tokenPrice('0.1'), completion: tokenPrice('10'), request: FREE, image: FREE },
    } as RouteDef;
    const completionHeavy = {
      ...route('completion-cheap'),
      pricing: { prompt: tokenPrice('3'), completion: tokenPrice('0.1'), request: FREE, image: FREE },
    } as RouteDef;
    const m = modelOf([promptHeavy, completionHeavy]);
    const longPrompt = { model: 'm', messages: [{ role: 'user' as const, content: 'x'.repeat(40_000) }], max_tokens: 10 };
    const longAnswer = { model: 'm', messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 4000 };
    expect(s.plan(input(m, m.routes, {}, 1, longPrompt))[0].id).toBe('prompt-cheap');
    expect(s.plan(input(m, m.routes, {}, 1, longAnswer))[0].id).toBe('completion-cheap');
  });
});
