import { Controller, Get, Param, Query } from '@nestjs/common';
import { InvalidRequestError, ModelNotFoundError } from '../common/errors';
import type { ModelDef } from '../config/registry.types';
import { ModelRegistry } from '../config/model-registry.service';
import { RoutingManager } from '../routing/routing-manager.service';
import { presentEndpoints, presentModel } from './models.presenter';

@Controller('v1/models')
export class ModelsController {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly routing: RoutingManager,
  ) {}

  /**
   * OpenRouter's filters: `supported_parameters` (models that take every one listed) and
   * `output_modalities` (models that output any one listed; `all`, or no filter, for every model:
   * OpenRouter lists text models only without it, but the OpenAI SDK's callers expect the whole
   * list). `category` has nothing to filter here: every model is listed.
   */
  @Get()
  list(@Query('supported_parameters') params?: unknown, @Query('output_modalities') outputs?: unknown) {
    const wanted = listParam(params, 'supported_parameters');
    const output = listParam(outputs, 'output_modalities');
    const keep = (m: ModelDef) =>
      (!wanted || wanted.every((p) => m.supportedParameters.includes(p))) &&
      (!output || output.includes('all') || m.architecture.output_modalities.some((o) => output.includes(o)));
    return { object: 'list', data: this.registry.current().models.filter(keep).map(presentModel) };
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

/** A comma-separated query parameter as its values; undefined when absent or empty. */
function listParam(v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string')
    throw new InvalidRequestError(`${name} must be given once, as a comma-separated list`, name, 'invalid_parameter');
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return list.length > 0 ? list : undefined;
}
