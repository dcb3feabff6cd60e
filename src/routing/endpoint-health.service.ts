import { Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { SchedulerRegistry } from '@nestjs/schedule';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import { UpstreamError } from '../common/errors';
import { ModelRegistry } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { RouteStateService } from './route-state.service';
import { SharedStateService, type HealthResult } from './shared-state.service';

const PROBE_INTERVAL = 'routing-health-probes';

/**
 * Active health checks: every routing.yaml `health_check` seconds (0 = off) each endpoint is
 * probed through its adapter (`GET /health` for vLLM / SGLang, `/v1/models` with the route's
 * credentials for other OpenAI-compatible servers) within `health_check_timeout_ms`. An endpoint
 * whose probe fails gets no traffic until a probe succeeds again; a probe that succeeds also lets
 * the endpoint's open circuits try again at once.
 */
@Injectable()
export class EndpointHealthService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('EndpointHealth');
  private intervalMs = 0;
  private running = false;
  private stopped = false;
  private readonly stop = new AbortController();

  constructor(
    private readonly registry: ModelRegistry,
    private readonly adapters: AdapterRegistry,
    private readonly state: RouteStateService,
    private readonly shared: SharedStateService,
    private readonly scheduler: SchedulerRegistry,
  ) {}

  onApplicationBootstrap(): void {
    this.configure();
  }

  onApplicationShutdown(): void {
    this.stopped = true;
    this.stop.abort();
    if (this.scheduler.doesExist('interval', PROBE_INTERVAL)) this.scheduler.deleteInterval(PROBE_INTERVAL);
  }

  /** (Re)starts probing at the current config's interval; called at boot and after each reload. */
  configure(): void {
    const ms = Math.round(this.registry.current().routing.healthCheckSeconds * 1000);
    if (ms === this.intervalMs) return;
    if (this.scheduler.doesExist('interval', PROBE_INTERVAL)) this.scheduler.deleteInterval(PROBE_INTERVAL);
    this.intervalMs = ms;
    if (ms <= 0) {
      this.state.clearHealth();
      this.logger.log('active health checks off');
      return;
    }
    const timer = setInterval(() => void this.probeAll(), ms);
    timer.unref();
    this.scheduler.addInterval(PROBE_INTERVAL, timer);
    this.logger.log(`probing endpoints every ${ms / 1000} s`);
    // At once, so that a dead endpoint is known before the first interval has passed.
    void this.probeAll();
  }

  /** One round: every endpoint of the current config, at most one round at a time. */
  async probeAll(): Promise<void> {
    if (this.running || this.stopped || this.intervalMs <= 0) return;
    this.running = true;
    try {
      const targets = new Map<string, { model: ModelDef; route: RouteDef }>();
      for (const model of this.registry.current().models) {
        for (const route of model.routes) {
          const key = this.state.get(model, route).endpoint.key;
          if (!targets.has(key)) targets.set(key, { model, route });
        }
      }
      const mine = await this.shared.claimProbes([...targets.keys()], this.intervalMs);
      await Promise.all(mine.map((key) => this.probe(key, targets.get(key)!.route)));
    } catch (err) {
      this.logger.error(`health probe round failed: ${(err as Error).message}`);
    } finally {
      this.running = false;
    }
  }

  private async probe(key: string, route: RouteDef): Promise<void> {
    const adapter = this.adapters.get(route.kind);
    if (!adapter?.probe) return; // nothing to ask: judged by its traffic alone
    const timeoutMs = this.registry.current().routing.healthCheckTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = AbortSignal.any([timeout, this.stop.signal]);
    const started = performance.now();
    let result: HealthResult;
    try {
      const r = await adapter.probe(route, signal);
      result = { ok: r.ok, detail: r.detail, latencyMs: r.latencyMs };
    } catch (err) {
      const detail = timeout.aborted
        ? `no answer within ${timeoutMs} ms`
        : err instanceof UpstreamError || err instanceof Error
          ? err.message
          : String(err);
      result = { ok: false, detail, latencyMs: performance.now() - started };
    }
    // Checks turned off while it ran (a reload): its verdict would stand with nothing to undo it.
    if (this.stopped || this.intervalMs <= 0) return;
    const before = this.state.findEndpoint(key)?.status;
    if (this.state.setHealth(key, result)) {
      if (result.ok) this.logger.log(before === 'unhealthy' ? `endpoint ${key} is healthy again` : `endpoint ${key} is healthy`);
      else this.logger.warn(`endpoint ${key} failed its health check (${result.detail ?? 'no detail'}); no traffic until it passes`);
    }
    this.shared.publishHealth(key, result);
  }
}
