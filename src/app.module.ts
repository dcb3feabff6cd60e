import { Module, type DynamicModule } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { OpenAiExceptionFilter } from './common/openai-exception.filter';
import { AppConfigModule, type AppConfigOptions } from './config/app-config.module';
import { GatewayModule } from './gateway/gateway.module';
import { AppLogger } from './observability/app-logger';
import { ObservabilityModule } from './observability/observability.module';

@Module({})
export class AppModule {
  static forRoot(options: AppConfigOptions & { logger: AppLogger }): DynamicModule {
    return {
      module: AppModule,
      imports: [AppConfigModule.forRoot(options), ObservabilityModule.forRoot(options.logger), GatewayModule],
      providers: [{ provide: APP_FILTER, useClass: OpenAiExceptionFilter }],
    };
  }
}
