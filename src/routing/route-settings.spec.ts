import type { ModelDef, RouteDef, RoutingDef } from '../config/registry.types';
import { EMPTY_ROUTING } from '../config/routing.parser';
import { contextLengthOf, retryPolicyFor, routeSettings } from './route-settings';

const route = (options: Record<string, unknown>): RouteDef => ({
  id: 'r',
  kind: 'vllm',
  apiKeys: [],
  providerModelId: 'm',
  weight: 1,
  locality: 'local',
  headers: {},
  timeouts: {},
  options,
  where: 'models.yaml:7',
});
const model = { contextLength: 8192 } as ModelDef;
const routing: RoutingDef = EMPTY_ROUTING;

describe('routeSettings', () => {
  it('reads a route context_length and retry overrides', () => {
    const r = route({ context_length: 32768, retry: { max_retries: 5, backoff_ms: '50' } });
    expect(routeSettings(r)).toEqual({ contextLength: 32768, retry: { maxRetries: 5, backoffMs: 50 }, problems: [] });
    expect(contextLengthOf(model, r)).toBe(32768);
    expect(retryPolicyFor(r, routing)).toEqual({ ...routing.retry, maxRetries: 5, backoffMs: 50 });
  });

  it("falls back to the model's context and routing.yaml's policy (the same object, no copy)", () => {
    const r = route({});
    expect(contextLengthOf(model, r)).toBe(8192);
    expect(retryPolicyFor(r, routing)).toBe(routing.retry);
  });

  it('reports bad values with the route location', () => {
    expect(routeSettings(route({ context_length: 'big' })).problems).toEqual([
      'models.yaml:7: context_length must be a whole number of tokens, at least 1',
    ]);
    expect(routeSettings(route({ retry: [1] })).problems[0]).toMatch(/^models\.yaml:7: retry must be a mapping/);
    expect(routeSettings(route({ retry: { max_retries: -1, max_attempts: 3 } })).problems).toEqual([
      'models.yaml:7: retry.max_retries must be a whole number, at least 0',
      expect.stringMatching(/^models\.yaml:7: retry\.max_attempts is not a per-route setting/),
    ]);
  });
});
