import { HealthIndicatorService } from '@nestjs/terminus';
import type { ModelRegistry } from '../config/model-registry.service';
import type { ModelDef } from '../config/registry.types';
import type { RouteStateService } from './route-state.service';
import { RoutingHealthIndicator } from './routing.health';

/** Models `a` and `b`, one route each; `down` lists the routes (by model id) that are not available. */
function indicator(down: string[]): RoutingHealthIndicator {
  const models = ['a', 'b'].map((id) => ({ id, routes: [{ id: `${id}-route` }] }) as unknown as ModelDef);
  const registry = { current: () => ({ models }) } as unknown as ModelRegistry;
  const state = {
    get: (model: ModelDef) => model.id,
    availability: (st: string) => (down.includes(st) ? 'circuit_open' : 'ok'),
    describe: () => 'circuit open',
  } as unknown as RouteStateService;
  return new RoutingHealthIndicator(registry, state, new HealthIndicatorService());
}

const statusOf = (r: ReturnType<RoutingHealthIndicator['check']>) => r.routing.status;

describe('RoutingHealthIndicator', () => {
  it('is up while every route takes traffic', () => {
    expect(statusOf(indicator([]).check(false))).toBe('up');
    expect(statusOf(indicator([]).check(true))).toBe('up');
  });

  it('keeps liveness degraded, not down, while one model has no route and another has', () => {
    const live = indicator(['a']).check(false);
    expect(live.routing).toMatchObject({ status: 'degraded', unservable_models: ['a'] });
    expect(statusOf(indicator(['a']).check(true))).toBe('down');
  });

  it('is down once no model can be served', () => {
    expect(indicator(['a', 'b']).check(false).routing).toMatchObject({ status: 'down', unservable_models: ['a', 'b'] });
  });
});
