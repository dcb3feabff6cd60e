import { DiscoveryService } from '@nestjs/core';
import type { ChatRequest } from '../common/chat.types';
import type { ModelDef, RouteDef, RoutingDef } from '../config/registry.types';

export interface StrategyInput {
  readonly model: ModelDef;
  /** The routes that may serve this request, in listed order. */
  readonly routes: readonly RouteDef[];
  readonly routing: RoutingDef;
  readonly request?: ChatRequest;
  readonly random: () => number;
}

/**
 * Decides who gets traffic. `plan` orders the routes for one request (the executor tries them in
 * that order); `shares` is each route's expected share of traffic, shown by /routing.
 */
export interface RoutingStrategy {
  plan(input: StrategyInput): RouteDef[];
  shares(input: StrategyInput): number[];
}

/** Marks a provider as a routing strategy, selected by `routing_strategy:` / `router:`. */
export const RoutingStrategy = DiscoveryService.createDecorator<string>();
