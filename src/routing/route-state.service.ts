import { createHash } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import type { UpstreamError } from '../common/errors';
import { ModelRegistry } from '../config/model-registry.service';
import type { ModelDef, RouteDef, StatsWindowDef } from '../config/registry.types';
import { normaliseEndpoint } from '../config/routing.parser';
import { SECRET_NAME } from '../common/secret-names';
import { CircuitBreaker, type CircuitPermit, type CircuitTransition } from './circuit-breaker';
import { classifyFailure, countsAgainstEndpoint, type FailureClass } from './retry-policy';
import { SlidingWindow } from './sliding-window';

export type HealthStatus = 'unknown' | 'healthy' | 'unhealthy';

/** Whether a route takes traffic: yes, or why not. */
export type Availability = 'ok' | 'unhealthy' | 'circuit_open' | 'probing';

/** What active health checks know about one upstream endpoint (a base URL with its credentials). */
export interface EndpointHealth {
  readonly key: string;
  status: HealthStatus;
  detail?: string;
  /** Date.now() of the last probe result (ours or, with Redis, another process's). */
  checkedAt?: number;
  latencyMs?: number;
}

/** What one answered attempt tells the statistics. */
export interface AttemptSample {
  /** Time to the first content (streams) or to the whole answer (one-shot calls). */
  ttftMs: number;
  durationMs: number;
  completionTokens?: number;
}

/**
 * Everything the gateway knows about one route of one model: its circuit breaker, the health of
 * the endpoint it calls, and sliding windows of recent time to first token, latency, throughput
 * and errors. Keyed by model and route id, so it survives config reloads.
 */
export class RouteState {
  readonly breaker = new CircuitBreaker();
  ttft!: SlidingWindow;
  latency!: SlidingWindow;
  throughput!: SlidingWindow;
  /** 1 per failure that counts against the endpoint, 0 per success. */
  outcomes!: SlidingWindow;
  /** 1 per failure the route answered, whether or not it counts against the endpoint (a 404 or a 400 too), 0 per success. */
  attempts!: SlidingWindow;
  requests = 0;
  failures = 0;
  /** Attempts the route failed in a row for its own part (ROUTE_FAULTS); 0 after an answer. */
  failedInARow = 0;
  lastError?: string;
  /** Date.now() of the last failure. */
  lastErrorAt?: number;
  /** Whether the breaker's open state is in Redis (written by us or read from there). */
  shared = false;
  /** performance.now() of this process's last breaker transition (shared state read before it is stale). */
  changedAt = 0;
  /** Replaced after a reload pointed the route at another server; only requests begun before it still report here. */
  retired = false;
  window: StatsWindowDef;

  constructor(
    readonly key: string,
    readonly modelId: string,
    readonly routeId: string,
    public endpoint: EndpointHealth,
    window: StatsWindowDef,
  ) {
    this.window = window;
    this.resetStats(window);
  }

  resetStats(window: StatsWindowDef): void {
    this.window = window;
    const ms = window.seconds * 1000;
    this.ttft = new SlidingWindow(window.size, ms);
    this.latency = new SlidingWindow(window.size, ms);
    this.throughput = new SlidingWindow(window.size, ms);
    this.outcomes = new SlidingWindow(window.size, ms);
    this.attempts = new SlidingWindow(window.size, ms);
    this.failedInARow = 0;
  }
}

/** Figures a strategy may rank routes by. */
export interface RouteStats {
  /** Mean recent time to first token, ms; undefined until measured. */
  ttftMs?: number;
  /** Mean recent completion tokens per second; undefined until measured. */
  tokensPerSecond?: number;
  /** Share of recent attempts that failed through the endpoint's fault. */
  errorRate?: number;
  /** Share of recent attempts the route failed (a 400 too); undefined until one was made. */
  failureRate?: number;
  /** How many recent attempts that share is of. */
  attempts?: number;
  /** The route's latest attempts that all failed, in a row (0 after an answer). */
  failedInARow?: number;
}

