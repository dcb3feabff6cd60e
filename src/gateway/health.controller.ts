import { Controller, Get } from '@nestjs/common';
import { HealthCheck, HealthCheckService } from '@nestjs/terminus';
import { RedisHealthIndicator } from '../redis/redis.health';
import { DatabaseHealthIndicator } from '../storage/database.health';

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly database: DatabaseHealthIndicator,
    private readonly redis: RedisHealthIndicator,
  ) {}

  /** Liveness: 200 while the gateway can serve; a database outage shows as `degraded`. */
  @Get()
  @HealthCheck()
  live() {
    return this.health.check([() => this.database.check(false), () => this.redis.check()]);
  }

  /** Readiness: 503 unless every dependency is up. */
  @Get('ready')
  @HealthCheck()
  ready() {
    return this.health.check([() => this.database.check(true), () => this.redis.check()]);
  }
}
