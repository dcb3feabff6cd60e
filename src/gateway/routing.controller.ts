import { Controller, Get } from '@nestjs/common';
import { ModelRegistry } from '../config/model-registry.service';
import { RoutingManager } from '../routing/routing-manager.service';

/** Public view of routing: models, strategies, routes and their traffic shares; never URLs or keys. */
@Controller('routing')
export class RoutingController {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly manager: RoutingManager,
  ) {}

  @Get()
  describe() {
    const snap = this.registry.current();
    return {
      default_strategy: snap.routing.strategy,
      local_fraction: snap.routing.localFraction,
      loaded_at: snap.loadedAt.toISOString(),
      models: this.manager.describe(snap),
    };
  }
}
