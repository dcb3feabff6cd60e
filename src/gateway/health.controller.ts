import { Controller, Get, Res, ServiceUnavailableException } from '@nestjs/common';
import { HealthCheck, HealthCheckService, type HealthIndicatorFunction } from '@nestjs/terminus';
import type { Response } from 'express';
import { RedisHealthIndicator } from '../redis/redis.health';
import { RoutingHealthIndicator } from '../routing/routing.health';
import { DatabaseHealthIndicator } from '../storage/database.health';

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly database: DatabaseHealthIndicator,
    private readonly redis: RedisHealthIndicator,
    private readonly routing: RoutingHealthIndicator,
  ) {}

  /**
   * Liveness: 200 while the gateway can serve any model; a database outage, unhealthy endpoints
   * and models left without a route show as `degraded`; 503 once no model can be served.
   */
  @Get()
  @HealthCheck()
  live(@Res({ passthrough: true }) res: Response) {
    return this.report(res, [() => this.database.check(false), () => this.redis.check(), () => this.routing.check(false)]);
  }

  /** Readiness: 503 unless every dependency and every endpoint is up. */
  @Get('ready')
  @HealthCheck()
  ready(@Res({ passthrough: true }) res: Response) {
    return this.report(res, [() => this.database.check(true), () => this.redis.check(), () => this.routing.check(true)]);
  }

  /** A failing check is a 503 that still shows Terminus' details (what is down and why), not a bare error. */
  private async report(res: Response, checks: HealthIndicatorFunction[]) {
    try {
      return await this.health.check(checks);
    } catch (err) {
      if (!(err instanceof ServiceUnavailableException)) throw err;
      res.status(503);
      return err.getResponse();
    }
  }
}
