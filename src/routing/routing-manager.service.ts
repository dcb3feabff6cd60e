import { didYouMean, nearKeys } from '../common/near-keys';
import { textOptionProblems } from '../adapters/http/upstream-call';
import { Injectable, Logger, type OnApplicationBootstrap, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { ChatRequest } from '../common/chat.types';
import { ModelRegistry, type RegistrySnapshot } from '../config/model-registry.service';
import { ROUTE_KEYS } from '../config/models.parser';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { cheapestFirst, ESTIMATE_PARAMS, estimateCost, estimateParamsProblems, estimateRequestTokens } from './cost-estimate';
import type { Execution } from './execution';
import { NoAvailableRouteError, NoMatchingRouteError } from './routing-errors';
import { allowedRoutes, applyOrder, NO_OPTIONS, parseRoutingOptions, type ProviderSort, type RoutingOptions } from './routing-options';
import { RoutingStrategy, type StrategyInput } from './routing-strategy';
import { ROUTE_SETTING_KEYS, routeSettings } from './route-settings';
import { FAILING_ATTEMPTS } from './strategies/least-latency.strategy';
import { RouteStateService, type Availability, type RouteState, type RouteStats } from './route-state.service';

export interface PublicRoute {
  id: string;
  provider: string;
  locality: string;
  weight: number;
  share: number;
  /** Whether the route takes traffic now (healthy, circuit closed or half-open). */
  available: boolean;
}

/** A route as OpenRouter's endpoints listing shows it: its window, whether it takes traffic, what it measured. */
export interface RouteView {
  route: RouteDef;
  contextLength: number;
  available: boolean;
  stats: RouteStats;
}

export interface PublicModelRouting {
  id: string;
  strategy: string;
  routes: PublicRoute[];
}

/** One planned attempt: a route of a model (the requested one or a fallback from `models`). */
export interface Candidate {
  readonly model: ModelDef;
  readonly route: RouteDef;
  readonly state: RouteState;
}

/**
 * The decision layer: which strategy a model uses and the order in which its routes are tried.
 * Routes that are unhealthy or behind an open circuit are left out before the strategy sees
 * them, so every strategy respects health and the shares shown reflect it. Also checks, at boot
 * and on every reload, that each route's kind has an adapter and each strategy exists, so a bad
 * config never reaches traffic.
 */
@Injectable()
export class RoutingManager implements OnModuleInit, OnApplicationBootstrap {
  private readonly logger = new Logger('RoutingManager');
  private readonly strategies = new Map<string, RoutingStrategy>();
  /** The router_params each strategy declared it reads, by its name. */
  private readonly params = new Map<string, readonly string[]>();
  private random: () => number = Math.random;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly adapters: AdapterRegistry,
    private readonly registry: ModelRegistry,
    private readonly state: RouteStateService,
  ) {}

  onModuleInit(): void {
    for (const wrapper of this.discovery.getProviders({ metadataKey: RoutingStrategy.KEY })) {
      const opts = this.discovery.getMetadataByDecorator(RoutingStrategy, wrapper);
      if (!opts || !wrapper.instance) continue;
      const { name, params } = typeof opts === 'string' ? { name: opts, params: undefined } : opts;
      this.strategies.set(name, wrapper.instance as RoutingStrategy);
      if (params) this.params.set(name, params);
    }
    this.registry.addValidator((s, warn) => this.validate(s, warn));
  }

  onApplicationBootstrap(): void {
    const problems = this.validate(this.registry.current(), (w) => this.logger.warn(w));
    if (problems.length > 0) throw new Error(`configuration refused:\n  ${problems.join('\n  ')}`);
    const snap = this.registry.current();
    this.logger.log(
      `${snap.models.length} models, default strategy ${snap.routing.strategy}, strategies: ${[...this.strategies.keys()].join(', ')}`,
    );
  }

  /** For tests that check distributions. */
  useRandom(random: () => number): void {
    this.random = random;
  }

  /** The random source of routing decisions (also the executor's backoff jitter). */
  get rng(): () => number {
    return this.random;
  }

  strategyName(model: ModelDef, snapshot: RegistrySnapshot): string {
    return model.router ?? snapshot.routing.strategy;
  }

  /**
   * The models that may answer the request: the one it asked for, then the fallbacks of its
   * `models` (validated here: a 400 when malformed).
   */
  models(ex: Execution): readonly ModelDef[] {
    const { fallbacks } = this.options(ex);
    return fallbacks.length === 0 ? [ex.requested] : [ex.requested, ...fallbacks];
  }

  /** The request's routing options (validated once; a 400 when malformed). */
  options(ex: Execution): RoutingOptions {
    ex.options ??= parseRoutingOptions(ex.request, ex.requested, {
      find: (name) => ex.snapshot.find(name),
    });
    return ex.options;
  }

  /**
   * The routes of the models that may answer the request that its provider preferences allow,
   * whether or not they take traffic now; none is a `no_matching_route` error, as for `plan`.
   */
  matching(ex: Execution): RouteDef[] {
    const opts = this.options(ex);
    const models = this.models(ex);
    const out = models.flatMap((model) => allowedRoutes(model, model.routes, opts));
    if (out.length === 0) throw noMatch(models, opts);
    return out;
  }

  /**
   * The attempts to make for one request, in order: the requested model's routes as its strategy
   * (or the request's `provider.sort`) orders them, then those of each fallback model. Routes that
   * cannot take traffic are left out; when none is left the request fails at once.
   */
  plan(ex: Execution): Candidate[] {
    const opts = this.options(ex);
    const now = performance.now();
    const out: Candidate[] = [];
    let refused: Array<{ model: ModelDef; st: RouteState; why: Availability }> | undefined;
    const models = this.models(ex);
    for (const model of models) {
      const available: RouteDef[] = [];
      for (const route of allowedRoutes(model, model.routes, opts)) {
        const st = this.state.get(model, route);
        const why = this.state.availability(st, now);
        if (why === 'ok') available.push(route);
        else (refused ??= []).push({ model, st, why });
      }
      if (available.length === 0) continue;
      let ordered = opts.sort
        ? this.sortRoutes(model, available, opts.sort, ex.request)
        : this.strategyPlan(model, ex.snapshot, available, ex.request);
      if (opts !== NO_OPTIONS) ordered = applyOrder(ordered, opts);
      for (const route of ordered) out.push({ model, route, state: this.state.get(model, route) });
    }
    const name = (r: { model: ModelDef; st: RouteState }) => `${r.model.id === ex.requested.id ? '' : `${r.model.id} `}${r.st.routeId}`;
    if (out.length > 0) {
      // Cheap on every request while a route is out: names and why, described only if needed.
      if (refused) ex.unavailable = refused.map((r) => `${name(r)}: ${r.why.replace('_', ' ')}`);
      return out;
    }
    if (refused) {
      const reasons = refused.map((r) => `${name(r)}: ${this.state.describe(r.st, r.why, now)}`);
      const waits = refused.filter((r) => r.why === 'circuit_open').map((r) => r.st.breaker.openUntil - now);
      const retryAfter = waits.length > 0 ? Math.min(...waits) : (ex.snapshot.routing.healthCheckSeconds || 1) * 1000;
      throw new NoAvailableRouteError(
        `No route can serve ${ex.requested.id} right now (${reasons.join('; ')}); try again later`,
        retryAfter,
      );
    }
    throw noMatch(models, opts);
  }

  /** A model's routes, whether each takes traffic now and what it measured lately (OpenRouter's endpoints listing). */
  endpoints(model: ModelDef): RouteView[] {
    const now = performance.now();
    return model.routes.map((route) => {
      const st = this.state.get(model, route);
      return {
        route,
        contextLength: routeSettings(route).contextLength ?? model.contextLength,
        available: this.state.availability(st, now) === 'ok',
        stats: this.state.stats(st, now),
      };
    });
  }

  /** Models, strategies and route shares, without URLs or keys (safe for the public /routing). */
  describe(snapshot: RegistrySnapshot): PublicModelRouting[] {
    const now = performance.now();
    return snapshot.models.map((model) => {
      const name = this.strategyName(model, snapshot);
      const up = model.routes.map((r) => this.state.availability(this.state.get(model, r), now) === 'ok');
      const available = model.routes.filter((_, i) => up[i]);
      const shares = available.length > 0 ? (this.strategies.get(name)?.shares(this.input(model, snapshot, available)) ?? []) : [];
      let k = 0;
      return {
        id: model.id,
        strategy: name,
        routes: model.routes.map((r, i) => ({
          id: r.id,
          provider: r.kind,
          locality: r.locality,
          weight: r.weight,
          share: up[i] ? Math.round((shares[k++] ?? 0) * 10000) / 10000 : 0,
          available: up[i],
        })),
      };
    });
  }

  private strategyPlan(model: ModelDef, snapshot: RegistrySnapshot, routes: readonly RouteDef[], request: ChatRequest): RouteDef[] {
    const strategy = this.strategies.get(this.strategyName(model, snapshot));
    // validate() guarantees the strategy exists for any snapshot that is served.
    if (!strategy) return [...routes];
    return strategy.plan(this.input(model, snapshot, routes, request));
  }

  /** `provider.sort` and the `:nitro` / `:floor` suffixes: no load balancing, best first; unmeasured routes after measured ones. */
  private sortRoutes(model: ModelDef, routes: readonly RouteDef[], sort: ProviderSort, request: ChatRequest): RouteDef[] {
    if (sort === 'price') {
      const tokens = estimateRequestTokens(request, model);
      return cheapestFirst(routes.map((r) => estimateCost(model, r, tokens))).map((i) => routes[i]);
    }
    const now = performance.now();
    const score = routes.map((r) => {
      const s = this.state.stats(this.state.get(model, r), now);
      // Failing now (its latest attempts all failed): last, after the unmeasured, whatever it measured before.
      if ((s.failedInARow ?? 0) >= FAILING_ATTEMPTS) return Infinity;
      const v = sort === 'latency' ? s.ttftMs : s.tokensPerSecond === undefined ? undefined : -s.tokensPerSecond;
      return v ?? Number.MAX_VALUE;
    });
    return routes
      .map((_, i) => i)
      .sort((a, b) => score[a] - score[b] || a - b)
      .map((i) => routes[i]);
  }

  private input(model: ModelDef, snapshot: RegistrySnapshot, routes: readonly RouteDef[], request?: ChatRequest): StrategyInput {
    return {
      model,
      routes,
      routing: snapshot.routing,
      request,
      random: this.random,
      stats: (route) => this.state.stats(this.state.get(model, route)),
    };
  }

  private validate(snapshot: RegistrySnapshot, warn: (message: string) => void): string[] {
    const problems: string[] = [];
    const known = [...this.strategies.keys()].sort().join(', ');
    if (!this.strategies.has(snapshot.routing.strategy)) {
      problems.push(
        `${snapshot.routing.strategyWhere ?? snapshot.routing.file ?? 'routing.yaml'}: routing_strategy "${snapshot.routing.strategy}" is unknown (known: ${known})`,
      );
    }
    for (const model of snapshot.models) {
      if (model.router && !this.strategies.has(model.router)) {
        problems.push(`${model.routerWhere ?? model.where}: router "${model.router}" is unknown (known: ${known})`);
      }
      const strategy = this.strategyName(model, snapshot);
      problems.push(...(this.strategies.get(strategy)?.validate?.(model) ?? []));
      problems.push(...estimateParamsProblems(model));
      const declared = this.params.get(strategy);
      if (declared) for (const w of this.unknownRouterParams(model, strategy, declared)) warn(w);
      for (const route of model.routes) {
        problems.push(...routeSettings(route).problems);
        const adapter = this.adapters.get(route.kind);
        if (!adapter) {
          problems.push(`${route.where}: kind "${route.kind}" has no adapter (known: ${this.adapters.kinds().join(', ')})`);
          continue;
        }
        problems.push(...(adapter.validateRoute?.(route) ?? []));
        const options = this.adapters.optionsOf(route.kind);
        if (options) {
          problems.push(...textOptionProblems(route, options));
          for (const w of unknownRouteKeys(route, options)) warn(w);
        }
      }
    }
    return problems;
  }

  /**
   * A model's `router_params` that neither its strategy nor the gateway reads: a typo
   * (`explortion: 0.5` silently left exploration at 0.1), or a key left behind when the model
   * moved to a strategy that has no use for it.
   */
  private unknownRouterParams(model: ModelDef, strategy: string, declared: readonly string[]): string[] {
    const known = [...new Set([...declared, ...ESTIMATE_PARAMS])];
    const out: string[] = [];
    for (const key of Object.keys(model.routerParams)) {
      if (known.includes(key)) continue;
      const near = nearKeys(key, known);
      let hint: string;
      if (near.length > 0) hint = didYouMean(near);
      else if (declared.length > 0) hint = `a ${strategy} model reads ${known.join(', ')}`;
      else {
        const readers = [...this.params].filter(([, p]) => p.includes(key)).map(([name]) => name);
        hint = `strategy ${strategy} reads no router_params${readers.length > 0 ? `; ${key} is read by ${readers.join(', ')}` : ''}`;
      }
      out.push(`${model.where}: router_params key "${key}" ignored (${hint})`);
    }
    return out;
  }
}