/** Failures that say the route itself fails now: the ones counted in RouteState.failedInARow. */
const ROUTE_FAULTS: ReadonlySet<FailureClass> = new Set(['route', 'transient', 'slow', 'broken']);

export function routeKey(model: ModelDef, route: RouteDef): string {
  return `${model.id}|${route.id}`;
}

/**
 * Endpoints are what active health checks probe: one per base URL and credential (routes of
 * several models on one server share it). Backends without a URL (mock) are their own endpoint.
 * The credential is the first key with what else a route may authenticate by: its URL's user
 * info and credential query parameters (`?key=`), which the URL part of the key leaves out, and
 * its credential headers (SECRET_NAME; others, such as OpenRouter's X-Title or Azure's
 * api-version, leave the key as it was). Routes differing only by a credential were one endpoint,
 * probed with the first's and judged by it.
 */
export function endpointKey(model: ModelDef, route: RouteDef): string {
  if (!route.baseUrl) return `${route.kind}:${routeKey(model, route)}`;
  const headers = Object.entries(route.headers ?? {}).filter(([name]) => SECRET_NAME.test(name));
  const parts = [route.apiKeys[0] ?? '', ...urlCredentials(route.baseUrl), ...headers.sort().flat()];
  // Keyed by the first key alone when that is all there is: the digests routes had before.
  const credential = parts.slice(1).some((p) => p !== '') ? parts.join('\n') : parts[0];
  const key = credential ? `#${createHash('sha256').update(credential).digest('hex').slice(0, 8)}` : '';
  return `${route.kind} ${normaliseEndpoint(route.baseUrl)}${key}`;
}

/** A base URL's user, password and credential query parameters: what normaliseEndpoint leaves out of the endpoint. */
function urlCredentials(baseUrl: string): string[] {
  if (!baseUrl.includes('?') && !baseUrl.includes('@')) return [];
  try {
    const u = new URL(baseUrl);
    const query = [...u.searchParams].filter(([name]) => SECRET_NAME.test(name)).sort();
    return [u.username, u.password, ...query.flat()];
  } catch {
    return [];
  }
}

/**
 * Per-process routing state, all in memory: lookups are a WeakMap hit per route, breaker checks
 * and statistics are O(1), and nothing on the request path waits for I/O. Transitions of a
 * breaker are announced to listeners (SharedStateService copies them to Redis in the background).
 */
@Injectable()
export class RouteStateService {
  private readonly routes = new Map<string, RouteState>();
  private readonly endpoints = new Map<string, EndpointHealth>();
  private readonly byRoute = new WeakMap<RouteDef, RouteState>();
  private readonly listeners: Array<(st: RouteState, t: CircuitTransition) => void> = [];

  constructor(private readonly registry: ModelRegistry) {}

  get(model: ModelDef, route: RouteDef): RouteState {
    const cached = this.byRoute.get(route);
    if (cached) return cached;
    const key = routeKey(model, route);
    const window = this.registry.current().routing.statsWindow;
    const endpoint = this.endpoint(endpointKey(model, route));
    let st = this.routes.get(key);
    if (!st) {
      st = new RouteState(key, model.id, route.id, endpoint, window);
      this.routes.set(key, st);
    } else if (st.endpoint !== endpoint) {
      // A reload pointed the route elsewhere: what we knew was about another server. A new state,
      // not the old one reset: requests still in flight on the old server report to the old one
      // (through their route definition), and must not open the new server's circuit.
      st.retired = true;
      st = new RouteState(key, model.id, route.id, endpoint, window);
      this.routes.set(key, st);
    } else if (st.window.size !== window.size || st.window.seconds !== window.seconds) {
      st.resetStats(window);
    }
    this.byRoute.set(route, st);
    return st;
  }

  /** Makes sure every route of a snapshot has its state (cheap once done: a WeakMap hit per route). */
  prime(models: readonly ModelDef[]): void {
    for (const m of models) for (const r of m.routes) this.get(m, r);
  }

