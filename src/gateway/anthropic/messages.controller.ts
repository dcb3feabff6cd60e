import { Controller, Get, HttpCode, Param, Post, Query, Req, Res, UseGuards } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ModelNotFoundError } from '../../common/errors';
import { ModelRegistry } from '../../config/model-registry.service';
import { ApiKeyGuard } from '../api-key.guard';
import { MessagesService } from './messages.service';
import { anthropicModel, anthropicModelPage } from './models.presenter';

/**
 * Anthropic's Messages API, under `/anthropic` (an Anthropic SDK with base URL
 * `http://gateway/anthropic`) and at the root (`/v1/messages`, for a base URL of the gateway
 * itself). `?beta=true`, which the SDK's beta client adds, is accepted and changes nothing.
 */
@Controller()
@UseGuards(ApiKeyGuard)
export class MessagesController {
  constructor(private readonly messages: MessagesService) {}

  /** Writes its own response (JSON or SSE), so no interceptor ever buffers a stream. */
  @Post(['anthropic/v1/messages', 'v1/messages'])
  @HttpCode(200)
  async create(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.messages.create(req, res);
  }

  @Post(['anthropic/v1/messages/count_tokens', 'v1/messages/count_tokens'])
  @HttpCode(200)
  async countTokens(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.messages.countTokens(req, res);
  }
}

/** `GET /anthropic/v1/models[/{id}]`: the chat models in Anthropic's list shape, paged as Anthropic pages. */
@Controller('anthropic/v1/models')
export class AnthropicModelsController {
  constructor(private readonly registry: ModelRegistry) {}

  @Get()
  list(@Query('limit') limit?: unknown, @Query('after_id') afterId?: unknown, @Query('before_id') beforeId?: unknown) {
    return anthropicModelPage(this.registry.current().models, { limit, afterId, beforeId });
  }

  /** Ids contain slashes (`vendor/model`), hence the wildcard. */
  @Get('*id')
  get(@Param('id') id: string | string[]) {
    const name = Array.isArray(id) ? id.join('/') : id;
    const model = this.registry.resolve(name);
    if (!model || model.type !== 'chat') throw new ModelNotFoundError(name);
    return anthropicModel(model);
  }
}
