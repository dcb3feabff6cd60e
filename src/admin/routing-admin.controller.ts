import { Controller, Get, UseGuards } from '@nestjs/common';
import { ModelRegistry } from '../config/model-registry.service';
import { RouteExecutor } from '../routing/route-executor.service';
import { RoutingManager } from '../routing/routing-manager.service';
import { AdminGuard } from './admin.guard';

/** The operator's view of routing: like /routing, plus upstream URLs, model names and timeouts (never keys). */
@Controller('admin/routing')
@UseGuards(AdminGuard)
export class RoutingAdminController {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly manager: RoutingManager,
    private readonly executor: RouteExecutor,
  ) {}

  @Get()
  detail() {
    const snap = this.registry.current();
    const shares = new Map(this.manager.describe(snap).map((m) => [m.id, m]));
    return {
      default_strategy: snap.routing.strategy,
      local_fraction: snap.routing.localFraction,
      health_check_seconds: snap.routing.healthCheckSeconds,
      loaded_at: snap.loadedAt.toISOString(),
      models: snap.models.map((m) => ({
        id: m.id,
        strategy: shares.get(m.id)?.strategy,
        routes: m.routes.map((r, i) => ({
          id: r.id,
          kind: r.kind,
          base_url: r.baseUrl ?? null,
          provider_model_id: r.providerModelId,
          locality: r.locality,
          weight: r.weight,
          share: shares.get(m.id)?.routes[i]?.share ?? 0,
          api_keys: r.apiKeys.length,
          timeouts_ms: this.executor.timeoutsFor(r, snap),
          where: r.where,
        })),
      })),
    };
  }
}
