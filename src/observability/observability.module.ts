import { Global, Module, type DynamicModule } from '@nestjs/common';
import { AppLogger } from './app-logger';
import { HeapReclaimer } from './heap-reclaimer';
import { MetricsService } from './metrics.service';

/** Logs, metrics and the process's memory: used by every layer, owned by none. */
@Global()
@Module({})
export class ObservabilityModule {
  static forRoot(logger: AppLogger): DynamicModule {
    return {
      module: ObservabilityModule,
      providers: [{ provide: AppLogger, useValue: logger }, MetricsService, HeapReclaimer],
      exports: [AppLogger, MetricsService],
    };
  }
}
