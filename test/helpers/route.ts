import type { RouteDef } from '../../src/config/registry.types';

/** A route as the config parser would build it, for specs: name what matters, the rest defaults. */
export function testRoute(fields: Pick<RouteDef, 'id' | 'kind' | 'providerModelId'> & Partial<RouteDef>): RouteDef {
  return { apiKeys: [], weight: 1, locality: 'remote', headers: {}, timeouts: {}, options: {}, where: 'test', ...fields };
}
