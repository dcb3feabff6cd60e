import { Controller, Get, HttpCode, Post, UseGuards, UseInterceptors } from '@nestjs/common';
import { SECRET_NAME } from '../common/secret-names';
import { GatewayError } from '../common/errors';
import type { UpstreamTimeouts } from '../config/app-config';
import { ModelRegistry } from '../config/model-registry.service';
import { RouteExecutor } from '../routing/route-executor.service';
import { RouteStateService, type RouteState } from '../routing/route-state.service';
import { routeSettings } from '../routing/route-settings';
import { RoutingManager } from '../routing/routing-manager.service';
import { RoutingReloadService } from '../routing/routing-reload.service';
import { AdminAuditInterceptor } from './admin-audit.interceptor';
import { AdminGuard } from './admin.guard';

/** A reload that was refused: the file's problems, and the old configuration stays. */
class ConfigRefusedError extends GatewayError {
  readonly status = 422;
  readonly type = 'invalid_request_error';
  override readonly code = 'config_refused';
}

/** A route's timeouts in models.yaml's spelling (`timeouts: {first_token_ms: ...}`). */
function timeoutsView(t: UpstreamTimeouts) {
  return { connect_ms: t.connectMs, first_byte_ms: t.firstByteMs, first_token_ms: t.firstTokenMs, idle_ms: t.idleMs, total_ms: t.totalMs };
}

/**
 * An upstream URL with its credentials blanked out: `user:password@` (either may be the key), and
 * parameters such as `?key=`, `?sig=` or Azure Functions' `?code=` (keys belong in api_key, but a URL is where some are
 * written). The view is for operators, and ends up in tickets and screenshots.
 */
export function displayUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return text;
  }
  let changed = false;
  // A user name alone may be the token itself (https://sk-...@host).
  if (url.username || url.password) {
    if (url.username) url.username = 'redacted';
    if (url.password) url.password = 'redacted';
    changed = true;
  }
  for (const name of [...url.searchParams.keys()]) {
    if (!SECRET_NAME.test(name)) continue;
    url.searchParams.set(name, 'redacted');
    changed = true;
  }
  // Unchanged, as written (URL would add a trailing slash to a bare origin).
  return changed ? url.toString() : text;
}

const round = (n: number | undefined, digits = 1) => (n === undefined ? null : Math.round(n * 10 ** digits) / 10 ** digits);

/**
 * The operator's view of routing: like /routing, plus upstream URLs, model names, timeouts (never
 * keys), each route's circuit and endpoint health, and its recent latency and error figures.
 * POST /admin/routing/reload re-reads the config files.
 */
@Controller('admin/routing')
@UseGuards(AdminGuard)
@UseInterceptors(AdminAuditInterceptor)
export class RoutingAdminController {
  constructor(
    private readonly registry: ModelRegistry,
    private readonly manager: RoutingManager,
    private readonly executor: RouteExecutor,
    private readonly state: RouteStateService,
    private readonly reloader: RoutingReloadService,
  ) {}

