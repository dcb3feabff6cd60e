import { Controller, Get, Param } from '@nestjs/common';
import { ModelNotFoundError } from '../common/errors';
import { ModelRegistry } from '../config/model-registry.service';
import { RoutingManager } from '../routing/routing-manager.service';
import { presentEndpoints, presentModel } from './models.presenter';

@Controller('v1/models')
export class ModelsController {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly routing: RoutingManager,
  ) {}

  @Get()
  list() {
    return { object: 'list', data: this.registry.current().models.map(presentModel) };
  }

  /** Ids contain slashes (`vendor/model`), hence the wildcard. */
  @Get('*id')
  get(@Param('id') id: string | string[]) {
    const name = Array.isArray(id) ? id.join('/') : id;
    const model = this.registry.resolve(name);
    if (model) return presentModel(model);
    // OpenRouter's GET /models/{author}/{slug}/endpoints: the model's providers, here its routes.
    const listed = name.endsWith('/endpoints') ? this.registry.resolve(name.slice(0, -'/endpoints'.length)) : undefined;
    if (listed) return presentEndpoints(listed, this.routing.endpoints(listed));
    throw new ModelNotFoundError(name);
  }
}
