import { DiscoveryService } from '@nestjs/core';
import type { ChatRequest } from '../common/chat.types';
import type { ModelDef, RouteDef, RoutingDef } from '../config/registry.types';
import type { RouteStats } from './route-state.service';

export interface StrategyInput {
  readonly model: ModelDef;
  /**
   * The routes that may serve this request, in listed order: those that are healthy, whose
   * circuit lets traffic through, and that the request's provider preferences allow.
   */
  readonly routes: readonly RouteDef[];
  readonly routing: RoutingDef;
  readonly request?: ChatRequest;
  readonly random: () => number;
  /** Recent figures of a route (time to first token, throughput, errors); O(1). */
  readonly stats: (route: RouteDef) => RouteStats;
}

/**
 * Decides who gets traffic. `plan` orders the routes for one request (the executor tries them in
 * that order); `shares` is each route's expected share of traffic, shown by /routing.
 */
export interface RoutingStrategy {
  plan(input: StrategyInput): RouteDef[];
  shares(input: StrategyInput): number[];
  /** Problems with a model's `router_params` for this strategy, found when the config loads. */
  validate?(model: ModelDef): string[];
}

export interface RoutingStrategyOptions {
  /** The name `routing_strategy:` and `router:` select it by. */
  name: string;
  /**
   * The `router_params` keys this strategy reads. When declared, any other key of a model it
   * routes (`explortion: 0.3`) is warned about at start and on reload as a likely typo, and an
   * empty list says it reads none; undeclared, the model's `router_params` are not checked.
   */
  params?: readonly string[];
}

/**
 * Marks a provider as a routing strategy, found at start-up in any module. Usage:
 * `@RoutingStrategy({ name: 'least_latency', params: ['exploration'] })`, or just the name.
 */
export const RoutingStrategy = DiscoveryService.createDecorator<string | RoutingStrategyOptions>();
