import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { within } from '../common/deadline';
import { RedisService } from './redis.service';

@Injectable()
export class RedisHealthIndicator {
  private pinging?: Promise<unknown>;

  constructor(
    private readonly redis: RedisService,
    private readonly health: HealthIndicatorService,
  ) {}

  /** Without REDIS_URL there is nothing to check. An unreachable Redis is `degraded`: the gateway serves on per-process state. */
  async check(): Promise<HealthIndicatorResult> {
    const session = this.health.check('redis');
    const status = this.redis.status;
    if (status === 'disabled') return session.up({ mode: 'per-process (REDIS_URL not set)' });
    const client = this.redis.client;
    if (client) {
      try {
        // A Redis that holds the connection but never answers must not hold the health check,
        // nor gather a ping per check.
        this.pinging ??= client.ping().finally(() => (this.pinging = undefined));
        await within(this.pinging, 500);
        return session.up({ mode: 'shared' });
      } catch (err) {
        // A ping the command timeout cut: Redis is taken as down (the limits stop asking it).
        this.redis.noteFailure(err);
        return session.degraded({
          mode: 'per-process',
          message: `redis ping failed (${this.redis.error ?? (err as Error).message}); limits and shared state are per process until it is back`,
        });
      }
    }
    return session.degraded({
      mode: 'per-process',
      message: `redis unreachable (${this.redis.error ?? status}); limits and shared state are per process until it is back`,
    });
  }
}