  /** Forgets routes and endpoints a new configuration no longer has (after a reload). */
  retain(models: readonly ModelDef[]): void {
    const keep = new Set<string>();
    const endpoints = new Set<string>();
    for (const m of models) {
      for (const r of m.routes) {
        const st = this.get(m, r);
        keep.add(st.key);
        endpoints.add(st.endpoint.key);
      }
    }
    for (const key of this.routes.keys()) if (!keep.has(key)) this.routes.delete(key);
    for (const key of this.endpoints.keys()) if (!endpoints.has(key)) this.endpoints.delete(key);
  }

  /** By model and route id (Redis sync); undefined for routes never seen by this process. */
  byKey(key: string): RouteState | undefined {
    return this.routes.get(key);
  }

  all(): IterableIterator<RouteState> {
    return this.routes.values();
  }

  /** An endpoint some route of this process uses, if any. */
  findEndpoint(key: string): EndpointHealth | undefined {
    return this.endpoints.get(key);
  }

  endpoint(key: string): EndpointHealth {
    let e = this.endpoints.get(key);
    if (!e) {
      e = { key, status: 'unknown' };
      this.endpoints.set(key, e);
    }
    return e;
  }

  onTransition(listener: (st: RouteState, t: CircuitTransition) => void): void {
    this.listeners.push(listener);
  }

  /** Whether the route can take traffic now: O(1), no allocation (checked for every route of every request). */
  availability(st: RouteState, now = performance.now()): Availability {
    if (st.endpoint.status === 'unhealthy') return 'unhealthy';
    const b = st.breaker;
    if (b.state === 'closed' || b.available(now, this.registry.current().routing.circuitBreaker)) return 'ok';
    return b.state === 'open' ? 'circuit_open' : 'probing';
  }

  /** Why a route is not available, for error messages and reports. */
  describe(st: RouteState, availability: Availability, now = performance.now()): string {
    switch (availability) {
      case 'ok':
        return 'available';
      case 'unhealthy':
        return `failing health checks${st.endpoint.detail ? ` (${st.endpoint.detail})` : ''}`;
      case 'circuit_open':
        return `circuit open after ${st.breaker.consecutiveFailures} consecutive failures, half-open in ${Math.max(0, Math.ceil((st.breaker.openUntil - now) / 1000))} s`;
      case 'probing':
        return 'circuit half-open, its probe requests are in flight';
    }
  }

  /** Whether the route's breaker would let an attempt through at `at` (no slot is taken). */
  admitsAt(st: RouteState, at: number): boolean {
    return st.breaker.available(at, this.registry.current().routing.circuitBreaker);
  }

  /** A permit to attempt this route now; undefined when its breaker refuses. */
  acquire(st: RouteState): CircuitPermit | undefined {
    return st.breaker.tryAcquire(performance.now(), this.registry.current().routing.circuitBreaker);
  }

  /**
   * A stream committed (its first content arrived): the endpoint works, so its breaker closes and
   * a half-open slot is freed now rather than when a long answer ends.
   */
  answered(st: RouteState, permit: CircuitPermit | undefined): void {
    const t = st.breaker.onSuccess(permit);
    if (t) this.emit(st, t);
  }

  succeeded(st: RouteState, permit: CircuitPermit | undefined, sample: AttemptSample): void {
    const now = performance.now();
    st.requests++;
    st.failedInARow = 0;
    st.outcomes.add(0, now);
    st.attempts.add(0, now);
    st.ttft.add(sample.ttftMs, now);
    st.latency.add(sample.durationMs, now);
    // Streams: tokens over the time after the first one; one-shot answers: over the whole call.
    const generating = sample.durationMs > sample.ttftMs ? sample.durationMs - sample.ttftMs : sample.durationMs;
    if (sample.completionTokens && sample.completionTokens > 1 && generating > 0)
      st.throughput.add((sample.completionTokens * 1000) / generating, now);
    const t = st.breaker.onSuccess(permit);
    if (t) this.emit(st, t);
  }

