import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { AdaptersModule } from '../adapters/adapters.module';
import { RoutingModule } from '../routing/routing.module';
import { StorageModule } from '../storage/storage.module';
import { ChatCompletionService } from './chat-completion.service';
import { ChatCompletionsController } from './chat-completions.controller';
import { CompletionsController } from './completions.controller';
import { EmbeddingsController } from './embeddings.controller';
import { EmbeddingsService } from './embeddings.service';
import { GatewayCalls } from './gateway-call.service';
import { HealthController } from './health.controller';
import { InflightService } from './inflight.service';
import { MetricsController } from './metrics.controller';
import { ModelsController } from './models.controller';
import { RoutingController } from './routing.controller';
import { ApiKeyGuard } from './api-key.guard';
import { GenerationController } from './generation.controller';
import { KeyInfoController } from './key-info.controller';
import { UsageLimiter } from './usage-limiter.service';
import { TextCompletionService } from './text-completion.service';
import { AnthropicModelsController, MessagesController } from './anthropic/messages.controller';
import { MessagesService } from './anthropic/messages.service';
import { HealthCheckLogger } from './health-check.logger';

/** Northbound HTTP: the OpenAI-compatible API, Anthropic's Messages API, health, public routing view and metrics. */
@Module({
  imports: [RoutingModule, StorageModule, TerminusModule.forRoot({ logger: HealthCheckLogger }), AdaptersModule],
  controllers: [
    ChatCompletionsController,
    ModelsController,
    RoutingController,
    HealthController,
    MetricsController,
    GenerationController,
    KeyInfoController,
    EmbeddingsController,
    CompletionsController,
    MessagesController,
    AnthropicModelsController,
  ],
  providers: [
    ChatCompletionService,
    InflightService,
    ApiKeyGuard,
    UsageLimiter,
    GatewayCalls,
    EmbeddingsService,
    TextCompletionService,
    MessagesService,
  ],
})
export class GatewayModule {}