  @Get()
  detail() {
    const snap = this.registry.current();
    const shares = new Map(this.manager.describe(snap).map((m) => [m.id, m]));
    const r = snap.routing;
    return {
      default_strategy: r.strategy,
      local_fraction: r.localFraction,
      health_check_seconds: r.healthCheckSeconds,
      // In routing.yaml's own spelling, as the rest of this view.
      retry: {
        max_retries: r.retry.maxRetries,
        backoff_ms: r.retry.backoffMs,
        max_backoff_ms: r.retry.maxBackoffMs,
        max_retry_after_ms: r.retry.maxRetryAfterMs,
        max_attempts: r.retry.maxAttempts,
      },
      circuit_breaker: {
        failure_threshold: r.circuitBreaker.failureThreshold,
        cooldown_seconds: r.circuitBreaker.cooldownMs / 1000,
        half_open_requests: r.circuitBreaker.halfOpenRequests,
      },
      stats_window: { size: r.statsWindow.size, seconds: r.statsWindow.seconds },
      loaded_at: snap.loadedAt.toISOString(),
      models: snap.models.map((m) => ({
        id: m.id,
        strategy: shares.get(m.id)?.strategy,
        routes: m.routes.map((route, i) => {
          const st = this.state.get(m, route);
          return {
            id: route.id,
            kind: route.kind,
            base_url: route.baseUrl ? displayUrl(route.baseUrl) : null,
            provider_model_id: route.providerModelId,
            locality: route.locality,
            weight: route.weight,
            share: shares.get(m.id)?.routes[i]?.share ?? 0,
            available: shares.get(m.id)?.routes[i]?.available ?? false,
            api_keys: route.apiKeys.length,
            context_length: routeSettings(route).contextLength ?? m.contextLength,
            timeouts: timeoutsView(this.executor.timeoutsFor(route, snap)),
            circuit: this.circuit(st),
            health: {
              endpoint: st.endpoint.key,
              status: st.endpoint.status,
              detail: st.endpoint.detail ?? null,
              latency_ms: round(st.endpoint.latencyMs),
              checked_at: st.endpoint.checkedAt ? new Date(st.endpoint.checkedAt).toISOString() : null,
            },
            stats: this.stats(st),
            where: route.where,
          };
        }),
      })),
    };
  }

  /** Re-reads models.yaml and routing.yaml; a bad file is refused with the reason (422) and the old config stays. */
  @Post('reload')
  @HttpCode(200)
  reload() {
    const before = this.registry.current();
    try {
      const snap = this.reloader.reload('admin API');
      const workers = this.reloader.reloadOthers();
      return {
        status: 'reloaded',
        loaded_at: snap.loadedAt.toISOString(),
        previous_loaded_at: before.loadedAt.toISOString(),
        models: snap.models.map((m) => m.id),
        default_strategy: snap.routing.strategy,
        warnings: snap.warnings,
        other_workers: workers ? 'asked to reload' : 'none',
      };
    } catch (err) {
      throw new ConfigRefusedError(
        `The new configuration was refused; the one loaded at ${before.loadedAt.toISOString()} stays. ${(err as Error).message}`,
      );
    }
  }

  private circuit(st: RouteState) {
    const b = st.breaker;
    const now = performance.now();
    // An open circuit whose cooldown is over lets trial requests through: half-open in all but
    // name until the next request moves it there.
    const cooled = b.state === 'open' && b.openUntil <= now;
    return {
      state: cooled ? 'half_open' : b.state,
      consecutive_failures: b.consecutiveFailures,
      retry_in_ms: b.state === 'open' && !cooled ? Math.round(b.openUntil - now) : null,
      shared: st.shared,
    };
  }

  private stats(st: RouteState) {
    const now = performance.now();
    const samples = st.outcomes.length(now);
    return {
      window_samples: samples,
      error_rate: samples > 0 ? round(st.outcomes.mean(now), 4) : null,
      // The route's failures, counted against its endpoint or not (a 404 or 400 for a model the
      // server lacks too), which least_latency ranks by.
      failure_rate: st.attempts.length(now) > 0 ? round(st.attempts.mean(now), 4) : null,
      ttft_ms: { mean: round(st.ttft.mean(now)), p50: round(st.ttft.quantile(0.5, now)), p95: round(st.ttft.quantile(0.95, now)) },
      latency_ms: {
        mean: round(st.latency.mean(now)),
        p50: round(st.latency.quantile(0.5, now)),
        p95: round(st.latency.quantile(0.95, now)),
      },
      tokens_per_second: round(st.throughput.mean(now)),
      requests_total: st.requests,
      failures_total: st.failures,
      last_error: st.lastError ?? null,
      last_error_at: st.lastErrorAt ? new Date(st.lastErrorAt).toISOString() : null,
    };
  }
}
