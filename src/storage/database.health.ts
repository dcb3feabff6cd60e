import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { within } from '../common/deadline';
import { DatabaseService } from './database.service';
import { RequestLogWriter } from './request-log.writer';

const PING_TIMEOUT_MS = 1500;
/** How long the liveness and readiness views wait for the ping. */
const LIVE_WAIT_MS = 300;
const READY_WAIT_MS = 800;

@Injectable()
export class DatabaseHealthIndicator {
  constructor(
    private readonly db: DatabaseService,
    private readonly writer: RequestLogWriter,
    private readonly health: HealthIndicatorService,
  ) {}

  /** The ping in flight: health calls share it, so a silent database is not asked once per call. */
  private pinging?: Promise<void>;

  /**
   * `up` when the database answers. When it does not, the gateway still serves (request logs
   * spool to disk), so the liveness view calls that `degraded`; the readiness view, `down`.
   * Either answers within a fixed time however long the database takes (probes time out at 1 s
   * by default in Kubernetes): a ping not back by then counts as no answer.
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
      this.pinging ??= this.db.ping(PING_TIMEOUT_MS).finally(() => (this.pinging = undefined));
      await within(this.pinging, strict ? READY_WAIT_MS : LIVE_WAIT_MS);
      const failing = this.writer.failing;
      if (failing === undefined) return session.up(info);
      const data = {
        ...info,
        message: `the database answers but refuses request-log rows (${failing}); they are kept, in memory and then in the spool on disk`,
      };
      return strict ? session.down(data) : session.degraded(data);
    } catch (err) {
      const data = {
        ...info,
        message: `database unreachable (${(err as Error).message}); request logs are kept, in memory and then in the spool on disk`,
      };
      return strict ? session.down(data) : session.degraded(data);
    }
  }
}
