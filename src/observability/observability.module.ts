import { Global, Module, type DynamicModule } from '@nestjs/common';
import { AppLogger } from './app-logger';
import { MetricsService } from './metrics.service';

/** Logs and metrics: used by every layer, owned by none. */
@Global()
@Module({})
export class ObservabilityModule {
  static forRoot(logger: AppLogger): DynamicModule {
    return {
      module: ObservabilityModule,
      providers: [{ provide: AppLogger, useValue: logger }, MetricsService],
      exports: [AppLogger, MetricsService],
    };
  }
}
