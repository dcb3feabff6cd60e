import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { DatabaseHealthIndicator } from './database.health';
import { DatabaseOutageInterceptor } from './database-outage';
import { DatabaseService } from './database.service';
import { RequestLogWriter } from './request-log.writer';
import { ApiKeysService } from './api-keys.service';
import { StatsRepository } from './stats.repository';

@Module({
  imports: [TerminusModule],
  providers: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator, ApiKeysService, StatsRepository, DatabaseOutageInterceptor],
  exports: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator, ApiKeysService, StatsRepository, DatabaseOutageInterceptor],
})
export class StorageModule {}