  failed(st: RouteState, permit: CircuitPermit | undefined, err: UpstreamError): void {
    if (err.failure === 'aborted') return this.cancelled(st, permit);
    const now = performance.now();
    const countable = countsAgainstEndpoint(err);
    st.requests++;
    // Every failure the route answered, a 400 too: a route that answers nothing but "Model Not
    // Exist" (a 400 at DeepSeek) is failing. Not one the gateway knows every route would answer
    // alike (the request itself is wrong); one bad request is not a failing route either (the
    // strategy wants a few failures before it ranks a route last: stats' failedAttempts).
    if (!err.sameOnEveryRoute) {
      // A streak counts from the window's start: one left from before it emptied is stale.
      if (st.attempts.length(now) === 0) st.failedInARow = 0;
      st.attempts.add(1, now);
    }
    // Not what the request itself asked for (a prompt over the context, a refused parameter, a
    // content filter): one client sending it thrice would rank the best route last for everyone.
    // Nor a failure the gateway marks as its own or the request's (a Gemini answer refused for the
    // client's history, a header undici refused), which never opens the circuit either.
    if (!err.gatewayFault && ROUTE_FAULTS.has(classifyFailure(err))) st.failedInARow++;
    if (countable) {
      st.failures++;
      st.outcomes.add(1, now);
    }
    st.lastError = err.message.slice(0, 500);
    st.lastErrorAt = Date.now();
    const t = st.breaker.onFailure(permit, countable, now, this.registry.current().routing.circuitBreaker, err.retryAfterMs);
    if (t) this.emit(st, t);
  }

  cancelled(st: RouteState, permit: CircuitPermit | undefined): void {
    st.breaker.onCancelled(permit);
  }

  stats(st: RouteState, now = performance.now()): RouteStats {
    return {
      ttftMs: st.ttft.mean(now),
      tokensPerSecond: st.throughput.mean(now),
      errorRate: st.outcomes.mean(now),
      failureRate: st.attempts.mean(now),
      attempts: st.attempts.length(now),
      // Only while its window holds attempts: a route left untried that long is not known to fail now.
      failedInARow: st.attempts.length(now) > 0 ? st.failedInARow : 0,
    };
  }

  /**
   * Records a probe result. An endpoint that was failing its probes and now passes has recovered:
   * its open circuits skip the rest of their cooldown and get their half-open probes at once. (A
   * passing probe of an endpoint that never failed one says nothing about the model calls that
   * opened the circuit, so it does not shorten anything.) Returns whether the status changed.
   */
  setHealth(key: string, result: { ok: boolean; detail?: string; latencyMs?: number; checkedAt?: number }): boolean {
    const e = this.endpoint(key);
    const status: HealthStatus = result.ok ? 'healthy' : 'unhealthy';
    const changed = e.status !== status;
    const recovered = result.ok && e.status === 'unhealthy';
    e.status = status;
    e.detail = result.detail;
    e.latencyMs = result.latencyMs;
    e.checkedAt = result.checkedAt ?? Date.now();
    if (recovered) {
      const now = performance.now();
      // The shortened cooldown is shared like an opening (open until now), or the next sync
      // would read the old cooldown back from Redis and undo it.
      for (const st of this.routes.values()) if (st.endpoint === e && st.breaker.probeSucceeded(now)) this.emit(st, 'opened');
    }
    return changed;
  }

  /** Forgets what probes said (health checks switched off): endpoints are judged by traffic alone. */
  clearHealth(): void {
    for (const e of this.endpoints.values()) {
      e.status = 'unknown';
      e.detail = undefined;
    }
  }

  private emit(st: RouteState, t: CircuitTransition): void {
    st.changedAt = performance.now();
    // A route's state from before a reload moved it to another server: nobody routes on it.
    if (st.retired) return;
    for (const l of this.listeners) l(st, t);
  }
}
