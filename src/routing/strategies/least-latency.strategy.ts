import { Injectable } from '@nestjs/common';
import type { ModelDef, RouteDef } from '../../config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';
import { latencyOrder, latencyShares } from '../weights';

export const DEFAULT_EXPLORATION = 0.1;

function exploration(model: ModelDef): number {
  const v = model.routerParams.exploration;
  return v === undefined ? DEFAULT_EXPLORATION : Number(v);
}

/**
 * The route with the lowest recent time to first token (mean over routing.yaml's
 * `stats_window`), the others after it by latency. A share `router_params.exploration` (default
 * 0.1) of requests goes first to another route, so that an endpoint that got faster, or
 * recovered, is measured again and wins its traffic back. Unmeasured routes are tried first.
 */
@Injectable()
@RoutingStrategy({ name: 'least_latency', params: ['exploration'] })
export class LeastLatencyStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    const latencies = input.routes.map((r) => input.stats(r).ttftMs);
    return latencyOrder(latencies, exploration(input.model), input.random).map((i) => input.routes[i]);
  }

  shares(input: StrategyInput): number[] {
    return latencyShares(
      input.routes.map((r) => input.stats(r).ttftMs),
      exploration(input.model),
    );
  }

  validate(model: ModelDef): string[] {
    const e = exploration(model);
    return Number.isFinite(e) && e >= 0 && e <= 1 ? [] : [`${model.where}: router_params.exploration must be a number from 0 to 1`];
  }
}