/**
 * A route's keys that neither the gateway nor its adapter reads: most likely typos (`wieght: 9`
 * silently left the weight at 1), each named with the nearest known key when one is close.
 */
function unknownRouteKeys(route: RouteDef, declared: readonly string[]): string[] {
  const known = [...ROUTE_KEYS, ...ROUTE_SETTING_KEYS, ...declared];
  const out: string[] = [];
  for (const key of Object.keys(route.options)) {
    if (declared.includes(key) || ROUTE_SETTING_KEYS.includes(key)) continue;
    const near = nearKeys(key, known);
    const hint = near.length > 0 ? didYouMean(near) : `a ${route.kind} route reads ${known.join(', ')}`;
    out.push(`${route.where}: unknown route key "${key}" ignored (${hint})`);
  }
  return out;
}

/** The provider preferences of a request that can leave a model without routes, as it set them. */
function setPreferences(opts: RoutingOptions): string {
  const set = [
    opts.only && `only: ${names(opts.only)}`,
    opts.ignore && `ignore: ${names(opts.ignore)}`,
    opts.maxPrice && 'max_price',
    opts.order && !opts.allowFallbacks && `order: ${names(opts.order)} with allow_fallbacks: false`,
  ].filter((p): p is string => typeof p === 'string');
  return set.length > 0 ? set.join('; ') : 'only, ignore, max_price, order';
}

function names(list: readonly string[]): string {
  if (list.length === 0) return '[]';
  const shown = list.slice(0, 5).map((n) => n.slice(0, 40));
  return list.length > 5 ? `${shown.join(', ')}, ...` : shown.join(', ');
}

function noMatch(models: readonly ModelDef[], opts: RoutingOptions): NoMatchingRouteError {
  return new NoMatchingRouteError(
    `No route of ${models.map((m) => m.id).join(', ')} satisfies the request's provider preferences (${setPreferences(opts)})`,
  );
}
