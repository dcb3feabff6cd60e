import { Injectable } from '@nestjs/common';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';
import { shares, weightedOrder } from '../weights';
import type { RouteDef } from '../../config/registry.types';

/** Random choice in proportion to each route's `weight`; the others follow as fallbacks. */
@Injectable()
@RoutingStrategy({ name: 'weighted', params: [] })
export class WeightedStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return weightedOrder(
      input.routes.map((r) => r.weight),
      input.random,
    ).map((i) => input.routes[i]);
  }

  shares(input: StrategyInput): number[] {
    return shares(input.routes.map((r) => r.weight));
  }
}
