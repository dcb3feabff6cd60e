import { Injectable } from '@nestjs/common';
import type { RouteDef } from '../../config/registry.types';
import { cheapestFirst, estimateCost, estimateRequestTokens } from '../cost-estimate';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';

/**
 * The cheapest route for this request: its estimated prompt tokens and expected completion
 * (max_tokens, else `router_params.expected_completion_tokens`, else 256) at each route's price
 * (the route's own `pricing`, else the model's). Dearer routes follow as fallbacks; equal prices
 * keep listed order.
 */
@Injectable()
@RoutingStrategy({ name: 'cost', params: ['expected_completion_tokens'] })
export class CostStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return cheapestFirst(this.costs(input)).map((i) => input.routes[i]);
  }

  shares(input: StrategyInput): number[] {
    const first = cheapestFirst(this.costs(input))[0];
    return input.routes.map((_, i) => (i === first ? 1 : 0));
  }

  private costs(input: StrategyInput): bigint[] {
    const tokens = estimateRequestTokens(input.request, input.model);
    return input.routes.map((r) => estimateCost(input.model, r, tokens));
  }
}
