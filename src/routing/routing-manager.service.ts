import { Injectable, Logger, type OnApplicationBootstrap, type OnModuleInit } from '@nestjs/common';
import { DiscoveryService } from '@nestjs/core';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { ChatRequest } from '../common/chat.types';
import { ModelRegistry, type RegistrySnapshot } from '../config/model-registry.service';
import type { ModelDef, RouteDef } from '../config/registry.types';
import { RoutingStrategy, type StrategyInput } from './routing-strategy';

export interface PublicRoute {
  id: string;
  provider: string;
  locality: string;
  weight: number;
  share: number;
}

export interface PublicModelRouting {
  id: string;
  strategy: string;
  routes: PublicRoute[];
}

/**
 * The decision layer: which strategy a model uses and the order in which its routes are tried.
 * Also checks, at boot and on every reload, that each route's kind has an adapter and each
 * strategy exists, so a bad config never reaches traffic.
 */
@Injectable()
export class RoutingManager implements OnModuleInit, OnApplicationBootstrap {
  private readonly logger = new Logger('RoutingManager');
  private readonly strategies = new Map<string, RoutingStrategy>();
  private random: () => number = Math.random;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly adapters: AdapterRegistry,
    private readonly registry: ModelRegistry,
  ) {}

  onModuleInit(): void {
    for (const wrapper of this.discovery.getProviders({ metadataKey: RoutingStrategy.KEY })) {
      const name = this.discovery.getMetadataByDecorator(RoutingStrategy, wrapper);
      if (name && wrapper.instance) this.strategies.set(name, wrapper.instance as RoutingStrategy);
    }
    this.registry.addValidator((s) => this.validate(s));
  }

  onApplicationBootstrap(): void {
    const problems = this.validate(this.registry.current());
    if (problems.length > 0) throw new Error(`configuration refused:\n  ${problems.join('\n  ')}`);
    const snap = this.registry.current();
    this.logger.log(`${snap.models.length} models, default strategy ${snap.routing.strategy}, strategies: ${[...this.strategies.keys()].join(', ')}`);
  }

  /** For tests that check distributions. */
  useRandom(random: () => number): void {
    this.random = random;
  }

  strategyName(model: ModelDef, snapshot: RegistrySnapshot): string {
    return model.router ?? snapshot.routing.strategy;
  }

  /** The routes to try for one request, in order. */
  plan(model: ModelDef, request: ChatRequest, snapshot: RegistrySnapshot): RouteDef[] {
    const strategy = this.strategies.get(this.strategyName(model, snapshot));
    // validate() guarantees the strategy exists for any snapshot that is served.
    if (!strategy) return [...model.routes];
    return strategy.plan(this.input(model, snapshot, request));
  }

  /** Models, strategies and route shares, without URLs or keys (safe for the public /routing). */
  describe(snapshot: RegistrySnapshot): PublicModelRouting[] {
    return snapshot.models.map((model) => {
      const name = this.strategyName(model, snapshot);
      const shares = this.strategies.get(name)?.shares(this.input(model, snapshot)) ?? [];
      return {
        id: model.id,
        strategy: name,
        routes: model.routes.map((r, i) => ({
          id: r.id,
          provider: r.kind,
          locality: r.locality,
          weight: r.weight,
          share: Math.round((shares[i] ?? 0) * 10000) / 10000,
        })),
      };
    });
  }

  private input(model: ModelDef, snapshot: RegistrySnapshot, request?: ChatRequest): StrategyInput {
    return { model, routes: model.routes, routing: snapshot.routing, request, random: this.random };
  }

  private validate(snapshot: RegistrySnapshot): string[] {
    const problems: string[] = [];
    const known = [...this.strategies.keys()].sort().join(', ');
    if (!this.strategies.has(snapshot.routing.strategy)) {
      problems.push(`${snapshot.routing.file ?? 'routing.yaml'}: routing_strategy "${snapshot.routing.strategy}" is unknown (known: ${known})`);
    }
    for (const model of snapshot.models) {
      if (model.router && !this.strategies.has(model.router)) {
        problems.push(`${model.where}: router "${model.router}" is unknown (known: ${known})`);
      }
      for (const route of model.routes) {
        const adapter = this.adapters.get(route.kind);
        if (!adapter) {
          problems.push(`${route.where}: kind "${route.kind}" has no adapter (known: ${this.adapters.kinds().join(', ')})`);
          continue;
        }
        problems.push(...(adapter.validateRoute?.(route) ?? []));
      }
    }
    return problems;
  }
}
