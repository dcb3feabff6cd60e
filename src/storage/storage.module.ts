import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { DatabaseHealthIndicator } from './database.health';
import { DatabaseService } from './database.service';
import { RequestLogWriter } from './request-log.writer';
import { ApiKeysService } from './api-keys.service';
import { StatsRepository } from './stats.repository';

@Module({
  imports: [TerminusModule],
  providers: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator, ApiKeysService, StatsRepository],
  exports: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator, ApiKeysService, StatsRepository],
})
export class StorageModule {}
