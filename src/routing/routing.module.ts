import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { AdaptersModule } from '../adapters/adapters.module';
import { RouteExecutor } from './route-executor.service';
import { RouteStateService } from './route-state.service';
import { RoutingManager } from './routing-manager.service';
import { CostStrategy } from './strategies/cost.strategy';
import { FixedRatioStrategy } from './strategies/fixed-ratio.strategy';
import { LeastLatencyStrategy } from './strategies/least-latency.strategy';
import { PriorityStrategy } from './strategies/priority.strategy';
import { RoundRobinStrategy } from './strategies/round-robin.strategy';
import { WeightedStrategy } from './strategies/weighted.strategy';

@Module({
  imports: [DiscoveryModule, AdaptersModule],
  providers: [
    RoutingManager,
    RouteExecutor,
    RouteStateService,
    WeightedStrategy,
    FixedRatioStrategy,
    PriorityStrategy,
    RoundRobinStrategy,
    LeastLatencyStrategy,
    CostStrategy,
  ],
  exports: [RoutingManager, RouteExecutor, RouteStateService],
})
export class RoutingModule {}
