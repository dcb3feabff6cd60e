import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { DatabaseHealthIndicator } from './database.health';
import { DatabaseService } from './database.service';
import { RequestLogWriter } from './request-log.writer';

@Module({
  imports: [TerminusModule],
  providers: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator],
  exports: [DatabaseService, RequestLogWriter, DatabaseHealthIndicator],
})
export class StorageModule {}
