import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { DatabaseService } from './database.service';
import { RequestLogWriter } from './request-log.writer';

@Injectable()
export class DatabaseHealthIndicator {
  constructor(
    private readonly db: DatabaseService,
    private readonly writer: RequestLogWriter,
    private readonly health: HealthIndicatorService,
  ) {}

  /**
   * `up` when the database answers. When it does not, the gateway still serves (request logs
   * spool to disk), so the liveness view calls that `degraded`; the readiness view, `down`.
   */
  async check(strict: boolean): Promise<HealthIndicatorResult> {
    const session = this.health.check('database');
    const info = {
      backend: this.db.dialect,
      queued: this.writer.pending,
      spooled: this.writer.stats.spooled,
      replayed: this.writer.stats.replayed,
    };
    try {
      await this.db.ping(1500);
      return session.up(info);
    } catch (err) {
      const data = { ...info, message: `database unreachable (${(err as Error).message}); request logs are spooled to disk` };
      return strict ? session.down(data) : session.degraded(data);
    }
  }
}
