import { Module, type DynamicModule } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { AdminModule } from './admin/admin.module';
import { OpenAiExceptionFilter } from './common/openai-exception.filter';
import { AppConfigModule, type AppConfigOptions } from './config/app-config.module';
import { GatewayModule } from './gateway/gateway.module';
import { AppLogger } from './observability/app-logger';
import { ObservabilityModule } from './observability/observability.module';
import { RedisModule } from './redis/redis.module';
import { SubscriptionModule } from './subscription/subscription.module';

@Module({})
export class AppModule {
  static forRoot(options: AppConfigOptions & { logger: AppLogger }): DynamicModule {
    return {
      module: AppModule,
      imports: [
        AppConfigModule.forRoot(options),
        ObservabilityModule.forRoot(options.logger),
        RedisModule,
        GatewayModule,
        AdminModule,
        SubscriptionModule,
      ],
      providers: [{ provide: APP_FILTER, useClass: OpenAiExceptionFilter }],
    };
  }
}
