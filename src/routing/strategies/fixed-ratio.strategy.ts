import { Injectable } from '@nestjs/common';
import type { RouteDef } from '../../config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';
import { fixedRatioWeights, weightedOrder } from '../weights';

/**
 * routing.yaml's fixed split: `routing_parameter.local_fraction` of traffic to local routes
 * (evenly), the rest to remote routes (evenly); the other side serves as fallback.
 */
@Injectable()
@RoutingStrategy({ name: 'fixed', params: [] })
export class FixedRatioStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return weightedOrder(this.shares(input), input.random).map((i) => input.routes[i]);
  }

  shares(input: StrategyInput): number[] {
    return fixedRatioWeights(
      input.routes.map((r) => r.locality),
      input.routing.localFraction,
      input.routes.map((r) => r.weight > 0),
    );
  }
}
