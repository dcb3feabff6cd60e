import { Controller, Get, Param } from '@nestjs/common';
import { ModelNotFoundError } from '../common/errors';
import { ModelRegistry } from '../config/model-registry.service';
import { presentModel } from './models.presenter';

@Controller('v1/models')
export class ModelsController {
  constructor(private readonly registry: ModelRegistry) {}

  @Get()
  list() {
    return { object: 'list', data: this.registry.current().models.map(presentModel) };
  }

  /** Ids contain slashes (`vendor/model`), hence the wildcard. */
  @Get('*id')
  get(@Param('id') id: string | string[]) {
    const name = Array.isArray(id) ? id.join('/') : id;
    const model = this.registry.resolve(name);
    if (!model) throw new ModelNotFoundError(name);
    return presentModel(model);
  }
}
