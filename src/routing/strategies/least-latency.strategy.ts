import { Injectable } from '@nestjs/common';
import type { ModelDef, RouteDef } from '../../config/registry.types';
import { RoutingStrategy, type StrategyInput } from '../routing-strategy';
import { latencyOrder, latencyShares } from '../weights';

export const DEFAULT_EXPLORATION = 0.1;

/**
 * Each route's recent time to first token. A route tried lately that never answered (its last
 * FAILING_ATTEMPTS or more attempts all failed, also for causes that do not count against its
 * endpoint: a 404 or a 400 for a model the server does not have) is measured, and last: as
 * unmeasured it was tried first by every request, for ever. Fewer failures (one bad request) do
 * not rank it so. A measured route that fails that many times in a row is last too, whatever its
 * earlier answers measured (they stay in the window). Exploration still tries it now and then, and
 * its first answer measures it again.
 */
function latencies(input: StrategyInput): Array<number | undefined> {
  return input.routes.map((r) => {
    const s = input.stats(r);
    // Failing now, whatever it measured before it failed: its old samples stay for the whole window.
    if ((s.failedInARow ?? 0) >= FAILING_ATTEMPTS) return Infinity;
    return s.ttftMs ?? (s.failureRate === 1 && (s.attempts ?? 0) >= FAILING_ATTEMPTS ? Infinity : undefined);
  });
}

/** How many attempts failed in a row (or, unmeasured, with none answered) make a route failing. */
export const FAILING_ATTEMPTS = 3;

function exploration(model: ModelDef): number {
  const v = model.routerParams.exploration;
  return v === undefined ? DEFAULT_EXPLORATION : Number(v);
}

/**
 * The route with the lowest recent time to first token (mean over routing.yaml's
 * `stats_window`), the others after it by latency. A share `router_params.exploration` (default
 * 0.1) of requests goes first to another route, so that an endpoint that got faster, or
 * recovered, is measured again and wins its traffic back. Unmeasured routes are tried first;
 * routes whose recent attempts all failed, last.
 */
@Injectable()
@RoutingStrategy({ name: 'least_latency', params: ['exploration'] })
export class LeastLatencyStrategy implements RoutingStrategy {
  plan(input: StrategyInput): RouteDef[] {
    return latencyOrder(latencies(input), exploration(input.model), input.random).map((i) => input.routes[i]);
  }

  shares(input: StrategyInput): number[] {
    return latencyShares(latencies(input), exploration(input.model));
  }

  validate(model: ModelDef): string[] {
    const e = exploration(model);
    return Number.isFinite(e) && e >= 0 && e <= 1 ? [] : [`${model.where}: router_params.exploration must be a number from 0 to 1`];
  }
}
