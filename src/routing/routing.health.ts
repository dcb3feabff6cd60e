import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { ModelRegistry } from '../config/model-registry.service';
import { RouteStateService } from './route-state.service';

/**
 * Routing as Terminus sees it. Liveness (`/health`): up while every route takes traffic;
 * `degraded` (still 200) while some routes are unhealthy or behind an open circuit, listing the
 * models left with no route (`unservable_models`); down (503) only once no model can be served.
 * Readiness (`/health/ready`, strict): down as soon as any route is degraded. Routes are named by
 * model and route id, never by URL: /health is public.
 */
@Injectable()
export class RoutingHealthIndicator {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly state: RouteStateService,
    private readonly health: HealthIndicatorService,
  ) {}

  check(strict: boolean): HealthIndicatorResult {
    const session = this.health.check('routing');
    const now = performance.now();
    const degraded: Array<{ model: string; route: string; reason: string }> = [];
    const unservable: string[] = [];
    const models = this.registry.current().models;
    let routes = 0;
    for (const model of models) {
      let up = 0;
      for (const route of model.routes) {
        routes++;
        const st = this.state.get(model, route);
        const a = this.state.availability(st, now);
        if (a === 'ok') up++;
        else degraded.push({ model: model.id, route: route.id, reason: this.state.describe(st, a, now) });
      }
      if (up === 0) unservable.push(model.id);
    }
    const info = { models: models.length, routes, degraded_endpoints: degraded };
    if (degraded.length === 0) return session.up(info);
    if (unservable.length === 0) return strict ? session.down(info) : session.degraded(info);
    const down = { ...info, unservable_models: unservable, message: `no route can serve ${unservable.join(', ')}` };
    // Liveness stays up while any model can be served: every replica sees the same dead
    // upstream, and a load balancer taking them all out would stop the other models too.
    return strict || unservable.length === models.length ? session.down(down) : session.degraded(down);
  }
}
